"""DPO and ORPO on the real tiny model: the losses against the papers' formulas computed directly, one
sequence at a time; training raises the reward accuracy on our toy set; resume is exact; bad pairs are named."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from backprop_engine import Trainer
from backprop_engine.cli import main
from backprop_engine.config import TrainConfig
from backprop_engine.data import DataSpec, load_chat_tokenizer, prepare_data
from backprop_engine.data.pairs import PreferenceExample
from backprop_engine.data.tokenize import IGNORE_INDEX, TokenizedExample
from backprop_engine.errors import ConfigError, DataError
from backprop_engine.modeling import load_base_model
from backprop_engine.train.backend import lora_model
from backprop_engine.train.preference import PreferenceLoss, collate_pairs, sequence_logps

from .preference_data import write_pairs
from .test_data_formats import FIXTURES


@pytest.fixture(scope="module")
def pairs(tiny_models) -> list[PreferenceExample]:
    files = [str(FIXTURES / "preference_prompt.jsonl"), str(FIXTURES / "preference_conversations.jsonl")]
    spec = DataSpec(files, objective="dpo", shuffle=False)
    return prepare_data(spec, load_chat_tokenizer(tiny_models["tiny"]), 2048, use_cache=False).train


@pytest.fixture(scope="module")
def policy(tiny_models):
    """The tiny model with a LoRA adapter whose B factors are not zero: the policy differs from the base."""
    torch.manual_seed(0)
    model = lora_model(load_base_model(tiny_models["tiny"]), TrainConfig())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    return model.eval()


def direct_logp(model, example: TokenizedExample) -> tuple[float, int]:
    """log π(reply | prompt) of one unpadded sequence: the sum over its labelled tokens, in float64."""
    ids = torch.tensor([example.input_ids])
    with torch.no_grad():
        logps = model(input_ids=ids).logits[0, :-1].double().log_softmax(-1)
    picked = logps.gather(1, ids[0, 1:, None])[:, 0]
    trained = torch.tensor(example.labels[1:]) != IGNORE_INDEX
    return picked[trained].sum().item(), int(trained.sum())


def direct_sides(model, pair: PreferenceExample, reference: bool = False):
    if reference:
        with model.disable_adapter():
            return direct_sides(model, pair)
    return direct_logp(model, pair.chosen), direct_logp(model, pair.rejected)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > -30 else x


def ours(model, pairs, **config) -> dict:
    objective = PreferenceLoss(TrainConfig(**config), pad_id=0, device="cpu")
    objective.begin()
    with torch.no_grad():
        objective.summed(model, collate_pairs(pairs, 0, "cpu"))
    return objective.take()


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_dpo_loss_and_rewards_equal_the_papers_formula(policy, pairs, smoothing):
    beta = 0.5
    losses, chosen, rejected = [], [], []
    for pair in pairs:
        (pw, _), (pl, _) = direct_sides(policy, pair)
        (rw, _), (rl, _) = direct_sides(policy, pair, reference=True)
        h = beta * ((pw - rw) - (pl - rl))
        losses.append(-(1 - smoothing) * log_sigmoid(h) - smoothing * log_sigmoid(-h))
        chosen.append(beta * (pw - rw))
        rejected.append(beta * (pl - rl))
    got = ours(policy, pairs, objective="dpo", dpo_beta=beta, dpo_label_smoothing=smoothing)
    n = len(pairs)
    assert got["pairs"] == n == 5
    assert got["loss"] == pytest.approx(sum(losses) / n, abs=1e-5)
    assert got["chosen"] == pytest.approx(sum(chosen) / n, abs=1e-5)
    assert got["rejected"] == pytest.approx(sum(rejected) / n, abs=1e-5)
    assert got["margin"] == pytest.approx((sum(chosen) - sum(rejected)) / n, abs=1e-5)
    assert got["accuracy"] == sum(c > r for c, r in zip(chosen, rejected)) / n
    assert abs(got["loss"] - math.log(2)) > 1e-3, (
        "the policy must differ from the reference for this to test anything"
    )


@pytest.mark.parametrize("method", ["qlora", "dora", "rslora"])
def test_the_reference_is_the_base_with_the_adapter_off_for_every_method(tiny_models, pairs, method):
    """No second copy: whatever the adapter adds (DoRA's magnitudes, rsLoRA's scale, on a 4-bit base for
    QLoRA), switching it off scores each side as the plain base model does."""
    four_bit = method == "qlora"
    torch.manual_seed(0)
    model = lora_model(load_base_model(tiny_models["tiny"], four_bit=four_bit), TrainConfig(method=method))
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:  # lora_A, lora_B and DoRA's lora_magnitude_vector
                param.add_(torch.randn_like(param) * 0.05)
    model.eval()
    base = load_base_model(tiny_models["tiny"], four_bit=four_bit).eval()
    batch = collate_pairs(pairs, 0, "cpu").batch
    objective = PreferenceLoss(TrainConfig(objective="dpo", method=method), 0, "cpu")
    with torch.no_grad():
        reference = objective.reference_logps(model, batch)
        policy = objective.reference_logps(model, batch, adapter_off=False)
        plain, _ = sequence_logps(base, batch)
    assert reference.T.flatten().tolist() == pytest.approx(plain.tolist(), abs=1e-5)
    assert (policy - reference).abs().max() > 0.1, (
        "the adapter must change the scores for this to test anything"
    )


def test_dpo_loss_reaches_zero_with_a_large_beta_on_separable_pairs(policy, pairs):
    separable = []
    for (
        pair
    ) in pairs:  # each pair oriented so that the policy prefers its chosen side more than the base does
        (pw, _), (pl, _) = direct_sides(policy, pair)
        (rw, _), (rl, _) = direct_sides(policy, pair, reference=True)
        separable.append(pair if (pw - rw) > (pl - rl) else PreferenceExample(pair.rejected, pair.chosen))
    assert ours(policy, separable, objective="dpo", dpo_beta=0.1)["loss"] > 0.1
    large = ours(policy, separable, objective="dpo", dpo_beta=1e6)
    assert large["loss"] < 1e-6 and large["accuracy"] == 1.0


def test_orpo_loss_and_rewards_equal_the_papers_formula(policy, pairs):
    lam = 0.3
    losses, chosen, rejected = [], [], []
    for pair in pairs:
        (pw, nw), (pl, nl) = direct_sides(policy, pair)
        mean_w, mean_l = pw / nw, pl / nl  # log P(y|x), length-normalised
        log_odds = lambda m: m - math.log(1 - math.exp(m))  # noqa: E731  odds = P / (1 − P)
        losses.append(-mean_w - lam * log_sigmoid(log_odds(mean_w) - log_odds(mean_l)))
        chosen.append(lam * mean_w)
        rejected.append(lam * mean_l)
    got = ours(policy, pairs, objective="orpo", orpo_lambda=lam)
    n = len(pairs)
    assert got["loss"] == pytest.approx(sum(losses) / n, abs=1e-5)
    assert got["chosen"] == pytest.approx(sum(chosen) / n, abs=1e-5)
    assert got["rejected"] == pytest.approx(sum(rejected) / n, abs=1e-5)


def test_pieces_keep_pairs_together_and_precomputed_references_change_nothing(policy, pairs):
    """The out-of-memory back-off cuts a batch into pieces; the reference may be computed once up front."""
    config = TrainConfig(objective="dpo")
    objective = PreferenceLoss(config, 0, "cpu")
    whole = collate_pairs(pairs, 0, "cpu")
    with torch.no_grad():
        in_one = objective.summed(policy, whole).item()
        in_pieces = sum(objective.summed(policy, piece).item() for piece in whole.pieces(3))
        objective.precompute(policy, pairs, batch_size=2, as_is=False)
        precomputed = objective.summed(policy, objective.collate(pairs)).item()
    assert [p.pairs for p in whole.pieces(3)] == [2, 2, 1]
    assert in_pieces == pytest.approx(in_one, abs=1e-5) and precomputed == pytest.approx(in_one, abs=1e-5)


def test_truncation_keeps_the_prompts_end_and_both_replies_starts():
    chosen = TokenizedExample(
        list(range(10)) + [100, 101, 102, 103], [IGNORE_INDEX] * 10 + [100, 101, 102, 103]
    )
    rejected = TokenizedExample(list(range(10)) + [200, 201], [IGNORE_INDEX] * 10 + [200, 201])
    cut = PreferenceExample(chosen, rejected).truncated(8)
    assert cut.chosen.input_ids == [6, 7, 8, 9, 100, 101, 102, 103]
    assert cut.rejected.input_ids == [6, 7, 8, 9, 200, 201]
    long = PreferenceExample(
        chosen,
        TokenizedExample(
            list(range(10)) + list(range(200, 220)), [IGNORE_INDEX] * 10 + list(range(200, 220))
        ),
    )
    halves = long.truncated(8)  # replies longer than the limit: the prompt keeps its last half of it
    assert halves.chosen.input_ids == [6, 7, 8, 9, 100, 101, 102, 103] and halves.rejected.input_ids == [
        6,
        7,
        8,
        9,
        200,
        201,
        202,
        203,
    ]


def test_dpo_raises_the_reward_accuracy_on_held_out_pairs_and_exports(tmp_path):
    events = []
    trainer = Trainer(
        "tiny",
        on_event=events.append,
        objective="dpo",
        batch_size=8,
        eval_split=8,
        eval_steps=10,
        logging_steps=5,
        learning_rate=3e-3,
        compare_count=0,
        report_to="tensorboard",
    )
    result = trainer.train(write_pairs(tmp_path / "pairs.jsonl", 48), steps=20, output_dir=tmp_path / "run")
    rewards = [e for e in events if e.kind == "rewards"]
    evals = [e for e in rewards if e.split == "eval"]
    assert [e.step for e in evals] == [10, 20] and evals[-1].pairs == 8
    assert evals[-1].accuracy > 0.9 and evals[-1].margin > 0 and evals[-1].loss < math.log(2)
    assert [e for e in rewards if e.split == "train"][0].loss == pytest.approx(
        math.log(2), abs=1e-5
    )  # policy = reference
    saved = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "rewards" for e in saved) == len(rewards)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(result.run_dir / "tensorboard"))
    board.Reload()
    assert [(s.step, round(s.value, 5)) for s in board.Scalars("eval/rewards/accuracy")] == [
        (e.step, round(e.accuracy, 5)) for e in evals
    ]
    assert len(board.Scalars("train/rewards/margin")) == len(rewards) - len(evals)
    assert (result.adapter_path / "adapter_model.safetensors").is_file()
    # The DPO adapter, a LoRA adapter like any other, exports to a GGUF that llama.cpp verifies.
    [path] = trainer.export("gguf", quantization=["f16"])
    verification = json.loads(path.with_suffix(".report.json").read_text())["verification"]
    assert verification["passed"], verification


def test_dpo_resume_is_exact(tmp_path):
    options = dict(
        objective="dpo",
        save_steps=3,
        logging_steps=1,
        batch_size=4,
        grad_accum=2,
        learning_rate=3e-3,
        compare_count=0,
    )
    data = write_pairs(tmp_path / "pairs.jsonl", 24)
    straight = Trainer("tiny", **options).train(data, steps=6, output_dir=tmp_path / "straight")

    def stop_after_step_3(event):
        if event.kind == "step" and event.step == 3:
            interrupted.control.stop()

    interrupted = Trainer("tiny", on_event=stop_after_step_3, **options)
    assert interrupted.train(data, steps=6, output_dir=tmp_path / "resumed").stopped_early
    resumed = Trainer.from_run(tmp_path / "resumed").resume()
    assert resumed.steps == 6 and resumed.final_loss == pytest.approx(straight.final_loss, abs=1e-6)
    a = load_file(str(straight.adapter_path / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter_path / "adapter_model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_full_fine_tuning_dpo_precomputes_its_reference_from_the_starting_weights(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", 8)
    planned = {c.name: c for c in Trainer("tiny", objective="dpo", method="full").plan(data).choices}
    assert planned["dpo_reference"].value == "starting weights, precomputed"
    assert "so no second copy of the model is held" in planned["dpo_reference"].reason
    result = Trainer("tiny", objective="dpo", method="full", batch_size=4, compare_count=0).train(
        data, steps=2, output_dir=tmp_path / "run"
    )
    assert result.first_loss == pytest.approx(
        math.log(2), abs=1e-5
    )  # π = π_ref before the first update: no copy needed
    with pytest.raises(ConfigError, match="which switching the adapter off cannot give"):
        Trainer("tiny", objective="dpo", method="full", precompute_reference="off", compare_count=0).train(
            data, steps=1, output_dir=tmp_path / "off"
        )
    assert not (tmp_path / "off").exists()  # the plan refuses it before any run directory


def test_bad_pairs_are_named_by_file_and_row(tmp_path, capsys, tiny_models):
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": "Hi?", "chosen": "Arr, hello!", "rejected": "Hello."},
        {"prompt": "Bye?", "chosen": "Farewell.", "rejected": "Farewell."},
    ]
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
        + '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
    )
    tokenizer = load_chat_tokenizer(tiny_models["tiny"])
    report = prepare_data(
        DataSpec([str(path)], format="auto", objective="dpo", dedupe=False), tokenizer, 2048, use_cache=False
    ).report
    assert sorted(str(row) for row in report.bad_rows) == [
        f"{path}:2: 'chosen' and 'rejected' are the same reply",
        f"{path}:3: mixed formats: this row is messages but the file's first row is preference",
    ]
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
    )
    with pytest.raises(DataError, match=f"{chat}:1: row is messages, not a preference pair"):
        prepare_data(
            DataSpec([str(chat)], objective="orpo", on_bad_row="error"), tokenizer, 2048, use_cache=False
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(
        [
            "train",
            "--data",
            str(path),
            "--objective",
            "dpo",
            "--on-bad-row",
            "error",
            "--output",
            str(tmp_path / "run"),
        ]
    )
    error = capsys.readouterr().err.splitlines()
    assert (
        code == 2
        and error[0] == f"error: {path}:2: 'chosen' and 'rejected' are the same reply"
        and "Traceback" not in "".join(error)
    )
    assert not (tmp_path / "run").exists()
    assert main(["train", "--objective", "dpo", "--beta", "0", "--output", str(tmp_path / "run")]) == 2
    assert "dpo_beta must be positive" in capsys.readouterr().err


def test_multi_run_mixes_sft_and_dpo_runs(tmp_path):
    chats = tmp_path / "chats.jsonl"
    chats.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"Name colour {i}."},
                        {"role": "assistant", "content": f"Colour {i} is red."},
                    ]
                }
            )
            + "\n"
            for i in range(16)
        )
    )
    pairs = write_pairs(tmp_path / "pairs.jsonl", 16)
    events = []
    result = Trainer(
        "tiny", on_event=events.append, batch_size=4, logging_steps=1, compare_count=0
    ).multi_run(
        datasets=[chats, pairs],
        objectives=["sft", "dpo"],
        steps_per_run=2,
        eval_split=4,
        output_dir=tmp_path / "multi",
    )
    assert result.completed_runs == 2 and (result.adapter_path / "adapter_model.safetensors").is_file()
    rewards = [e for e in events if e.kind == "rewards"]
    assert rewards and all(e.pairs > 0 for e in rewards)  # only the second run trains on pairs
    steps = [e for e in events if e.kind == "step"]
    assert steps[2].step == 1 and steps[2].loss == pytest.approx(
        math.log(2), abs=1e-5
    )  # the reference is the model run 2 starts from
    assert rewards[0].chosen == pytest.approx(0, abs=1e-6) and rewards[0].rejected == pytest.approx(
        0, abs=1e-6
    )
    matrix = result.matrix  # both tasks held out, each measured as an SFT loss (pairs: the chosen replies)
    assert len(matrix) == 2 and all(len(row) == 2 and all(math.isfinite(x) for x in row) for row in matrix)
    with pytest.raises(ConfigError, match="do not match the 2 task"):
        Trainer("tiny").multi_run(
            datasets=[chats, pairs], objectives=["dpo"], steps_per_run=1, output_dir=tmp_path / "bad"
        )


def test_out_of_memory_halves_the_pairs_per_micro_batch_and_keeps_the_result(tmp_path, monkeypatch):
    from backprop_engine.train import preference

    data = write_pairs(tmp_path / "pairs.jsonl", 16)
    options = {
        "objective": "dpo",
        "batch_size": 4,
        "logging_steps": 1,
        "compare_count": 0,
        "learning_rate": 3e-3,
    }
    reference = Trainer("tiny", **options).train(data, steps=4, output_dir=tmp_path / "a")
    real = preference.sequence_logps

    def sequence_logps(model, batch):  # at most 2 pairs (4 rows) fit, in training and in the reference pass
        if batch.input_ids.size(0) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(model, batch)

    monkeypatch.setattr(preference, "sequence_logps", sequence_logps)
    events = []
    result = Trainer("tiny", on_event=events.append, **options).train(
        data, steps=4, output_dir=tmp_path / "b"
    )
    warnings = [e.message for e in events if e.kind == "warning" and "out of memory" in e.message]
    assert warnings == [
        "out of memory at micro-batch 4: retrying with micro-batch 2 × 2 accumulation (same effective batch)"
    ]
    assert result.final_loss == pytest.approx(reference.final_loss, abs=1e-5)


def test_inspect_shows_both_sides_truncated_from_the_prompts_start(capsys):
    path = FIXTURES / "preference_conversations.jsonl"
    assert (
        main(
            [
                "data",
                "inspect",
                str(path),
                "--objective",
                "dpo",
                "--samples",
                "1",
                "--max-seq-len",
                "40",
                "--no-shuffle",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    chosen, rejected = out.split("(preference chosen)")[1].split("(preference rejected)")
    assert (
        "⟦Blackbeard, the terror o' the seas!<|im_end|>\n⟧" in chosen
        and "⟦Mickey Mouse.<|im_end|>\n⟧" in rejected
    )
    assert "max_seq_len 40 as set; 2 rows longer" in out
    long = main(
        [
            "data",
            "inspect",
            str(path),
            "--objective",
            "dpo",
            "--samples",
            "2",
            "--max-seq-len",
            "40",
            "--no-shuffle",
        ]
    )
    second = capsys.readouterr().out.split(":2 (preference chosen)")[1]
    assert (
        long == 0 and "Ye be a ship's cook" not in second and "⟦Aye, and ye'll like it, arr!" in second
    )  # the prompt lost its start
    assert "⟦Salted pork." not in second  # an assistant turn inside the prompt is never trained
