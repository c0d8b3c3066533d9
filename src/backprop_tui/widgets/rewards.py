"""Preference tuning (DPO/ORPO): the reward margin and the reward accuracy as training goes, train and eval.

Fed with the engine's ``RewardMetrics`` events (live or read back from events.jsonl); hidden until the first
one arrives, so an SFT run's dashboard is unchanged.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal

from backprop_engine.events import RewardMetrics

from .chart import LineChart

EVENTS = (RewardMetrics,)  # what :meth:`RewardPanel.show` takes
SERIES = {"train": "cyan", "eval": "magenta"}


class RewardPanel(Horizontal):
    DEFAULT_CSS = """
    RewardPanel { height: 6; }
    RewardPanel LineChart { width: 1fr; height: 6; border: round $primary; }
    """

    def compose(self) -> ComposeResult:
        margin, accuracy = LineChart(SERIES, id="margin-chart"), LineChart(SERIES, id="accuracy-chart")
        margin.border_title, accuracy.border_title = "reward margin", "reward accuracy"
        yield margin
        yield accuracy

    def on_mount(self) -> None:
        self.display = False

    def reset(self) -> None:
        self.display = False
        for chart in self.query(LineChart):
            chart.clear()

    def show(self, event: RewardMetrics, x: float) -> None:
        """One rewards event at chart position ``x`` (the step, offset within a multi-run)."""
        self.display = True
        split = event.split if event.split in SERIES else "train"
        self.query_one("#margin-chart", LineChart).add_point(split, x, event.margin)
        self.query_one("#accuracy-chart", LineChart).add_point(split, x, event.accuracy)
