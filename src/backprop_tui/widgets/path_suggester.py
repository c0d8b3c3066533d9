"""Completes file-system paths in an Input (right arrow accepts), like a shell's tab completion."""

from __future__ import annotations

import os
from pathlib import Path

from textual.suggester import Suggester


class PathSuggester(Suggester):
    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        expanded = os.path.expanduser(value)
        folder, prefix = os.path.split(expanded)
        try:
            names = sorted(os.listdir(folder or "."))
        except OSError:
            return None
        for name in names:
            if name.startswith(prefix) and not name.startswith(".") and name != prefix:
                completed = os.path.join(folder, name) + ("/" if Path(folder or ".", name).is_dir() else "")
                return value + completed[len(expanded) :]
        return None
