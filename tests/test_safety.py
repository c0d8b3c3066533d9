"""GPU safety: warn / pause / stop thresholds from settings (overridable per run), driven by scripted NVML readings
and a fake sleep — the only parts faked; the end-to-end runs train the real tiny model."""

from __future__ import annotations

import re

import pytest

from backprop_engine.config import TrainConfig
from backprop_engine.errors import ConfigError
from backprop_engine.events import Event, EventBus, GpuSafety
from backprop_engine.hardware import GpuReading
from backprop_engine.settings import Settings, load_settings, save_settings
from backprop_engine.train.control import TrainingControl
from backprop_engine.train.safety import SafetyLimits, ThermalGuard

LIMITS = SafetyLimits(warn_c=75, critical_c=85, emergency_c=95, memory_pct=90, cool_timeout_s=30)


def gpu(temperature_c: float | None, memory_pct: float = 50.0, index: int = 0) -> GpuReading:
    return GpuReading(index, "NVIDIA H100", 80_000, 800 * memory_pct, temperature_c, 90.0, 500.0)


class Scripted:
    """read_gpus that replays one reading list per call (the last one repeats), and a sleep that only counts."""

    def __init__(self, *readings: list[GpuReading]) -> None:
        self.readings = list(readings)
        self.calls = 0
        self.sleeps: list[float] = []

    def read_gpus(self) -> list[GpuReading]:
        self.calls += 1
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def guard_for(script: Scripted, every_steps: int = 1) -> tuple[ThermalGuard, list[Event], TrainingControl]:
    guard = ThermalGuard(
        LIMITS, read_gpus=script.read_gpus, sleep=script.sleep, every_steps=every_steps, poll_seconds=10
    )
    return guard, [], TrainingControl()


def run_checks(guard, events, control, steps: int) -> list[float]:
    bus = EventBus([events.append])
    return [guard.check(step, bus, control) for step in range(steps)]


def transitions(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.level, e.action) for e in events if isinstance(e, GpuSafety)]


def test_a_warm_gpu_warns_once_per_crossing():
    script = Scripted(*[[gpu(t)] for t in (70, 78, 82, 79, 72, 69, 76, 77)])
    guard, events, control = guard_for(script)
    waits = run_checks(guard, events, control, 8)
    # 72 is inside the hysteresis (75 - 5): still warm; 69 clears; 76 is a new crossing.
    assert transitions(events) == [("warn", "warn"), ("normal", "clear"), ("warn", "warn")]
    assert events[0].message == "GPU 0 at 78°C (warning at 75°C)" and events[0].temperature_c == 78
    assert waits == [0.0] * 8 and not control.stop_requested and script.sleeps == []


def test_a_critical_gpu_pauses_until_it_cools_then_training_resumes():
    script = Scripted(*[[gpu(t)] for t in (88, 87, 83, 80, 69)])
    guard, events, control = guard_for(script)
    run_checks(guard, events, control, 1)
    assert transitions(events) == [("critical", "pause"), ("warn", "resume")]
    assert (
        events[0].message
        == "GPU 0 at 88°C (critical at 85°C): training paused until it cools to 80°C, at most 30 s"
    )
    assert events[1].message == "GPU 0 cooled to 80°C after 30 s: training resumes"
    assert script.sleeps == [10, 10, 10] and not control.stop_requested and guard.last_c == 80
    run_checks(guard, events, control, 1)  # 69: the warning the resume left behind clears
    assert transitions(events)[-1] == ("normal", "clear")


def test_a_gpu_that_does_not_cool_in_time_saves_a_checkpoint_and_stops():
    script = Scripted([gpu(88)], [gpu(87)])
    guard, events, control = guard_for(script)
    run_checks(guard, events, control, 3)
    assert transitions(events) == [("critical", "pause"), ("critical", "stop")]
    assert (
        events[-1].message
        == "GPU 0 still at 87°C after 30 s paused (timeout 30 s): saving a checkpoint and stopping"
    )
    assert script.sleeps == [10, 10, 10] and control.stop_requested and control.take_checkpoint_request()
    assert script.calls == 4  # once stopped, later checks read nothing


@pytest.mark.parametrize("readings", [[96], [88, 91, 97]], ids=["at-once", "while-paused"])
def test_an_emergency_temperature_saves_a_checkpoint_and_stops(readings):
    script = Scripted(*[[gpu(t)] for t in readings])
    guard, events, control = guard_for(script)
    run_checks(guard, events, control, 1)
    assert transitions(events)[-1] == ("emergency", "stop")
    assert (
        events[-1].message
        == f"GPU 0 at {readings[-1]}°C (emergency at 95°C): saving a checkpoint and stopping"
    )
    assert control.stop_requested and control.take_checkpoint_request()


def test_the_hottest_gpu_counts_and_a_full_gpu_memory_warns_once():
    script = Scripted(
        [gpu(60, 50, 0), gpu(65, 40, 1)],
        [gpu(60, 92, 0), gpu(78, 40, 1)],
        [gpu(60, 95, 0), gpu(78, 40, 1)],
        [gpu(60, 86, 0), gpu(60, 40, 1)],  # inside the memory hysteresis (90 - 5)
        [gpu(60, 80, 0), gpu(60, 40, 1)],
    )
    guard, events, control = guard_for(script)
    run_checks(guard, events, control, 5)
    assert transitions(events) == [
        ("memory", "warn"),
        ("warn", "warn"),
        ("normal", "clear"),
        ("memory", "clear"),
    ]
    memory = events[0]
    assert memory.gpu == 0 and memory.memory_pct == 92.0
    assert memory.message == "GPU 0 memory 92% used (71.9 of 78.1 GB; warning at 90%)"
    assert events[1].gpu == 1 and events[1].temperature_c == 78


def test_checks_run_every_n_steps_and_no_gpu_means_nothing_to_do():
    script = Scripted([gpu(99)])
    guard, events, control = guard_for(script, every_steps=10)
    bus = EventBus([events.append])
    assert [guard.check(step, bus, TrainingControl()) for step in (1, 5, 9)] == [
        0.0
    ] * 3 and script.calls == 0
    guard.check(10, bus, control)
    assert script.calls == 1 and control.stop_requested
    nothing = Scripted([gpu(None)], [])
    guard, events, control = guard_for(nothing)
    assert run_checks(guard, events, control, 3) == [0.0] * 3 and events == [] and guard.last_c is None


def test_a_user_stop_ends_a_thermal_pause():
    script = Scripted([gpu(88)])
    guard, events, control = guard_for(script)
    guard.sleep = lambda seconds: control.stop()  # the user presses Stop while the GPU cools
    run_checks(guard, events, control, 1)
    assert transitions(events) == [("critical", "pause")] and script.calls == 2


# ----- thresholds: settings, their validation, per-run overrides


def test_settings_hold_the_thresholds_and_round_trip(tmp_path):
    settings = Settings(
        gpu_temperature_warn_c=70,
        gpu_temperature_limit_c=80,
        gpu_temperature_emergency_c=90,
        gpu_memory_warn_pct=85,
        gpu_cool_timeout_s=120,
    )
    path = save_settings(settings, tmp_path / "settings.toml")
    assert "gpu_temperature_emergency_c = 90" in path.read_text()
    assert load_settings(path) == (settings, None)
    assert SafetyLimits.resolve(settings=settings) == SafetyLimits(70, 80, 90, 85, 120)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"gpu_temperature_warn_c": 85},
            "GPU temperatures must rise: gpu_temperature_warn_c (85) < gpu_temperature_limit_c (85)",
        ),
        (
            {"gpu_temperature_emergency_c": 80},
            "gpu_temperature_limit_c (85) < gpu_temperature_emergency_c (80)",
        ),
        ({"gpu_temperature_limit_c": 130}, "gpu_temperature_limit_c must be between 40 and 110"),
        ({"gpu_memory_warn_pct": 101}, "gpu_memory_warn_pct must be between 50 and 100"),
        ({"gpu_cool_timeout_s": 0}, "gpu_cool_timeout_s must be between 10 and 86400"),
    ],
)
def test_bad_thresholds_are_refused(tmp_path, values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        save_settings(Settings(**values), tmp_path / "settings.toml")
    path = tmp_path / "hand-edited.toml"
    path.write_text(
        "".join(f"{name} = {value}\n" for name, value in values.items()) + 'ollama_host = "http://box:1"\n'
    )
    settings, notice = load_settings(path)
    assert settings == Settings() and message in notice and not path.exists()  # moved aside, defaults loaded


def test_a_limit_set_alone_keeps_warn_and_stop_around_it(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text(
        'ollama_host = "http://box:1"\ngpu_temperature_limit_c = 70\n'
    )  # a file from before the tiers
    settings, notice = load_settings(path)
    assert notice is None and settings.ollama_host == "http://box:1"
    assert (
        settings.gpu_temperature_warn_c,
        settings.gpu_temperature_limit_c,
        settings.gpu_temperature_emergency_c,
    ) == (60, 70, 80)


def test_runs_use_the_user_settings_unless_they_override_them(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    save_settings(
        Settings(gpu_temperature_warn_c=65, gpu_temperature_limit_c=75, gpu_temperature_emergency_c=85)
    )
    assert SafetyLimits.for_config(TrainConfig()) == SafetyLimits(65, 75, 85, 95, 900)
    config = TrainConfig(max_gpu_temperature_c=80, gpu_memory_warn_pct=70, gpu_cool_timeout_s=60)
    assert SafetyLimits.for_config(config) == SafetyLimits(65, 80, 85, 70, 60)
    with pytest.raises(
        ConfigError, match=r"gpu_temperature_limit_c \(90\) < gpu_temperature_emergency_c \(85\)"
    ) as error:
        TrainConfig(max_gpu_temperature_c=90)
    assert "settings" in error.value.hint
    with pytest.raises(ConfigError, match="gpu_temperature_warn_c must be between 30 and 110"):
        TrainConfig(gpu_temperature_warn_c=-5)


# ----- end to end: the real loop on the tiny model, NVML readings scripted


def train_with_readings(tmp_path, monkeypatch, temperatures, steps=12, **overrides):
    from backprop_engine import Trainer, hardware

    readings = iter(temperatures)
    sleeps: list[float] = []
    monkeypatch.setattr(hardware, "read_gpus", lambda: [gpu(next(readings, temperatures[-1]))])
    # The plan's machine probe must not consume the scripted readings meant for the guard.
    monkeypatch.setattr(hardware, "probe", lambda: hardware.HardwareReading(2, 0.0, 24_000.0, 20_000.0))
    monkeypatch.setattr("time.sleep", sleeps.append)
    events: list[Event] = []
    trainer = Trainer("tiny", on_event=events.append, logging_steps=1, **overrides)
    return trainer.train("sample", steps=steps, output_dir=tmp_path / "run"), events, sleeps


def test_training_pauses_for_a_hot_gpu_and_resumes(tmp_path, monkeypatch):
    result, events, sleeps = train_with_readings(
        tmp_path, monkeypatch, [91.0, 88.0, 84.0, 79.0, 65.0], max_gpu_temperature_c=85
    )
    assert transitions(events) == [("critical", "pause"), ("warn", "resume"), ("normal", "clear")]
    assert len(sleeps) == 3 and result.steps == 12 and not result.stopped_early
    assert [e.temperature_c for e in events if e.kind == "step"][-1] == 65.0


def test_an_emergency_during_training_stops_the_run_early(tmp_path, monkeypatch):
    result, events, sleeps = train_with_readings(
        tmp_path, monkeypatch, [60.0, 97.0]
    )  # the check before step 11
    assert transitions(events) == [("emergency", "stop")] and sleeps == []
    assert result.stopped_early and result.steps == 10
    finished = [e for e in events if e.kind == "finished"][-1]
    assert finished.stopped_early and finished.steps == 10
    assert [
        line
        for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()
        if '"gpu_safety"' in line
    ]
    assert [e.step for e in events if e.kind == "checkpoint"][-1] == 10  # resumable from where it stopped


def test_cli_flags_reach_the_run_config_and_contradictions_exit_2(tmp_path, capsys):
    from backprop_engine.cli import main

    run = tmp_path / "run"
    flags = [
        "--gpu-temperature-warn",
        "70",
        "--max-gpu-temperature",
        "80",
        "--gpu-temperature-emergency",
        "90",
        "--gpu-memory-warn",
        "85",
        "--gpu-cool-timeout",
        "60",
        "--report-to",
        "tensorboard",
    ]
    assert main(["train", "--steps", "2", *flags, "--output", str(run)]) == 0
    config = TrainConfig.from_toml(run / "config.toml")
    assert SafetyLimits.for_config(config) == SafetyLimits(70, 80, 90, 85, 60) and config.report_to == [
        "tensorboard"
    ]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    capsys.readouterr()
    assert (
        main(["train", "--steps", "2", "--max-gpu-temperature", "99", "--output", str(tmp_path / "hot")]) == 2
    )
    err = capsys.readouterr().err
    assert (
        "error: GPU safety: GPU temperatures must rise: gpu_temperature_warn_c (75) < gpu_temperature_limit_c (99)"
        in err
    )
    assert "hint: " in err and not (tmp_path / "hot").exists()


# ----- the app: the Settings screen edits the thresholds; the Train dashboard logs the transitions


async def test_the_settings_screen_edits_the_thresholds(tmp_path):
    from textual.widgets import Input

    from .tui_helpers import make_app, text_of, write_settings

    path = write_settings(tmp_path / "home")
    app = make_app(path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("6")
        field = lambda name: app.screen.query_one(f"#setting-{name}", Input)  # noqa: E731
        field("gpu_temperature_emergency_c").value = "80"
        await pilot.press("ctrl+s")
        assert "GPU temperatures must rise" in text_of(app.screen.query_one("#settings-error"))
        for name, value in [
            ("gpu_temperature_warn_c", "70"),
            ("gpu_temperature_limit_c", "78"),
            ("gpu_temperature_emergency_c", "88"),
            ("gpu_memory_warn_pct", "90"),
            ("gpu_cool_timeout_s", "300"),
        ]:
            field(name).value = value
        await pilot.press("ctrl+s")
        assert text_of(app.screen.query_one("#settings-error")) == ""
    settings, notice = load_settings(path)
    assert notice is None and SafetyLimits.resolve(settings=settings) == SafetyLimits(70, 78, 88, 90, 300)


async def test_the_train_dashboard_logs_gpu_safety_events(tmp_path):
    import json

    from textual.widgets import RichLog

    from .tui_helpers import make_app, wait_for, write_fixed_run, write_settings

    run = write_fixed_run(tmp_path / "runs", "hot", steps=10, finished=False)
    stop = GpuSafety(
        level="emergency",
        action="stop",
        gpu=0,
        temperature_c=96.0,
        memory_pct=71.2,
        message="GPU 0 at 96°C (emergency at 95°C): saving a checkpoint and stopping",
    )
    with (run / "events.jsonl").open("a") as events:
        events.write(json.dumps(stop.to_dict()) + "\n")
    app = make_app(write_settings(tmp_path / "home"), watch_run=run)
    async with app.run_test(size=(100, 32)) as pilot:
        log = app.screen.query_one("#event-log", RichLog)
        expected = "gpu stop: GPU 0 at 96°C (emergency at 95°C): saving a checkpoint and stopping"
        await wait_for(
            pilot, lambda: any(line.text == expected for line in log.lines), what="the gpu_safety line"
        )
