"""Reading runs back from disk: summaries for a run list, and following a run's events.jsonl live."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .events import Event

LIVE = ("starting", "running", "paused")


@dataclass(frozen=True)
class RunSummary:
    path: Path
    model: str
    status: str  # starting, running, paused (a process holds the run), finished, stopped, failed, interrupted
    step: int
    total_steps: int
    final_loss: float | None  # the run's final loss once it ended; else None
    last_loss: float | None  # the newest logged step loss
    exports: tuple[str, ...]
    pid: int | None = None  # the training process, while one holds the run
    eta_seconds: float | None = None
    checkpoint_step: int | None = None  # the newest checkpoint a resume would start from

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def live(self) -> bool:
        return self.status in LIVE

    def status_text(self, compact: bool = False) -> str:
        """ "interrupted at step 12 (checkpoint at step 10)" and the like; ``compact`` for a table with a step
        column: "interrupted (ckpt 10)"."""
        if self.status != "interrupted":
            return self.status
        if compact:
            return f"interrupted ({'ckpt ' + str(self.checkpoint_step) if self.checkpoint_step is not None else 'no ckpt'})"
        saved = (
            f"checkpoint at step {self.checkpoint_step}"
            if self.checkpoint_step is not None
            else "no checkpoint"
        )
        return f"interrupted at step {self.step} ({saved})"

    def loss_text(self) -> str:
        if self.final_loss is not None:
            return f"{self.final_loss:.4f}"
        return f"{self.last_loss:.4f} (last logged)" if self.last_loss is not None else "—"


def read_events(path: Path) -> list[dict]:
    """Every complete event in ``path``; a torn last line (a writer mid-append) is ignored."""
    return EventFollower(path).poll()


def summarize_run(path: Path) -> RunSummary:
    """The run's state as its files and its lock say it (see channel.py): exact, never guessed from file ages."""
    from .channel import live_owner

    events = read_events(path / "events.jsonl")
    started = next((e for e in events if e.get("event") == "run_started"), {})
    steps = [e for e in events if e.get("event") == "step"]
    owner = live_owner(path)
    status = _status(events, owner is not None)
    last = events[-1] if events else {}
    final_loss = last.get("final_loss") if status in ("finished", "stopped") else None
    return RunSummary(
        path=path,
        model=started.get("model", "?"),
        status=status,
        step=last.get("steps")
        or max((e.get("step", 0) for e in events if isinstance(e.get("step"), int)), default=0),
        total_steps=started.get("total_steps", 0),
        final_loss=final_loss,
        last_loss=steps[-1]["loss"] if steps else None,
        exports=tuple(sorted(p.name for p in (path / "export").glob("*.gguf"))),
        pid=owner.pid if owner else None,
        eta_seconds=steps[-1].get("eta_seconds") if steps and owner else None,
        checkpoint_step=_newest_checkpoint_step(path / "checkpoints"),
    )


def _status(events: list[dict], held: bool) -> str:
    ends = {"finished": "finished", "multirun_finished": "finished", "failed": "failed"}
    last = events[-1] if events else {}
    if last.get("event") in ends:
        return "stopped" if last.get("stopped_early") else ends[last["event"]]
    if not held:
        return "interrupted"
    if not events:
        return "starting"
    pauses = [e["event"] for e in events if e.get("event") in ("paused", "resumed")]
    return "paused" if pauses and pauses[-1] == "paused" else "running"


def _newest_checkpoint_step(folder: Path) -> int | None:
    from .train.checkpoint import checkpoint_step, newest_checkpoint

    newest = newest_checkpoint(folder)
    return checkpoint_step(newest) if newest is not None else None


def list_runs(root: Path) -> list[RunSummary]:
    """Run directories directly under ``root``: live ones first, then newest first."""
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if (p / "config.toml").is_file()]
    newest = [summarize_run(p) for p in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)]
    return sorted(newest, key=lambda run: not run.live)  # stable: newest first within each group


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

    def poll_events(self) -> list[Event]:
        """The new events, typed: parsed here, once, for every reader (kinds this version lacks are left out)."""
        return [event for event in map(Event.from_dict, self.poll()) if event is not None]
