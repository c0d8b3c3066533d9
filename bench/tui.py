"""TUI benchmark: time to first paint, event-loop lag while a run started in the app trains (in its own process
since the detach work; the in-process figure before it was p99 89 ms), app memory.

Baselines run in this same script: a one-widget Textual app (first paint, memory) and the same
lag timer while the app is idle.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/tui.py [--steps 60]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TICK = 0.02  # the lag probe's timer interval


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


async def first_paint_seconds(make_app, is_painted) -> float:
    started = time.perf_counter()
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        while not is_painted(app):
            await pilot.pause(0.001)
        return time.perf_counter() - started


class LagProbe:
    """A timer that records how late each tick fires (the event loop's responsiveness)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._expected = 0.0

    def start(self, app) -> None:
        self._expected = time.perf_counter() + TICK
        app.set_interval(TICK, self.tick)

    def tick(self) -> None:
        now = time.perf_counter()
        self.lags.append(max(0.0, now - self._expected))
        self._expected = now + TICK

    def summary(self) -> tuple[float, float]:
        ordered = sorted(self.lags)
        return ordered[-1], ordered[int(0.99 * (len(ordered) - 1))]


async def lag_while(app_factory, seconds: float | None, drive) -> tuple[float, float, int]:
    app = app_factory()
    probe = LagProbe()
    async with app.run_test(size=(80, 24)) as pilot:
        probe.start(app)
        await drive(pilot, seconds)
    worst, p99 = probe.summary()
    return worst, p99, len(probe.lags)


async def main(steps: int) -> None:
    from tests.tui_helpers import fake_cpu_machine, make_app, wait_for, write_settings
    from textual.app import App
    from textual.widgets import Static

    class Baseline(App):
        def compose(self):
            yield Static("hello")

    base_rss = rss_mb()
    baseline_paint = await first_paint_seconds(Baseline, lambda app: app.query("Static"))
    baseline_rss = rss_mb()
    home = Path(tempfile.mkdtemp(prefix="bench-tui-"))
    settings = write_settings(home)
    from backprop_tui.screens.model import ModelScreen

    paint = await first_paint_seconds(
        lambda: make_app(settings, hardware=fake_cpu_machine),
        lambda app: isinstance(app.screen, ModelScreen) and app.screen.query_one("#presets").row_count > 0,
    )
    app_rss = rss_mb()
    print(
        f"first paint: baseline one-widget app {baseline_paint * 1000:.0f} ms, backprop {paint * 1000:.0f} ms "
        f"({paint / baseline_paint:.1f}x); includes the hardware probe filling the preset table"
    )
    print(
        f"memory (RSS, this process): interpreter+textual {baseline_rss:.0f} MB (start {base_rss:.0f} MB), "
        f"after backprop's first paint {app_rss:.0f} MB (+{app_rss - baseline_rss:.0f} MB, torch not yet imported: "
        f"{'torch' not in sys.modules})"
    )

    async def idle(pilot, seconds):
        await pilot.pause(seconds)

    async def train(pilot, _):
        from backprop_engine.runs import summarize_run

        await pilot.press("3")
        screen = pilot.app.screen
        screen.query_one("#field-steps").value = str(steps)
        await pilot.press("s")
        await wait_for(
            pilot,
            lambda: screen.run_dir is not None and (screen.run_dir / "config.toml").exists(),
            what="start",
        )
        await wait_for(
            pilot, lambda: summarize_run(screen.run_dir).status == "finished", timeout=600, what="training"
        )

    factory = lambda: make_app(settings, hardware=fake_cpu_machine)  # noqa: E731
    idle_worst, idle_p99, idle_n = await lag_while(factory, 5.0, idle)
    train_worst, train_p99, train_n = await lag_while(factory, None, train)
    print(
        f"event-loop lag ({TICK * 1000:.0f} ms timer): idle max {idle_worst * 1000:.1f} ms / p99 {idle_p99 * 1000:.1f} ms "
        f"({idle_n} ticks); training {steps} steps (its own process, the app attached): max {train_worst * 1000:.1f} ms / p99 "
        f"{train_p99 * 1000:.1f} ms ({train_n} ticks); p99 ratio {train_p99 / max(idle_p99, 1e-4):.1f}x"
    )
    print(f"memory after training in the app (torch, model, llama.cpp loaded): {rss_mb():.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    asyncio.run(main(parser.parse_args().steps))
