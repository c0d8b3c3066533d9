"""Runs screen: earlier runs in the output directory with status, loss and artefacts."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from backprop_engine.runs import list_runs

from ..widgets.nav import NavBar


class RunsScreen(Screen):
    AUTO_FOCUS = "#runs"
    BINDINGS = [
        Binding("enter", "watch", "Watch"),
        Binding("e", "export", "Export"),
        Binding("c", "resume", "Continue"),
        Binding("r", "refresh", "Refresh"),
    ]

    def compose(self) -> ComposeResult:
        yield NavBar("runs")
        with Vertical(classes="body"):
            yield Static("", id="runs-dir", classes="muted")
            yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#runs", DataTable).add_columns("run", "model", "status", "step", "final loss", "exports")
        self.action_refresh()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        root = self.app.session.settings.runs_dir()
        runs = list_runs(root)
        self.query_one("#runs-dir", Static).update(f"{len(runs)} run(s) in {root}")
        table = self.query_one("#runs", DataTable)
        table.clear()
        colours = {"finished": "green", "stopped": "yellow", "failed": "red", "running": "cyan"}
        for run in runs:
            loss = f"{run.final_loss:.4f}" if run.final_loss is not None else "—"
            status = f"[{colours.get(run.status, 'dim')}]{run.status}[/]"
            table.add_row(run.name, run.model, status, f"{run.step}/{run.total_steps}", loss, ", ".join(run.exports) or "—", key=str(run.path))

    def _selected(self) -> Path | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            self.notify("no runs yet", severity="warning", timeout=3)
            return None
        return Path(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_watch()

    def action_watch(self) -> None:
        self._open("train", "watch_run")

    def action_resume(self) -> None:
        """Continue an unfinished run from its newest checkpoint, in this app's training worker."""
        self._open("train", "resume_run")

    def action_export(self) -> None:
        self._open("export")

    def _open(self, mode: str, request: str | None = None) -> None:
        """Make the selected run the session's run, set the app's ``request`` for it, switch to ``mode``."""
        run = self._selected()
        if run is not None:
            self.app.session.run_dir = run
            if request:
                setattr(self.app, request, run)
            self.app.switch_mode(mode)
