"""Filters, statistics, the length policy, the preview API, the cache and the data events of a training run."""

from __future__ import annotations

import json

import pytest

from backprop_engine.cli import main
from backprop_engine.config import TrainConfig
from backprop_engine.data import DataPreview, DataSpec, load_chat_tokenizer, prepare_data
from backprop_engine.errors import ConfigError, DataError

from .test_data_sources import write_jsonl


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return load_chat_tokenizer(tiny_models["tiny"])


@pytest.fixture
def rows_file(tmp_path):
    rows = [chat(f"Question number {i} about ships?", f"Arr, answer {i} be here, matey.") for i in range(40)]
    rows += [rows[0], rows[1]]  # exact duplicates
    rows += [
        chat("Question number 3 about ships?", "Arr, answer 3 be here, matey!")
    ]  # a near duplicate of row 3
    rows += [chat("Tell me a long story. " * 30, "Arr. " * 40)]  # far longer than the others
    return write_jsonl(tmp_path / "rows.jsonl", rows)


def removed(report) -> dict[str, int]:
    return {step.name: step.removed for step in report.filters}


def test_each_filter_counts_what_it_removed(rows_file, tokenizer):
    spec = DataSpec(
        [str(rows_file)], near_dedupe=0.7, min_tokens=10, max_tokens=200, max_samples=30, eval_split=0.2
    )
    prepared = prepare_data(spec, tokenizer, 2048, use_cache=False)
    report = prepared.report
    assert report.rows_read == 44 and report.formats == {"messages": 44}
    assert removed(report) == {
        "exact duplicates": 2,
        "near duplicates (>= 0.7)": 1,
        "under 10 tokens": 0,
        "over 200 tokens": 1,
        "nothing left to train": 0,
        "beyond max_samples 30": 10,
    }
    assert (
        (len(prepared.train), len(prepared.eval)) == (24, 6) == (report.train_examples, report.eval_examples)
    )
    by_count = prepare_data(DataSpec([str(rows_file)], eval_split=5), tokenizer, 2048, use_cache=False)
    assert len(by_count.eval) == 5


def test_shuffle_is_seeded(rows_file, tokenizer):
    def order(seed):
        return [
            e.input_ids
            for e in prepare_data(
                DataSpec([str(rows_file)], seed=seed), tokenizer, 2048, use_cache=False
            ).train
        ]

    assert order(1) == order(1) != order(2)
    assert sorted(map(tuple, order(1))) == sorted(map(tuple, order(2)))


def test_length_stats_and_max_seq_len_from_the_data(rows_file, tokenizer):
    report = prepare_data(DataSpec([str(rows_file)]), tokenizer, 2048, use_cache=False).report
    lengths = report.lengths
    assert lengths.count == 42 and lengths.p50 <= lengths.p95 <= lengths.p99 <= lengths.max
    assert sum(count for _, _, count in lengths.histogram) == 42 and lengths.histogram[-1][2] == 1
    assert report.max_seq_len_from_data and report.max_seq_len % 64 == 0 and report.max_seq_len >= lengths.p99
    assert 0.2 < report.trained_fraction < 0.8
    capped = prepare_data(DataSpec([str(rows_file)]), tokenizer, 64, use_cache=False)
    assert capped.report.max_seq_len == 64 and capped.report.truncated == 1
    assert removed(capped.report)["nothing left to train"] == 1, "the long row's reply starts after token 64"


def test_overlong_rows_are_truncated_or_dropped_by_policy(rows_file, tokenizer):
    truncated = prepare_data(DataSpec([str(rows_file)], max_seq_len=48), tokenizer, 2048, use_cache=False)
    assert truncated.report.truncated >= 1 and all(len(e) <= 48 for e in truncated.train)
    dropped = prepare_data(
        DataSpec([str(rows_file)], max_seq_len=48, overlong="drop"), tokenizer, 2048, use_cache=False
    )
    assert removed(dropped.report)["over max_seq_len 48"] == truncated.report.truncated
    assert len(dropped.train) == 42 - truncated.report.truncated


def test_long_text_documents_are_cut_into_pieces_not_truncated(tmp_path, tokenizer):
    path = write_jsonl(
        tmp_path / "t.jsonl", [{"text": "The ship sails at dawn. " * 40}, {"text": "Short one."}]
    )
    prepared = prepare_data(
        DataSpec([str(path)], max_seq_len=64, shuffle=False), tokenizer, 2048, use_cache=False
    )
    whole = tokenizer("The ship sails at dawn. " * 40)["input_ids"] + [tokenizer.eos_token_id]
    pieces = [e.input_ids for e in prepared.train]
    assert sum(pieces[:-1], []) == whole and all(len(p) <= 64 for p in pieces) and len(pieces) > 3
    assert prepared.report.truncated == 0


def test_a_row_whose_reply_is_cut_off_entirely_is_dropped(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [chat("word " * 100, "Arr!"), chat("Hi", "Arr!")])
    report = prepare_data(DataSpec([str(path)], max_seq_len=32), tokenizer, 2048, use_cache=False).report
    assert removed(report)["nothing left to train"] == 1


def test_bad_rows_are_skipped_and_counted_or_stop_the_run(tmp_path, tokenizer):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(chat("Hi", "Arr!")) + "\n{broken\n" + json.dumps(chat("Yo", "Arr!")) + "\n")
    report = prepare_data(DataSpec([str(path)]), tokenizer, 2048, use_cache=False).report
    assert report.bad_row_count == 1 and str(report.bad_rows[0]).startswith(f"{path}:2: not valid JSON")
    with pytest.raises(DataError, match=":2: not valid JSON"):
        prepare_data(DataSpec([str(path)], on_bad_row="error"), tokenizer, 2048, use_cache=False)
    with pytest.raises(DataError, match="no rows left after the filters \\(under 10000 tokens: 2\\)"):
        prepare_data(DataSpec([str(path)], min_tokens=10_000), tokenizer, 2048, use_cache=False)


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="on_bad_row must be one of error, skip"):
        DataSpec(["sample"], on_bad_row="ignore")
    with pytest.raises(
        ConfigError,
        match="format must be one of auto, preference, messages, sharegpt, alpaca, prompt_completion, text, got 'yaml'",
    ):
        DataSpec(["sample"], format="yaml")
    with pytest.raises(ConfigError, match="overlong must be one of truncate, drop"):
        TrainConfig(overlong="cut")
    with pytest.raises(ConfigError, match="eval_split"):
        DataSpec(["sample"], eval_split=2.5)


def test_second_prepare_comes_from_the_cache(rows_file, tokenizer):
    spec = DataSpec([str(rows_file)], eval_split=0.1)
    first = prepare_data(spec, tokenizer, 2048)
    second = prepare_data(spec, tokenizer, 2048)
    assert not first.report.cached and second.report.cached
    assert [e.input_ids for e in first.train] == [e.input_ids for e in second.train]
    assert [e.labels for e in first.eval] == [e.labels for e in second.eval]
    assert second.report.filters == first.report.filters and second.report.lengths == first.report.lengths
    assert not prepare_data(DataSpec([str(rows_file)], eval_split=0.2), tokenizer, 2048).report.cached
    rows_file.write_text(rows_file.read_text() + json.dumps(chat("New?", "Arr, new!")) + "\n")
    changed = prepare_data(spec, tokenizer, 2048)
    assert not changed.report.cached and changed.report.rows_read == 45


def test_preview_reads_once_and_refilters_on_demand(rows_file, tokenizer, monkeypatch):
    preview = DataPreview(tokenizer, 2048, samples=2)
    first = preview.report(DataSpec([str(rows_file)]))
    from backprop_engine.data import pipeline

    monkeypatch.setattr(pipeline, "iter_rows", lambda *a, **k: pytest.fail("rows were read again"))
    narrower = preview.report(DataSpec([str(rows_file)], max_tokens=30))
    assert removed(narrower)["over 30 tokens"] > 0 and narrower.train_examples < first.train_examples
    assert len(first.samples) == 2 and any(trained for _, trained in first.samples[0].spans)
    empty = preview.report(DataSpec([str(rows_file)], max_tokens=1))
    assert "no rows left" in empty.warnings[0]


def test_preview_samples_huge_files_but_counts_every_row(rows_file, tokenizer):
    report = DataPreview(tokenizer, 2048, sample_rows=10).report(DataSpec([str(rows_file)], dedupe=False))
    assert report.rows_read == 44 and report.sampled_rows == 10 and report.lengths.count == 10


def test_data_inspect_cli(rows_file, capsys):
    assert main(["data", "inspect", str(rows_file), "--samples", "1", "--max-tokens", "200"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("44 rows read (messages 44); 0 bad")
    assert "filters removed: exact duplicates: 2, over 200 tokens: 1" in out
    assert "tokens per example: p50 " in out and "max_seq_len 64 from the data" in out
    assert "⟦Arr, answer" in out and "<|im_end|>\n⟧" in out
    assert main(["data", "inspect", str(rows_file), "--json", "--model", "tiny-qwen2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["formats"] == {"messages": 44} and len(report["lengths"]["histogram"]) == 10


def test_training_reports_skipped_rows_data_stats_and_eval_loss(tmp_path):
    from backprop_engine import Trainer

    path = tmp_path / "d.jsonl"
    good = [chat(f"Question {i}?", f"Arr, answer {i}!") for i in range(30)]
    path.write_text(
        "\n".join(json.dumps(r) for r in good[:10])
        + "\nnot json\n"
        + "\n".join(json.dumps(r) for r in good[10:])
        + "\n"
    )
    events = []
    trainer = Trainer("tiny", on_event=events.append, eval_split=4, eval_steps=2, batch_size=4)
    result = trainer.train(path, steps=4, output_dir=tmp_path / "run")
    skipped = [e for e in events if e.kind == "rows_skipped"]
    assert skipped[0].count == 1 and skipped[0].first == [
        f"{path}:11: not valid JSON (Expecting value at column 1)"
    ]
    [data] = [e for e in events if e.kind == "data"]
    assert (data.rows_read, data.train_examples, data.eval_examples, data.packing) == (31, 26, 4, True)
    assert data.packing_efficiency > 0.8
    evals = [e for e in events if e.kind == "eval"]
    assert [e.step for e in evals] == [2, 4] and result.eval_loss == evals[-1].loss
    written = [
        json.loads(line)["event"] for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    ]
    written = [
        kind for kind in written if kind != "progress"
    ]  # stages report as they go (tests/test_progress.py)
    assert written[:4] == ["run_planned", "run_started", "rows_skipped", "data"] and "eval" in written


@pytest.mark.parametrize("fmt", ["sharegpt", "alpaca", "text"])
def test_training_accepts_other_formats(tmp_path, fmt):
    from backprop_engine import Trainer

    rows = {
        "sharegpt": [
            {"conversations": [{"from": "human", "value": f"Q{i}"}, {"from": "gpt", "value": f"Arr {i}"}]}
            for i in range(8)
        ],
        "alpaca": [{"instruction": f"Q{i}", "output": f"Arr {i}"} for i in range(8)],
        "text": [{"text": f"The ship number {i} sails at dawn."} for i in range(8)],
    }[fmt]
    events = []
    result = Trainer("tiny", on_event=events.append).train(
        write_jsonl(tmp_path / "d.jsonl", rows), steps=2, output_dir=tmp_path / "run"
    )
    assert result.steps == 2
    assert [e.formats for e in events if e.kind == "data"] == [{fmt: 8}]


def test_padding_when_asked_or_when_the_model_cannot_pack(tmp_path, monkeypatch):
    from transformers import masking_utils

    from backprop_engine import Trainer

    events = []
    Trainer("tiny", on_event=events.append, packing=False).train(
        "sample", steps=1, output_dir=tmp_path / "padded"
    )
    [data] = [e for e in events if e.kind == "data"]
    assert not data.packing and data.packing_efficiency < 0.8
    # A model whose attention ignores the example boundaries fails the probe: padding, with a warning.
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", lambda position_ids: None)
    events.clear()
    Trainer("tiny", on_event=events.append).train("sample", steps=1, output_dir=tmp_path / "fallback")
    assert [e.message for e in events if e.kind == "warning"] == [
        "packing is off: this model's attention does not honour per-example position ids"
    ]
    assert [e.packing for e in events if e.kind == "data"] == [False]


def test_train_cli_passes_the_data_options(tmp_path, capsys):
    from backprop_engine.rundir import RunDir

    rows = [{"instruction": f"Q{i}", "output": f"Arr {i}", "text": f"note {i}"} for i in range(6)]
    path = write_jsonl(
        tmp_path / "d.jsonl", rows
    )  # auto-detection would pick alpaca; --format text overrides
    argv = [
        "train",
        "--data",
        str(path),
        "--format",
        "text",
        "--steps",
        "1",
        "--output",
        str(tmp_path / "run"),
        "--eval-split",
        "2",
        "--no-packing",
        "--no-shuffle",
        "--max-tokens",
        "500",
        "--json",
    ]
    assert main(argv) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [data] = [e for e in events if e["event"] == "data"]
    assert (
        data["formats"] == {"text": 6}
        and (data["train_examples"], data["eval_examples"]) == (4, 2)
        and not data["packing"]
    )
    config = RunDir.open(tmp_path / "run").read_config()
    assert (config.data_format, config.eval_split, config.packing, config.shuffle, config.max_tokens) == (
        "text",
        2.0,
        False,
        False,
        500,
    )
