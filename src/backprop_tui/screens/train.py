"""Train screen: settings with the reason for each default, then the live dashboard.

A run started here trains in a detached process of its own (backprop_engine.detach), so an SSH drop or
closing the app never ends it. The dashboard follows the run's events.jsonl, whoever started it, and its
keys control the run through the run's channel (backprop_engine.channel); `backprop watch` is read-only.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import (
    Button,
    ContentSwitcher,
    Footer,
    Input,
    Label,
    ProgressBar,
    RichLog,
    Select,
    Static,
)
from textual.worker import Worker, WorkerState

from backprop_engine.channel import live_owner, send_control
from backprop_engine.config import option_of
from backprop_engine.data.pairs import PAIR_OBJECTIVES
from backprop_engine.defaults import OBJECTIVE_REASONS
from backprop_engine.detach import Launched, LaunchSpec, launch
from backprop_engine.errors import BackpropError, PairsNeedObjective, render_error
from backprop_engine.events import (
    CheckpointSaved,
    EvalMetrics,
    Event,
    GpuSafety,
    MultiRunFinished,
    Progress,
    RewardMetrics,
    RunFailed,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    StepMetrics,
    StepSkipped,
    WarningEvent,
    format_duration,
    format_event,
)
from backprop_engine.rundir import RunDir
from backprop_engine.runs import EventFollower, summarize_run

from ..widgets.chart import LineChart
from ..widgets.comparison import EVENTS as COMPARISON_EVENTS
from ..widgets.comparison import ComparisonPanel
from ..widgets.gauge import Gauge
from ..widgets.multirun import EVENTS as MULTI_RUN_EVENTS
from ..widgets.multirun import MultiRunPanel
from ..widgets.nav import NavBar
from ..widgets.progress import StageProgress
from ..widgets.rewards import RewardPanel
from .modals import ConfirmScreen, key_of

FIELDS = [option_of(name) for name in ("steps", "learning_rate", "batch_size", "max_seq_len")]
OBJECTIVE = option_of("objective")
OBJECTIVE_CHOICES = [
    (f"{name.upper()} (pairs)" if name in PAIR_OBJECTIVES else name.upper(), name)
    for name in OBJECTIVE.choices
]
CHOSEN_ONLY = option_of("chosen_only")  # a Data screen filter: SFT on the chosen replies of pairs
STRENGTH = {"dpo": option_of("dpo_beta"), "orpo": option_of("orpo_lambda")}


class TrainScreen(Screen):
    AUTO_FOCUS = "#start"
    BINDINGS = [
        Binding("s", "start", "Start"),
        Binding("p", "toggle_pause", "Pause", tooltip="pause/resume"),
        Binding("c", "checkpoint", "Ckpt", tooltip="checkpoint now"),
        Binding("x", "stop", "Stop", tooltip="stop (asks)"),
        Binding("v", "toggle_view", "View", tooltip="settings/dashboard"),
        Binding("o", "objective", "Objective", tooltip="choose the objective"),
    ]

    class EngineEvent(Message):
        """One engine event, typed, from a followed events.jsonl (EventFollower parsed it)."""

        def __init__(self, event: Event) -> None:
            super().__init__()
            self.event = event

    def __init__(self) -> None:
        super().__init__()
        self.run_dir: Path | None = None  # the run on the dashboard
        self.read_only = False
        self.follower: EventFollower | None = None
        self.launched: Launched | None = None  # started by this screen, until its process ends
        self.paused = False
        self.total_steps = 0
        self.plan: dict | None = None  # name → Choice of the plan the form shows (what --dry-run prints)
        self.objective = "sft"
        self.refused_pairs: PairsNeedObjective | None = None  # the plan's refusal of pairs for SFT
        self.planned_for: tuple | None = None  # the data and Data screen filters the form was planned for

    def compose(self) -> ComposeResult:
        yield NavBar()
        with ContentSwitcher(initial="setup", id="train-views"):
            with Vertical(id="setup", classes="body"):
                yield Static("", id="train-summary", classes="choice")
                for option in FIELDS:
                    with Horizontal(classes="form-row"):
                        yield Label(option.label, classes="field-label")
                        yield Input(id=f"field-{option.name}", classes="short", compact=True)
                        yield Static("", id=f"reason-{option.name}", classes="reason")
                with Horizontal(classes="form-row"):
                    yield Label(OBJECTIVE.label, classes="field-label")
                    yield Select(
                        OBJECTIVE_CHOICES, value="sft", allow_blank=False, id="field-objective", compact=True
                    )
                    yield Static("", id="reason-objective", classes="reason")
                with Horizontal(classes="form-row", id="strength-row"):
                    yield Label("", id="strength-label", classes="field-label")
                    yield Input(id="field-strength", classes="short", compact=True)
                    yield Static("", id="reason-strength", classes="reason")
                yield Static("", id="train-error", classes="error")
                start = f"Start training ({key_of(self.BINDINGS, 'start')})"
                yield Button(start, id="start", variant="primary", compact=True)
            with Vertical(id="dashboard", classes="body"):
                yield Static("", id="run-title", classes="choice")
                yield LineChart({"train": "cyan", "eval": "magenta"}, id="loss-chart")
                yield RewardPanel(id="rewards")
                yield MultiRunPanel(id="multirun")
                yield ComparisonPanel(id="comparison")
                yield StageProgress(id="stage-progress")
                yield Static("", id="stats")
                yield ProgressBar(id="progress", show_eta=False)
                yield Horizontal(id="gauges")
                yield RichLog(id="event-log", max_lines=500, wrap=False, markup=True)
        yield Footer()

    def on_mount(self) -> None:
        self._fill_form()
        self.sample_hardware()
        self.set_interval(2.0, self.sample_hardware)
        self.set_interval(0.25, self._poll_events)
        self._follow_requested_run()

    def on_screen_resume(self) -> None:
        if self.run_dir is None or self.planned_for != self._chosen_data():
            self._fill_form()
        self._follow_requested_run()

    def _follow_requested_run(self) -> None:
        """The app's ``resume_run`` is continued here; its ``watch_run`` (set by `backprop watch` / `attach` or
        the Runs screen) is shown, with control unless it was asked for read-only."""
        if self.app.resume_run is not None:
            run, self.app.resume_run = self.app.resume_run, None
            self.continue_run(run)
            return
        requested = self.app.watch_run
        if requested is not None and requested != self.run_dir:
            self.follow_run(requested, read_only=self.app.watch_read_only)

    def _fill_form(self) -> None:
        session = self.app.session
        self.query_one("#train-summary", Static).update(
            f"Model [b]{session.model}[/b] · {session.model_summary()} · data [b]{session.data}[/b]"
        )
        self.plan = self.refused_pairs = None
        self.planned_for = self._chosen_data()
        self.query_one("#train-error", Static).update("")  # the last plan's
        for option in FIELDS:
            self.query_one(f"#field-{option.name}", Input).value = ""
            self.query_one(f"#reason-{option.name}", Static).update("planning from the model and the data…")
        self.query_one("#field-strength", Input).value = ""
        self.query_one("#strength-row").display = self.objective in STRENGTH
        self.query_one("#reason-objective", Static).update(OBJECTIVE_REASONS[self.objective])
        options = session.model_options() | self._objective_option() | self._data_options()
        self.plan_in_background(session.model, session.data, options)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "field-objective" and event.value != self.objective:
            self.objective = str(event.value)  # the plan changes with it (learning rate, pairs per batch)
            self._fill_form()

    @work(thread=True, exclusive=True, group="plan", exit_on_error=False)
    def plan_in_background(self, model: str, data: str, options: dict) -> None:
        """The form shows the plan `backprop train --dry-run` prints for this model and data."""
        from backprop_engine import Trainer

        plan = Trainer(model, **options).plan(data, machine=self.app.hardware_probe())
        self.app.call_from_thread(self._show_plan, {choice.name: choice for choice in plan.choices})

    def _show_plan(self, choices: dict) -> None:
        self.plan = choices
        for option in FIELDS:
            field = self.query_one(f"#field-{option.name}", Input)
            field.placeholder = str(choices[option.name].value)  # an emptied field is planned again
            if not field.value and not field.has_focus:  # never under the cursor of someone typing
                field.value = field.placeholder
            self.query_one(f"#reason-{option.name}", Static).update(choices[option.name].reason)
        if self.objective in STRENGTH:
            strength = STRENGTH[self.objective]
            self.query_one("#strength-label", Label).update(strength.label)
            field = self.query_one("#field-strength", Input)
            field.placeholder = str(choices[strength.name].value)
            if not field.value and not field.has_focus:
                field.value = field.placeholder
            self.query_one("#reason-strength", Static).update(choices[strength.name].reason)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "plan" and event.state == WorkerState.ERROR:
            error = event.worker.error
            for option in FIELDS:  # no plan is coming: the message below says why
                self.query_one(f"#reason-{option.name}", Static).update("not planned: see below")
            if isinstance(error, PairsNeedObjective):
                self.refused_pairs = error
                self.query_one("#train-error", Static).update(self._pairs_hint(error))
                return
            prefix = "" if isinstance(error, BackpropError) else "planning failed: "
            self.query_one("#train-error", Static).update(render_error(error, prefix=prefix))

    def _pairs_hint(self, error: PairsNeedObjective) -> str:
        """The engine's refusal, worded with this form's controls instead of the CLI's flags."""
        pair_objectives = " or ".join(name.upper() for name in PAIR_OBJECTIVES)
        data_key = key_of(self.app.BINDINGS, "switch_mode('data')")
        return (
            f"{error.pairs} of {error.rows} rows are preference pairs (chosen/rejected): set {OBJECTIVE.label} "
            f"({key_of(self.BINDINGS, 'objective')}) to {pair_objectives} to train on both replies, or tick "
            f"{CHOSEN_ONLY.short} on Data ({data_key}) for SFT on the chosen replies"
        )

    # ----- starting and controlling a run (it trains in a process of its own: backprop_engine.detach)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()

    def action_start(self) -> None:
        if self.refused_pairs is not None:  # its process would only refuse them too
            self.query_one("#train-error", Static).update(self._pairs_hint(self.refused_pairs))
            return
        if self._live_owner() is not None:
            self.notify(
                f"{self.run_dir.name} is training; stop it ({key_of(self.BINDINGS, 'stop')}) or open another run from Runs",
                severity="warning",
            )
            return
        try:
            overrides = self._read_form()
        except ValueError as exc:
            self.query_one("#train-error", Static).update(str(exc))
            return
        self.query_one("#train-error", Static).update("")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        output = self.app.session.settings.runs_dir() / f"{stamp}-{Path(self.app.session.model).name}"
        steps = overrides.pop("steps", None)
        spec = LaunchSpec(
            action="train",
            run_dir=str(output),
            model=self.app.session.model,
            data=self.app.session.data,
            steps=steps,
            overrides=overrides,
        )
        self._launch(spec, f"training {self.app.session.model} → {output}")

    def _read_form(self) -> dict:
        values = {}
        for option in FIELDS:
            raw = self.query_one(f"#field-{option.name}", Input).value.strip()
            if raw and not (self.plan and raw == str(self.plan[option.name].value)):  # else: planned again
                values[option.name] = option.parse(raw)
        values |= self._read_objective()
        return values | self.app.session.model_options() | self._data_options()

    def _chosen_data(self) -> tuple:
        return self.app.session.data, dict(self.app.session.data_options)

    def _data_options(self) -> dict:
        """The filters chosen on the Data screen; its chosen-only is SFT's (DPO and ORPO train both replies)."""
        options = dict(self.app.session.data_options)
        if self.objective in PAIR_OBJECTIVES:
            options.pop(CHOSEN_ONLY.name, None)
        return options

    def _objective_option(self) -> dict:
        return {"objective": self.objective} if self.objective != "sft" else {}

    def _read_objective(self) -> dict:
        if self.objective not in STRENGTH:
            return self._objective_option()
        strength = STRENGTH[self.objective]
        raw = self.query_one("#field-strength", Input).value.strip()
        if not raw or (self.plan and raw == str(self.plan[strength.name].value)):
            return self._objective_option()
        return {"objective": self.objective, strength.name: strength.parse(raw)}

    def continue_run(self, run: Path) -> None:
        """Resume ``run`` from its newest checkpoint; a live run is attached instead, and a run without a
        checkpoint offers to start again (as a new run with the same settings)."""
        if live_owner(run) is not None:
            self.notify(f"{run.name} is training already: attached to it", timeout=4)
            self.follow_run(run, read_only=False)
        elif summarize_run(run).checkpoint_step is None:
            question = (
                f"{run.name} has no checkpoint to continue from. Start it again from step 0 as a new run?"
            )
            self.app.push_screen(ConfirmScreen(question), lambda yes: yes and self._start_again(run))
        else:
            self._launch(LaunchSpec(action="resume", run_dir=str(run)), f"continuing {run}")

    def _start_again(self, run: Path) -> None:
        settings = RunDir.open(run).read_config().to_dict()
        model, data, steps = settings.pop("model"), settings.pop("data"), settings.pop("steps")
        output = run.with_name(f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(model).name}-again")
        self._launch(
            LaunchSpec(
                action="train", run_dir=str(output), model=model, data=data, steps=steps, overrides=settings
            ),
            f"training {model} again → {output}",
        )

    def _launch(self, spec: LaunchSpec, title: str) -> None:
        if self.launched is not None and self.launched.process.poll() is None:  # before its lock exists, too
            self.notify(
                f"{self.launched.run_dir.name} is starting or training; stop it ({key_of(self.BINDINGS, 'stop')}) first",
                severity="warning",
            )
            return
        try:
            self.launched = launch(spec)
        except (BackpropError, OSError) as exc:
            self._show_error(render_error(exc, prefix=""))
            return
        self.app.launched[self.launched.run_dir] = self.launched
        self.follow_run(self.launched.run_dir, read_only=False, title=title)

    def _show_error(self, message: str) -> None:
        self._log(f"[red]error: {escape(message)}[/red]")
        self.query_one("#train-error", Static).update(message)
        self.notify(message, title="Training failed", severity="error", timeout=10)

    def _check_launch(self) -> None:
        """A launched process that exits before its run exists (bad data, unknown model) left an error."""
        if self.launched is None:
            return
        message = self.launched.failed_before_start()
        if message is not None:
            self.app.launched.pop(self.launched.run_dir, None)
            self.launched = self.run_dir = self.follower = None
            self.query_one("#train-views", ContentSwitcher).current = "setup"
            if message.startswith("stopped during"):  # the user's own stop (progress.py words it)
                self.query_one("#train-error", Static).update(message)
                self.notify(message, title="Stopped", timeout=8)
            else:
                self._show_error(message)
        elif self.launched.process.poll() is not None:
            self.launched = None  # it ran and ended: its events say how

    def action_toggle_pause(self) -> None:
        self._control("resume" if self.paused else "pause")

    def action_checkpoint(self) -> None:
        if self._control("checkpoint"):
            self.notify("a checkpoint is saved after the current step", timeout=3)

    def action_stop(self) -> None:
        if self._controllable():
            started = self.total_steps > 0  # run_started came: steps are being trained
            question = (
                "Stop training? The adapter is saved at the current step."
                if started
                else "Stop before the first step? The stage running now stops at its next unit."
            )
            self.app.push_screen(ConfirmScreen(question), self._stop_confirmed)

    def _stop_confirmed(self, confirmed: bool | None) -> None:
        if confirmed:
            self._control("stop")

    def _control(self, action: str) -> bool:
        """Send ``action`` through the run's channel; any app or command of this user can."""
        if not self._controllable():
            return False
        try:
            send_control(self.run_dir, action)
        except BackpropError as error:
            self.notify(render_error(error, prefix=""), severity="warning", timeout=5)
            return False
        return True

    def _controllable(self) -> bool:
        if self.run_dir is None:
            self.notify("no run in progress", severity="warning", timeout=4)
            return False
        if self.read_only:
            self.notify(
                f"watching read-only: control it with `backprop attach {self.run_dir}` or Runs → enter",
                severity="warning",
                timeout=5,
            )
            return False
        return True

    def _live_owner(self):
        return live_owner(self.run_dir) if self.run_dir is not None else None

    def action_objective(self) -> None:
        self.query_one("#train-views", ContentSwitcher).current = "setup"
        self.query_one("#field-objective", Select).focus()

    def action_toggle_view(self) -> None:
        switcher = self.query_one("#train-views", ContentSwitcher)
        switcher.current = "dashboard" if switcher.current == "setup" else "setup"

    # ----- following a run's events.jsonl (every run trains in a process of its own)

    def follow_run(self, run_dir: Path, read_only: bool, title: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.read_only = read_only
        self.paused = False
        self.total_steps = 0
        self.follower = EventFollower(self.run_dir / "events.jsonl")
        self.query_one("#event-log", RichLog).clear()
        self._show_dashboard(
            title
            or f"{'watching' if read_only else 'attached to'} {run_dir}{' (read-only)' if read_only else ''}"
        )
        self._poll_events()

    def _poll_events(self) -> None:
        self._check_launch()
        if self.follower is not None:
            for event in self.follower.poll_events():
                self.post_message(self.EngineEvent(event))

    # ----- the dashboard

    def _show_dashboard(self, title: str) -> None:
        self.query_one("#train-views", ContentSwitcher).current = "dashboard"
        self.query_one("#run-title", Static).update(title)
        self.query_one("#loss-chart", LineChart).clear()
        self.query_one(RewardPanel).reset()
        self.query_one(MultiRunPanel).reset()
        self.query_one(ComparisonPanel).reset()
        self.query_one(StageProgress).hide()

    def on_train_screen_engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if isinstance(event, Progress):  # the bar shows the stage; the log keeps one line per finished stage
            finished = self.query_one(StageProgress).show(event)
            if finished:
                self._log(f"[dim]✓ {escape(finished)}[/dim]")
            return
        if isinstance(event, (StepMetrics, RunFinished, RunFailed)):  # or a stage a stop ended midway
            self.query_one(StageProgress).hide()
        if isinstance(event, RunStarted):
            self.total_steps = event.total_steps
            self.query_one("#progress", ProgressBar).update(total=self.total_steps, progress=0)
        elif isinstance(event, StepMetrics):
            self._show_step(event)
        elif isinstance(event, EvalMetrics):
            self.query_one("#loss-chart", LineChart).add_point("eval", self._chart_x(event.step), event.loss)
        elif isinstance(event, (RunPaused, RunResumed)):
            self.paused = isinstance(event, RunPaused)
        elif isinstance(event, RunFinished):
            self.query_one("#progress", ProgressBar).update(progress=event.steps)
        elif isinstance(event, RewardMetrics):
            self.query_one(RewardPanel).show(event, self._chart_x(event.step))
        elif isinstance(event, MULTI_RUN_EVENTS):
            self.query_one(MultiRunPanel).show(event)
        elif isinstance(event, COMPARISON_EVENTS):
            self.query_one(ComparisonPanel).show(event)
            if event.kind == "comparison":  # the panel shows the answers; the log keeps the headline
                self._log(self._styled(event, self._describe(event).splitlines()[0]))
                return
        if isinstance(event, (RunFinished, RunFailed, MultiRunFinished)):
            self.app.session.run_dir = self.run_dir  # the Export screen's run
        self._log(self._styled(event, self._describe(event)))

    def _show_step(self, event: StepMetrics) -> None:
        self.query_one("#loss-chart", LineChart).add_point("train", self._chart_x(event.step), event.loss)
        self.query_one("#progress", ProgressBar).update(total=event.total_steps, progress=event.step)
        self.query_one("#stats", Static).update(
            f"step [b]{event.step}[/b]/{event.total_steps}  loss [b]{event.loss:.4f}[/b]  "
            f"lr {event.learning_rate:.2e}  grad {event.grad_norm:.3f}  "
            f"{event.tokens_per_second:,.0f} tok/s  ETA {format_duration(event.eta_seconds)}"
        )

    def _chart_x(self, step: int) -> int:
        """A multi-run's runs follow each other on the loss chart."""
        return step + self.query_one(MultiRunPanel).step_offset(self.total_steps)

    @staticmethod
    def _describe(event: Event) -> str:
        return format_event(event) or event.kind

    @staticmethod
    def _styled(event: Event, line: str) -> str:
        styles = {
            WarningEvent: "yellow",
            StepSkipped: "yellow",
            GpuSafety: "bold yellow",
            RunFailed: "bold red",
            RunFinished: "bold green",
            CheckpointSaved: "cyan",
        }
        style = styles.get(type(event))
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
            row.query_one("#gauge-cpu", Gauge).update_value(
                reading.cpu_percent / 100, f"{reading.cpu_cores} cores"
            )
            row.query_one("#gauge-ram", Gauge).update_value(
                ram_used / reading.ram_total_mb, f"{ram_used / 1024:.1f}/{reading.ram_total_mb / 1024:.0f}G"
            )
        settings = self.app.session.settings
        limit, warn = settings.gpu_temperature_limit_c, settings.gpu_temperature_warn_c
        for gpu in reading.gpus:
            temperature = gpu.temperature_c or 0
            level = "hot" if temperature >= limit else "warn" if temperature >= warn else "ok"
            detail = f"{gpu.memory_used_mb / 1024:.0f}/{gpu.memory_total_mb / 1024:.0f}G {temperature:.0f}°C"
            if gpu.utilization_pct is not None:
                detail += f" {gpu.utilization_pct:.0f}%util"
            row.query_one(f"#gauge-gpu{gpu.index}", Gauge).update_value(
                gpu.memory_used_mb / gpu.memory_total_mb, detail, level
            )
