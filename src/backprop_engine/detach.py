"""Runs started from the app train in a process of their own, so that no terminal owns them.

The app writes a :class:`LaunchSpec` into the run directory and starts ``python -m backprop_engine.detach
RUN/launch-<action>.json`` in a new session (``setsid``), with stdin from /dev/null and stdout/stderr appended
to ``RUN/train.log`` (``RUN/export.log`` for an export, whose events go to ``RUN/export.jsonl``). When the
app's terminal goes away (an SSH drop sends SIGHUP to the terminal's session;
writes then fail with EIO), the training process is in another session, has no terminal to lose, and goes on;
the app (or any later one) follows its events.jsonl and controls it through the run's channel (channel.py).
A separate process rather than the app's own: an app that "exits but keeps training" would have to outlive
its shell's foreground job, and training in another process also keeps the app's event loop free.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .channel import make_private
from .errors import ConfigError, render_error
from .fsutil import atomic_write_text

ACTIONS = ("train", "resume", "export")
LOG_FILES = {"train": "train.log", "resume": "train.log", "export": "export.log"}
EXPORT_EVENTS = "export.jsonl"  # an export's events, apart from the training's events.jsonl


@dataclass(frozen=True, kw_only=True)
class LaunchSpec:
    """What the detached process does: ``train`` a new run into ``run_dir``, ``resume`` the run there, or
    ``export`` it (``export`` holds Trainer.export's keyword arguments)."""

    action: str
    run_dir: str
    model: str = ""
    data: str = ""
    steps: int | None = None
    overrides: dict = field(default_factory=dict)  # TrainConfig fields
    export: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError(f"unknown launch action {self.action!r}", f"one of: {', '.join(ACTIONS)}")

    @property
    def launch_file(self) -> str:
        return f"launch-{self.action}.json"


@dataclass
class Launched:
    """A detached run as the process that started it sees it."""

    run_dir: Path
    process: subprocess.Popen
    spec: LaunchSpec

    @property
    def log(self) -> Path:
        return self.run_dir / LOG_FILES[self.spec.action]

    def error(self) -> str | None:
        """What the process printed when it exited with an error; None while it runs or after success."""
        code = self.process.poll()
        if code is None or code == 0:
            return None
        return (
            last_error(self.log)
            or f"the {self.spec.action} process exited with status {code} (see {self.log})"
        )

    def failed_before_start(self) -> str | None:
        """The error of a training process that exited before creating its run (None while it runs or once the
        run exists: then events.jsonl tells the rest). Removes what the launch alone wrote."""
        message = self.error()
        if message is None or (self.run_dir / "config.toml").exists():
            return None
        for name in (self.spec.launch_file, LOG_FILES[self.spec.action]):
            (self.run_dir / name).unlink(missing_ok=True)
        try:
            self.run_dir.rmdir()  # only when the launch created it and nothing else is there
        except OSError:
            pass
        return message


def launch(spec: LaunchSpec) -> Launched:
    """Start ``spec`` in a detached process; returns at once (follow ``RUN/events.jsonl`` for progress)."""
    run = make_private(Path(spec.run_dir).expanduser().resolve())
    atomic_write_text(run / spec.launch_file, json.dumps(asdict(spec) | {"run_dir": str(run)}))
    log_fd = os.open(run / LOG_FILES[spec.action], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "backprop_engine.detach", str(run / spec.launch_file)],
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd=run,
        )
    finally:
        os.close(log_fd)
    return Launched(run, process, spec)


def last_error(log: Path) -> str | None:
    """The last "error: …" line (with its "hint: …") a process wrote to ``log``."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("error: "):
            hint = (
                lines[index + 1] if index + 1 < len(lines) and lines[index + 1].startswith("hint: ") else ""
            )
            return lines[index][len("error: ") :] + (f" ({hint})" if hint else "")
    return None


def run_spec(spec: LaunchSpec) -> int:
    from .cli import train_headless
    from .events import ConsoleSink
    from .trainer import Trainer

    console = ConsoleSink()  # into the log
    if spec.action == "export":
        return _export(spec, console)
    if spec.action == "resume":
        trainer = Trainer.from_run(spec.run_dir, on_event=console)
        return train_headless(trainer, trainer.resume)
    trainer = Trainer(spec.model, on_event=console, **spec.overrides)
    return train_headless(
        trainer, lambda: trainer.train(spec.data, steps=spec.steps, output_dir=spec.run_dir)
    )


def _export(spec: LaunchSpec, console) -> int:
    import signal

    from .errors import Cancelled
    from .events import EventBus, ExportFinished, ExportStopped, JsonlSink
    from .progress import stopped_by_signals
    from .trainer import Trainer

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    events = JsonlSink(Path(spec.run_dir) / EXPORT_EVENTS)
    try:
        trainer = Trainer.from_run(spec.run_dir, on_event=EventBus([console, events]).emit)
        with stopped_by_signals(
            trainer.control.stop
        ):  # the app's cancel: SIGTERM, the stage stops at its next unit
            paths = trainer.export("gguf", **spec.export)
        events(ExportFinished(paths=[str(path) for path in (paths if isinstance(paths, list) else [paths])]))
    except Cancelled as stopped:
        events(ExportStopped(message=stopped.message))
        raise
    finally:
        events.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    from .errors import BackpropError

    path = Path((argv if argv is not None else sys.argv[1:])[0])
    try:
        return run_spec(LaunchSpec(**json.loads(path.read_text(encoding="utf-8"))))
    except BackpropError as error:
        print(render_error(error), file=sys.stderr, flush=True)  # noqa: T201 - the detached run's stderr log
        return 2


if __name__ == "__main__":
    sys.exit(main())
