"""Helpers for the Textual tests: a deterministic app, waiting on conditions, fixed run directories."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import tomli_w

from backprop_engine.events import CheckpointSaved, Event, RunFinished, RunStarted, StepMetrics
from backprop_engine.hardware import GpuReading, HardwareReading

SNAPSHOT_HOME = Path("/tmp/backprop-snapshot-home")  # fixed: paths appear on screen


def fake_cpu_machine() -> HardwareReading:
    return HardwareReading(
        cpu_cores=2, cpu_percent=37.5, ram_total_mb=24_000, ram_available_mb=20_000, gpus=[]
    )


def fake_gpu_machine() -> HardwareReading:
    gpu = GpuReading(0, "NVIDIA H100 80GB HBM3", 81_559, 61_000, 79.0, 97.0, 610.0)
    return HardwareReading(
        cpu_cores=16, cpu_percent=12.0, ram_total_mb=128_000, ram_available_mb=100_000, gpus=[gpu]
    )


def write_settings(folder: Path, **values) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "settings.toml"
    path.write_text(tomli_w.dumps({"output_dir": str(folder / "runs"), **values}))
    return path


def make_app(settings_file: Path, hardware=fake_cpu_machine, watch_run: Path | None = None):
    from backprop_tui.app import BackpropApp

    return BackpropApp(watch_run=watch_run, settings_file=settings_file, hardware_probe=hardware)


async def wait_for(pilot, condition, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}; screen: {pilot.app.screen!r}, workers: {list(pilot.app.workers)}"
            )
        await pilot.pause(0.05)
        await asyncio.sleep(0.05)


def text_of(widget) -> str:
    return str(widget.render())


def write_fixed_run(runs_dir: Path, name: str, steps: int = 30, finished: bool = True) -> Path:
    """A run directory with a deterministic events.jsonl (loss falling from 7.5 towards 2)."""
    run = runs_dir / name
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.toml").write_text(
        tomli_w.dumps({"train": {"model": "tiny", "data": "sample", "steps": steps}})
    )
    events: list[Event] = [
        RunStarted(
            time=0.0,
            run_dir=str(run),
            model="tiny",
            total_steps=steps,
            num_examples=320,
            trainable_params=155648,
            total_params=2516224,
        )
    ]
    for step in range(1, steps + 1):
        events.append(
            StepMetrics(
                time=float(step),
                step=step,
                total_steps=steps,
                loss=2.0 + 5.5 * 0.9**step,
                learning_rate=3e-3 * (1 - step / (steps + 1)),
                grad_norm=1.0 / step**0.5,
                tokens_per_second=5200.0,
                eta_seconds=float(steps - step),
                memory_mb=512.0,
            )
        )
        if step % 10 == 0:
            events.append(
                CheckpointSaved(
                    time=float(step), step=step, path=str(run / "checkpoints" / f"step-{step:06d}")
                )
            )
    if finished:
        events.append(
            RunFinished(
                time=float(steps + 1),
                steps=steps,
                final_loss=2.0 + 5.5 * 0.9**steps,
                tokens=12_000,
                seconds=float(steps),
                adapter_path=str(run / "adapter"),
            )
        )
    (run / "events.jsonl").write_text("".join(json.dumps(e.to_dict()) + "\n" for e in events))
    return run
