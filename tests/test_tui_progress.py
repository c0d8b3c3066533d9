"""The app shows the stage a run waits in before its first step (a progress bar with counts), keeps one line per
finished stage, and stops such a stage through the run's channel."""

from __future__ import annotations

import json

from textual.widgets import Input

from backprop_tui.screens.train import TrainScreen
from backprop_tui.widgets.progress import StageProgress

from .test_tui import log_text
from .tui_helpers import make_app, text_of, wait_for, write_settings


async def test_the_train_screen_shows_the_model_loading_then_the_dashboard(tmp_path, monkeypatch):
    gate = tmp_path / "loaded"
    monkeypatch.setenv("BACKPROP_TEST_HOLD", f"load:{gate}")  # the detached run holds after its first tensor
    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("3")
        train = app.screen
        assert isinstance(train, TrainScreen)
        train.query_one("#field-steps", Input).value = "1"
        await pilot.press("s")
        bar = train.query_one(StageProgress)
        await wait_for(
            pilot, lambda: bar.display and bar.text.startswith("load 1/21"), timeout=120, what="the load bar"
        )
        assert bar.text.startswith("load 1/21 tensors  5%") and "tensors/s" in bar.text
        assert "step" not in text_of(train.query_one("#stats"))
        gate.touch()
        await wait_for(
            pilot, lambda: "step" in text_of(train.query_one("#stats")), timeout=120, what="the first step"
        )
        assert "✓ load 21/21 tensors done in" in log_text(train, "#event-log")
        assert "✓ probe 3/3 passes done in" in log_text(train, "#event-log")
        await wait_for(
            pilot,
            lambda: "finished:" in log_text(train, "#event-log"),
            timeout=120,
            what="the end of the run",
        )
        assert not bar.display


async def test_stop_while_tokenizing_goes_through_the_channel_and_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKPROP_TEST_HOLD", f"tokenize:{tmp_path / 'never'}")  # held after its first row
    rows = tmp_path / "rows.jsonl"
    message = {"role": "assistant", "content": "Orange, matey."}
    rows.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"Row {i}?"}, message]}) + "\n"
            for i in range(40)
        )
    )
    settings = write_settings(tmp_path / "home")
    app = make_app(settings)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("3")
        train = app.screen
        app.session.data = str(rows)  # after the form's plan, which would have cached the tokenized rows
        await pilot.press("s")
        bar = train.query_one(StageProgress)
        await wait_for(
            pilot,
            lambda: bar.display and bar.text.startswith("tokenize "),
            timeout=120,
            what="the tokenize bar",
        )
        run = train.run_dir
        assert (run / "run.lock").is_file() and not (
            run / "config.toml"
        ).exists()  # held before the run exists
        await pilot.press("x")
        await pilot.press("y")
        error = train.query_one("#train-error")
        await wait_for(
            pilot, lambda: "stopped during tokenize" in text_of(error), timeout=60, what="the stop"
        )
        assert "stopped during tokenize at 1 of 40 rows: nothing was kept" in text_of(error)
        assert not run.exists()
