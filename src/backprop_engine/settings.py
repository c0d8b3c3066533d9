"""User settings as TOML under platformdirs' config dir: read with tomllib, written atomically with tomli-w.

A corrupt file is moved aside (``settings.toml.corrupt-<time>``), defaults load, and the caller gets a
message to show the user.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .fsutil import atomic_write_text
from .options import Bounds, option, problems
from .paths import APP_NAME, default_runs_dir
from .tomlcompat import tomllib


@dataclass
class Settings:
    output_dir: str = option("", help="empty: the user data dir")  # see default_runs_dir
    ollama_host: str = option(
        "http://127.0.0.1:11434", label="Ollama host", help="where exports are registered"
    )
    ollama_num_ctx: int = option(
        8192,
        label="Ollama context",
        bounds=Bounds(256),
        help="cap on an export's num_ctx",  # its own context if smaller; --num-ctx per export
    )
    theme: str = option("", help="the app's colour theme, by its name there (empty: the app's default)")
    # GPU safety (train/safety.py); a run overrides them with its own TrainConfig values.
    gpu_temperature_warn_c: int = option(
        75, label="GPU temp warn", bounds=Bounds(30, 110), help="°C: a warning event"
    )
    gpu_temperature_limit_c: int = option(
        85, label="GPU temp limit", bounds=Bounds(40, 110), help="°C: pause until it cools"
    )
    gpu_temperature_emergency_c: int = option(
        95, label="GPU temp stop", bounds=Bounds(40, 120), help="°C: checkpoint, then stop"
    )
    gpu_memory_warn_pct: int = option(
        95, label="GPU memory warn", bounds=Bounds(50, 100), help="% of GPU memory in use"
    )
    gpu_cool_timeout_s: int = option(
        900, label="Max GPU pause", bounds=Bounds(10, 86_400), help="s; then checkpoint and stop"
    )
    checkpoint_minutes: int = option(
        20,
        label="Ckpt every",
        bounds=Bounds(0, 24 * 60),
        help="minutes of training; 0: off",  # so a crash loses minutes
    )

    def runs_dir(self) -> Path:
        return Path(self.output_dir).expanduser() if self.output_dir else default_runs_dir()

    def validate(self) -> None:
        if not self.ollama_host.startswith(("http://", "https://")):
            raise ValueError("ollama_host must start with http:// or https://")
        problem = problems(self)  # each field's declared bounds
        if problem is not None:
            raise ValueError(problem)
        if not self.gpu_temperature_warn_c < self.gpu_temperature_limit_c < self.gpu_temperature_emergency_c:
            raise ValueError(
                f"GPU temperatures must rise: gpu_temperature_warn_c ({self.gpu_temperature_warn_c}) < gpu_temperature_limit_c "
                f"({self.gpu_temperature_limit_c}) < gpu_temperature_emergency_c ({self.gpu_temperature_emergency_c})"
            )


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
        if (
            "gpu_temperature_limit_c" in values
        ):  # a limit set alone (older files): warn and stop 10 °C either side
            values.setdefault("gpu_temperature_warn_c", values["gpu_temperature_limit_c"] - 10)
            values.setdefault("gpu_temperature_emergency_c", values["gpu_temperature_limit_c"] + 10)
        settings = Settings(**values)
        _check_types(settings)
        settings.validate()
        return settings, None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        path.replace(aside)
        return (
            Settings(),
            f"{path} could not be read ({exc}); it was moved to {aside.name} and defaults loaded",
        )


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    import tomli_w

    settings.validate()
    path = path or settings_path()
    atomic_write_text(path, tomli_w.dumps(asdict(settings)))
    return path


def _check_types(settings: Settings) -> None:
    for field in fields(Settings):
        expected = {"str": str, "int": int}[str(field.type)]
        value = getattr(settings, field.name)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise TypeError(f"{field.name} must be {field.type}, got {type(value).__name__}")
