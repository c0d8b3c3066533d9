"""Resuming a run from its newest checkpoint: the same result as a run that never stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from backprop_engine import Trainer


def test_resume_continues_exactly_where_the_checkpoint_left_off(tmp_path):
    options = dict(save_steps=3, logging_steps=1, batch_size=4, grad_accum=2)
    straight = Trainer("tiny", **options).train("sample", steps=8, output_dir=tmp_path / "straight")

    def stop_after_step_4(event):
        if event.kind == "step" and event.step == 4:
            interrupted.control.stop()

    interrupted = Trainer("tiny", on_event=stop_after_step_4, **options)
    assert interrupted.train("sample", steps=8, output_dir=tmp_path / "resumed").stopped_early
    events = []
    resumed = Trainer.from_run(
        tmp_path / "resumed", on_event=lambda e: e.kind != "progress" and events.append(e)
    ).resume()
    assert events[0].kind == "run_started" and ("resumed", 4) in [
        (e.kind, getattr(e, "step", None)) for e in events
    ]
    assert [e.step for e in events if e.kind == "step"][0] == 5  # from the checkpoint saved when it stopped
    assert resumed.steps == 8 and not resumed.stopped_early
    assert resumed.final_loss == pytest.approx(straight.final_loss, abs=1e-6)
    a = load_file(str(straight.adapter_path / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter_path / "adapter_model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    state = json.loads(
        (tmp_path / "resumed" / "checkpoints" / "step-000006" / "trainer_state.json").read_text()
    )
    assert (
        state["loop"]["step"] == 6
        and not list((tmp_path / "resumed").rglob("*.bin"))
        and not list((tmp_path / "resumed").rglob("*.pt"))
    )


def test_a_killed_headless_run_resumes_from_the_command_line(tmp_path):
    backprop = str(Path(sys.executable).with_name("backprop"))
    run = tmp_path / "run"
    process = subprocess.Popen(
        [backprop, "train", "--steps", "120", "--save-steps", "5", "--output", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "step-000010" / "trainer_state.json").is_file():
        assert process.poll() is None and time.monotonic() < deadline, (
            "the run ended before its second checkpoint"
        )
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = subprocess.run(
        [backprop, "train", "--resume", str(run)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "finished" and events[-1]["steps"] == 120
    assert any(e["event"] == "resumed" and e["step"] >= 10 for e in events)


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    from backprop_engine.cli import main

    Trainer("tiny", save_steps=100).train("sample", steps=2, output_dir=tmp_path / "short")
    assert main(["train", "--resume", str(tmp_path / "short")]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    backprop = str(Path(sys.executable).with_name("backprop"))
    run = tmp_path / "run"
    process = subprocess.Popen(
        [backprop, "train", "--no-tui", "--steps", "500", "--output", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while '"event": "step"' not in (
        (run / "events.jsonl").read_text() if (run / "events.jsonl").exists() else ""
    ):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert f"backprop train --resume {run}" in err and "Traceback" not in err
    checkpoints = list((run / "checkpoints").glob("step-*/trainer_state.json"))
    assert checkpoints and (run / "adapter" / "adapter_model.safetensors").is_file()
