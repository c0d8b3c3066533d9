"""backprop's terminal app: Model → Data → Train → Export, plus Runs and Settings; keyboard first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.widgets import Input

from backprop_engine.channel import live_owner, send_control
from backprop_engine.detach import Launched
from backprop_engine.errors import BackpropError
from backprop_engine.hardware import HardwareReading, probe
from backprop_engine.settings import load_settings

from .screens.data import DataScreen
from .screens.export import ExportScreen
from .screens.modals import HelpScreen, QuitScreen, help_text
from .screens.model import ModelScreen
from .screens.runs import RunsScreen
from .screens.settings import SettingsScreen
from .screens.train import TrainScreen
from .state import Session, theme_of

# The screens, as (key, mode, title, class): the app's modes, the keys that switch to them, the NavBar line
# and the help are all read from this one list.
SCREENS = [
    ("1", "model", "Model", ModelScreen),
    ("2", "data", "Data", DataScreen),
    ("3", "train", "Train", TrainScreen),
    ("4", "export", "Export", ExportScreen),
    ("5", "runs", "Runs", RunsScreen),
    ("6", "settings", "Settings", SettingsScreen),
]


class BackpropApp(App[None]):
    TITLE = "backprop"
    CSS_PATH = "app.tcss"
    SCREENS_IN_ORDER = SCREENS  # for the NavBar, which cannot import the app that imports its screens
    MODES = {mode: screen for _, mode, _, screen in SCREENS}
    DEFAULT_MODE = "model"
    ENABLE_COMMAND_PALETTE = False  # every action has its own key; the footer space goes to them
    # The screen keys 1-6 are shown by the NavBar at the top instead of the footer.
    BINDINGS = [
        *(Binding(key, f"switch_mode('{mode}')", title, show=False) for key, mode, title, _ in SCREENS),
        Binding("question_mark", "help", "Help"),
        Binding("escape", "leave_field", "Leave field", show=False, tooltip="leave a text field"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        watch_run: Path | None = None,
        settings_file: Path | None = None,
        hardware_probe: Callable[[], HardwareReading] = probe,
        read_only: bool = True,
    ) -> None:
        super().__init__()
        settings, self.settings_notice = load_settings(settings_file)
        self.settings_file = settings_file
        self.session = Session(settings=settings)
        self.hardware_probe = hardware_probe
        self.watch_run = watch_run
        self.watch_read_only = read_only  # `backprop watch` (True) or `backprop attach` (False)
        self.resume_run: Path | None = None  # set by the Runs screen; the Train screen picks it up
        self.launched: dict[Path, Launched] = {}  # runs this app started (each trains in its own process)
        self.exporting: dict[Path, Launched] = {}  # exports this app started (each in its own process)

    def on_mount(self) -> None:
        self.theme = theme_of(self.session.settings)
        if self.settings_notice:
            self.notify(self.settings_notice, title="Settings", severity="warning", timeout=15)
        if self.watch_run is not None:
            self.session.run_dir = self.watch_run
            self.switch_mode("train")

    async def action_quit(self) -> None:
        """Runs this app started keep training unless the user says stop; nothing is stopped without asking."""
        live = [run for run in self.launched if live_owner(run) is not None]
        if not live:
            self.exit(message=self._exports_going_on().lstrip() or None)
            return
        self.push_screen(QuitScreen(live), lambda answer: self._quit_answered(live, answer))

    def _quit_answered(self, runs: list[Path], answer: str | None) -> None:
        if answer is None:
            return
        if answer == "leave":
            names = ", ".join(str(run) for run in runs)
            self.exit(
                message=f"still training in the background: {names}\nattach again with: backprop attach {runs[0]}"
                + self._exports_going_on()
            )
            return
        for run in runs:
            try:
                send_control(run, "stop")
            except BackpropError as error:  # it ended meanwhile
                self.log(error.message)
        self.exit(
            message=f"stop requested: {', '.join(str(r) for r in runs)} saves a checkpoint and its adapter after the current step"
            + self._exports_going_on()
        )

    def _exports_going_on(self) -> str:
        """A line for the exit message when exports started here still run (they finish on their own)."""
        going = [launched for launched in self.exporting.values() if launched.process.poll() is None]
        return (
            "\nexports go on in the background: " + ", ".join(str(launched.log) for launched in going)
            if going
            else ""
        )

    def action_help(self) -> None:
        screens = [(key, title, screen) for key, _, title, screen in SCREENS]
        self.push_screen(HelpScreen(help_text(self.BINDINGS, screens)))

    def action_leave_field(self) -> None:
        """Escape leaves a text field so that the single-key bindings work again."""
        if isinstance(self.focused, Input):
            self.screen.set_focus(None)
