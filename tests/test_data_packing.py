"""Packing is exact: a packed batch gives the same summed loss as its examples one by one, on the real tiny models."""

from __future__ import annotations

import pytest
import torch

from backprop_engine.data import DataSpec, load_chat_tokenizer, prepare_data
from backprop_engine.data.packing import PackedRow, pack
from backprop_engine.data.tokenize import IGNORE_INDEX, TokenizedExample
from backprop_engine.modeling import load_base_model
from backprop_engine.train.loop import batch_efficiency, collate, packing_is_exact, summed_loss

from .conftest import ARCHITECTURES


def sample_examples(path, count: int) -> list[TokenizedExample]:
    prepared = prepare_data(
        DataSpec(["sample"], shuffle=False), load_chat_tokenizer(path), 2048, use_cache=False
    )
    return prepared.train[:count]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_packed_loss_equals_the_sum_of_per_example_losses(tiny_models, name):
    torch.manual_seed(0)
    model = load_base_model(tiny_models[name]).eval()
    examples = sample_examples(tiny_models[name], 12)
    rows = pack(examples, 256)
    assert len(rows) < len(examples) and all(len(r.input_ids) <= 256 for r in rows)
    pad_id = 0
    with torch.no_grad():
        packed = summed_loss(model, collate(rows, pad_id, "cpu", packed=True)).item()
        one_by_one = sum(
            summed_loss(model, collate([e], pad_id, "cpu", packed=False)).item() for e in examples
        )
        # Negative control: the same rows with one running position sequence let examples see each other.
        leaky = [PackedRow(r.input_ids, r.labels, list(range(len(r.input_ids)))) for r in rows]
        leaked = summed_loss(model, collate(leaky, pad_id, "cpu", packed=True)).item()
    trained = sum(sum(label != IGNORE_INDEX for label in e.labels[1:]) for e in examples)
    assert abs(packed - one_by_one) / trained < 1e-4, (packed, one_by_one)
    assert abs(leaked - one_by_one) / trained > 1e-3
    assert packing_is_exact(model, "cpu")


def test_pack_keeps_every_token_and_restarts_positions():
    examples = [
        TokenizedExample(list(range(10, 10 + n)), [IGNORE_INDEX] * (n // 2) + list(range(n - n // 2)))
        for n in (5, 9, 3, 7, 8)
    ]
    rows = pack(examples, 12)
    assert sorted(len(r.input_ids) for r in rows) == [8, 12, 12]  # best fit: 9+3, 7+5, 8
    for row in rows:
        starts = [i for i, p in enumerate(row.position_ids) if p == 0]
        assert all(row.labels[i] == IGNORE_INDEX for i in starts), "no example predicts from its neighbour"
        for begin, end in zip(starts, starts[1:] + [len(row.position_ids)]):
            assert row.position_ids[begin:end] == list(range(end - begin))
    assert sorted(t for r in rows for t in r.input_ids) == sorted(t for e in examples for t in e.input_ids)


def test_packing_beats_padding_on_skewed_lengths():
    lengths = [8] * 60 + [120] * 4
    examples = [TokenizedExample([1] * n, [1] * n) for n in lengths]
    padded = batch_efficiency(examples, batch_size=8, seed=0)
    packed = batch_efficiency(examples, batch_size=8, seed=0, pack_len=128)
    assert padded < 0.6 and packed > 0.9
