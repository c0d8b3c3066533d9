"""Runs screen: every run in the output directory, live ones first, with status, loss, pid, ETA and artefacts."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from backprop_engine.events import format_duration
from backprop_engine.runs import RunSummary, list_runs

from ..widgets.nav import NavBar


class RunsScreen(Screen):
    AUTO_FOCUS = "#runs"
    BINDINGS = [
        Binding("enter", "attach", "Attach", tooltip="attach (with control)"),
        Binding("w", "watch", "Watch", tooltip="watch read-only"),
        Binding("e", "export", "Export"),
        Binding("c", "resume", "Continue", tooltip="continue from the last checkpoint"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[RunSummary] = []

    def compose(self) -> ComposeResult:
        yield NavBar()
        with Vertical(classes="body"):
            yield Static("", id="runs-dir", classes="muted")
            yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#runs", DataTable).add_columns(
            "run", "model", "status", "step", "loss", "pid", "ETA", "exports"
        )
        self.action_refresh()
        self.set_interval(
            1.0, self.action_refresh
        )  # a run killed elsewhere shows as interrupted within a second

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        root = self.app.session.settings.runs_dir()
        runs = list_runs(root)
        self.query_one("#runs-dir", Static).update(f"{len(runs)} run(s) in {root}")
        if runs == self.shown:
            return
        self.shown = runs
        table = self.query_one("#runs", DataTable)
        selected = self._selected_key(table)
        table.clear()
        colours = {
            "finished": "green",
            "stopped": "yellow",
            "failed": "red",
            "running": "cyan",
            "paused": "cyan",
            "starting": "cyan",
        }
        for run in runs:
            status = f"[{colours.get(run.status, 'dim')}]{run.status_text(compact=True)}[/]"
            eta = format_duration(run.eta_seconds) if run.eta_seconds is not None else "—"
            table.add_row(
                run.name,
                run.model,
                status,
                f"{run.step}/{run.total_steps}",
                run.loss_text(),
                str(run.pid or "—"),
                eta,
                ", ".join(run.exports) or "—",
                key=str(run.path),
            )
        if selected in {str(run.path) for run in runs}:
            table.move_cursor(row=table.get_row_index(selected))

    @staticmethod
    def _selected_key(table: DataTable) -> str | None:
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def _selected(self) -> Path | None:
        key = self._selected_key(self.query_one("#runs", DataTable))
        if key is None:
            self.notify("no runs yet", severity="warning", timeout=3)
            return None
        return Path(key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_attach()

    def action_attach(self) -> None:
        """The dashboard with the run's history and, while it trains, pause/checkpoint/stop working."""
        self._open("train", "watch_run", read_only=False)

    def action_watch(self) -> None:
        self._open("train", "watch_run", read_only=True)

    def action_resume(self) -> None:
        """Continue an interrupted or stopped run from its newest checkpoint, in a process of its own."""
        self._open("train", "resume_run")

    def action_export(self) -> None:
        self._open("export")

    def _open(self, mode: str, request: str | None = None, read_only: bool = True) -> None:
        """Make the selected run the session's run, set the app's ``request`` for it, switch to ``mode``."""
        run = self._selected()
        if run is not None:
            self.app.session.run_dir = run
            if request:
                setattr(self.app, request, run)
                self.app.watch_read_only = read_only
            self.app.switch_mode(mode)
