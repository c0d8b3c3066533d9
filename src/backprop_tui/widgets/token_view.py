"""Render a conversation's (text, trained) spans: trained tokens and masked tokens in different styles."""

from __future__ import annotations

from rich.text import Text

TRAINED_STYLE = "bold green"
MASKED_STYLE = "dim"


def render_spans(spans: list[tuple[str, bool]]) -> Text:
    text = Text()
    for part, trained in spans:
        text.append(part, style=TRAINED_STYLE if trained else MASKED_STYLE)
    return text
