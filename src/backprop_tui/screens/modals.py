"""Small modal screens: help and yes/no confirmation."""

from __future__ import annotations

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
    ("Train", "s start · p pause/resume · c checkpoint now · x stop (asks)"),
    ("Export", "e export · enter (in the chat field) send"),
    ("Runs", "enter watch · c continue from the last checkpoint · e export · r refresh"),
    ("Settings", "ctrl+s save"),
]
HELP_TEXT = "\n".join(f"[b]{area:<9}[/b] {keys}" for area, keys in KEYS) + (
    "\n\nFollow a run started elsewhere (nohup, tmux, another SSH session) with [b]backprop watch RUN_DIR[/b]."
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
