"""The Train dashboard's multi-run panel: run i/N and the task × run held-out loss matrix, from a real
multi-run on the tiny model followed with `backprop watch`, and a snapshot of a fixed one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import tomli_w

from backprop_engine import Trainer
from backprop_engine.events import (
    ContinualEval,
    EvalMetrics,
    MultiRunFinished,
    MultiRunProgress,
    RunFinished,
    RunStarted,
    StepMetrics,
)
from backprop_tui.screens.train import TrainScreen
from backprop_tui.widgets.chart import LineChart
from backprop_tui.widgets.multirun import MultiRunPanel

from .tui_helpers import fake_cpu_machine, make_app, text_of, wait_for, write_settings

FIXED_HOME = Path("/tmp/backprop-snapshot-multirun")  # fixed: paths appear on screen
TASKS = ["capitals.jsonl", "colours.jsonl", "opposites.jsonl", "sounds.jsonl"]


def write_fixed_multirun(out: Path, steps: int = 12, done: int = 3) -> Path:
    """A multi-run directory over four tasks with ``done`` runs finished and the next one half-way."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(
        tomli_w.dumps({"train": {"model": "tiny", "data": TASKS[0], "steps": steps}})
    )
    tasks = [str(out.parent / "tasks" / name) for name in TASKS]
    matrix = [[] for _ in tasks]
    events = []
    for run in range(1, done + 2):
        run_dir = str(out / "runs" / f"run-{run:02d}")
        events += [
            MultiRunProgress(
                run=run, total_runs=len(tasks), task=tasks[run - 1], run_dir=run_dir, learning_rate=3e-3
            ),
            RunStarted(
                run_dir=run_dir,
                model="tiny",
                total_steps=steps,
                num_examples=54,
                trainable_params=155648,
                total_params=2516224,
            ),
        ]
        last = steps if run <= done else steps // 2
        for step in range(1, last + 1):
            loss = 0.4 + 3.0 * 0.8**step
            events.append(
                StepMetrics(
                    step=step,
                    total_steps=steps,
                    loss=loss,
                    learning_rate=3e-3,
                    grad_norm=0.5,
                    tokens_per_second=5000.0,
                    eta_seconds=float(steps - step),
                    memory_mb=512.0,
                )
            )
        if run > done:
            break
        events += [
            EvalMetrics(step=steps, loss=0.5 + 0.1 * run, examples=18),
            RunFinished(
                steps=steps, final_loss=0.45, tokens=9000, seconds=3.0, adapter_path=f"{run_dir}/adapter"
            ),
        ]
        for task, row in enumerate(matrix):  # a trained task is learned, then partly forgotten
            row.append(0.4 + 0.3 * (run - 1 - task) if task < run else 4.0 - 0.2 * run)
        events.append(
            ContinualEval(run=run, total_runs=len(tasks), tasks=tasks, matrix=[list(r) for r in matrix])
        )
    if done == len(tasks):
        events.append(MultiRunFinished(runs=len(tasks), merge_mode="slao", adapter_path=str(out / "adapter")))
    for index, event in enumerate(events):
        event.time = float(index)
    (out / "events.jsonl").write_text("".join(json.dumps(e.to_dict()) + "\n" for e in events))
    return out


def panel_text(screen) -> str:
    from rich.console import Console

    console = Console(width=100, record=True, file=open("/dev/null", "w"))
    console.print(screen.query_one(MultiRunPanel).render())
    return console.export_text()


async def test_watch_shows_a_real_multi_run(tmp_path):
    tasks = []
    for name, answer in (("first", "One."), ("second", "Two.")):
        rows = [
            {
                "messages": [
                    {"role": "user", "content": f"{name} question {i}?"},
                    {"role": "assistant", "content": answer},
                ]
            }
            for i in range(12)
        ]
        tasks.append(tmp_path / f"{name}.jsonl")
        tasks[-1].write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "multi"
    Trainer("tiny", batch_size=4, logging_steps=1).multi_run(
        datasets=tasks, steps_per_run=3, eval_split=3, output_dir=out
    )

    app = make_app(write_settings(tmp_path / "home"), watch_run=out)
    async with app.run_test(size=(100, 36)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        panel = screen.query_one(MultiRunPanel)
        await wait_for(pilot, lambda: panel.finished is not None, what="the multi-run events")
        assert (
            panel.display and panel.total_runs == 2 and len(panel.matrix) == 2 and len(panel.matrix[0]) == 2
        )
        recorded = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
        last_eval = [e for e in recorded if e["event"] == "continual_eval"][-1]
        assert panel.matrix == last_eval["matrix"]
        text = panel_text(screen)
        assert "2/2 runs done" in text and "first.jsonl" in text and "second.jsonl" in text
        assert f"{last_eval['matrix'][0][1]:.3f}" in text
        # The loss chart runs across both runs: run 2's steps follow run 1's.
        train = screen.query_one("#loss-chart", LineChart).series["train"]
        assert [x for x, _ in train] == [1, 2, 3, 4, 5, 6]
        assert [x for x, _ in screen.query_one("#loss-chart", LineChart).series["eval"]] == [3, 6]


async def test_a_single_run_keeps_the_panel_hidden(tmp_path):
    from .tui_helpers import write_fixed_run

    run = write_fixed_run(tmp_path / "runs", "single", steps=10)
    app = make_app(write_settings(tmp_path / "home"), watch_run=run)
    async with app.run_test(size=(100, 32)) as pilot:
        chart = app.screen.query_one("#loss-chart", LineChart)
        await wait_for(pilot, lambda: len(chart.series["train"]) == 10, what="events")
        assert not app.screen.query_one(MultiRunPanel).display


async def test_panel_marks_forgetting_and_the_run_in_progress(tmp_path):
    out = write_fixed_multirun(tmp_path / "multi", steps=12, done=2)
    app = make_app(write_settings(tmp_path / "home"), watch_run=out)
    async with app.run_test(size=(100, 36)) as pilot:
        screen = app.screen
        panel = screen.query_one(MultiRunPanel)
        await wait_for(
            pilot,
            lambda: len(screen.query_one("#loss-chart", LineChart).series["train"]) == 30,
            what="events",
        )
        text = panel_text(screen)
        assert "run 3/4" in text and "opposites.jsonl" in text and "done" not in text
        assert "0.400" in text and "0.700" in text and "3.800" in text
        assert panel._cell(panel.matrix[0], 1, 0).style == "red"  # task 1 got worse after run 2: forgetting
        assert panel._cell(panel.matrix[1], 1, 1).style == "bold"  # task 2 right after its own run
        assert len(panel._table().columns) == 5 and "·" in text  # runs 3 and 4 not evaluated yet
        assert "watching" in text_of(screen.query_one("#run-title"))


def test_multi_run_dashboard_snapshot(snap_compare):
    shutil.rmtree(FIXED_HOME, ignore_errors=True)
    out = write_fixed_multirun(FIXED_HOME / "runs" / "20261128-120000-multi", done=3)
    settings = write_settings(FIXED_HOME)

    async def filled(pilot) -> None:
        screen = pilot.app.screen
        await wait_for(
            pilot,
            lambda: len(screen.query_one("#loss-chart", LineChart).series["train"]) == 42,
            what="events",
        )
        await wait_for(
            pilot,
            lambda: all(g.fraction is not None for g in screen.query("Gauge")) and len(screen.query("Gauge")),
            what="gauges",
        )
        await pilot.pause(0.3)

    app = make_app(settings, hardware=fake_cpu_machine, watch_run=out)
    assert snap_compare(app, terminal_size=(80, 24), run_before=filled)
