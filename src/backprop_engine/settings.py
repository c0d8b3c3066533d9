"""User settings as TOML under platformdirs' config dir: read with tomllib, written atomically with tomli-w.

A corrupt file is moved aside (``settings.toml.corrupt-<time>``), defaults load, and the caller gets a
message to show the user.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .fsutil import atomic_write_text
from .paths import APP_NAME, default_runs_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

THEMES = ("textual-dark", "textual-light")


@dataclass
class Settings:
    output_dir: str = ""  # empty: the platform's user data dir (see default_runs_dir)
    ollama_host: str = "http://127.0.0.1:11434"
    theme: str = "textual-dark"
    gpu_temperature_limit_c: int = 85

    def runs_dir(self) -> Path:
        return Path(self.output_dir).expanduser() if self.output_dir else default_runs_dir()

    def validate(self) -> None:
        if self.theme not in THEMES:
            raise ValueError(f"theme must be one of {', '.join(THEMES)}")
        if not self.ollama_host.startswith(("http://", "https://")):
            raise ValueError("ollama_host must start with http:// or https://")
        if not 40 <= self.gpu_temperature_limit_c <= 110:
            raise ValueError("gpu_temperature_limit_c must be between 40 and 110")


def settings_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME)) / "settings.toml"


def load_settings(path: Path | None = None) -> tuple[Settings, str | None]:
    """Return the settings and, when the file could not be used, a message saying what happened."""
    path = path or settings_path()
    if not path.exists():
        return Settings(), None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        known = {f.name: f.type for f in fields(Settings)}
        values = {key: value for key, value in data.items() if key in known}
        settings = Settings(**values)
        _check_types(settings)
        settings.validate()
        return settings, None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        path.replace(aside)
        return Settings(), f"{path} could not be read ({exc}); it was moved to {aside.name} and defaults loaded"


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    import tomli_w

    settings.validate()
    path = path or settings_path()
    atomic_write_text(path, tomli_w.dumps(asdict(settings)))
    return path


def _check_types(settings: Settings) -> None:
    for field in fields(Settings):
        expected = {"str": str, "int": int}[field.type]
        value = getattr(settings, field.name)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise TypeError(f"{field.name} must be {field.type}, got {type(value).__name__}")
