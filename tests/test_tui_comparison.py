"""The comparison panel: base vs fine-tune answers in two columns on the Train dashboard (live or watched)
and on the Export screen, and the sample reply during training; the Train form shows the engine's plan."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from textual.widgets import Input

from backprop_engine import Trainer
from backprop_engine.events import Comparison, SampleReply
from backprop_tui.widgets.chart import LineChart
from backprop_tui.widgets.comparison import ComparisonPanel

from .tui_helpers import fake_cpu_machine, make_app, text_of, wait_for, write_fixed_run, write_settings

FIXED_HOME = Path("/tmp/backprop-snapshot-comparison")  # fixed: paths appear on screen
PROMPTS = ["Where be the treasure?", "What colour is a carrot?"]


def comparison_events(steps: int) -> list[dict]:
    events = [
        SampleReply(step=0, prompt=PROMPTS[0], reply="the the the of"),
        SampleReply(step=steps // 2, prompt=PROMPTS[0], reply="Arr, the treasure be"),
    ]
    events.append(
        Comparison(
            step=steps,
            source="held-out rows, never trained",
            prompts=PROMPTS,
            base=["the the the of", "of of the"],
            tuned=["Arr, the treasure be buried on the isle, matey!", "Arr, orange as a sunset, matey."],
            references=["Buried deep, matey.", "Orange, arr."],
            base_loss=6.912,
            tuned_loss=2.104,
        )
    )
    for index, event in enumerate(events):
        event.time = 1000.0 + index
    return [e.to_dict() for e in events]


def write_compared_run(runs: Path, name: str, steps: int = 30) -> Path:
    run = write_fixed_run(runs, name, steps=steps)
    lines = (run / "events.jsonl").read_text().splitlines()
    extra = [json.dumps(e) for e in comparison_events(steps)]
    (run / "events.jsonl").write_text("\n".join(lines[:-1] + extra + lines[-1:]) + "\n")  # before "finished"
    return run


def panel_text(panel: ComparisonPanel, width: int = 100) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    console.print(panel.render())
    return console.export_text()


async def test_a_real_run_shows_its_comparison_on_the_dashboard_and_the_export_screen(tmp_path):
    events = []
    trainer = Trainer("tiny", batch_size=8, on_event=events.append)
    run = trainer.train("sample", steps=8, output_dir=tmp_path / "run").run_dir
    app = make_app(write_settings(tmp_path / "home"), watch_run=run)
    async with app.run_test(size=(100, 40)) as pilot:
        panel = app.screen.query_one(ComparisonPanel)
        await wait_for(pilot, lambda: panel.comparison is not None, what="the comparison event")
        compared = next(e for e in events if e.kind == "comparison")
        assert panel.display and panel.comparison.tuned == compared.tuned
        text = panel_text(panel)
        assert "Did it learn? held-out loss" in text and "ppl" in text and "fine-tune" in text
        assert compared.prompts[0][:20] in text and compared.tuned[0].split()[0] in text
        app.session.run_dir = run
        await pilot.press("4")
        exported = app.screen.query_one(ComparisonPanel)
        await wait_for(pilot, lambda: exported.comparison is not None, what="the export screen's panel")
        assert exported.comparison.tuned == compared.tuned


async def test_the_sample_reply_shows_until_the_comparison_arrives(tmp_path):
    run = write_fixed_run(tmp_path / "runs", "growing", steps=10, finished=False)
    app = make_app(write_settings(tmp_path / "home"), watch_run=run)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        panel = screen.query_one(ComparisonPanel)
        chart = screen.query_one("#loss-chart", LineChart)
        await wait_for(pilot, lambda: len(chart.series["train"]) == 10, what="steps")
        assert not panel.display  # no comparison events: the dashboard is as before
        sample, later, comparison = comparison_events(10)
        with (run / "events.jsonl").open("a") as log:
            log.write(json.dumps(later) + "\n")
        await wait_for(pilot, lambda: panel.sample is not None, what="the sample")
        assert "sample step 5 › Where be the treasure? Arr, the treasure be" in panel_text(panel)
        with (run / "events.jsonl").open("a") as log:
            log.write(json.dumps(comparison) + "\n")
        await wait_for(pilot, lambda: panel.comparison is not None, what="the comparison")
        text = panel_text(panel)
        assert "6.912 → 2.104" in text and "ppl 1,004 → 8.2" in text and "sample step" not in text
        assert "orange as a sunset" in text and "of of the" in text


async def test_the_train_form_shows_the_dry_run_plan(tmp_path):
    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press(
            "2"
        )  # the Data screen's untouched filters leave the plan's choices (its held-out rows) alone
        await wait_for(pilot, lambda: app.screen.report is not None, what="the data preview")
        assert app.session.data_options == {}
        summary = text_of(app.screen.query_one("#data-summary"))
        await pilot.press("3")
        screen = app.screen
        await wait_for(pilot, lambda: screen.plan is not None, what="the plan")
        trainer = Trainer("tiny")  # the Model and Data screens, untouched, leave every choice to the plan
        planned = {c.name: c for c in trainer.plan("sample", machine=fake_cpu_machine()).choices}
        for name in ("steps", "learning_rate", "batch_size", "max_seq_len"):
            assert screen.query_one(f"#field-{name}", Input).value == str(planned[name].value)
            assert text_of(screen.query_one(f"#reason-{name}")) == planned[name].reason
        for name in ("method", "lora_rank"):  # Model screen fields left empty: the plan's choice
            assert screen.plan[name].value == planned[name].value and not screen.plan[name].by_user
        assert "method auto · rank auto" in text_of(screen.query_one("#train-summary"))
        held = int(planned["eval_split"].value)
        assert screen.plan["eval_split"].value == held > 0 and f"/ eval {held} (auto)" in summary
        assert screen._read_form() == app.session.model_options() | app.session.data_options == {}


def test_comparison_dashboard_snapshot(snap_compare):
    shutil.rmtree(FIXED_HOME, ignore_errors=True)
    run = write_compared_run(FIXED_HOME / "runs", "20261128-130000-tiny")
    settings = write_settings(FIXED_HOME)

    async def filled(pilot) -> None:
        screen = pilot.app.screen
        await wait_for(pilot, lambda: screen.query_one(ComparisonPanel).comparison is not None, what="events")
        await wait_for(
            pilot,
            lambda: all(g.fraction is not None for g in screen.query("Gauge")) and len(screen.query("Gauge")),
            what="gauges",
        )
        await pilot.pause(0.3)

    assert snap_compare(
        make_app(settings, hardware=fake_cpu_machine, watch_run=run),
        terminal_size=(80, 30),
        run_before=filled,
    )
