"""Runs outlive the app: an SSH drop (SIGHUP from tmux kill-session) in a real terminal, attaching a second app
with full control, and what Ctrl+Q does while a run trains."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backprop_engine.channel import live_owner, send_control
from backprop_engine.rundir import RunDir
from backprop_engine.runs import read_events, summarize_run
from backprop_tui.screens.modals import QuitScreen
from backprop_tui.screens.train import TrainScreen
from backprop_tui.widgets.chart import LineChart

from .test_channel import start_headless, wait_until
from .test_tui import log_text
from .tui_helpers import make_app, wait_for, write_settings

SOCKET = f"backprop-test-{os.getpid()}"  # a tmux server of its own, started with this test's environment


def tmux(*args: str, **options) -> str:
    return subprocess.run(
        ["tmux", "-L", SOCKET, *args], check=True, capture_output=True, text=True, **options
    ).stdout


def screen_text(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (make test installs it)")
def test_a_run_started_in_the_app_survives_the_terminal_going_away(tmp_path):
    home = tmp_path / "home"
    write_settings(home / "config" / "backprop")
    runs = home / "config" / "backprop" / "runs"
    env = os.environ | {"XDG_CONFIG_HOME": str(home / "config"), "TERM": "xterm-256color"}
    session = f"backprop-test-{os.getpid()}"
    app = [
        sys.executable,
        "-m",
        "backprop_tui",
    ]  # what the `backprop` console script runs (test_cli checks it)
    tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", *app, env=env)
    try:
        wait_until(lambda: "Model" in screen_text(session), timeout=60, what="the app in tmux")
        tmux("send-keys", "-t", session, "3")
        wait_until(lambda: "Start training" in screen_text(session), timeout=30, what="the Train screen")
        # From the Start button, shift+tab five times (past the objective) reaches the steps field; replace its
        # value, key by key.
        for key in ["BTab"] * 5 + ["C-u", "1", "5", "0", "Escape"]:
            tmux("send-keys", "-t", session, key)
            time.sleep(0.2)
        wait_until(lambda: " 150 " in screen_text(session), timeout=30, what="the steps typed")
        tmux("send-keys", "-t", session, "s")
        run = wait_until(
            lambda: next(iter(runs.glob("*/events.jsonl")), None), timeout=120, what="the run's events"
        ).parent
        wait_until(
            lambda: any(e["event"] == "step" for e in read_events(run / "events.jsonl")), what="first steps"
        )
        app_pid = int(tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())
        trainer_pid = live_owner(run).pid
        assert trainer_pid != app_pid
    finally:
        subprocess.run(
            ["tmux", "-L", SOCKET, "kill-session", "-t", session], check=False
        )  # SIGHUP, as sshd sends on a drop
    wait_until(lambda: not _alive(app_pid), timeout=10, what="the app to end")
    assert live_owner(run) is not None  # the run did not notice
    wait_until(lambda: summarize_run(run).status == "finished", timeout=1500, what="the run to finish")
    events = read_events(run / "events.jsonl")
    logged = [e["step"] for e in events if e["event"] == "step"]
    assert logged[0] == 1 and logged[-1] == 150 and logged == sorted(set(logged))
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert "train.log" in os.listdir(run)
    # The same settings trained without any interruption end at the same loss.
    from backprop_engine import Trainer

    settings = RunDir.open(run).read_config().to_dict()
    model, data, steps = settings.pop("model"), settings.pop("data"), settings.pop("steps")
    straight = Trainer(model, **settings).train(data, steps=steps, output_dir=tmp_path / "straight")
    assert events[-1]["final_loss"] == pytest.approx(straight.final_loss, abs=1e-6)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_second_app_attaches_with_history_and_full_control(tmp_path):
    run = tmp_path / "run"
    process = start_headless(run)
    try:
        wait_until(
            lambda: sum(e["event"] == "step" for e in read_events(run / "events.jsonl")) >= 2, what="steps"
        )
        app = make_app(write_settings(tmp_path / "home"), watch_run=run)
        app.watch_read_only = False  # `backprop attach RUN`
        async with app.run_test(size=(100, 32)) as pilot:
            screen = app.screen
            assert isinstance(screen, TrainScreen)
            chart = screen.query_one("#loss-chart", LineChart)
            await wait_for(
                pilot,
                lambda: chart.series["train"] and chart.series["train"][0][0] == 1,
                what="history from step 1",
            )
            await pilot.press("p")
            await wait_for(pilot, lambda: "paused at step" in log_text(screen, "#event-log"), what="pause")
            await pilot.press("s")  # a second start of a live run is refused, with the reason
            assert app.screen is screen and live_owner(run).pid == process.pid
            await pilot.press("p")
            await wait_for(pilot, lambda: "resumed at step" in log_text(screen, "#event-log"), what="resume")
            await pilot.press("c")
            await wait_for(
                pilot, lambda: "checkpoint saved at step" in log_text(screen, "#event-log"), what="checkpoint"
            )
            await pilot.press("x", "y")
            await wait_for(pilot, lambda: "stopped:" in log_text(screen, "#event-log"), what="stop")
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    controls = [e["action"] for e in read_events(run / "events.jsonl") if e["event"] == "control"]
    assert controls == ["pause", "resume", "checkpoint", "stop"]


async def test_watch_is_read_only(tmp_path):
    run = tmp_path / "run"
    process = start_headless(run)
    try:
        wait_until(lambda: any(e["event"] == "step" for e in read_events(run / "events.jsonl")), what="steps")
        app = make_app(write_settings(tmp_path / "home"), watch_run=run)
        async with app.run_test(size=(100, 32)) as pilot:
            await pilot.press("p")
            await pilot.pause(0.5)
        assert summarize_run(run).status == "running"
        assert not any(e["event"] == "control" for e in read_events(run / "events.jsonl"))
        send_control(run, "stop")
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()


async def _start_from_the_train_screen(app, pilot, steps: int = 3000) -> Path:
    from textual.widgets import Input

    await pilot.press("3")
    screen = app.screen
    screen.query_one("#field-steps", Input).value = str(steps)
    await pilot.press("s")
    await wait_for(
        pilot,
        lambda: screen.run_dir is not None and live_owner(screen.run_dir) is not None,
        what="the run's process",
    )
    await wait_for(
        pilot,
        lambda: any(e["event"] == "step" for e in read_events(screen.run_dir / "events.jsonl")),
        what="a step",
    )
    return screen.run_dir


async def test_ctrl_q_can_leave_a_run_training_in_the_background(tmp_path):
    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(100, 32)) as pilot:
        run = await _start_from_the_train_screen(app, pilot)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), what="the question")
        await pilot.press("l")
    assert live_owner(run) is not None  # the app is gone, the run trains on
    wait_until(
        lambda: any(e["event"] == "step" for e in read_events(run / "events.jsonl")),
        what="steps after the app left",
    )
    send_control(run, "stop")
    wait_until(lambda: summarize_run(run).status == "stopped", what="stop")


async def test_ctrl_q_can_stop_the_run_with_checkpoint_and_adapter(tmp_path):
    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(100, 32)) as pilot:
        run = await _start_from_the_train_screen(app, pilot)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), what="the question")
        await pilot.press("s")
    wait_until(lambda: summarize_run(run).status == "stopped", what="the stopped run")
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert any((run / "checkpoints").glob("step-*"))


async def test_a_bad_start_shows_the_error_and_leaves_nothing(tmp_path):
    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(100, 32)) as pilot:
        app.session.data = str(tmp_path / "missing.jsonl")
        await pilot.press("3")
        screen = app.screen
        await pilot.press("s")
        from .tui_helpers import text_of

        await wait_for(
            pilot, lambda: "missing.jsonl" in text_of(screen.query_one("#train-error")), what="the error"
        )
    runs = tmp_path / "home" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


async def test_a_second_start_while_the_first_process_starts_is_refused(tmp_path, monkeypatch):
    """Between the launch and the run's lock (the process is still importing), a second `s` used to start a
    second run. The process is held in that window (SIGSTOP) while the keys arrive; the data is missing, so
    once let go it exits soon after."""
    import signal

    import backprop_tui.screens.train as train_screen

    from .tui_helpers import text_of

    launched = []
    real_launch = train_screen.launch

    def held_launch(spec):
        launched.append(real_launch(spec))
        os.kill(launched[-1].process.pid, signal.SIGSTOP)
        return launched[-1]

    monkeypatch.setattr(train_screen, "launch", held_launch)
    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(100, 32)) as pilot:
        app.session.data = str(tmp_path / "missing.jsonl")
        await pilot.press("3")
        screen = app.screen
        try:
            await pilot.press("s", "s", "s")
            assert len(launched) == 1 and live_owner(launched[0].run_dir) is None  # not claimed: the window
            assert any("is starting or training" in n.message for n in app._notifications)
        finally:
            for started in launched:
                os.kill(started.process.pid, signal.SIGCONT)
        await wait_for(
            pilot, lambda: "missing.jsonl" in text_of(screen.query_one("#train-error")), what="the error"
        )
    assert launched[0].process.wait(timeout=60) != 0


async def test_an_export_started_in_the_app_finishes_after_the_app_quits(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(
        trained_run("tiny").run.path,
        run,
        ignore=shutil.ignore_patterns("export", "merged", "export.jsonl", "export.log"),
    )
    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(100, 32)) as pilot:
        app.session.run_dir = run
        await pilot.press("4")
        await pilot.press("e")
        await wait_for(pilot, lambda: app.screen.exporting is not None, what="the export process")
        exporting = app.screen.exporting
        await pilot.press("ctrl+q")  # no training run: the app quits at once, the export goes on
    assert exporting.process.wait(timeout=600) == 0
    assert (run / "export" / "run.q4_k_m.gguf").is_file()
    finished = [e for e in read_events(run / "export.jsonl") if e["event"] == "export_finished"]
    assert finished and finished[0]["paths"] == [str(run / "export" / "run.q4_k_m.gguf")]


async def test_continuing_a_run_without_a_checkpoint_offers_to_start_it_again(tmp_path):
    from textual.widgets import DataTable

    from backprop_tui.screens.modals import ConfirmScreen

    from .tui_helpers import write_fixed_run

    runs = tmp_path / "home" / "runs"
    write_fixed_run(runs, "killed-early", steps=12, finished=False)  # no lock holder, no checkpoint
    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(120, 32)) as pilot:
        await pilot.press("5")
        row = [str(cell) for cell in app.screen.query_one("#runs", DataTable).get_row_at(0)]
        assert "interrupted (no ckpt)" in row[2] and "(last logged)" in row[4]
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the offer to start again")
        await pilot.press("y")
        await wait_for(
            pilot, lambda: any(p.name.endswith("-again") for p in runs.iterdir()), what="the new run"
        )
        again = next(p for p in runs.iterdir() if p.name.endswith("-again"))
        await wait_for(
            pilot,
            lambda: summarize_run(again).status == "finished",
            timeout=600,
            what="the new run to finish",
        )
    assert (runs / "killed-early" / "events.jsonl").is_file()  # the old run is left as it was
