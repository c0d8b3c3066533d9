"""Conversations as plain message lists, for callers that want the rows without the training pipeline."""

from __future__ import annotations

from pathlib import Path

from .pipeline import DataReport, DataSpec, load_examples

Conversation = list[dict]


def load_conversations(source: str | Path, format: str = "auto") -> list[Conversation]:
    """Every conversation of ``source`` (any format); the first bad row raises a DataError naming it."""
    spec = DataSpec([str(source)], format=format, on_bad_row="error", dedupe=False, shuffle=False)
    return [
        example.messages
        for example in load_examples(spec, DataReport(sources=spec.sources))
        if example.text is None
    ]
