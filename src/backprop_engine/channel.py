"""Who trains a run, and how any process of the same user controls it, through the run directory alone.

The training process holds an exclusive ``flock`` on ``RUN/run.lock`` for as long as it lives, and writes
``RUN/owner.json`` (pid, host, user, start time). The kernel drops the lock when the process ends, however it
ends (``kill -9``, a reboot), so "running" is a fact read from the lock, never a guess from file ages.

Control requests (pause, resume, checkpoint, stop) are small JSON files dropped atomically into
``RUN/control/``; a thread of the training process polls that folder every ``POLL_SECONDS``, applies each
request once to the loop's :class:`TrainingControl` (which acts between optimizer steps) and deletes it.
A polled folder rather than a socket: it needs no server state to recover, works for runs on any local file
system, and its latency (one poll plus the rest of the current step) is measured in bench/control.py.
Everything is the user's alone: the run directory and the channel are 0700, the files 0600.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError
from .events import ControlApplied, EventBus
from .fsutil import atomic_write_text

if TYPE_CHECKING:
    from .train.control import TrainingControl

ACTIONS = ("pause", "resume", "checkpoint", "stop")
LOCK_FILE = "run.lock"
OWNER_FILE = "owner.json"
CONTROL_DIR = "control"
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Owner:
    """The process that trains (or trained) a run."""

    pid: int
    host: str
    uid: int
    started: float  # unix time the process claimed the run

    def describe(self) -> str:
        return (
            f"pid {self.pid} on {self.host} since {time.strftime('%H:%M:%S', time.localtime(self.started))}"
        )


def make_private(path: Path) -> Path:
    """Create ``path`` as a directory only its user can enter (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


class RunClaim:
    """Holds a run for this process: the lock, the owner record and the control channel's folder."""

    def __init__(self, run_path: Path) -> None:
        self.run_path = Path(run_path)
        self._fd: int | None = None

    def __enter__(self) -> RunClaim:
        make_private(self.run_path)
        make_private(self.run_path / CONTROL_DIR)
        fd = os.open(self.run_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        if not _lock(fd, attempts=20):  # a status probe may hold it for a moment
            os.close(fd)
            raise _trained_already(self.run_path, read_owner(self.run_path))
        self._fd = fd
        for stale in (self.run_path / CONTROL_DIR).glob(
            "*.json"
        ):  # requests sent to an earlier, dead trainer
            stale.unlink(missing_ok=True)
        owner = Owner(os.getpid(), socket.gethostname(), os.getuid(), time.time())
        atomic_write_text(self.run_path / OWNER_FILE, json.dumps(asdict(owner)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def release_unstarted(run_path: Path) -> None:
    """Remove what a claim wrote into a directory whose run never started (no config.toml)."""
    import shutil

    for name in (OWNER_FILE, LOCK_FILE, "events.jsonl"):
        (Path(run_path) / name).unlink(missing_ok=True)
    shutil.rmtree(Path(run_path) / CONTROL_DIR, ignore_errors=True)


def _lock(fd: int, attempts: int = 1) -> bool:
    import fcntl

    for attempt in range(attempts):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            if attempt + 1 < attempts:
                time.sleep(0.025)
    return False


def refuse_if_live(run_path: Path) -> None:
    """One clear error when a process trains ``run_path`` now (before anything loads to train it again)."""
    owner = live_owner(run_path)
    if owner is not None:
        raise _trained_already(Path(run_path), owner)


def _trained_already(run_path: Path, owner: Owner | None) -> ConfigError:
    return ConfigError(
        f"{run_path} is being trained already ({owner.describe() if owner else 'another process'})",
        f"attach to it instead: backprop attach {run_path}",
    )


def read_owner(run_path: Path) -> Owner | None:
    try:
        return Owner(**json.loads((Path(run_path) / OWNER_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def live_owner(run_path: Path) -> Owner | None:
    """The process training ``run_path`` now, or None when no process holds it."""
    import fcntl

    lock = Path(run_path) / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        if _lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return read_owner(run_path) or Owner(0, "?", -1, 0.0)
    finally:
        os.close(fd)


def send_control(run_path: Path, action: str) -> str:
    """Ask the process training ``run_path`` to ``action``; returns the request's id. One clear error when the
    run is not live, not this user's, or the action unknown."""
    run_path = Path(run_path).expanduser().resolve()
    if action not in ACTIONS:
        raise ConfigError(f"unknown control action {action!r}", f"choose one of: {', '.join(ACTIONS)}")
    if (
        not (run_path / "config.toml").is_file() and live_owner(run_path) is None
    ):  # a starting run has none yet
        raise ConfigError(
            f"{run_path}: not a run directory (no config.toml)", "pass a directory `backprop train` created"
        )
    _require_own(run_path)
    if live_owner(run_path) is None:
        raise ConfigError(
            f"{run_path} is not running: no process trains it now",
            f"continue it with `backprop train --resume {run_path}` (or the Runs screen's c)",
        )
    request_id = uuid.uuid4().hex[:12]
    document = {"id": request_id, "action": action, "pid": os.getpid(), "sent": time.time()}
    name = f"{time.time_ns()}-{request_id}.json"
    try:
        atomic_write_text(run_path / CONTROL_DIR / name, json.dumps(document))
    except PermissionError:
        raise ConfigError(
            f"{run_path}: no permission to control this run", "only the user who started it can"
        ) from None
    return request_id


def _require_own(run_path: Path) -> None:
    owner_uid = run_path.stat().st_uid
    if owner_uid != os.getuid():
        raise ConfigError(
            f"{run_path} belongs to another user (uid {owner_uid})",
            "only the user who started a run can control it",
        )


class ControlServer:
    """Applies the requests dropped into ``RUN/control/`` to ``control``, once each, from a daemon thread."""

    def __init__(self, run_path: Path, control: TrainingControl, bus: EventBus) -> None:
        self.folder = Path(run_path) / CONTROL_DIR
        self.control = control
        self.bus = bus
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="backprop-control", daemon=True)

    def __enter__(self) -> ControlServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _serve(self) -> None:
        while not self._done.wait(POLL_SECONDS):
            self.poll()

    def poll(self) -> int:
        """Apply every waiting request (oldest first); returns how many were applied."""
        applied = 0
        for path in sorted(self.folder.glob("[0-9]*.json")):
            request = _take(path)
            if request is None or request.get("action") not in ACTIONS:
                continue
            self._apply(request["action"])
            self.bus.emit(
                ControlApplied(
                    action=request["action"],
                    request_id=str(request.get("id", "")),
                    sender_pid=int(request.get("pid", 0)),
                    sent=float(request.get("sent", 0.0)),
                )
            )
            applied += 1
        return applied

    def _apply(self, action: str) -> None:
        control = self.control
        {
            "pause": control.pause,
            "resume": control.resume,
            "checkpoint": control.request_checkpoint,
            "stop": control.stop,
        }[action]()


def _take(path: Path) -> dict | None:
    """Read and delete one request; None if another reader took it first or it is not a request."""
    with contextlib.suppress(OSError):
        text = path.read_text()
        path.unlink()
        with contextlib.suppress(ValueError):
            document = json.loads(text)
            return document if isinstance(document, dict) else None
    return None
