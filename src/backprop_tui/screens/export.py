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

from backprop_engine.errors import BackpropError
from backprop_engine.export.modelfile import check_ollama_name
from backprop_engine.export.quantize import BITS_PER_WEIGHT, QUANTIZATIONS
from backprop_engine.paths import safe_name
from backprop_engine.presets import PRESETS

from ..widgets.nav import NavBar

STAGES = ["merge", "convert", "quantize", "verify", "register"]
STAGE_OF_EVENT = {"ollama": "register"}  # engine stage names that the screen shows under another label


def expected_size(params_billion: float | None, quantization: str) -> str:
    if not params_billion:
        return ""
    size = params_billion * 1e9 * BITS_PER_WEIGHT[quantization] / 8
    return f"~{size / 2**30:.1f} GB" if size >= 2**30 else f"~{size / 2**20:.1f} MB"


class ExportScreen(Screen):
    AUTO_FOCUS = "#quantization"
    BINDINGS = [Binding("e", "export", "Export")]

    class Progress(Message):
        def __init__(self, stage: str, detail: str) -> None:
            super().__init__()
            self.stage, self.detail = stage, detail

    class Reply(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self) -> None:
        super().__init__()
        self.gguf_path: Path | None = None
        self.stage: str | None = None
        self.registering = False
        self.llm = None
        self.history: list[dict[str, str]] = []

    def compose(self) -> ComposeResult:
        yield NavBar("export")
        with Horizontal(classes="body"):
            with VerticalScroll(id="export-form"):
                yield Static("", id="export-run", classes="choice")
                yield Label("Quantization")
                with RadioSet(id="quantization"):
                    for quantization in QUANTIZATIONS:
                        yield RadioButton(quantization, value=quantization == "q4_k_m", name=quantization)
                with Horizontal(classes="form-row"):
                    yield Label("File name", classes="field-label")
                    yield Input(id="export-name", compact=True)
                with Horizontal(classes="form-row"):
                    yield Label("Ollama", classes="field-label")
                    yield Checkbox("register as", False, id="register", compact=True)
                    yield Input(id="ollama-name", placeholder="model name", compact=True)
                yield Static("", id="export-error", classes="error")
                yield Static("", id="export-stages")
            with Vertical(id="chat-panel"):
                yield Label("Chat with the export (llama.cpp)")
                yield RichLog(id="chat-log", wrap=True, markup=True)
                yield Input(placeholder="type a message, enter to send", id="chat-input", disabled=True, compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self._refresh_run()

    def on_screen_resume(self) -> None:
        self._refresh_run()

    def _refresh_run(self) -> None:
        run = self.app.session.run_dir
        label = f"Run [b]{run.name}[/b]" if run else "No run yet: train one (3) or open one from Runs (5)"
        self.query_one("#export-run", Static).update(label)
        if run and not self.query_one("#export-name", Input).value:
            self.query_one("#export-name", Input).value = run.name
            self.query_one("#ollama-name", Input).value = run.name.lower()
        self._label_sizes()
        self._show_stages(None)

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
        return pressed.name if pressed else "q4_k_m"

    def action_export(self) -> None:
        error = self.query_one("#export-error", Static)
        run = self.app.session.run_dir
        if run is None:
            error.update("no run to export: train one (3) or open one from Runs (5)")
            return
        register = self.query_one("#register", Checkbox).value
        try:
            name = safe_name(self.query_one("#export-name", Input).value.strip(), "file name")
            ollama_name = check_ollama_name(self.query_one("#ollama-name", Input).value.strip()) if register else None
        except BackpropError as exc:
            error.update(f"{exc.message} — {exc.hint}")
            return
        error.update("")
        self.registering = register
        self._show_stages("merge")
        self.export_in_background(run, self._quantization(), name, ollama_name)

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def export_in_background(self, run: Path, quantization: str, name: str, ollama_name: str | None) -> Path:
        from backprop_engine import Trainer

        trainer = Trainer.from_run(run, on_event=self._relay_engine_event)
        return trainer.export("gguf", quantization=quantization, name=name, register_ollama=ollama_name is not None, model_name=ollama_name)

    def _relay_engine_event(self, event) -> None:
        self.post_message(self.Progress(getattr(event, "stage", event.kind), getattr(event, "detail", "")))

    def on_export_screen_progress(self, message: Progress) -> None:
        stage = STAGE_OF_EVENT.get(message.stage, message.stage)
        self._show_stages(stage if stage in STAGES else self.stage, message.detail)

    def _show_stages(self, current: str | None, detail: str = "") -> None:
        """One line per stage: ✓ done, … running, · to come, – skipped (no Ollama registration)."""
        self.stage = current
        lines = []
        reached = len(STAGES) if current == "finished" else STAGES.index(current) if current in STAGES else -1
        for index, stage in enumerate(STAGES):
            if stage == "register" and not self.registering:
                mark = "[dim]–[/]"
            else:
                mark = "[green]✓[/]" if index < reached else "[yellow]…[/]" if index == reached else "[dim]·[/]"
            lines.append(f"{mark} {stage}")
        if detail:
            lines.append(f"[dim]{escape(detail)}[/]")
        self.query_one("#export-stages", Static).update("\n".join(lines) if current else "")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "export" and event.state == WorkerState.SUCCESS:
            self._show_stages("finished", str(event.worker.result))
            self._open_chat(event.worker.result)
        elif event.worker.group in ("export", "chat") and event.state == WorkerState.ERROR:
            error = event.worker.error
            text = error.message if isinstance(error, BackpropError) else f"{type(error).__name__}: {error}"
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
            self.reply_in_background(list(self.history))
        elif event.input.id in ("export-name", "ollama-name"):
            self.action_export()

    @work(thread=True, exclusive=True, group="chat", exit_on_error=False)
    def reply_in_background(self, messages: list[dict[str, str]]) -> None:
        from backprop_engine.export.chat import chat_reply, open_gguf

        if self.llm is None:
            self.llm = open_gguf(self.gguf_path)
        self.post_message(self.Reply(chat_reply(self.llm, messages, max_tokens=64)))

    def on_export_screen_reply(self, message: Reply) -> None:
        self.history.append({"role": "assistant", "content": message.text})
        self.query_one("#chat-log", RichLog).write(f"[b green]model[/b green] {escape(message.text)}")

    def _close_llm(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None

    def on_unmount(self) -> None:
        self._close_llm()
