"""Settings screen: defaults saved as TOML in the user config dir (atomically)."""

from __future__ import annotations

from dataclasses import replace

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Select, Static

from backprop_engine.settings import save_settings, settings_path

from ..state import THEMES, theme_of
from ..widgets.nav import NavBar

TEXT_FIELDS = [
    ("output_dir", "Output dir", "empty: the user data dir"),
    ("ollama_host", "Ollama host", "where exports are registered"),
    ("gpu_temperature_warn_c", "GPU temp warn", "°C: a warning event"),
    ("gpu_temperature_limit_c", "GPU temp limit", "°C: pause until it cools"),
    ("gpu_temperature_emergency_c", "GPU temp stop", "°C: checkpoint, then stop"),
    ("gpu_memory_warn_pct", "GPU memory warn", "% of GPU memory in use"),
    ("gpu_cool_timeout_s", "Max GPU pause", "s; then checkpoint and stop"),
]


class SettingsScreen(Screen):
    AUTO_FOCUS = ""  # nothing: fields are entered with tab
    BINDINGS = [Binding("ctrl+s", "save", "Save", priority=True)]

    def compose(self) -> ComposeResult:
        settings = self.app.session.settings
        yield NavBar("settings")
        with Vertical(classes="body"):
            yield Static(f"Saved in {self.app.settings_file or settings_path()}", classes="muted")
            for name, title, note in TEXT_FIELDS:
                with Horizontal(classes="form-row"):
                    yield Label(title, classes="field-label")
                    yield Input(str(getattr(settings, name)), id=f"setting-{name}", compact=True)
                    yield Static(note, classes="reason")
            with Horizontal(classes="form-row"):
                yield Label("Theme", classes="field-label")
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
        values = {}
        for name, title, _ in TEXT_FIELDS:
            raw = self.query_one(f"#setting-{name}", Input).value.strip()
            if isinstance(getattr(current, name), int):
                if not raw.lstrip("-").isdigit():
                    error.update(f"{title} must be a whole number")
                    return
                values[name] = int(raw)
            else:
                values[name] = raw
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
