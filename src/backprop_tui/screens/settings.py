"""Settings screen: defaults saved as TOML in the user config dir (atomically)."""

from __future__ import annotations

from dataclasses import replace

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Select, Static

from backprop_engine.options import options_of
from backprop_engine.settings import Settings, save_settings, settings_path

from ..state import THEMES, theme_of
from ..widgets.nav import NavBar

# Every setting as its field declares it (label, help, bounds); the theme is chosen from a list instead.
TEXT_FIELDS = [option for name, option in options_of(Settings).items() if name != "theme"]


class SettingsScreen(Screen):
    AUTO_FOCUS = ""  # nothing: fields are entered with tab
    BINDINGS = [Binding("ctrl+s", "save", "Save", priority=True)]

    def compose(self) -> ComposeResult:
        settings = self.app.session.settings
        yield NavBar()
        with Vertical(classes="body"):
            yield Static(
                f"Saved in {self.app.settings_file or settings_path()}", id="settings-path", classes="muted"
            )
            for option in TEXT_FIELDS:
                with Horizontal(classes="form-row"):
                    yield Label(option.label, classes="field-label")
                    yield Input(
                        str(getattr(settings, option.name)), id=f"setting-{option.name}", compact=True
                    )
                    yield Static(option.help or "", classes="reason")
            with Horizontal(classes="form-row"):
                yield Label(options_of(Settings)["theme"].label, classes="field-label")
                yield Select(
                    [(t, t) for t in THEMES],
                    value=theme_of(settings),
                    allow_blank=False,
                    id="setting-theme",
                    compact=True,
                )
            yield Static("", id="settings-error", classes="error")
        yield Footer()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "setting-theme":
            self.app.theme = str(event.value)

    def action_save(self) -> None:
        error = self.query_one("#settings-error", Static)
        current = self.app.session.settings
        try:
            values = {
                option.name: option.parse(self.query_one(f"#setting-{option.name}", Input).value.strip())
                for option in TEXT_FIELDS
            }
        except ValueError as exc:
            error.update(str(exc))
            return
        values["theme"] = str(self.query_one("#setting-theme", Select).value)
        updated = replace(current, **values)
        try:
            path = save_settings(updated, self.app.settings_file)
        except (ValueError, OSError) as exc:
            error.update(str(exc))
            return
        error.update("")
        self.app.session.settings = updated
        self.notify(f"saved {path}", timeout=4)
