"""Small modal screens: help, yes/no confirmation, and what to do with runs still training at quit."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

KEYS = [
    ("Screens", "1 Model · 2 Data · 3 Train · 4 Export · 5 Runs · 6 Settings"),
    ("Anywhere", "? help · esc leave a text field · tab move focus · ctrl+q quit"),
    ("Model", "u or enter use the preset · type an id or folder, then enter"),
    ("Data", "enter (in the path field) load · n / b next / previous sample"),
    ("Train", "s start · p pause/resume · c checkpoint now · x stop (asks) · v settings/dashboard"),
    ("Export", "e export · enter (in the chat field) send"),
    ("Runs", "enter attach (with control) · w watch read-only · c continue from the last checkpoint · e export · r refresh"),
    ("Settings", "ctrl+s save"),
]
HELP_TEXT = "\n".join(f"[b]{area:<9}[/b] {keys}" for area, keys in KEYS) + (
    "\n\nRuns train in a process of their own: an SSH drop or ctrl+q never ends one. Take one over from anywhere"
    " with [b]backprop attach RUN_DIR[/b] (or [b]watch[/b], read-only; [b]control RUN_DIR pause|stop[/b] headless)."
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box", classes="modal-box"):
            yield Label("[b]Keys[/b]")
            yield Static(HELP_TEXT)
            yield Label("[dim]esc to close[/dim]")


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box"):
            yield Label(self.question)
            yield Button("Yes (y)", id="yes", variant="error")
            yield Button("No (n)", id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class QuitScreen(ModalScreen[str | None]):
    """Ctrl+Q while runs this app started still train: stop them, or leave them training in the background."""

    BINDINGS = [Binding("s", "answer('stop')", "Stop"), Binding("l", "answer('leave')", "Leave running"), Binding("escape", "answer(None)", "Cancel")]

    def __init__(self, runs: list[Path]) -> None:
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box"):
            yield Label(f"{len(self.runs)} run(s) still training: {', '.join(run.name for run in self.runs)}")
            yield Button("Stop it: checkpoint + adapter (s)", id="stop", variant="error")
            yield Button("Leave it running in the background (l)", id="leave", variant="primary")
            yield Button("Cancel (esc)", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_answer(self, answer: str | None) -> None:
        self.dismiss(answer)
