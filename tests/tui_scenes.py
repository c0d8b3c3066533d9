"""Deterministic scenes of every screen, shared by the snapshot tests and `make screenshots`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from textual.widgets import ProgressBar, RichLog

from .tui_helpers import (
    SNAPSHOT_HOME,
    fake_cpu_machine,
    fake_gpu_machine,
    make_app,
    text_of,
    wait_for,
    write_fixed_run,
    write_settings,
)


@dataclass
class Scene:
    name: str
    press: list[str] = field(default_factory=list)
    hardware: Callable = fake_cpu_machine
    watch: str | None = None
    theme: str = "textual-dark"
    ready: Callable | None = (
        None  # async (pilot) -> None, runs before `press`; waits until the screen is complete
    )


def prepare_home(theme: str = "textual-dark") -> Path:
    shutil.rmtree(SNAPSHOT_HOME, ignore_errors=True)
    settings = write_settings(SNAPSHOT_HOME, theme=theme)
    for index, name in enumerate(["20261128-091500-tiny", "20261128-101500-tiny-qwen2"]):
        run = write_fixed_run(SNAPSHOT_HOME / "runs", name, steps=30 + 30 * index, finished=index == 0)
        os.utime(run, (1_800_000_000 + index, 1_800_000_000 + index))
    return settings


async def _data_loaded(pilot) -> None:
    await pilot.press("2")
    await wait_for(pilot, lambda: pilot.app.screen.report is not None, what="data")
    await pilot.pause(0.3)


async def _dashboard_filled(pilot) -> None:
    screen = pilot.app.screen
    await wait_for(
        pilot,
        lambda: "finished" in "".join(line.text for line in screen.query_one("#event-log", RichLog).lines),
        what="events",
    )
    await wait_for(
        pilot,
        lambda: len(screen.query("Gauge")) and all(g.fraction is not None for g in screen.query("Gauge")),
        what="gauges",
    )
    await wait_for(pilot, lambda: screen.query_one(ProgressBar).percentage == 1, what="progress")
    await pilot.pause(0.3)


async def _plan_shown(pilot) -> None:
    await pilot.press("3")
    await wait_for(pilot, lambda: pilot.app.screen.plan is not None, what="the plan")
    await pilot.pause(0.2)


async def _presets_filled(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.screen.query_one("#presets").row_count > 0, what="presets")
    await pilot.pause(0.2)


async def _export_for_run(pilot) -> None:
    pilot.app.session.run_dir = SNAPSHOT_HOME / "runs" / "20261128-091500-tiny"
    await pilot.press("4")
    await wait_for(
        pilot,
        lambda: "20261128-091500-tiny" in text_of(pilot.app.screen.query_one("#export-run")),
        what="export",
    )
    await pilot.pause(0.2)


SCENES = [
    Scene("model", ready=_presets_filled),
    Scene("model-gpu", hardware=fake_gpu_machine, ready=_presets_filled),
    Scene("data", ready=_data_loaded),
    Scene("train-setup", ready=_plan_shown),
    Scene(
        "train-dashboard", hardware=fake_gpu_machine, watch="20261128-091500-tiny", ready=_dashboard_filled
    ),
    Scene(
        "train-dashboard-light",
        hardware=fake_gpu_machine,
        watch="20261128-091500-tiny",
        ready=_dashboard_filled,
        theme="textual-light",
    ),
    Scene("data-light", ready=_data_loaded, theme="textual-light"),
    Scene("export", ready=_export_for_run),
    Scene("runs", press=["5"]),
    Scene("settings", press=["6"]),
    Scene("help", press=["question_mark"]),
]


def scene_app(scene: Scene):
    settings = prepare_home(scene.theme)
    watch = SNAPSHOT_HOME / "runs" / scene.watch if scene.watch else None
    return make_app(settings, hardware=scene.hardware, watch_run=watch)
