"""The multi-run panel of the Train dashboard: run i/N, its task, and the task × run held-out loss matrix.

Fed with the engine's multi-run events (typed, live or read back from events.jsonl); hidden until the first
one arrives, so a single run's dashboard does not change.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widget import Widget

from backprop_engine.events import ContinualEval, Event, MultiRunFinished, MultiRunProgress

EVENTS = (MultiRunProgress, ContinualEval, MultiRunFinished)  # what :meth:`MultiRunPanel.show` takes


class MultiRunPanel(Widget):
    DEFAULT_CSS = "MultiRunPanel { height: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reset()

    def reset(self) -> None:
        self.current_run = self.total_runs = 0
        self.current_task = ""
        self.learning_rate = 0.0
        self.tasks: list[str] = []
        self.matrix: list[list[float]] = []  # matrix[task][run]: held-out loss after that run
        self.finished: MultiRunFinished | None = None
        self.display = False

    def show(self, event: Event) -> None:
        """Take one multi-run event (one of :data:`EVENTS`)."""
        if isinstance(event, MultiRunProgress):
            self.current_run, self.total_runs = event.run, event.total_runs
            self.current_task, self.learning_rate = event.task, event.learning_rate
        elif isinstance(event, ContinualEval):
            self.total_runs, self.tasks, self.matrix = event.total_runs, event.tasks, event.matrix
        elif isinstance(event, MultiRunFinished):
            self.finished = event
        self.display = True
        self.refresh(layout=True)

    def step_offset(self, steps_per_run: int) -> int:
        """Where the current run's steps start on a chart that runs across all runs."""
        return max(self.current_run - 1, 0) * steps_per_run

    def render(self) -> Group:
        return Group(self._headline(), self._table())

    def _headline(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("Multi-run ", style="bold")
        if self.finished:
            text.append(f"{self.finished.runs}/{self.finished.runs} runs done", style="bold green")
            return text.append(f" · {self.finished.merge_mode} merged adapter → {self.finished.adapter_path}")
        done = len(self.matrix[0]) if self.matrix else 0
        width = 12
        filled = round(done / max(self.total_runs, 1) * width)
        text.append(f"run {self.current_run}/{self.total_runs} ", style="bold")
        text.append("█" * filled, style="green").append("░" * (width - filled), style="dim")
        return text.append(f" · {_short(self.current_task)} · lr {self.learning_rate:.1e}")

    def _table(self) -> Table:
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
        table.add_column("held-out loss", no_wrap=True, max_width=24, overflow="ellipsis")
        for run in range(1, self.total_runs + 1):
            table.add_column(f"run {run}", justify="right", no_wrap=True)
        for row_index, (name, row) in enumerate(zip(self.tasks, self.matrix)):
            cells = [self._cell(row, run, row_index) for run in range(self.total_runs)]
            table.add_row(_short(name), *cells)
        if not self.tasks:
            table.add_row(Text("after the first run", style="dim"))
        return table

    def _cell(self, row: list[float], run: int, task: int) -> Text:
        """A task's loss after ``run``; red once it is worse than right after the run that trained it."""
        if run >= len(row):
            return Text("·", style="dim")
        trained_at = (
            task if len(self.tasks) == self.total_runs else run
        )  # one dataset in chunks: every run trains it
        style = (
            "bold"
            if run == trained_at
            else "red"
            if run > trained_at and row[run] > row[trained_at] * 1.05
            else ""
        )
        return Text(f"{row[run]:.3f}", style=style)


def _short(task: str) -> str:
    """A task's file name (``data.jsonl``, or ``data.jsonl[0:64]`` for a chunk), not its whole path."""
    return Path(task).name or task
