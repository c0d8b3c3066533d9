"""The top line: which screen is shown and the keys that switch screens (the app's screen list)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class NavBar(Static):
    DEFAULT_CSS = "NavBar { height: 1; background: $panel; }"

    def on_mount(self) -> None:
        self.update(self._line())

    def _line(self) -> Text:
        text = Text(" backprop ", style="bold")
        for key, _, title, screen in self.app.SCREENS_IN_ORDER:
            text.append(f" {key} {title} ", style="bold reverse" if isinstance(self.screen, screen) else "")
        return text
