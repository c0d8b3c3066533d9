"""Run ownership and the control channel, with real training processes: pause, resume, checkpoint and stop
from another process, exact status after kill -9, permissions, time-based checkpoints."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backprop_engine.channel import live_owner, send_control
from backprop_engine.cli import main
from backprop_engine.errors import ConfigError
from backprop_engine.runs import read_events, summarize_run


def start_headless(run: Path, steps: int = 3000, *extra: str) -> subprocess.Popen:
    """`backprop train --no-tui` in a process of its own, as a user would start it under nohup."""
    command = [
        sys.executable,
        "-m",
        "backprop_engine.cli",
        "train",
        "--no-tui",
        "--model",
        "tiny",
        "--steps",
        str(steps),
        "--output",
        str(run),
        "--batch-size",
        "4",
        *extra,
    ]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def wait_until(condition, timeout: float = 180.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kinds(run: Path) -> list[str]:
    return [e["event"] for e in read_events(run / "events.jsonl")]


def first_step_logged(run: Path) -> bool:
    return "step" in kinds(run)


def test_another_process_pauses_resumes_checkpoints_and_stops_a_headless_run(tmp_path, capsys):
    run = tmp_path / "run"
    process = start_headless(run)
    try:
        wait_until(lambda: first_step_logged(run), what="first step")
        owner = live_owner(run)
        assert owner is not None and owner.pid == process.pid
        assert summarize_run(run).status == "running" and summarize_run(run).pid == process.pid

        assert main(["control", str(run), "pause"]) == 0
        wait_until(lambda: summarize_run(run).status == "paused", what="paused status")
        assert "taken by the training process" in capsys.readouterr().out
        steps_while_paused = kinds(run).count("step")
        time.sleep(1.0)
        assert kinds(run).count("step") == steps_while_paused  # nothing trains while paused

        for action in ("resume", "checkpoint", "stop"):
            assert main(["control", str(run), action]) == 0
        assert process.wait(timeout=120) == 0
    finally:
        process.kill()
    events = read_events(run / "events.jsonl")
    controls = [e["action"] for e in events if e["event"] == "control"]
    assert controls == ["pause", "resume", "checkpoint", "stop"]  # each applied once, in order
    order = [
        e["event"] for e in events if e["event"] in ("control", "paused", "resumed", "checkpoint", "finished")
    ]
    assert (
        order.index("paused") < order.index("resumed") < order.index("checkpoint") < order.index("finished")
    )
    assert events[-1]["event"] == "finished" and events[-1]["stopped_early"]
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    summary = summarize_run(run)
    assert summary.status == "stopped" and summary.pid is None and live_owner(run) is None


def test_requests_to_a_finished_foreign_or_missing_run_are_one_line_and_exit_2(trained_run, tmp_path, capsys):
    finished = trained_run("tiny").run.path
    assert main(["control", str(finished), "pause"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: {finished} is not running: no process trains it now" and err[1].startswith(
        "hint: continue it"
    )
    assert main(["control", str(tmp_path), "stop"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    if os.getuid() == 0:  # another user's run: make one by handing a copy to `nobody`
        foreign = tmp_path / "foreign"
        shutil.copytree(finished, foreign)
        os.chown(foreign, 65534, 65534)
        assert main(["control", str(foreign), "stop"]) == 2
        assert "belongs to another user" in capsys.readouterr().err


def test_kill_9_is_interrupted_at_once_with_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    process = start_headless(run, 3000, "--save-steps", "2")
    try:
        wait_until(lambda: "checkpoint" in kinds(run), what="a checkpoint")
        assert summarize_run(run).status == "running"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed = time.monotonic()
    summary = summarize_run(run)  # no waiting: the kernel released the lock with the process
    assert time.monotonic() - killed < 1.0
    assert summary.status == "interrupted" and summary.pid is None
    assert summary.checkpoint_step is not None and summary.checkpoint_step % 2 == 0
    assert (
        summary.status_text()
        == f"interrupted at step {summary.step} (checkpoint at step {summary.checkpoint_step})"
    )
    assert summary.final_loss is None and summary.loss_text().endswith("(last logged)")


def test_run_and_channel_are_private_and_a_live_run_cannot_be_trained_twice(tmp_path):
    from backprop_engine import Trainer

    run = tmp_path / "run"
    process = start_headless(run)
    try:
        wait_until(lambda: first_step_logged(run), what="first step")
        assert (run.stat().st_mode & 0o777) == 0o700
        assert ((run / "control").stat().st_mode & 0o777) == 0o700
        assert ((run / "owner.json").stat().st_mode & 0o777) == 0o600
        owner = json.loads((run / "owner.json").read_text())
        assert owner["pid"] == process.pid and owner["uid"] == os.getuid()
        with pytest.raises(ConfigError, match="is being trained already"):
            Trainer.from_run(run).resume()
        send_control(run, "stop")
        assert process.wait(timeout=120) == 0
    finally:
        process.kill()


def test_time_based_checkpoints_appear_on_schedule_and_resume_exactly(tmp_path):
    from backprop_engine import Trainer
    from backprop_engine.events import CheckpointSaved, StepMetrics

    steps = 14
    straight = Trainer("tiny", batch_size=4, logging_steps=1).train(
        "sample", steps=steps, output_dir=tmp_path / "straight"
    )
    saved: list[tuple[int, float]] = []

    def slow_steps(event) -> None:  # at least 0.35 s per step: a 1-second schedule fires every few steps
        if isinstance(event, StepMetrics):
            time.sleep(0.35)
        if isinstance(event, CheckpointSaved):
            saved.append((event.step, time.perf_counter()))

    run = tmp_path / "timed"
    Trainer(
        "tiny", batch_size=4, logging_steps=1, checkpoint_every_s=1, save_total_limit=0, on_event=slow_steps
    ).train("sample", steps=steps, output_dir=run)
    timed = [(step, at) for step, at in saved if step != steps // 2]  # the midpoint one is not time-based
    assert len(timed) >= 3 and timed[-1][0] < steps, saved  # none at the last step: the adapter is saved then
    assert all(
        later - earlier >= 0.5 for (_, earlier), (_, later) in itertools.pairwise(timed)
    )  # on the 1 s schedule (± a step)
    # Resume from the first time-based checkpoint alone, as after a crash just after it was written.
    first = timed[0][0]
    for checkpoint in (run / "checkpoints").iterdir():
        if checkpoint.name != f"step-{first:06d}":
            shutil.rmtree(checkpoint)
    (run / "adapter").rename(run / "adapter.done")
    resumed = Trainer.from_run(run).resume()
    assert resumed.final_loss == pytest.approx(straight.final_loss, abs=1e-6)
