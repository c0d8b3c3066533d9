"""Train screen: settings with the reason for each default, then the live dashboard.

The engine runs in a thread worker; its events arrive here as ``EngineEvent`` messages. The same
dashboard follows a run started elsewhere by tailing its events.jsonl (``backprop watch``).
"""

from __future__ import annotations

import time
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, ContentSwitcher, Footer, Input, Label, ProgressBar, RichLog, Static
from textual.worker import Worker, WorkerState

from backprop_engine.defaults import suggested_settings
from backprop_engine.errors import BackpropError
from backprop_engine.events import Event, format_event
from backprop_engine.runs import EventFollower

from ..widgets.chart import LineChart
from ..widgets.gauge import Gauge
from ..widgets.multirun import KINDS as MULTI_RUN_EVENTS, MultiRunPanel
from ..widgets.nav import NavBar
from .modals import ConfirmScreen

FIELDS = [("steps", "Steps", int), ("learning_rate", "Learning rate", float), ("batch_size", "Batch size", int), ("max_seq_len", "Max seq len", int)]


class TrainScreen(Screen):
    AUTO_FOCUS = "#start"
    BINDINGS = [
        Binding("s", "start", "Start"),
        Binding("p", "toggle_pause", "Pause"),
        Binding("c", "checkpoint", "Ckpt"),
        Binding("x", "stop", "Stop"),
        Binding("v", "toggle_view", "View"),
    ]

    class EngineEvent(Message):
        """One engine event (as its JSON dict), from the training worker or a followed events.jsonl."""

        def __init__(self, event: dict) -> None:
            super().__init__()
            self.event = event

    def __init__(self) -> None:
        super().__init__()
        self.trainer = None
        self.follower: EventFollower | None = None
        self.following: Path | None = None
        self.total_steps = 0

    def compose(self) -> ComposeResult:
        yield NavBar("train")
        with ContentSwitcher(initial="setup", id="train-views"):
            with Vertical(id="setup", classes="body"):
                yield Static("", id="train-summary", classes="choice")
                for name, title, _ in FIELDS:
                    with Horizontal(classes="form-row"):
                        yield Label(title, classes="field-label")
                        yield Input(id=f"field-{name}", classes="short", compact=True)
                        yield Static("", id=f"reason-{name}", classes="reason")
                yield Static("", id="train-error", classes="error")
                yield Button("Start training (s)", id="start", variant="primary", compact=True)
            with Vertical(id="dashboard", classes="body"):
                yield Static("", id="run-title", classes="choice")
                yield LineChart({"train": "cyan", "eval": "magenta"}, id="loss-chart")
                yield MultiRunPanel(id="multirun")
                yield Static("", id="stats")
                yield ProgressBar(id="progress", show_eta=False)
                yield Horizontal(id="gauges")
                yield RichLog(id="event-log", max_lines=500, wrap=False, markup=True)
        yield Footer()

    def on_mount(self) -> None:
        self._fill_form()
        self.sample_hardware()
        self.set_interval(2.0, self.sample_hardware)
        self.set_interval(0.5, self._poll_events)
        self._follow_requested_run()

    def on_screen_resume(self) -> None:
        if self.trainer is None and self.follower is None:
            self._fill_form()
        self._follow_requested_run()

    def _follow_requested_run(self) -> None:
        """The app's ``resume_run`` is continued here; its ``watch_run`` (set by `backprop watch` or the Runs
        screen) is shown read-only."""
        if self.app.resume_run is not None:
            run, self.app.resume_run = self.app.resume_run, None
            if self.trainer is not None:
                self.notify("a run is training already", severity="warning")
                return
            self.follower = None
            self._show_dashboard(f"continuing {run}")
            self.resume_in_background(run)
            return
        requested = self.app.watch_run
        if requested is not None and requested != self.following and self.trainer is None:
            self.follow_run(requested)

    def _fill_form(self) -> None:
        session = self.app.session
        self.query_one("#train-summary", Static).update(
            f"Model [b]{session.model}[/b] · {session.method} rank {session.lora_rank} · data [b]{session.data}[/b]"
        )
        for name, suggestion in suggested_settings(session.model).items():
            auto = name == "max_seq_len" and suggestion.value == 0
            self.query_one(f"#field-{name}", Input).value = "auto" if auto else str(suggestion.value)
            self.query_one(f"#reason-{name}", Static).update(suggestion.reason)

    # ----- starting and controlling a run

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()

    def action_start(self) -> None:
        if self.trainer is not None or self.follower is not None:
            self.notify("a run is already shown; open another from Runs or restart the app", severity="warning")
            return
        try:
            overrides = self._read_form()
        except ValueError as exc:
            self.query_one("#train-error", Static).update(str(exc))
            return
        self.query_one("#train-error", Static).update("")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        output = self.app.session.settings.runs_dir() / f"{stamp}-{Path(self.app.session.model).name}"
        self._show_dashboard(f"training {self.app.session.model} → {output}")
        self.train_in_background(overrides, output)

    def _read_form(self) -> dict:
        values = {}
        for name, title, kind in FIELDS:
            raw = self.query_one(f"#field-{name}", Input).value.strip()
            if name == "max_seq_len" and raw == "auto":
                values[name] = 0  # the engine picks it from the data
                continue
            try:
                values[name] = kind(raw)
            except ValueError:
                raise ValueError(f"{title}: {raw!r} is not a {'whole number' if kind is int else 'number'}") from None
            if values[name] <= 0:
                raise ValueError(f"{title} must be positive")
        values["lora_rank"] = self.app.session.lora_rank
        values["method"] = self.app.session.method
        return values | self.app.session.data_options  # the filters chosen on the Data screen

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def train_in_background(self, overrides: dict, output: Path) -> None:
        from backprop_engine import Trainer

        steps = overrides.pop("steps")
        self.trainer = Trainer(self.app.session.model, on_event=self._relay_engine_event, **overrides)
        self.trainer.train(self.app.session.data, steps=steps, output_dir=output)

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def resume_in_background(self, run: Path) -> None:
        from backprop_engine import Trainer

        self.trainer = Trainer.from_run(run, on_event=self._relay_engine_event)
        self.trainer.resume()

    def _relay_engine_event(self, event) -> None:
        self.post_message(self.EngineEvent(event.to_dict()))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "train":
            return
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            message = str(error) if isinstance(error, BackpropError) else f"{type(error).__name__}: {error}"
            self._log(f"[red]error: {message}[/red]")
            self.query_one("#train-error", Static).update(message)
            self.notify(message, title="Training failed", severity="error", timeout=10)
        if event.state in (WorkerState.ERROR, WorkerState.SUCCESS, WorkerState.CANCELLED):
            if self.trainer is not None and self.trainer.run is not None:
                self.app.session.run_dir = self.trainer.run.path
            self.trainer = None

    def action_toggle_pause(self) -> None:
        if self._require_control():
            control = self.trainer.control
            control.resume() if control.paused else control.pause()

    def action_checkpoint(self) -> None:
        if self._require_control():
            self.trainer.control.request_checkpoint()
            self.notify("a checkpoint is saved after the current step", timeout=3)

    def action_stop(self) -> None:
        if self._require_control():
            self.app.push_screen(ConfirmScreen("Stop training? The adapter is saved at the current step."), self._stop_confirmed)

    def _stop_confirmed(self, confirmed: bool | None) -> None:
        if confirmed and self.trainer is not None:
            self.trainer.control.stop()

    def _require_control(self) -> bool:
        if self.trainer is None:
            reason = "watching read-only: control the run where it was started" if self.follower else "no run in progress"
            self.notify(reason, severity="warning", timeout=4)
            return False
        return True

    def action_toggle_view(self) -> None:
        switcher = self.query_one("#train-views", ContentSwitcher)
        switcher.current = "dashboard" if switcher.current == "setup" else "setup"

    # ----- following a run written by another process

    def follow_run(self, run_dir: Path) -> None:
        self.following = Path(run_dir)
        self.follower = EventFollower(self.following / "events.jsonl")
        self.query_one("#event-log", RichLog).clear()
        self._show_dashboard(f"watching {run_dir} (read-only)")
        self._poll_events()

    def _poll_events(self) -> None:
        if self.follower is not None:
            for event in self.follower.poll():
                self.post_message(self.EngineEvent(event))

    # ----- the dashboard

    def _show_dashboard(self, title: str) -> None:
        self.query_one("#train-views", ContentSwitcher).current = "dashboard"
        self.query_one("#run-title", Static).update(title)
        self.query_one("#loss-chart", LineChart).clear()
        self.query_one(MultiRunPanel).reset()

    def on_train_screen_engine_event(self, message: EngineEvent) -> None:
        event = message.event
        kind = event.get("event")
        if kind == "run_started":
            self.total_steps = event["total_steps"]
            self.query_one("#progress", ProgressBar).update(total=self.total_steps, progress=0)
        elif kind == "step":
            self._show_step(event)
        elif kind == "eval":
            self.query_one("#loss-chart", LineChart).add_point("eval", self._chart_x(event["step"]), event["loss"])
        elif kind == "finished":
            self.query_one("#progress", ProgressBar).update(progress=event["steps"])
        elif kind in MULTI_RUN_EVENTS:
            self.query_one(MultiRunPanel).show(event)
        self._log(self._styled(kind, self._describe(event)))

    def _show_step(self, event: dict) -> None:
        self.query_one("#loss-chart", LineChart).add_point("train", self._chart_x(event["step"]), event["loss"])
        self.query_one("#progress", ProgressBar).update(total=event["total_steps"], progress=event["step"])
        eta = int(event["eta_seconds"])
        self.query_one("#stats", Static).update(
            f"step [b]{event['step']}[/b]/{event['total_steps']}  loss [b]{event['loss']:.4f}[/b]  "
            f"lr {event['learning_rate']:.2e}  grad {event['grad_norm']:.3f}  "
            f"{event['tokens_per_second']:,.0f} tok/s  ETA {eta // 60}:{eta % 60:02d}"
        )

    def _chart_x(self, step: int) -> int:
        """A multi-run's runs follow each other on the loss chart."""
        return step + self.query_one(MultiRunPanel).step_offset(self.total_steps)

    @staticmethod
    def _describe(event: dict) -> str:
        parsed = Event.from_dict(event)
        return (format_event(parsed) if parsed else "") or str(event.get("event", event))

    @staticmethod
    def _styled(kind: str | None, line: str) -> str:
        from rich.markup import escape

        style = {"warning": "yellow", "gpu_safety": "bold yellow", "failed": "bold red", "finished": "bold green", "checkpoint": "cyan"}.get(kind or "")
        return f"[{style}]{escape(line)}[/{style}]" if style else escape(line)

    def _log(self, line: str) -> None:
        self.query_one("#event-log", RichLog).write(line)

    @work(thread=True, exclusive=True, group="gauges")
    def sample_hardware(self) -> None:
        reading = self.app.hardware_probe()
        self.app.call_from_thread(self._show_hardware, reading)

    def _show_hardware(self, reading) -> None:
        """One gauge per GPU (memory, with temperature and utilization), or CPU and RAM on a CPU box."""
        row = self.query_one("#gauges", Horizontal)
        wanted = [f"gpu{g.index}" for g in reading.gpus] or ["cpu", "ram"]
        if [g.id for g in row.query(Gauge)] != [f"gauge-{name}" for name in wanted]:
            row.remove_children()
            row.mount_all(Gauge(name.upper(), id=f"gauge-{name}") for name in wanted)
            self.call_after_refresh(self._show_hardware, reading)
            return
        if not reading.gpus:
            ram_used = reading.ram_total_mb - reading.ram_available_mb
            row.query_one("#gauge-cpu", Gauge).update_value(reading.cpu_percent / 100, f"{reading.cpu_cores} cores")
            row.query_one("#gauge-ram", Gauge).update_value(ram_used / reading.ram_total_mb, f"{ram_used / 1024:.1f}/{reading.ram_total_mb / 1024:.0f}G")
        settings = self.app.session.settings
        limit, warn = settings.gpu_temperature_limit_c, settings.gpu_temperature_warn_c
        for gpu in reading.gpus:
            temperature = gpu.temperature_c or 0
            level = "hot" if temperature >= limit else "warn" if temperature >= warn else "ok"
            detail = f"{gpu.memory_used_mb / 1024:.0f}/{gpu.memory_total_mb / 1024:.0f}G {temperature:.0f}°C"
            if gpu.utilization_pct is not None:
                detail += f" {gpu.utilization_pct:.0f}%util"
            row.query_one(f"#gauge-gpu{gpu.index}", Gauge).update_value(gpu.memory_used_mb / gpu.memory_total_mb, detail, level)
