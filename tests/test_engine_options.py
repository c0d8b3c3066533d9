"""Full fine-tuning, checkpoints (keep the newest K, one on every early stop), early stopping, learning-rate
schedules and the bad-input checks that run before anything is written."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from backprop_engine import Trainer
from backprop_engine.cli import main
from backprop_engine.config import TrainConfig
from backprop_engine.train.loop import lr_factor


def test_full_fine_tuning_trains_every_weight_and_exports(tmp_path):
    events = []
    trainer = Trainer("tiny", method="full", on_event=events.append)
    result = trainer.train("sample", steps=12, output_dir=tmp_path / "run")
    started = next(e for e in events if e.kind == "run_started")
    assert started.trainable_params == started.total_params
    assert result.final_loss < result.first_loss - 0.5
    merged = tmp_path / "run" / "merged"
    assert result.adapter_path == merged and (merged / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "adapter").exists()
    gguf = trainer.export("gguf", quantization="f16")
    report = json.loads(gguf.with_suffix(".report.json").read_text())
    assert report["verification"]["passed"]
    assert isinstance(trainer.chat("hello", max_tokens=8), str)


def test_full_fine_tuning_resumes_exactly(tmp_path):
    options = dict(method="full", save_steps=2, batch_size=4, logging_steps=1)
    straight = Trainer("tiny", **options).train("sample", steps=5, output_dir=tmp_path / "straight")

    def stop_after_step_3(event):
        if event.kind == "step" and event.step == 3:
            interrupted.control.stop()

    interrupted = Trainer("tiny", on_event=stop_after_step_3, **options)
    assert interrupted.train("sample", steps=5, output_dir=tmp_path / "resumed").stopped_early
    resumed = Trainer.from_run(tmp_path / "resumed").resume()
    assert resumed.final_loss == pytest.approx(straight.final_loss, abs=1e-6)
    a = load_file(str(straight.adapter_path / "model.safetensors"))
    b = load_file(str(resumed.adapter_path / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_only_the_newest_checkpoints_are_kept_and_a_stop_saves_one(tmp_path):
    def stop_at_7(event):
        if event.kind == "step" and event.step == 7:
            trainer.control.stop()

    trainer = Trainer("tiny", save_steps=2, save_total_limit=2, logging_steps=1, on_event=stop_at_7)
    result = trainer.train("sample", steps=20, output_dir=tmp_path / "run")
    assert result.stopped_early and result.steps == 7
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["step-000006", "step-000007"]  # 2 and 4 pruned; 7 saved because the run stopped there


def test_early_stopping_stops_when_eval_loss_stalls(tmp_path):
    events = []
    trainer = Trainer(
        "tiny",
        eval_split=0.1,
        eval_steps=2,
        early_stopping_patience=2,
        early_stopping_min_delta=100.0,
        on_event=events.append,
    )
    result = trainer.train("sample", steps=40, output_dir=tmp_path / "run")
    # The first eval sets the best; no later eval can beat it by 100, so the third eval (step 6) stops the run.
    assert result.stopped_early and result.steps == 6
    assert any(e.kind == "warning" and "early stopping at step 6" in e.message for e in events)
    assert (tmp_path / "run" / "checkpoints" / "step-000006").is_dir()


def test_early_stopping_needs_periodic_evaluation():
    with pytest.raises(Exception, match="early stopping needs periodic evaluation"):
        TrainConfig(early_stopping_patience=2)


@pytest.mark.parametrize(("scheduler", "expected"), [("cosine", 0.55), ("linear", 0.55), ("constant", 1.0)])
def test_learning_rate_schedules(scheduler, expected):
    config = TrainConfig(steps=21, warmup_steps=1, lr_scheduler=scheduler)
    assert lr_factor(0, config) == pytest.approx(0.5)  # warmup
    assert lr_factor(11, config) == pytest.approx(expected)  # halfway through the decay
    assert lr_factor(21, config) == pytest.approx(1.0 if scheduler == "constant" else 0.1)


def _remote_code_model(tmp_path, tiny_models):
    import shutil

    folder = tmp_path / "custom"
    shutil.copytree(tiny_models["tiny"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_model_with_remote_code_is_refused_unless_trusted(tmp_path, tiny_models, capsys):
    from backprop_engine.presets import resolve_model

    folder = _remote_code_model(tmp_path, tiny_models)
    assert main(["train", "--model", str(folder), "--steps", "2", "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "needs trust_remote_code" in err and "--trust-remote-code" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert resolve_model(str(folder), trust_remote_code=True).path == folder


def test_qlora_without_bitsandbytes_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    assert main(["train", "--method", "qlora", "--steps", "2", "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "QLoRA needs bitsandbytes" in err and "--method lora" in err
    assert not (tmp_path / "run").exists()


def test_resume_from_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep me" and sorted(
        p.name for p in tmp_path.iterdir()
    ) == ["notes.txt"]


@pytest.mark.parametrize(
    ("flags", "rule"),
    [
        (["--steps", "0"], "must be a positive integer"),
        (["--lora-rank", "0"], "must be between 1 and 1024"),
        (["--batch-size", "0"], "must be a positive integer"),
        (["--grad-accum", "-1"], "must be a positive integer"),
    ],
)
def test_impossible_numbers_are_refused(tmp_path, capsys, flags, rule):
    assert main(["train", *flags, "--output", str(tmp_path / "run")]) == 2
    assert rule in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
