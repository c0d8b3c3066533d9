"""Reading runs back from disk: summaries for a run list, and following a run's events.jsonl live."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

# A run whose events.jsonl has not grown for this long and has no end event was probably killed.
STALE_AFTER_SECONDS = 15 * 60


@dataclass(frozen=True)
class RunSummary:
    path: Path
    model: str
    status: str  # running, finished, stopped, failed, interrupted, created
    step: int
    total_steps: int
    final_loss: float | None
    exports: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.path.name


def read_events(path: Path) -> list[dict]:
    """Every complete event in ``path``; a torn last line (a writer mid-append) is ignored."""
    return EventFollower(path).poll()


def summarize_run(path: Path) -> RunSummary:
    events = read_events(path / "events.jsonl")
    started = next((e for e in events if e.get("event") == "run_started"), {})
    steps = [e for e in events if e.get("event") == "step"]
    last = events[-1] if events else {}
    ends = {"finished": "finished", "multirun_finished": "finished", "failed": "failed"}
    status = ends.get(last.get("event"), "running" if events else "created")
    if status == "running" and time.time() - (path / "events.jsonl").stat().st_mtime > STALE_AFTER_SECONDS:
        status = "interrupted"
    if status == "finished" and last.get("stopped_early"):
        status = "stopped"
    final_loss = last.get("final_loss") if status in ("finished", "stopped") else (steps[-1]["loss"] if steps else None)
    exports = tuple(sorted(p.name for p in (path / "export").glob("*.gguf")))
    return RunSummary(
        path=path,
        model=started.get("model", "?"),
        status=status,
        step=last.get("steps") or (steps[-1]["step"] if steps else 0),
        total_steps=started.get("total_steps", 0),
        final_loss=final_loss,
        exports=exports,
    )


def list_runs(root: Path) -> list[RunSummary]:
    """Run directories directly under ``root``, newest first."""
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if (p / "config.toml").is_file()]
    return [summarize_run(p) for p in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)]


class EventFollower:
    """Returns the events appended to an events.jsonl since the last call (for `backprop watch`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with self.path.open("rb") as file:
            file.seek(self._offset)
            chunk = file.read()
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an unfinished line waits for its newline
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events
