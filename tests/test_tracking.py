"""Experiment tracking (--report-to): a real TensorBoard event file from a real tiny run, read back with
TensorBoard's own reader; a real offline wandb run; names validated; a missing tracker refused with the command
that installs it."""

from __future__ import annotations

import json
import sys

import pytest

from backprop_engine.config import TrainConfig
from backprop_engine.errors import ConfigError
from backprop_engine.tracking import parse_report_to


def test_tensorboard_scalars_and_hyperparameters_match_the_run(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from backprop_engine import Trainer

    trainer = Trainer(
        "tiny", report_to="tensorboard", logging_steps=1, eval_split=0.2, eval_steps=2, lora_rank=8
    )
    result = trainer.train("sample", steps=4, output_dir=tmp_path / "run")
    events = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    evals = [e for e in events if e["event"] == "eval"]
    assert len(steps) == 4 and len(evals) == 2

    board = EventAccumulator(str(result.run_dir / "tensorboard"))
    board.Reload()
    for tag, field in [
        ("train/loss", "loss"),
        ("train/learning_rate", "learning_rate"),
        ("train/grad_norm", "grad_norm"),
        ("train/tokens_per_second", "tokens_per_second"),
        ("train/memory_mb", "memory_mb"),
    ]:
        scalars = board.Scalars(tag)
        assert [s.step for s in scalars] == [e["step"] for e in steps], tag
        assert [s.value for s in scalars] == pytest.approx([e[field] for e in steps], rel=1e-6), (
            tag
        )  # stored as float32
    eval_scalars = board.Scalars("eval/loss")
    assert [s.step for s in eval_scalars] == [e["step"] for e in evals]
    assert [s.value for s in eval_scalars] == pytest.approx([e["loss"] for e in evals], rel=1e-6)
    start = plugin_data_pb2.HParamsPluginData.FromString(
        board.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    )
    hparams = start.session_start_info.hparams
    assert hparams["lora_rank"].number_value == 8 and hparams["model"].string_value == "tiny"
    assert hparams["lora_targets"].string_value.startswith("q_proj,")


def test_wandb_logs_an_offline_run_under_the_run_directory(tmp_path, monkeypatch):
    from backprop_engine import Trainer

    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is our default, not the environment's
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = Trainer("tiny", report_to="wandb", logging_steps=1).train(
        "sample", steps=3, output_dir=tmp_path / "run"
    )
    (log,) = (result.run_dir / "wandb").glob(
        "offline-run-*/run-*.wandb"
    )  # offline: nothing left this machine
    recorded = log.read_bytes()
    events = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    losses = [event["loss"] for event in events if event["event"] == "step"]
    assert len(losses) == 3 and b"train/loss" in recorded
    assert all(
        json.dumps(loss).encode() in recorded for loss in losses
    )  # history values are stored as JSON text


def test_report_to_accepts_a_list_or_a_comma_string():
    assert TrainConfig().report_to == [] and TrainConfig(report_to="none").report_to == []
    assert TrainConfig(report_to=" TensorBoard, tensorboard").report_to == ["tensorboard"]
    assert parse_report_to(["tensorboard"]) == ["tensorboard"]
    with pytest.raises(ConfigError, match="unknown report_to mlflow") as error:
        TrainConfig(report_to="tensorboard,mlflow")
    assert error.value.hint == "use none, or one or more of: tensorboard, wandb"
    with pytest.raises(ConfigError, match="report_to must be a list of names or a comma-separated string"):
        TrainConfig(report_to=3)


def test_a_tracker_that_is_not_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # absent even where someone has installed it
    with pytest.raises(ConfigError, match="report_to wandb: the wandb package is not installed") as error:
        TrainConfig(report_to="wandb")
    assert error.value.hint == "pip install wandb"


def test_cli_report_to_errors_exit_2_before_anything_is_written(tmp_path, capsys, monkeypatch):
    from backprop_engine.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)
    assert main(["train", "--steps", "2", "--report-to", "wandb", "--output", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: report_to wandb: the wandb package is not installed",
        "hint: pip install wandb",
    ]
    assert (
        main(
            ["train", "--steps", "2", "--report-to", "tensorboard,mlflow", "--output", str(tmp_path / "run")]
        )
        == 2
    )
    assert "error: unknown report_to mlflow" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
