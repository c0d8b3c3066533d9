"""The top line: which screen is shown and the keys that switch screens."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

SCREENS = [
    ("1", "model", "Model"),
    ("2", "data", "Data"),
    ("3", "train", "Train"),
    ("4", "export", "Export"),
    ("5", "runs", "Runs"),
    ("6", "settings", "Settings"),
]


class NavBar(Static):
    DEFAULT_CSS = "NavBar { height: 1; background: $panel; }"

    def __init__(self, current: str) -> None:
        super().__init__(self._line(current))

    @staticmethod
    def _line(current: str) -> Text:
        text = Text(" backprop ", style="bold")
        for key, mode, title in SCREENS:
            text.append(f" {key} {title} ", style="bold reverse" if mode == current else "")
        return text
