"""The Textual app, driven by key presses through Textual's pilot, on the real tiny model."""

from __future__ import annotations

import json

from textual.widgets import DataTable, Input, RichLog

from backprop_engine.settings import load_settings
from backprop_tui.screens.data import DataScreen
from backprop_tui.screens.export import ExportScreen
from backprop_tui.screens.model import ModelScreen
from backprop_tui.screens.train import TrainScreen
from backprop_tui.widgets.chart import LineChart

from .tui_helpers import make_app, text_of, wait_for, write_fixed_run, write_settings


def log_text(screen, selector: str) -> str:
    return "\n".join(line.text for line in screen.query_one(selector, RichLog).lines)


async def test_whole_flow_model_data_train_pause_stop_export_chat(tmp_path):
    settings = write_settings(tmp_path / "home")
    app = make_app(settings)
    async with app.run_test(size=(100, 32)) as pilot:
        # Model: the preset table has a verdict; a bad id is explained next to the field; enter picks a preset.
        screen = app.screen
        assert isinstance(screen, ModelScreen)
        table = screen.query_one("#presets", DataTable)
        await wait_for(pilot, lambda: table.row_count > 0, what="preset table")
        assert [str(c) for c in table.get_row("tiny")][-1].endswith("yes[/]")
        custom = screen.query_one("#custom-model", Input)
        custom.focus()
        custom.value = "not a model!"
        await pilot.press("enter")
        assert "unknown model 'not a model!'" in text_of(screen.query_one("#model-error"))
        await pilot.press("escape")
        table.focus()
        await pilot.press("enter")
        assert app.session.model == "tiny"

        # Data: the sample loads with counts and a masked/trained preview; n pages; filters update the counts.
        await pilot.press("2")
        data = app.screen
        assert isinstance(data, DataScreen)
        await wait_for(pilot, lambda: data.report is not None, what="dataset load")
        assert "320 rows (messages 320)" in text_of(data.query_one("#data-summary"))
        await pilot.press("n")
        assert text_of(data.query_one("#sample-title")).startswith("sample 2/50")
        data.query_one("#filter-min_tokens", Input).focus()
        data.query_one("#filter-min_tokens", Input).value = "60"
        await wait_for(
            pilot,
            lambda: "under 60 tokens −" in text_of(data.query_one("#data-filters")),
            what="filter counts",
        )
        kept = data.report.train_examples
        assert 0 < kept < 320
        bad = data.query_one("#data-path", Input)
        bad.focus()
        bad.value = str(tmp_path / "missing.jsonl")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: "missing.jsonl" in text_of(data.query_one("#data-error")), what="data error"
        )
        bad.value = "sample"
        await pilot.press("enter")
        await wait_for(pilot, lambda: text_of(data.query_one("#data-error")) == "", what="data reload")
        await pilot.press("escape")

        # Train: more steps than the test waits for; pause, resume, then stop with confirmation.
        await pilot.press("3")
        train = app.screen
        assert isinstance(train, TrainScreen)
        train.query_one("#field-steps", Input).value = "5000"
        await pilot.press("s")
        chart = train.query_one("#loss-chart", LineChart)
        await wait_for(pilot, lambda: len(chart.series["train"]) >= 2, what="first logged steps")
        await pilot.press("p")
        await wait_for(pilot, lambda: "paused at step" in log_text(train, "#event-log"), what="pause")
        await pilot.press("p")
        await wait_for(pilot, lambda: "resumed at step" in log_text(train, "#event-log"), what="resume")
        await pilot.press("x")
        await pilot.press("y")
        await wait_for(
            pilot,
            lambda: "stopped:" in log_text(train, "#event-log") and app.session.run_dir is not None,
            timeout=180,
            what="stop",
        )
        assert "stopped:" in log_text(train, "#event-log")
        assert "loss" in text_of(train.query_one("#stats"))
        run_dir = app.session.run_dir
        assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
        assert "min_tokens = 60" in (run_dir / "config.toml").read_text()  # the Data screen's filter was used
        finished = json.loads((run_dir / "events.jsonl").read_text().splitlines()[-1])
        assert finished["event"] == "finished" and finished["stopped_early"] and finished["steps"] < 5000

        # Export: q4_k_m by default, every stage ticks, then the chat panel answers.
        await pilot.press("4")
        export = app.screen
        assert isinstance(export, ExportScreen)
        await pilot.press("e")
        await wait_for(pilot, lambda: export.gguf_path is not None, timeout=180, what="export")
        assert export.gguf_path == run_dir / "export" / f"{run_dir.name}.q4_k_m.gguf"
        assert export.gguf_path.is_file()
        assert "✓ verify" in text_of(export.query_one("#export-stages"))
        chat = export.query_one("#chat-input", Input)
        assert app.focused is chat
        chat.value = "What colour is a carrot?"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "model" in log_text(export, "#chat-log"), timeout=60, what="chat reply")


async def test_invalid_export_name_is_shown_next_to_the_field(tmp_path):
    settings = write_settings(tmp_path / "home")
    run = write_fixed_run(tmp_path / "home" / "runs", "fixed")
    app = make_app(settings)
    async with app.run_test(size=(100, 32)) as pilot:
        app.session.run_dir = run
        await pilot.press("4")
        name = app.screen.query_one("#export-name", Input)
        name.value = "../escape"
        await pilot.press("e")
        shown = text_of(app.screen.query_one("#export-error"))
        assert (
            "invalid file name '../escape'" in shown and "\nhint: " in shown
        )  # as the CLI shows it (render_error)


async def test_watch_attaches_to_a_headless_run(trained_run, tmp_path):
    run = trained_run("tiny").run.path
    app = make_app(write_settings(tmp_path / "home"), watch_run=run)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        await wait_for(pilot, lambda: "finished:" in log_text(screen, "#event-log"), what="events")
        assert "step 20/20" in text_of(screen.query_one("#stats")).replace("[b]", "").replace("[/b]", "")
        assert "watching" in text_of(screen.query_one("#run-title"))
        await pilot.press("x")  # read-only: nothing to stop, and no crash
        assert screen.read_only and not app.screen_stack[-1].is_modal


async def test_watch_follows_a_run_as_it_grows(tmp_path):
    run = write_fixed_run(tmp_path / "runs", "growing", steps=30, finished=False)
    lines = (run / "events.jsonl").read_text().splitlines(keepends=True)
    (run / "events.jsonl").write_text("".join(lines[:5]))
    app = make_app(write_settings(tmp_path / "home"), watch_run=run)
    async with app.run_test(size=(100, 32)) as pilot:
        chart = app.screen.query_one("#loss-chart", LineChart)
        await wait_for(pilot, lambda: len(chart.series["train"]) == 4, what="first events")
        with (run / "events.jsonl").open("a") as events:
            events.write("".join(lines[5:]))
        await wait_for(pilot, lambda: len(chart.series["train"]) == 30, what="appended events")


async def test_runs_screen_lists_runs_and_opens_one(tmp_path):
    settings = write_settings(tmp_path / "home")
    write_fixed_run(tmp_path / "home" / "runs", "alpha")
    app = make_app(settings)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("5")
        table = app.screen.query_one("#runs", DataTable)
        assert table.row_count == 1
        row = [str(cell) for cell in table.get_row_at(0)]
        assert row[0] == "alpha" and "finished" in row[2] and row[3] == "30/30"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), what="train screen")
        chart = app.screen.query_one("#loss-chart", LineChart)
        await wait_for(pilot, lambda: len(chart.series["train"]) == 30, what="events")


async def test_settings_round_trip_through_the_screen(tmp_path):
    settings = write_settings(tmp_path / "home")
    app = make_app(settings)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("6")
        app.screen.query_one("#setting-ollama_host", Input).value = "http://gpu-box:11434"
        app.screen.query_one("#setting-gpu_temperature_limit_c", Input).value = "hot"
        await pilot.press("ctrl+s")
        assert "whole number" in text_of(app.screen.query_one("#settings-error"))
        app.screen.query_one("#setting-gpu_temperature_limit_c", Input).value = "80"
        app.screen.query_one("#setting-checkpoint_minutes", Input).value = "2000"  # bounds: the field's
        await pilot.press("ctrl+s")
        assert text_of(app.screen.query_one("#settings-error")) == (
            "Ckpt every must be between 0 and 1440, got 2000"
        )
        app.screen.query_one("#setting-checkpoint_minutes", Input).value = "30"
        await pilot.press("ctrl+s")
        assert text_of(app.screen.query_one("#settings-error")) == ""
    loaded, notice = load_settings(settings)
    assert (
        notice is None
        and loaded.ollama_host == "http://gpu-box:11434"
        and loaded.gpu_temperature_limit_c == 80
        and loaded.checkpoint_minutes == 30
    )


async def test_corrupt_settings_are_moved_aside_and_the_user_is_told(tmp_path):
    folder = tmp_path / "home"
    folder.mkdir()
    settings = folder / "settings.toml"
    settings.write_text("theme = [unclosed\n")
    app = make_app(settings)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause(0.2)
        notices = [n.message for n in app._notifications]
        assert any("moved to settings.toml.corrupt-" in message for message in notices)
        assert app.session.settings.theme == "" and app.theme == "textual-dark"  # the defaults
    assert not settings.exists()
    assert len(list(folder.glob("settings.toml.corrupt-*"))) == 1


async def test_help_lists_keys(tmp_path):
    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert "Keys" in str(app.screen.query_one("Label").render())
        await pilot.press("escape")
        assert isinstance(app.screen, ModelScreen)


async def test_unsupported_file_is_explained_on_the_data_screen(tmp_path):
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"\x00\x01")
    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("2")
        data = app.screen
        await wait_for(pilot, lambda: data.report is not None, what="sample load")
        path = data.query_one("#data-path", Input)
        path.focus()
        path.value = str(odd)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "weights.bin" in text_of(data.query_one("#data-error")), what="error")
        assert "hint:" in text_of(data.query_one("#data-error"))


def test_watch_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    from backprop_tui.launch import main

    assert main(["watch", str(tmp_path)]) == 2
    assert f"error: {tmp_path}: not a run directory" in capsys.readouterr().err


async def test_export_registers_with_ollama_and_rejects_bad_names(trained_run, tmp_path, monkeypatch):
    from textual.widgets import Checkbox

    from .ollama_server import FakeOllama

    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no `ollama` CLI: the HTTP API is used
    app = make_app(write_settings(tmp_path / "home"))
    with FakeOllama() as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        async with app.run_test(size=(100, 32)) as pilot:
            app.session.run_dir = trained_run("tiny").run.path
            await pilot.press("4")
            export = app.screen
            export.query_one("#register", Checkbox).value = True
            export.query_one("#ollama-name", Input).value = "Pirate Model"
            await pilot.press("e")
            assert "invalid Ollama model name 'Pirate Model'" in text_of(export.query_one("#export-error"))
            export.query_one("#ollama-name", Input).value = "pirate-tui"
            export.query_one("#export-name", Input).value = "tui-export"
            await pilot.press("e")
            await wait_for(
                pilot, lambda: export.gguf_path is not None, timeout=180, what="export and registration"
            )
            assert "✓ register" in text_of(export.query_one("#export-stages"))
        assert "pirate-tui" in server.models


async def test_runs_screen_continues_a_stopped_run_from_its_checkpoint(tmp_path):
    from backprop_engine import Trainer

    settings = write_settings(tmp_path / "home")
    run_dir = tmp_path / "home" / "runs" / "stopped"

    def stop_at_3(event):
        if event.kind == "step" and event.step == 3:
            trainer.control.stop()

    trainer = Trainer("tiny", on_event=stop_at_3, save_steps=2, logging_steps=1)
    trainer.train("sample", steps=6, output_dir=run_dir)
    app = make_app(settings)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("5")
        assert "stopped" in str(app.screen.query_one("#runs", DataTable).get_row_at(0)[2])
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), what="train screen")
        screen = app.screen
        await wait_for(
            pilot, lambda: "finished: 6 steps" in log_text(screen, "#event-log"), what="resumed run"
        )
        assert "resumed at step 3" in log_text(screen, "#event-log")  # the checkpoint saved when it stopped


def test_help_is_built_from_every_screens_bindings():
    from backprop_tui.app import SCREENS, BackpropApp
    from backprop_tui.screens.modals import help_text

    screens = [(key, title, screen) for key, _, title, screen in SCREENS]
    rows = dict(
        line.split("[/b] ", 1)
        for line in help_text(BackpropApp.BINDINGS, screens).split("\n")
        if "[/b] " in line
    )
    for _, title, screen in screens:
        row = next(text for area, text in rows.items() if area.strip("[b] ") == title)
        for binding in screen.BINDINGS:
            assert f"{binding.key} " in row, (title, binding.key)
    assert "v settings/dashboard" in rows["[b]Train    "]  # the key the hand-written help once left out
