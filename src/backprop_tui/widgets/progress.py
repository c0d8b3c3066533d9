"""The stage the user waits on (download, load, tokenize, convert, …): its name, counts, rate and ETA, and a
bar (a pulsing one while the total is not known yet), from the engine's ``progress`` events."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from backprop_engine.events import Progress, format_progress


class StageProgress(Vertical):
    """Shown while a stage runs; :meth:`show` returns the finished line ("load 272/272 tensors done in 0:04")
    once the stage ends, for an event log that keeps one line per stage."""

    def compose(self) -> ComposeResult:
        yield Static("", classes="stage-label")
        yield ProgressBar(show_eta=False, classes="stage-bar")

    def on_mount(self) -> None:
        self.display = False

    def show(self, progress: Progress) -> str | None:
        if progress.finished:  # a replayed history (an attached run) leaves no finished stage on screen
            self.display = False
            return format_progress(progress)
        self.display = True
        self.query_one(".stage-label", Static).update(format_progress(progress))
        self.query_one(".stage-bar", ProgressBar).update(total=progress.total or None, progress=progress.done)
        return None

    def hide(self) -> None:
        self.display = False

    @property
    def text(self) -> str:
        return str(self.query_one(".stage-label", Static).render()) if self.display else ""
