"""Control channel benchmark: how long a request takes to act, and what a detached run costs.

1. Latency: a tiny run logs every step in a process of its own; this script sends pause/resume and
   checkpoint requests through the run's channel and reads back, from events.jsonl, when the trainer took
   each one (``control`` event) and when it acted (``paused`` / ``checkpoint``), in ms and in optimizer steps.
2. Cost: the same config trained headless (`backprop train --no-tui`, the baseline) and detached as the app
   starts it (backprop_engine.detach): wall time, CPU seconds, peak RSS, tokens/s.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/control.py [--requests 20] [--steps 300]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from backprop_engine.channel import live_owner, send_control
from backprop_engine.detach import LaunchSpec, launch
from backprop_engine.runs import read_events

LOGGING_EVERY_STEP = (
    "from backprop_engine import Trainer; import sys; "
    "Trainer('tiny', logging_steps=1, batch_size=4).train('sample', steps=100000, output_dir=sys.argv[1])"
)


def wait_for(condition, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError


def events_of(run: Path, kind: str) -> list[dict]:
    return [e for e in read_events(run / "events.jsonl") if e["event"] == kind]


def latency(requests: int, root: Path) -> None:
    run = root / "latency"
    process = subprocess.Popen(
        [sys.executable, "-c", LOGGING_EVERY_STEP, str(run)], stdout=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: len(events_of(run, "step")) >= 5)
        taken, acted, steps_between, step_seconds = [], [], [], []
        for index in range(requests):
            action, effect = ("pause", "paused") if index % 2 == 0 else ("checkpoint", "checkpoint")
            before = len(events_of(run, effect))
            sent_at = time.time()
            request = send_control(run, action)
            control = wait_for(lambda: [e for e in events_of(run, "control") if e["request_id"] == request])[
                0
            ]
            done = wait_for(lambda: events_of(run, effect)[before:])[0]
            steps = [e for e in events_of(run, "step") if sent_at <= e["time"] <= done["time"]]
            taken.append(control["time"] - control["sent"])
            acted.append(done["time"] - control["sent"])
            steps_between.append(len(steps))
            recent = events_of(run, "step")[-6:]
            step_seconds.append((recent[-1]["time"] - recent[0]["time"]) / max(1, len(recent) - 1))
            if action == "pause":
                time.sleep(0.2)
                send_control(run, "resume")
                wait_for(lambda: len(events_of(run, "resumed")) > index // 2)
                wait_for(lambda: events_of(run, "step")[-1]["time"] > time.time() - 0.5)
        send_control(run, "stop")
        process.wait(timeout=120)
    finally:
        process.kill()
    ms = lambda values: f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"  # noqa: E731
    print(
        f"latency over {requests} requests (pause and checkpoint alternately), tiny model, "
        f"{statistics.median(step_seconds) * 1000:.0f} ms per optimizer step:"
    )
    print(f"  request written -> taken by the trainer: {ms(taken)}")
    print(f"  request written -> effect (paused / checkpoint saved): {ms(acted)}")
    print(
        f"  optimizer steps finished between request and effect: max {max(steps_between)} "
        f"(median {statistics.median(steps_between):.0f})"
    )


def measure(process: psutil.Process, run: Path) -> dict:
    peak_rss, cpu = 0, 0.0
    while process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
        try:
            peak_rss = max(peak_rss, process.memory_info().rss)
            times = process.cpu_times()
            cpu = times.user + times.system
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    finished = events_of(run, "finished")[-1]
    return {
        "wall": finished["seconds"],
        "cpu": cpu,
        "rss": peak_rss / 2**20,
        "tps": finished["tokens"] / finished["seconds"],
    }


def cost(steps: int, root: Path) -> None:
    options = {"batch_size": 4, "seed": 7}
    headless_run = root / "headless"
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
        "--batch-size",
        "4",
        "--seed",
        "7",
        "--output",
        str(headless_run),
    ]
    popen = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    headless = measure(psutil.Process(popen.pid), headless_run)
    popen.wait()
    launched = launch(
        LaunchSpec(
            action="train",
            run_dir=str(root / "detached"),
            model="tiny",
            data="sample",
            steps=steps,
            overrides=options,
        )
    )
    detached = measure(psutil.Process(launched.process.pid), launched.run_dir)
    launched.process.wait()
    assert live_owner(launched.run_dir) is None
    print(
        f"cost of a detached run vs headless, tiny, {steps} steps (training seconds / CPU s / peak RSS / tokens/s):"
    )
    for name, row in (("headless", headless), ("detached", detached)):
        print(
            f"  {name:<9} {row['wall']:6.1f} s  {row['cpu']:6.1f} CPU s  {row['rss']:6.0f} MB  {row['tps']:8,.0f} tok/s"
        )
    print(
        f"  ratios detached/headless: time {detached['wall'] / headless['wall']:.2f}, CPU {detached['cpu'] / headless['cpu']:.2f}, "
        f"RSS {detached['rss'] / headless['rss']:.2f}, tokens/s {detached['tps'] / headless['tps']:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-control-"))
    latency(args.requests, root)
    cost(args.steps, root)
