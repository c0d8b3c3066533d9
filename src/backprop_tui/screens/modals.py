"""Small modal screens: help, yes/no confirmation, and what to do with runs still training at quit."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

# Keys that are no binding of their screen (enter in a text field, focus moves): the help adds them.
NOTES = {
    "Anywhere": "tab move focus",
    "Model": "type an id or folder, then enter",
    "Data": "enter (in the path field) load",
    "Export": "enter (in the chat field) send",
}
RUNS_NOTE = (
    "\n\nRuns train in a process of their own: an SSH drop or ctrl+q never ends one. Take one over from anywhere"
    " with [b]backprop attach RUN_DIR[/b] (or [b]watch[/b], read-only; [b]control RUN_DIR pause|stop[/b] headless)."
)
KEY_NAMES = {"question_mark": "?", "escape": "esc"}


def help_text(app_bindings: list, screens: list[tuple[str, str, type]]) -> str:
    """The keys of the app and of each screen, read from their BINDINGS; ``screens``: (key, title, class)."""
    rows = [("Screens", " · ".join(f"{key} {title}" for key, title, _ in screens))]
    screen_keys = {key for key, _, _ in screens}
    rows.append(
        ("Anywhere", _keys([b for b in app_bindings if _binding(b).key not in screen_keys], "Anywhere"))
    )
    rows += [(title, _keys(screen.BINDINGS, title)) for _, title, screen in screens]
    return "\n".join(f"[b]{area:<9}[/b] {keys}" for area, keys in rows) + RUNS_NOTE


def key_of(bindings: list, action: str) -> str:
    """The (first) key of ``action`` in ``bindings``, as the help shows it: for a button's or a message's text."""
    key = next(binding.key for binding in map(_binding, bindings) if binding.action == action).split(",")[0]
    return KEY_NAMES.get(key, key)


def _keys(bindings: list, area: str) -> str:
    shown = []
    for binding in map(_binding, bindings):
        key = binding.key.split(",")[0]
        shown.append(f"{KEY_NAMES.get(key, key)} {binding.tooltip or binding.description.lower()}")
    return " · ".join(shown + ([NOTES[area]] if area in NOTES else []))


def _binding(binding: Binding | tuple) -> Binding:
    return binding if isinstance(binding, Binding) else Binding(*binding)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box", classes="modal-box"):
            yield Label("[b]Keys[/b]")
            yield Static(self.text)
            yield Label("[dim]esc to close[/dim]")


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box"):
            yield Label(self.question)
            yield Button(f"Yes ({key_of(self.BINDINGS, 'answer(True)')})", id="yes", variant="error")
            yield Button(f"No ({key_of(self.BINDINGS, 'answer(False)')})", id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class QuitScreen(ModalScreen[str | None]):
    """Ctrl+Q while runs this app started still train: stop them, or leave them training in the background."""

    BINDINGS = [
        Binding("s", "answer('stop')", "Stop"),
        Binding("l", "answer('leave')", "Leave running"),
        Binding("escape", "answer(None)", "Cancel"),
    ]

    def __init__(self, runs: list[Path]) -> None:
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box"):
            yield Label(f"{len(self.runs)} run(s) still training: {', '.join(run.name for run in self.runs)}")
            stop, leave, cancel = (
                key_of(self.BINDINGS, f"answer({a})") for a in ("'stop'", "'leave'", "None")
            )
            yield Button(f"Stop it: checkpoint + adapter ({stop})", id="stop", variant="error")
            yield Button(f"Leave it running in the background ({leave})", id="leave", variant="primary")
            yield Button(f"Cancel ({cancel})", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_answer(self, answer: str | None) -> None:
        self.dismiss(answer)
