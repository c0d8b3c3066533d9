"""Smart defaults: Trainer.plan / `backprop train --dry-run` choose every open setting with a reason, the
user's values win, and train() runs with exactly the planned configuration."""

from __future__ import annotations

import json
import math

import pytest

from backprop_engine import Trainer
from backprop_engine.cli import main
from backprop_engine.config import TrainConfig
from backprop_engine.defaults import MAX_STEPS, MIN_UPDATES, DataSize, held_out_rows, plan_training
from backprop_engine.hardware import HardwareReading
from backprop_engine.presets import PRESETS


def choices(plan) -> dict:
    return {c.name: c for c in plan.choices}


def test_plan_explains_every_choice_and_keeps_what_the_user_set():
    plan = Trainer("tiny", lora_rank=8, steps=30).plan("sample")
    picked = choices(plan)
    assert {
        "max_seq_len",
        "method",
        "precision",
        "lora_rank",
        "lora_alpha",
        "learning_rate",
        "batch_size",
        "grad_accum",
        "gradient_checkpointing",
        "steps",
        "warmup_steps",
        "packing",
    } <= set(picked)
    assert all(c.reason for c in plan.choices)
    assert picked["lora_rank"].by_user and plan.config.lora_rank == 8
    assert picked["steps"].by_user and plan.config.steps == 30
    assert picked["lora_alpha"].value == 16 and not picked["lora_alpha"].by_user  # 2 × the user's rank
    assert picked["precision"].value == "fp32" and "CPU" in picked["precision"].reason
    assert picked["warmup_steps"].value == max(1, round(0.05 * 30))
    assert "plan for tiny on cpu" in plan.describe() and "[you] set by you" in plan.describe()


def test_plan_leaves_the_trainer_as_it_was():
    trainer = Trainer("tiny", lora_rank=8)
    config, user_set = trainer.config, set(trainer.user_set)
    plan = trainer.plan("sample", steps=12)
    assert plan.config.steps == 12 and plan.config.data == "sample"
    assert trainer.config is config and trainer.user_set == user_set  # train() would change them, plan() not


def test_steps_come_from_the_data_size():
    plan = Trainer("tiny").plan("sample")
    picked = choices(plan)
    held_out = int(picked["eval_split"].value)
    assert held_out == 16 and "held out" in picked["eval_split"].reason  # 320 rows: 5 %
    assert picked["effective_batch"].reason.startswith("examples per optimizer step")
    examples = 320 - held_out
    assert f"over {examples:,} examples" in picked["steps"].reason
    assert plan.config.steps >= MIN_UPDATES


def small_plan(data: DataSize, **user):
    facts = PRESETS["qwen2.5-0.5b"].facts
    config = TrainConfig(model="qwen2.5-0.5b", **user)
    return plan_training(config, set(user), facts, data, HardwareReading(2, 0.0, 24_000.0, 20_000.0), "cpu")


def test_the_issue_14_dataset_gets_enough_updates():
    # 91 identity rows packed into 34 rows: the old plan was 13 steps of 8 packed rows (~22 examples each).
    held = held_out_rows(91)
    plan = small_plan(DataSize(34, 3_000, 320, examples=91 - held, held_out=held))
    picked = choices(plan)
    assert held == 4 and picked["eval_split"].value == 4.0
    assert (
        plan.config.batch_size * plan.config.grad_accum == 2
    )  # 2 packed rows ≈ 5 examples, near the target 4
    assert picked["effective_batch"].value == pytest.approx(2 * 87 / 34, abs=0.05)
    assert "4 for fewer than 200 examples" in picked["effective_batch"].reason
    assert plan.config.steps == MIN_UPDATES and "floor of 60 updates" in picked["steps"].reason
    assert "3 epochs would be only 51" in picked["steps"].reason


@pytest.mark.parametrize(
    ("examples", "per_step", "steps", "words"),
    [
        (14, 4, MIN_UPDATES, "floor"),  # a 16-row identity set, 2 rows held out
        (500, 8, math.ceil(3 * 500 / 8), "3 epoch(s)"),
        (5_000, 16, math.ceil(2 * 5_000 / 16), "2 epoch(s)"),
        (50_000, 32, math.ceil(50_000 / 32), "1 epoch(s)"),
        (1_000_000, 32, MAX_STEPS, "capped at 3,000 steps, 0.10 of one epoch"),
    ],
)
def test_batch_in_examples_floor_and_ceiling(examples, per_step, steps, words):
    plan = small_plan(
        DataSize(examples, examples * 50, 256, examples=examples)
    )  # unpacked: one example per row
    picked = choices(plan)
    assert plan.config.batch_size * plan.config.grad_accum == per_step
    assert plan.config.steps == steps and words in picked["steps"].reason


def test_held_out_rows_and_what_the_user_sets():
    assert [held_out_rows(n) for n in (5, 8, 16, 91, 1_000, 10_000)] == [0, 2, 2, 4, 50, 200]
    none = small_plan(DataSize(6, 600, 128, examples=6, held_out=0))
    assert "every row trains" in choices(none)["eval_split"].reason
    mine = small_plan(DataSize(500, 25_000, 256, examples=500), eval_split=0.2, batch_size=2, grad_accum=3)
    picked = choices(mine)
    assert picked["eval_split"].by_user and mine.config.eval_split == 0.2
    assert picked["effective_batch"].by_user and picked["effective_batch"].value == 6
    assert mine.config.steps == math.ceil(3 * 500 / 6)


@pytest.mark.parametrize(
    ("method", "rank", "expected_alpha", "expected_rate"),
    [("lora", 16, 32, 3e-3), ("dora", 16, 32, 3e-3), ("rslora", 64, 64, 7.5e-4), ("full", None, None, 1e-3)],
)
def test_learning_rate_and_alpha_follow_method_and_rank(method, rank, expected_alpha, expected_rate):
    options = {"method": method} | ({"lora_rank": rank} if rank else {})
    plan = Trainer("tiny", **options).plan("sample")
    assert plan.config.learning_rate == pytest.approx(expected_rate)
    if expected_alpha is None:
        assert "lora_rank" not in choices(plan)  # no adapter to size for full fine-tuning
    else:
        assert plan.config.lora_alpha == expected_alpha


def test_rank_grows_with_the_data_for_pretrained_models():
    facts = PRESETS["qwen2.5-0.5b"].facts
    machine = HardwareReading(2, 0.0, 24_000.0, 20_000.0)
    config = TrainConfig(model="qwen2.5-0.5b")
    small = plan_training(config, set(), facts, DataSize(500, 50_000, 512), machine, "cpu")
    large = plan_training(config, set(), facts, DataSize(50_000, 30_000_000, 512), machine, "cpu")
    assert (small.config.lora_rank, large.config.lora_rank) == (8, 32)
    assert small.config.learning_rate == pytest.approx(2e-4)


def test_tight_memory_shrinks_the_micro_batch_then_turns_on_checkpointing():
    facts = PRESETS["qwen2.5-1.5b"].facts
    config = TrainConfig(model="qwen2.5-1.5b")
    data = DataSize(1_500, 1_000_000, 1024)
    roomy = plan_training(config, set(), facts, data, HardwareReading(16, 0.0, 200_000.0, 190_000.0), "cpu")
    tight = plan_training(config, set(), facts, data, HardwareReading(16, 0.0, 16_000.0, 12_000.0), "cpu")
    assert roomy.config.batch_size == 8 and not roomy.config.gradient_checkpointing
    assert tight.config.batch_size * tight.config.grad_accum == 8
    assert tight.config.batch_size < 8 or tight.config.gradient_checkpointing


def test_train_runs_the_planned_configuration(tmp_path):
    events = []
    result = Trainer("tiny", on_event=events.append, batch_size=4).train(
        "sample", steps=4, output_dir=tmp_path / "run"
    )
    planned = next(e for e in events if e.kind == "run_planned")
    recorded = Trainer.from_run(result.run_dir).config
    by_name = {c["name"]: c for c in planned.choices}
    assert recorded.batch_size == 4 and by_name["batch_size"]["by_user"]
    assert recorded.warmup_steps == by_name["warmup_steps"]["value"] == 1
    assert recorded.max_seq_len == by_name["max_seq_len"]["value"] > 0
    logged = [
        json.loads(line)["event"] for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    ]
    assert logged[0] == "run_planned"


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    assert main(["train", "--dry-run", "--method", "dora", "--output", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "method" in out and "[you] set by you" in out and "learning_rate" in out
    assert not (tmp_path / "run").exists()
    assert main(["train", "--dry-run", "--json", "--steps", "7"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["event"] == "run_planned"
    assert {"name": "steps", "value": 7, "reason": "set by you", "by_user": True} in document["choices"]


def test_precision_and_backend_are_part_of_the_plan(tiny_models):
    import torch

    from backprop_engine.train.backend import build_trainable_model

    plan = Trainer("tiny", precision="bf16").plan("sample")
    picked = choices(plan)
    assert picked["precision"].by_user and plan.config.precision == "bf16"
    assert picked["backend"].value in ("transformers+peft", "unsloth") and picked["backend"].reason
    built = build_trainable_model(plan.config, tiny_models["tiny"], "cpu")
    assert built.model.get_input_embeddings().weight.dtype == torch.bfloat16
