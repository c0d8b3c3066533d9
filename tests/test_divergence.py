"""Training cannot silently diverge: a non-finite loss skips the step (the adapter stays as it was), K in a
row stop the run with a checkpoint of the last good state, fp16 uses dynamic loss scaling, and a loss spike
is a warning. NaN is injected for real, by a forward hook on the tiny model's final norm."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from backprop_engine.config import TrainConfig
from backprop_engine.errors import TrainingError
from backprop_engine.events import EventBus, StepSkipped, WarningEvent
from backprop_engine.presets import resolve_model
from backprop_engine.rundir import RunDir
from backprop_engine.train import guard as guard_module
from backprop_engine.train.guard import DivergenceGuard
from backprop_engine.train.loop import prepare_dataset, run_training


def nan_on(steps: set[int]):
    """An adapter_init that makes the last hidden states (so the logits) NaN in the training forward passes of
    ``steps`` (1-based)."""
    calls = {"n": 0}

    def init(peft_model) -> None:
        def poison(module, inputs, output):
            if not module.training:
                return None  # the packing probe and evaluation
            calls["n"] += 1
            return output * float("nan") if calls["n"] in steps else None

        # The decoder's final norm: its output feeds the output layer on either loss path (train/loss.py).
        peft_model.get_base_model().get_decoder().norm.register_forward_hook(poison)

    return init


def train(tmp_path, adapter_init=None, **settings):
    defaults = dict(batch_size=4, logging_steps=1, save_steps=1, save_total_limit=0, max_samples=40)
    config = TrainConfig(model="tiny", data="sample", **(defaults | settings))
    model = resolve_model("tiny")
    data = prepare_dataset(config, model)
    events = []
    run = RunDir.create(tmp_path / "run")
    try:
        result = run_training(
            config, model, data.train, run, EventBus([events.append]), adapter_init=adapter_init
        )
    except TrainingError as error:
        return run, events, error
    return run, events, result


def adapter(run, step: int) -> dict:
    return load_file(str(run.checkpoints / f"step-{step:06d}" / "adapter_model.safetensors"))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_nan_step_is_skipped_and_leaves_the_adapter_untouched(tmp_path):
    run, events, result = train(tmp_path, nan_on({3}), steps=5)
    assert not isinstance(result, TrainingError) and result.steps == 5 and math.isfinite(result.final_loss)
    skipped = [e for e in events if isinstance(e, StepSkipped)]
    assert [(e.step, e.in_a_row, e.limit) for e in skipped] == [
        (3, 1, 5)
    ] and "loss is not finite" in skipped[0].reason
    assert 3 not in [e.step for e in events if e.kind == "step"]  # no NaN on the chart
    assert same(adapter(run, 3), adapter(run, 2))  # the skipped step changed nothing
    assert not same(adapter(run, 4), adapter(run, 3))  # the next one trains again


def test_k_non_finite_steps_in_a_row_stop_with_the_last_good_checkpoint(tmp_path):
    run, events, error = train(
        tmp_path, nan_on({3, 4, 5}), steps=8, max_nonfinite_steps=3, learning_rate=3e-3
    )
    assert isinstance(error, TrainingError)
    assert "diverged" in error.message and "steps 3-5" in error.message and "after step 2" in error.message
    assert "--learning-rate 0.0008" in error.hint and "3e-03" not in error.hint and "0.003" in error.hint
    assert [e.in_a_row for e in events if isinstance(e, StepSkipped)] == [1, 2, 3]
    assert str(run.checkpoints / "step-000005") in error.message
    assert same(adapter(run, 5), adapter(run, 2))
    assert not (run.checkpoints / "step-000006").exists() and not run.adapter.exists()


def test_the_cli_prints_the_divergence_as_one_line_and_exits_2(tmp_path, capsys, monkeypatch):
    from backprop_engine.cli import main
    from backprop_engine.train import loop

    real = loop.summed_loss
    monkeypatch.setattr(loop, "summed_loss", lambda model, batch: real(model, batch) * float("nan"))
    code = main(
        [
            "train",
            "--steps",
            "6",
            "--max-nonfinite-steps",
            "2",
            "--max-samples",
            "24",
            "--output",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert (
        code == 2
        and "error: training diverged" in err
        and "hint: lower the learning rate" in err
        and "Traceback" not in err
    )


def test_fp16_trains_with_dynamic_loss_scaling_on_cpu(tmp_path, monkeypatch):
    # A large initial scale overflows fp16: the scaler halves it, and those skips are not divergence.
    monkeypatch.setattr(guard_module, "FP16_INIT_SCALE", 2.0**23)  # overflows here; 2^20 mostly does not
    run, events, result = train(
        tmp_path,
        steps=12,
        precision="fp16",
        max_nonfinite_steps=2,
        save_steps=0,
        batch_size=2,
        max_seq_len=64,
    )
    assert not isinstance(result, TrainingError), result
    overflows = [e for e in events if isinstance(e, StepSkipped)]
    assert overflows and all(e.in_a_row == 0 and "fp16 gradient overflow" in e.reason for e in overflows)
    scales = [float(e.reason.split("loss scale ")[1].split(":")[0]) for e in overflows]
    assert scales == sorted(scales, reverse=True) and scales[0] == pytest.approx(2.0**23, rel=1e-5)
    trained = [e for e in events if e.kind == "step"]
    assert trained and trained[-1].loss < trained[0].loss


def test_no_scaler_for_bf16_or_fp32(tmp_path):
    from backprop_engine.train.backend import build_trainable_model

    model = resolve_model("tiny")
    for precision, wanted in (("fp32", False), ("bf16", False), ("fp16", True)):
        built = build_trainable_model(TrainConfig(precision=precision), model.path, "cpu")
        assert (guard_module.grad_scaler(built.model, "cpu") is not None) is wanted, precision


def test_guard_rules_without_a_model():
    events = []
    guard = DivergenceGuard(3, 3.0, 2e-4, EventBus([events.append]))
    assert not guard.accept(
        1, 2.0, float("inf"), scale=1024.0
    )  # fp16 overflow at a large scale: the scaler's job
    assert guard.in_a_row == 0 and events[-1].in_a_row == 0
    assert not guard.accept(2, 2.0, float("inf"), scale=1.0)  # at scale 1 even unscaled gradients overflow
    assert guard.in_a_row == 1
    assert guard.accept(3, 2.0, 1.0) and guard.in_a_row == 0
    for step, loss in enumerate([2.0, 2.1, 1.9, 2.0, 1.8], start=4):
        assert guard.accept(step, loss, 1.0)
    assert not any(isinstance(e, WarningEvent) for e in events)
    assert guard.accept(9, 7.5, 1.0)  # applied, but reported: 3.75× the running median of 2.0
    spike = events[-1]
    assert (
        isinstance(spike, WarningEvent)
        and "loss spike at step 9" in spike.message
        and "3.8×" in spike.message
    )


@pytest.mark.parametrize("value", [0, 1.0])
def test_bad_guard_settings_are_config_errors(value):
    from backprop_engine.errors import ConfigError

    with pytest.raises(ConfigError):
        TrainConfig(max_nonfinite_steps=value) if value == 0 else TrainConfig(loss_spike_factor=value)


def test_an_fp16_run_resumes_with_the_loss_scale_it_had_found(tmp_path, monkeypatch):
    # Restarting at the initial scale would overflow (and skip steps) again after the resume, so the adapter would
    # differ from the straight run's; the checkpoint carries the scale.
    monkeypatch.setattr(guard_module, "FP16_INIT_SCALE", 2.0**23)
    from backprop_engine import Trainer

    options = dict(
        precision="fp16", save_steps=0, logging_steps=1, batch_size=2, max_seq_len=64, max_samples=40
    )
    straight = Trainer("tiny", **options).train("sample", steps=8, output_dir=tmp_path / "straight")

    def stop_after_step_4(event):
        if event.kind == "step" and event.step >= 4:
            interrupted.control.stop()

    interrupted = Trainer("tiny", on_event=stop_after_step_4, **options)
    assert interrupted.train("sample", steps=8, output_dir=tmp_path / "resumed").stopped_early
    events = []
    resumed = Trainer.from_run(tmp_path / "resumed", on_event=events.append).resume()
    assert not [e for e in events if isinstance(e, StepSkipped)]  # the found scale does not overflow again
    a = load_file(str(straight.adapter_path / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter_path / "adapter_model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
