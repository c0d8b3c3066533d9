"""A multi-run directory on disk.

```
OUT/
  config.toml          the shared training settings (so `backprop export OUT` finds the model)
  multirun.toml        the plan and the progress (completed runs, task × run eval matrix), written atomically
  events.jsonl         every event of every run
  runs/run-01/ ...     one normal run directory per run (its adapter/ is that run's fine-tuned adapter)
  factors/run-01.ft.safetensors, run-01.merged.safetensors
  adapter/             after the last run: the MERGED adapter (what export and chat use)
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from ..errors import ConfigError
from ..fsutil import atomic_path, atomic_write_text
from ..rundir import RunDir
from ..tomlcompat import tomllib


@dataclass
class Progress:
    plan: dict  # the settings that must not change on resume
    completed_runs: int = 0
    matrix: list[list[float]] = field(default_factory=list)  # matrix[task][run]: held-out loss after that run

    def to_toml(self) -> str:
        return tomli_w.dumps(
            {"plan": self.plan, "progress": {"completed_runs": self.completed_runs, "matrix": self.matrix}}
        )


@dataclass(frozen=True)
class MultiRunDir:
    path: Path

    @property
    def run(self) -> RunDir:
        """The multi-run as a whole looks like one run to export, chat and the Runs screen."""
        return RunDir(self.path)

    @property
    def progress_path(self) -> Path:
        return self.path / "multirun.toml"

    @property
    def factors(self) -> Path:
        return self.path / "factors"

    def run_dir(self, index: int) -> RunDir:
        return RunDir(self.path / "runs" / f"run-{index:02d}")

    def factor_path(self, index: int, kind: str) -> Path:
        return self.factors / f"run-{index:02d}.{kind}.safetensors"

    def read_progress(self) -> Progress | None:
        if not self.progress_path.is_file():
            return None
        try:
            data = tomllib.loads(self.progress_path.read_text(encoding="utf-8"))
            progress = data["progress"]
            return Progress(data["plan"], int(progress["completed_runs"]), progress.get("matrix", []))
        except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                f"{self.progress_path}: cannot read multi-run progress ({exc})",
                "start a new multi-run in another --output",
            ) from None

    def write_progress(self, progress: Progress) -> None:
        atomic_write_text(self.progress_path, progress.to_toml())

    def save_factors(self, index: int, kind: str, state: dict) -> None:
        from safetensors.torch import save_file

        with atomic_path(self.factor_path(index, kind)) as tmp:
            save_file(
                {name: t.detach().cpu().contiguous() for name, t in state.items()},
                str(tmp),
                metadata={"format": "pt"},
            )

    def load_factors(self, index: int, kind: str) -> dict:
        from safetensors.torch import load_file

        path = self.factor_path(index, kind)
        if not path.is_file():
            raise ConfigError(
                f"{path}: missing, the multi-run state is incomplete",
                "start a new multi-run in another --output",
            )
        return load_file(str(path))
