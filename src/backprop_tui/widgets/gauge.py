"""A one-line labelled gauge: `GPU0 mem  [██████░░░░]  61 %  5.1/8.0 GB`."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

LEVEL_STYLES = {"ok": "green", "warn": "yellow", "hot": "bold red"}


class Gauge(Widget):
    DEFAULT_CSS = "Gauge { height: 1; }"

    def __init__(self, label: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.label = label
        self.fraction: float | None = None
        self.detail = ""
        self.level = "ok"  # ok, warn, hot

    def update_value(self, fraction: float | None, detail: str = "", level: str = "ok") -> None:
        self.fraction, self.detail, self.level = fraction, detail, level
        self.refresh()

    def render(self) -> Text:
        bar_width = max(5, min(20, self.size.width - len(self.label) - len(self.detail) - 7))
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{self.label} ", style="bold")
        if self.fraction is None:
            return text.append("n/a", style="dim")
        filled = round(max(0.0, min(1.0, self.fraction)) * bar_width)
        text.append("█" * filled, style=LEVEL_STYLES[self.level])
        text.append("░" * (bar_width - filled), style="dim")
        text.append(f" {self.fraction * 100:3.0f}% {self.detail}")
        return text
