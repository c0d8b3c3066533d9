"""Export screen: quantization with expected sizes, file name, per-step progress, then chat with the GGUF."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Checkbox, Footer, Input, Label, RadioButton, RadioSet, RichLog, Static
from textual.worker import Worker, WorkerState

from backprop_engine.detach import EXPORT_EVENTS, Launched, LaunchSpec, launch
from backprop_engine.errors import BackpropError, render_error
from backprop_engine.events import EXPORT_STAGES, ExportFinished, ExportProgress, ExportStopped, Progress
from backprop_engine.export.modelfile import check_ollama_name
from backprop_engine.paths import safe_name
from backprop_engine.presets import PRESETS, model_facts
from backprop_engine.quantizations import BITS_PER_WEIGHT, DEFAULT_QUANTIZATION, QUANTIZATIONS
from backprop_engine.runs import EventFollower

from ..widgets.comparison import ComparisonPanel
from ..widgets.nav import NavBar
from ..widgets.progress import StageProgress

STAGE_LABELS = {"ollama": "register"}  # the engine's stage names (EXPORT_STAGES) the screen shows otherwise


def expected_size(params_billion: float | None, quantization: str) -> str:
    if not params_billion:
        return ""
    size = params_billion * 1e9 * BITS_PER_WEIGHT[quantization] / 8
    return f"~{size / 2**30:.1f} GB" if size >= 2**30 else f"~{size / 2**20:.1f} MB"


class ExportScreen(Screen):
    AUTO_FOCUS = "#quantization"
    BINDINGS = [Binding("e", "export", "Export"), Binding("x", "stop_export", "Stop")]

    class Reply(Message):
        """The chat worker's answer, handing back the llama.cpp model it used (opened there if need be)."""

        def __init__(self, text: str, llm, path: Path) -> None:
            super().__init__()
            self.text = text
            self.llm = llm
            self.path = path

    def __init__(self) -> None:
        super().__init__()
        self.gguf_path: Path | None = None
        self.stage: str | None = None
        self.registering = False
        self.llm = None  # the chat's llama.cpp model, held by the main thread between replies
        self.history: list[dict[str, str]] = []
        self.exporting: Launched | None = None  # the export process this screen started
        self.follower: EventFollower | None = None

    def compose(self) -> ComposeResult:
        yield NavBar()
        with Horizontal(classes="body"):
            with VerticalScroll(id="export-form"):
                yield Static("", id="export-run", classes="choice")
                yield Label("Quantization")
                with RadioSet(id="quantization"):
                    for quantization in QUANTIZATIONS:
                        yield RadioButton(
                            quantization, value=quantization == DEFAULT_QUANTIZATION, name=quantization
                        )
                with Horizontal(classes="form-row"):
                    yield Label("File name", classes="field-label")
                    yield Input(id="export-name", compact=True)
                with Horizontal(classes="form-row"):
                    yield Label("Ollama", classes="field-label")
                    yield Checkbox("register as", False, id="register", compact=True)
                    yield Input(id="ollama-name", placeholder="model name", compact=True)
                yield Static("", id="export-error", classes="error")
                yield Static("", id="export-stages")
                yield StageProgress(id="export-progress")
                yield ComparisonPanel(id="export-comparison")
            with Vertical(id="chat-panel"):
                yield Label("Chat with the export (llama.cpp)")
                yield RichLog(id="chat-log", wrap=True, markup=True)
                yield Input(
                    placeholder="type a message, enter to send", id="chat-input", disabled=True, compact=True
                )
        yield Footer()

    def on_mount(self) -> None:
        # A RadioSet's cursor starts on its first button (f32), where enter or space would press it: it starts
        # on the default instead, so those keys keep it and ↑/↓ move from it. Textual has no public setter.
        quantizations = self.query_one("#quantization", RadioSet)
        quantizations._selected = quantizations.pressed_index
        self._refresh_run()
        self.set_interval(0.25, self._poll_export)

    def on_screen_resume(self) -> None:
        self._refresh_run()

    def _refresh_run(self) -> None:
        run = self.app.session.run_dir
        label = f"Run [b]{run.name}[/b]" if run else "No run yet: train one (3) or open one from Runs (5)"
        facts = model_facts(self._run_model() or "")
        if facts and facts.kquant_warning:
            label += f"\n[yellow]{facts.kquant_warning}[/yellow]"
        self.query_one("#export-run", Static).update(label)
        if run and not self.query_one("#export-name", Input).value:
            self.query_one("#export-name", Input).value = run.name
            self.query_one("#ollama-name", Input).value = run.name.lower()
        self._label_sizes()
        self._show_stages(None)
        self._show_comparison(run)

    def _show_comparison(self, run: Path | None) -> None:
        """The run's latest base-vs-fine-tune answers (from training or `backprop compare`), if any."""
        from backprop_engine.compare import saved_comparisons

        panel = self.query_one(ComparisonPanel)
        panel.reset()
        for event in saved_comparisons(run) if run else []:
            panel.show(event)

    def _label_sizes(self) -> None:
        preset = PRESETS.get(self._run_model() or "")
        for button in self.query(RadioButton):
            size = expected_size(preset.params_billion if preset else None, button.name)
            button.label = f"{button.name:<7} {size}"

    def _run_model(self) -> str | None:
        run = self.app.session.run_dir
        if run is None:
            return None
        from backprop_engine.rundir import RunDir

        try:
            return RunDir.open(run).read_config().model
        except BackpropError:
            return None

    def _quantization(self) -> str:
        pressed = self.query_one("#quantization", RadioSet).pressed_button
        return pressed.name if pressed else DEFAULT_QUANTIZATION

    def action_export(self) -> None:
        error = self.query_one("#export-error", Static)
        run = self.app.session.run_dir
        if run is None:
            error.update("no run to export: train one (3) or open one from Runs (5)")
            return
        register = self.query_one("#register", Checkbox).value
        try:
            name = safe_name(self.query_one("#export-name", Input).value.strip(), "file name")
            ollama_name = (
                check_ollama_name(self.query_one("#ollama-name", Input).value.strip()) if register else None
            )
        except BackpropError as exc:
            error.update(render_error(exc, prefix=""))
            return
        if self.exporting is not None and self.exporting.process.poll() is None:
            error.update("an export is running; it goes on even if you leave the app")
            return
        error.update("")
        self.registering = register
        self._show_stages("merge")
        options = {
            "quantization": self._quantization(),
            "name": name,
            "register_ollama": register,
            "model_name": ollama_name,
        }
        self._launch_export(run, options)

    def _launch_export(self, run: Path, options: dict) -> None:
        """The export runs in a process of its own (backprop_engine.detach), like training: an SSH drop or
        quitting the app does not end it. Its events are followed from RUN/export.jsonl."""
        events = run / EXPORT_EVENTS
        self.follower = EventFollower(events)
        self.follower.poll()  # earlier exports of this run are not this one's
        try:
            self.exporting = launch(LaunchSpec(action="export", run_dir=str(run), export=options))
        except (BackpropError, OSError) as exc:
            self.query_one("#export-error", Static).update(render_error(exc, prefix=""))
            self.exporting = None
            return
        self.app.exporting[run] = self.exporting

    def _poll_export(self) -> None:
        if self.follower is None:
            return
        for event in self.follower.poll_events():
            if isinstance(event, ExportFinished):
                self.query_one(StageProgress).hide()
                self._show_stages("finished", event.paths[0])
                self._open_chat(Path(event.paths[0]))
            elif isinstance(event, ExportProgress):
                self._show_stages(event.stage if event.stage in EXPORT_STAGES else self.stage, event.detail)
            elif isinstance(event, Progress):
                self.query_one(StageProgress).show(event)
            elif isinstance(event, ExportStopped):
                self.query_one(StageProgress).hide()
                self.query_one("#export-error", Static).update(event.message)
                self.exporting = self.follower = None
                return
        message = self.exporting.error() if self.exporting is not None else None
        if message is not None:
            self.query_one("#export-error", Static).update(message)
            self.exporting = self.follower = None

    def action_stop_export(self) -> None:
        """The export process stops at its stage's next unit (SIGTERM); what it keeps comes back as an event."""
        if self.exporting is None or self.exporting.process.poll() is not None:
            self.notify("no export is running", severity="warning", timeout=3)
            return
        self.exporting.process.terminate()
        self.notify("stopping the export at the next tensor", timeout=3)

    def _show_stages(self, current: str | None, detail: str = "") -> None:
        """One line per stage: ✓ done, … running, · to come, – skipped (no Ollama registration)."""
        self.stage = current
        lines = []
        reached = (
            len(EXPORT_STAGES)
            if current == "finished"
            else EXPORT_STAGES.index(current)
            if current in EXPORT_STAGES
            else -1
        )
        for index, stage in enumerate(EXPORT_STAGES):
            if stage == "ollama" and not self.registering:
                mark = "[dim]–[/]"
            else:
                mark = (
                    "[green]✓[/]" if index < reached else "[yellow]…[/]" if index == reached else "[dim]·[/]"
                )
            lines.append(f"{mark} {STAGE_LABELS.get(stage, stage)}")
        if detail:
            lines.append(f"[dim]{escape(detail)}[/]")
        self.query_one("#export-stages", Static).update("\n".join(lines) if current else "")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "chat" and event.state == WorkerState.ERROR:
            error = event.worker.error
            text = render_error(
                error, prefix="" if isinstance(error, BackpropError) else f"{type(error).__name__}: "
            )
            self.query_one("#export-error", Static).update(text)

    def _open_chat(self, path: Path) -> None:
        self.gguf_path = path
        self._close_llm()
        self.history = []
        log = self.query_one("#chat-log", RichLog)
        log.clear()
        log.write(f"[dim]{path}[/dim]")
        chat_input = self.query_one("#chat-input", Input)
        chat_input.disabled = False
        chat_input.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "chat-input" and event.value.strip():
            self.query_one("#chat-log", RichLog).write(f"[b]you[/b] {escape(event.value)}")
            event.input.value = ""
            self.history.append({"role": "user", "content": event.value})
            self.reply_in_background(self.llm, self.gguf_path, list(self.history))
            self.llm = None  # the worker holds it until its Reply hands it back
        elif event.input.id in ("export-name", "ollama-name"):
            self.action_export()

    @work(thread=True, exclusive=True, group="chat", exit_on_error=False)
    def reply_in_background(self, llm, path: Path, messages: list[dict[str, str]]) -> None:
        """Touches no screen state: the main thread takes the model back with the Reply."""
        from backprop_engine.export.chat import chat_reply, open_gguf

        llm = llm or open_gguf(path)
        self.post_message(self.Reply(chat_reply(llm, messages, max_tokens=64), llm, path))

    def on_export_screen_reply(self, message: Reply) -> None:
        if message.path != self.gguf_path:  # another GGUF was opened meanwhile: this reply is not its chat's
            message.llm.close()
            return
        if self.llm is None:
            self.llm = message.llm
        elif message.llm is not self.llm:  # two replies were in flight: keep one model
            message.llm.close()
        self.history.append({"role": "assistant", "content": message.text})
        self.query_one("#chat-log", RichLog).write(f"[b green]model[/b green] {escape(message.text)}")

    def _close_llm(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None

    def on_unmount(self) -> None:
        self._close_llm()
