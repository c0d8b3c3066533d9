"""Where backprop keeps things: caches and default run directories (platformdirs, XDG on Linux)."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError

APP_NAME = "backprop"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


def default_runs_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME)) / "runs"


def safe_name(name: str, what: str = "name") -> str:
    """Validate a name that becomes part of a path (letters, digits, '.', '_', '-'; no leading dot)."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ConfigError(
            f"invalid {what} {name!r}",
            "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def ensure_writable_dir(path: Path, what: str = "output directory") -> Path:
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".backprop-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"{what} {path} is not writable: {exc.strerror or exc}",
            "choose another directory with --output or fix its permissions",
        ) from None
    return path
