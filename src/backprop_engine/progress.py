"""How far every long wait is: throttled :class:`~.events.Progress` events, and cancellation at the next unit.

Code deep in the engine (a tokenizer loop, the GGUF writer, transformers' own loading loop) reports through
the *ambient* reporter that :func:`reporting` sets for the current thread, rather than a parameter threaded
through every call between the Trainer and that loop: the Trainer and the export say where events go and
what asks to stop; :func:`track` finds it. Without a reporter, tracking costs one context-variable lookup.

Library progress bars come in through their own hooks: transformers' ``set_tqdm_hook`` (loading weights,
writing shards), the ``tqdm_class`` of huggingface_hub's ``snapshot_download`` (:class:`HubProgress`), and
the tqdm of transformers' GGUF loader (:func:`gguf_dequantize_progress`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import Cancelled
from .events import Event, Progress

# Every stage a run or an export can wait in, in the order they come, with the unit each counts.
STAGES = {
    "download": "B",
    "metadata": "entries",  # a GGUF's header: its vocabulary, scores, merges
    "dequantize": "tensors",
    "read": "rows",
    "tokenize": "rows",
    "load": "tensors",
    "probe": "passes",
    "evaluate": "rows",  # the held-out loss (before the first step, at evals, at the end)
    "answer": "prompts",  # greedy replies: the base's before the first step, samples, the fine-tune's at the end
    "checkpoint": "files",
    "merge": "modules",
    "save": "shards",
    "convert": "B",
    "quantize": "tensors",
    "verify": "checks",
}
UNSTOPPABLE = ("checkpoint", "save")  # they run on after a stop: they keep the work
MIN_INTERVAL = 0.1  # seconds between two events of one stage (the last one always goes out)
# A test hook: "load:/tmp/gate" holds the load stage after its first unit until the file /tmp/gate exists
# (or a stop ends the stage), so that a test sees the stage running without racing it. A run or an export
# the app starts runs in a process of its own, which inherits the variable.
_HELD_STAGE, _, _GATE = os.environ.get("BACKPROP_TEST_HOLD", "").partition(":")


def held_at(stage: str) -> str:
    """The gate file the test hook holds ``stage`` on ("" unless BACKPROP_TEST_HOLD names the stage)."""
    return _GATE if stage == _HELD_STAGE else ""


@dataclass(frozen=True)
class Reporter:
    emit: Callable[[Event], None]
    cancelled: Callable[[], bool]
    kept: str = ""  # what a stop leaves, for stages that do not say it themselves


_reporter: ContextVar[Reporter | None] = ContextVar("backprop_progress", default=None)


@contextlib.contextmanager
def reporting(
    emit: Callable[[Event], None], cancelled: Callable[[], bool] = lambda: False, kept: str = ""
) -> Iterator[None]:
    """Progress of the long stages run inside goes to ``emit``; once ``cancelled()`` is true, the stage that
    is running raises :class:`~.errors.Cancelled` at its next unit."""
    token = _reporter.set(Reporter(emit, cancelled, kept))
    try:
        yield
    finally:
        _reporter.reset(token)


def current() -> Reporter | None:
    return _reporter.get()


@contextlib.contextmanager
def stopped_by_signals(stop: Callable[[], None] | None = None) -> Iterator[threading.Event]:
    """Ctrl+C (SIGINT) and SIGTERM set the yielded event (and call ``stop``): the running stage stops at its
    next unit, rather than wherever Python happens to be."""
    import signal

    asked = threading.Event()

    def on_signal(signum, frame) -> None:
        asked.set()
        if stop is not None:
            stop()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield asked
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Tracker:
    """One stage's counter: :meth:`advance` per unit, :meth:`finish` at the end (``done == total``).
    ``kept`` finishes the sentence "stopped during STAGE at N of M: …" (what a cancel leaves behind)."""

    def __init__(
        self, stage: str, total: int = 0, unit: str | None = None, kept: str = "", stoppable: bool = True
    ) -> None:
        self.stage, self.total, self.unit, self.kept = stage, int(total), unit or STAGES[stage], kept
        self.cancellable = stoppable and stage not in UNSTOPPABLE
        self.reporter = current()  # the thread that starts the stage says where it reports
        self.done = 0
        self.started = time.monotonic()
        self._last = 0.0  # when the previous event went out
        self._finished = False
        self._lock = threading.Lock()  # a hub download updates from several threads

    def advance(self, units: int = 1) -> None:
        """``units`` more are done; raises Cancelled when a stop was asked for."""
        self.report(self.done + units)
        self.check()
        if held_at(self.stage) and not os.path.exists(_GATE):
            self._hold()

    def _hold(self) -> None:
        """The test hook: the count so far goes out (past the throttle), then the stage waits for the gate (at
        most ten minutes: the process of a test that died without opening it ends by itself)."""
        if self.reporter is not None:
            self.reporter.emit(self._event(time.monotonic()))
        deadline = time.monotonic() + 600
        while not os.path.exists(_GATE) and time.monotonic() < deadline:
            time.sleep(0.02)
            self.check()

    def report(self, done: int, total: int | None = None) -> None:
        """Set the count (and the total, when it grows as a download discovers files), without a cancel check."""
        if self.reporter is None:
            self.done = done
            return
        with self._lock:
            self.done = done
            self.total = self.total if total is None else int(total)
            now = time.monotonic()
            if now - self._last >= MIN_INTERVAL and not (self.total and self.done >= self.total):
                self._last = now
                self.reporter.emit(self._event(now))

    def check(self) -> None:
        if self.cancellable and self.reporter is not None and self.reporter.cancelled():
            raise Cancelled(self._stopped_message())

    def finish(self) -> None:
        if self._finished or self.reporter is None:
            return
        self._finished = True
        self.total = max(self.total, self.done)
        self.done = self.total
        self.reporter.emit(self._event(time.monotonic()))

    def _event(self, now: float) -> Progress:
        seconds = now - self.started
        rate = self.done / seconds if seconds > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 and self.total else None
        return Progress(
            stage=self.stage,
            done=self.done,
            total=self.total,
            unit=self.unit,
            rate=rate,
            eta_seconds=eta,
            seconds=seconds,
        )

    def _stopped_message(self) -> str:
        count = f"{self.done:,} of {self.total:,}" if self.total else f"{self.done:,}"
        kept = self.kept or (self.reporter.kept if self.reporter else "")
        return f"stopped during {self.stage} at {count} {self.unit}" + (f": {kept}" if kept else "")

    def __enter__(self) -> Tracker:
        self.check()  # a stop asked for before the stage began
        # The stage shows at once, before its first unit is done (a reply of a large model can take a minute).
        if self.reporter is not None:
            self._last = time.monotonic()
            self.reporter.emit(self._event(self._last))
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is None:
            self.finish()


def track(
    stage: str, total: int = 0, unit: str | None = None, kept: str = "", stoppable: bool = True
) -> Tracker:
    """``with track("tokenize", len(rows), kept="nothing was written") as t: ... t.advance()``;
    ``stoppable=False``: a stop never ends this one (e.g. a step all ranks of a process group must finish)."""
    return Tracker(stage, total, unit, kept, stoppable)


def tracked(
    stage: str, items: Iterable, total: int | None = None, unit: str | None = None, kept: str = ""
) -> Iterator:
    """``items`` one by one, each counted once the caller asks for the next."""
    if total is None:
        total = len(items) if isinstance(items, Sized) else 0
    with track(stage, total, unit, kept) as tracker:
        for item in items:
            yield item
            tracker.advance()


# transformers: its own loops report through tqdm; set_tqdm_hook hands them to us --------------------------

TRANSFORMERS_BARS = {"Loading weights": "load", "Writing model shards": "save"}  # tqdm desc → stage
_hook_installed = False


def hook_transformers() -> None:
    """Hand transformers' bars to the running stage. Called where transformers is set up
    (modeling.quiet_transformers), never at ``reporting``: Unsloth must be imported before transformers."""
    global _hook_installed
    if _hook_installed:
        return
    from transformers.utils import logging

    if not hasattr(logging, "set_tqdm_hook"):
        return
    previous = logging.set_tqdm_hook(None)

    def hook(factory, args, kwargs):
        stage = TRANSFORMERS_BARS.get(kwargs.get("desc", ""))
        if stage is None or current() is None:
            return previous(factory, args, kwargs) if previous else factory(*args, **kwargs)
        return _Bar(stage, args[0] if args else kwargs.get("iterable"), kwargs.get("total"))

    logging.set_tqdm_hook(hook)
    _hook_installed = True


class _Bar:
    """Enough of tqdm for a library loop that iterates over it (transformers' and the GGUF loader's)."""

    def __init__(self, stage: str, iterable, total: int | None = None, kept: str = "") -> None:
        self.iterable = iterable
        self.stage, self.kept = stage, kept
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else 0)

    def __iter__(self):
        return tracked(self.stage, self.iterable, self.total, kept=self.kept)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __getattr__(self, name):  # update, close, set_postfix, refresh ...: the loop's own bookkeeping
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def library_loop(module_name: str, stage: str, kept: str = "") -> Iterator[None]:
    """A library loop that calls ``tqdm(items, ...)`` straight from its module (transformers' GGUF loader,
    peft's merge) reports as ``stage``: that module's ``tqdm`` is pointed at :class:`_Bar` meanwhile."""
    import importlib

    module = importlib.import_module(module_name)
    saved = getattr(module, "tqdm")  # noqa: B009 (the module's own global, looked up at run time)
    setattr(module, "tqdm", lambda iterable, *args, **kwargs: _Bar(stage, iterable, kept=kept))  # noqa: B010
    try:
        yield
    finally:
        setattr(module, "tqdm", saved)  # noqa: B010


# huggingface_hub: snapshot_download(tqdm_class=HubDownload().bar) -------------------------------------------


class HubDownload:
    """The bars of one ``snapshot_download(tqdm_class=download.bar)``; :meth:`finish` ends the stage once it
    returns (the hub leaves its bytes bar open)."""

    def __init__(self) -> None:
        self.bars: list[HubProgress] = []

    def bar(self, *args, **kwargs) -> HubProgress:
        bar = HubProgress(*args, **kwargs)
        self.bars.append(bar)
        return bar

    def finish(self) -> None:
        for bar in self.bars:
            bar.close()


class HubProgress:
    """One bar of ``snapshot_download``: its bytes bar ("Reconstructing…", bytes written to disk,
    a total that grows as files are found) becomes the ``download`` stage; its other bars stay silent.
    Created in the caller's thread (where the reporter is), updated from the hub's download threads."""

    def __init__(
        self, *args, desc: str = "", total: float | None = 0, initial: float = 0, unit: str = "it", **kwargs
    ) -> None:
        self.desc, self.unit = desc, unit
        self.n = initial or 0
        self._total = total or 0
        counts = unit == "B" and not desc.startswith("Downloading bytes")  # that one counts network bytes
        self.tracker = (
            Tracker(
                "download",
                int(self._total),
                "B",
                kept="the bytes fetched so far stay in the hub cache; the next run resumes them",
            )
            if counts
            else None
        )
        self.started = time.monotonic()
        self._lock = threading.Lock()

    @property
    def total(self) -> float:
        return self._total

    @total.setter
    def total(self, value: float | None) -> None:
        self._total = value or 0
        if self.tracker is not None:
            self.tracker.report(int(self.n), int(self._total))

    def update(self, n: float | None = 1) -> None:
        with self._lock:
            self.n += n or 0
        if self.tracker is not None:
            self.tracker.report(int(self.n), int(self._total))
            self.tracker.check()

    @property
    def format_dict(self) -> dict:
        seconds = time.monotonic() - self.started
        return {
            "n": self.n,
            "total": self._total,
            "elapsed": seconds,
            "rate": self.n / seconds if seconds > 0 else None,
        }

    def close(self) -> None:
        if self.tracker is not None and self.n:
            self.tracker.report(int(self.n), int(max(self._total, self.n)))
            self.tracker.finish()

    def __enter__(self) -> HubProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def refresh(self, *args, **kwargs) -> None:
        pass

    def set_description(self, *args, **kwargs) -> None:
        pass

    set_description_str = set_postfix_str = set_postfix = set_description
