"""One directory per run: config.toml, events.jsonl, checkpoints/, adapter/, merged/, export/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomli_w

from .channel import make_private
from .config import TrainConfig
from .errors import ConfigError
from .fsutil import atomic_write_text
from .paths import ensure_writable_dir

FULL_MODEL_STAMP = "backprop_full.json"  # marks merged/ as a fully fine-tuned model, not a merge


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def merged(self) -> Path:
        return self.path / "merged"

    @property
    def full_fine_tuned(self) -> bool:
        return (self.merged / FULL_MODEL_STAMP).is_file()

    @property
    def export(self) -> Path:
        return self.path / "export"

    @classmethod
    def create(cls, path: Path) -> RunDir:
        path = Path(path).expanduser().resolve()
        if (path / "config.toml").exists() or (path / "adapter").exists():
            raise ConfigError(
                f"{path} already holds a run; refusing to overwrite it",
                "choose a new --output directory (or delete the old run yourself)",
            )
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path} exists and is not a directory", "choose a directory for --output")
        return cls(make_private(ensure_writable_dir(path)))  # 0700: the run is its user's alone

    @classmethod
    def open(cls, path: Path) -> RunDir:
        run = cls(Path(path).expanduser().resolve())
        if not run.config_path.is_file():
            raise ConfigError(
                f"{run.path}: not a run directory (no config.toml)",
                "pass the directory `backprop train` created",
            )
        return run

    def write_config(self, config: TrainConfig, resolved: dict[str, str]) -> None:
        document = {"train": config.to_dict(), "resolved": resolved}
        atomic_write_text(self.config_path, tomli_w.dumps(document))

    def read_config(self) -> TrainConfig:
        return TrainConfig.from_toml(self.config_path)
