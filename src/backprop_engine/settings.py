"""User settings as TOML under platformdirs' config dir: read with tomllib, written atomically with tomli-w.

A corrupt file is moved aside (``settings.toml.corrupt-<time>``), defaults load, and the caller gets a
message to show the user.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .fsutil import atomic_write_text
from .paths import APP_NAME, default_runs_dir
from .tomlcompat import tomllib

# GPU safety thresholds (train/safety.py): the range each setting must stay in.
GPU_SAFETY_RANGES = {
    "gpu_temperature_limit_c": (40, 110),
    "gpu_temperature_warn_c": (30, 110),
    "gpu_temperature_emergency_c": (40, 120),
    "gpu_memory_warn_pct": (50, 100),
    "gpu_cool_timeout_s": (10, 86_400),
}
CHECKPOINT_MINUTES_RANGE = (0, 24 * 60)


@dataclass
class Settings:
    output_dir: str = ""  # empty: the platform's user data dir (see default_runs_dir)
    ollama_host: str = "http://127.0.0.1:11434"
    ollama_num_ctx: int = (
        8192  # cap on an export's Ollama context (its own context if smaller); --num-ctx per export
    )
    theme: str = ""  # the app's colour theme, by its name there (empty: the app's default)
    gpu_temperature_warn_c: int = 75  # a warning event
    gpu_temperature_limit_c: int = 85  # critical: training pauses until the GPU cools
    gpu_temperature_emergency_c: int = 95  # a checkpoint is saved and training stops
    gpu_memory_warn_pct: int = 95  # GPU memory in use (NVML, every process): a warning event
    gpu_cool_timeout_s: int = 900  # a pause that lasts longer saves a checkpoint and stops
    checkpoint_minutes: int = (
        20  # a checkpoint every N minutes of training, so a crash loses minutes (0: off)
    )

    def runs_dir(self) -> Path:
        return Path(self.output_dir).expanduser() if self.output_dir else default_runs_dir()

    def validate(self) -> None:
        if not self.ollama_host.startswith(("http://", "https://")):
            raise ValueError("ollama_host must start with http:// or https://")
        if self.ollama_num_ctx < 256:
            raise ValueError("ollama_num_ctx must be at least 256")
        for name, (low, high) in GPU_SAFETY_RANGES.items():
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be between {low} and {high}")
        low, high = CHECKPOINT_MINUTES_RANGE
        if not low <= self.checkpoint_minutes <= high:
            raise ValueError(f"checkpoint_minutes must be between {low} and {high}")
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
