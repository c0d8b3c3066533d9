"""Typed progress events and the sinks that receive them.

The engine never prints: it emits events to an :class:`EventBus`. Sinks are the Python callback,
the console (``--no-tui``) and ``events.jsonl`` inside the run directory (always written).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TextIO


@dataclass(kw_only=True)
class Event:
    kind: ClassVar[str] = "event"
    types: ClassVar[dict[str, type[Event]]] = {}  # kind → class, filled as subclasses are defined
    time: float = field(default_factory=time.time)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Event.types[cls.kind] = cls

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **asdict(self)}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Event | None:
        """Rebuild an event read back from events.jsonl; None for unknown kinds or fields."""
        cls = Event.types.get(data.get("event", ""))
        try:
            return cls(**{k: v for k, v in data.items() if k != "event"}) if cls else None
        except TypeError:
            return None


@dataclass(kw_only=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    run_dir: str
    model: str
    total_steps: int
    num_examples: int
    trainable_params: int
    total_params: int
    backend: str = ""
    backend_reason: str = ""


@dataclass(kw_only=True)
class RunPlanned(Event):
    """Every training setting with its reason and origin (``by_user``), as ``Trainer.plan`` chose them."""

    kind: ClassVar[str] = "run_planned"
    model: str
    device: str
    memory: str  # the predicted peak memory, part by part
    choices: list[dict]  # {name, value, reason, by_user}


@dataclass(kw_only=True)
class StepMetrics(Event):
    kind: ClassVar[str] = "step"
    step: int
    total_steps: int
    loss: float
    learning_rate: float
    grad_norm: float
    tokens_per_second: float
    eta_seconds: float
    memory_mb: float
    temperature_c: float | None = None


@dataclass(kw_only=True)
class RewardMetrics(Event):
    """Preference tuning (DPO/ORPO) on ``split`` "train" (the step's pairs) or "eval" (the held-out pairs):
    the mean pair loss, the mean rewards of the chosen and rejected replies, their margin, and the share of
    pairs whose chosen reply is ahead (accuracy)."""

    kind: ClassVar[str] = "rewards"
    step: int
    split: str
    loss: float
    chosen: float
    rejected: float
    margin: float
    accuracy: float
    pairs: int


@dataclass(kw_only=True)
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint"
    step: int
    path: str


@dataclass(kw_only=True)
class WarningEvent(Event):
    kind: ClassVar[str] = "warning"
    message: str


@dataclass(kw_only=True)
class StepSkipped(Event):
    """An optimizer step left out because its loss or gradient norm was not finite: the adapter is unchanged.
    ``in_a_row`` counts towards ``limit`` (the run stops there); 0 for an fp16 overflow the loss scaler handles."""

    kind: ClassVar[str] = "step_skipped"
    step: int
    loss: float
    grad_norm: float
    reason: str
    in_a_row: int
    limit: int


@dataclass(kw_only=True)
class Comparison(Event):
    """Held-out prompts answered greedily by the base model and by the fine-tune, side by side, with the
    held-out loss of each (None where not measured). ``source`` says where the prompts came from."""

    kind: ClassVar[str] = "comparison"
    step: int
    source: str
    prompts: list[str]
    base: list[str]
    tuned: list[str]
    references: list[str]  # the held-out answer where the prompt came from data, else ""
    base_loss: float | None = None
    tuned_loss: float | None = None
    tuned_label: str = "fine-tune"  # the adapter, or the GGUF file that answered


@dataclass(kw_only=True)
class SampleReply(Event):
    """The model's greedy reply to one fixed held-out prompt at a point in training (step 0: the base)."""

    kind: ClassVar[str] = "sample"
    step: int
    prompt: str
    reply: str


@dataclass(kw_only=True)
class GpuSafety(Event):
    """A GPU safety transition (train/safety.py): level "normal", "warn", "critical", "emergency" or
    "memory"; action "warn", "clear", "pause", "resume" or "stop" (a checkpoint is saved first)."""

    kind: ClassVar[str] = "gpu_safety"
    level: str
    action: str
    gpu: int
    temperature_c: float | None
    memory_pct: float | None
    message: str


@dataclass(kw_only=True)
class RunPaused(Event):
    kind: ClassVar[str] = "paused"
    step: int


@dataclass(kw_only=True)
class RunResumed(Event):
    kind: ClassVar[str] = "resumed"
    step: int


@dataclass(kw_only=True)
class ControlApplied(Event):
    """A control request (pause, resume, checkpoint, stop) taken from the run's channel (channel.py)."""

    kind: ClassVar[str] = "control"
    action: str
    request_id: str
    sender_pid: int
    sent: float  # when the request was written: ``time - sent`` is the channel's latency


@dataclass(kw_only=True)
class RunFinished(Event):
    kind: ClassVar[str] = "finished"
    steps: int
    final_loss: float
    tokens: int
    seconds: float
    adapter_path: str
    stopped_early: bool = False


@dataclass(kw_only=True)
class RanksFinished(Event):
    """A multi-process run (torchrun / accelerate launch): what each rank trained, reported by rank 0."""

    kind: ClassVar[str] = "ranks"
    backend: str
    steps: list[int]  # optimizer steps each rank took
    tokens: list[int]  # tokens each rank trained on (their sum is the run's)


@dataclass(kw_only=True)
class RunFailed(Event):
    kind: ClassVar[str] = "failed"
    error: str


EXPORT_STAGES = (
    "merge",
    "convert",
    "quantize",
    "verify",
    "ollama",
)  # ExportProgress.stage in order ("done" ends)


@dataclass(kw_only=True)
class ExportProgress(Event):
    kind: ClassVar[str] = "export"
    stage: str  # one of EXPORT_STAGES, or "done"
    detail: str


@dataclass(kw_only=True)
class Progress(Event):
    """How far a long stage is (progress.py names the stages): ``done`` of ``total`` ``unit`` (total 0: not
    known yet), at ``rate`` units/s, ``eta_seconds`` to go (None when unknown), ``seconds`` since it began.
    Throttled per stage; the last event of a finished stage has ``done == total``."""

    kind: ClassVar[str] = "progress"
    stage: str
    done: int
    total: int
    unit: str
    rate: float
    eta_seconds: float | None
    seconds: float

    @property
    def finished(self) -> bool:
        return self.total > 0 and self.done >= self.total


@dataclass(kw_only=True)
class ExportFinished(Event):
    """A detached export (started from the app) wrote these GGUF files."""

    kind: ClassVar[str] = "export_finished"
    paths: list[str]


@dataclass(kw_only=True)
class ExportStopped(Event):
    """A detached export stopped at the user's request; ``message`` says where and what was kept."""

    kind: ClassVar[str] = "export_stopped"
    message: str


@dataclass(kw_only=True)
class DataPrepared(Event):
    kind: ClassVar[str] = "data"
    rows_read: int
    formats: dict[str, int]
    train_examples: int
    eval_examples: int
    max_seq_len: int
    truncated: int
    trained_fraction: float
    removed: dict[str, int]  # filter name → rows it removed
    packing: bool
    packing_efficiency: float  # real tokens / tokens in the batches (padding counts against it)
    cached: bool


@dataclass(kw_only=True)
class RowsSkipped(Event):
    kind: ClassVar[str] = "rows_skipped"
    count: int
    first: list[str]  # "file:line: reason" of the first few


@dataclass(kw_only=True)
class EvalMetrics(Event):
    kind: ClassVar[str] = "eval"
    step: int
    loss: float
    examples: int


@dataclass(kw_only=True)
class MultiRunProgress(Event):
    kind: ClassVar[str] = "multirun_run"
    run: int  # 1-based
    total_runs: int
    task: str
    run_dir: str
    learning_rate: float


@dataclass(kw_only=True)
class ContinualEval(Event):
    kind: ClassVar[str] = "continual_eval"
    run: int
    total_runs: int
    tasks: list[str]
    matrix: list[list[float]]  # matrix[task][run]: held-out loss of the adapter in use after that run


@dataclass(kw_only=True)
class MultiRunFinished(Event):
    kind: ClassVar[str] = "multirun_finished"
    runs: int
    merge_mode: str
    adapter_path: str


Listener = Callable[[Event], None]  # what the bus calls: a sink, or the Python API's ``on_event`` callback


class Sink(Protocol):
    """A listener that holds something open (a file, a tracker run) until :meth:`close`."""

    def __call__(self, event: Event) -> None: ...

    def close(self) -> None: ...


class EventBus:
    """Fans one event out to every listener."""

    def __init__(self, sinks: list[Listener] | None = None) -> None:
        self.sinks: list[Listener] = list(sinks or [])
        self._lock = threading.RLock()  # the control channel's thread emits beside the training loop

    def add(self, sink: Listener) -> None:
        self.sinks.append(sink)

    def remove(self, sink: Listener) -> None:
        self.sinks.remove(sink)

    def emit(self, event: Event) -> None:
        with self._lock:
            for sink in self.sinks:
                sink(event)


@contextlib.contextmanager
def attached(
    bus: EventBus, *sinks: Sink, report_failure: bool = True, report_to: Listener | None = None
) -> Iterator[None]:
    """``sinks`` listen on ``bus`` for the block and are closed after it. An exception ending the block goes out
    first as :class:`RunFailed` (to ``report_to``, default the whole bus) unless ``report_failure`` is off."""
    for sink in sinks:
        bus.add(sink)
    try:
        yield
    except BaseException as exc:
        if report_failure:
            (report_to or bus.emit)(RunFailed(error=f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        for sink in sinks:
            bus.remove(sink)
            sink.close()


class JsonlSink:
    """Appends one JSON object per event and flushes, so another process can follow the file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        self._file.write(json.dumps(event.to_dict()) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class ConsoleSink:
    """One human-readable line per event (or the JSON object with ``as_json``). Progress: on a terminal one
    line per stage, rewritten in place; elsewhere (a log file, CI) a line per 10 % of the stage."""

    def __init__(self, stream: TextIO | None = None, as_json: bool = False) -> None:
        self.stream: TextIO | None = stream or sys.stdout
        self.as_json = as_json
        self.tty = _isatty(self.stream)
        self._open_line = False  # a progress line waits for its end on the terminal
        self._tenths: dict[str, int] = {}  # stage → the last tenth printed (not on a terminal)

    def __call__(self, event: Event) -> None:
        if isinstance(event, Progress) and not self.as_json:
            self._progress(event)
            return
        line = json.dumps(event.to_dict()) if self.as_json else format_event(event)
        if line:
            self._write(("\n" if self._open_line else "") + line + "\n")
            self._open_line = False

    def _progress(self, event: Progress) -> None:
        line = format_progress(event)
        if self.tty:
            self._write(f"\r{line}\x1b[K" + ("\n" if event.finished else ""))
            self._open_line = not event.finished
            return
        tenth = 10 * event.done // event.total if event.total else 0
        if event.finished or tenth > self._tenths.get(event.stage, -1):
            self._write(line + "\n")
        self._tenths[event.stage] = -1 if event.finished else max(tenth, self._tenths.get(event.stage, -1))

    def _write(self, text: str) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError:  # the terminal went away (SSH drop: EIO): events.jsonl still has every event
            self.stream = None

    def close(self) -> None:
        """The stream is the caller's (stdout, stderr): left open."""


def _isatty(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def format_progress(event: Progress) -> str:
    """``tokenize 1,200/5,000 rows  24%  850 rows/s  eta 0:04``; a finished stage says how long it took."""
    amount = _quantity(event.done, event.unit, with_unit=not event.total)
    amount += f"/{_quantity(event.total, event.unit)}" if event.total else ""
    if event.finished:
        return f"{event.stage} {amount} done in {format_duration(event.seconds)}"
    share = f"  {event.done / event.total:.0%}" if event.total else ""
    eta = f"  eta {format_duration(event.eta_seconds)}" if event.eta_seconds is not None else ""
    return f"{event.stage} {amount}{share}  {_quantity(event.rate, event.unit)}/s{eta}"


def _quantity(value: float, unit: str, with_unit: bool = True) -> str:
    """``1,200 rows``, ``12.3 MB`` (bytes scale to kB/MB/GB); ``with_unit=False`` leaves a count's unit out."""
    if unit == "B":
        scale, suffix = next(
            ((s, x) for s, x in ((2**30, "GB"), (2**20, "MB"), (2**10, "kB")) if value >= s), (1, "B")
        )
        return f"{value / scale:.1f} {suffix}" if scale > 1 else f"{value:.0f} B"
    return f"{value:,.0f} {unit}" if with_unit else f"{value:,.0f}"

    def close(self) -> None:
        """The stream is the caller's (stdout, stderr): left open."""


def format_event(event: Event) -> str:
    if isinstance(event, StepMetrics):
        return (
            f"step {event.step:>5}/{event.total_steps}  loss {event.loss:.4f}  lr {event.learning_rate:.2e}  "
            f"grad {event.grad_norm:.3f}  {event.tokens_per_second:,.0f} tok/s  "
            f"eta {format_duration(event.eta_seconds)}  mem {event.memory_mb:,.0f} MB"
        )
    if isinstance(event, RunStarted):
        return (
            f"training {event.model} on {event.num_examples} examples for {event.total_steps} steps "
            f"({event.trainable_params:,} of {event.total_params:,} parameters trainable) -> {event.run_dir}"
            + (f"\nbackend: {event.backend} ({event.backend_reason})" if event.backend else "")
        )
    if isinstance(event, RunPlanned):
        return _format_plan(event)
    if isinstance(event, ControlApplied):
        return f"control: {event.action} requested by pid {event.sender_pid}"
    if isinstance(event, (RunPaused, RunResumed)):
        return f"{event.kind} at step {event.step}"
    if isinstance(event, RunFinished):
        return (
            f"{'stopped' if event.stopped_early else 'finished'}: {event.steps} steps, final loss {event.final_loss:.4f}, {event.tokens:,} tokens "
            f"in {format_duration(event.seconds)}"
        )
    if isinstance(event, RanksFinished):
        return f"{len(event.steps)} processes ({event.backend}): steps per rank {event.steps}, tokens per rank {event.tokens}"
    if isinstance(event, WarningEvent):
        return f"warning: {event.message}"
    if isinstance(event, StepSkipped):
        counted = f"; {event.in_a_row} of {event.limit} in a row stop the run" if event.in_a_row else ""
        return (
            f"warning: step {event.step} skipped, adapter unchanged: {event.reason} "
            f"(loss {event.loss:.4g}, grad norm {event.grad_norm:.4g}){counted}"
        )
    if isinstance(event, Comparison):
        return format_comparison(event)
    if isinstance(event, SampleReply):
        return f"sample at step {event.step}: {event.prompt!r} -> {event.reply!r}"
    if isinstance(event, GpuSafety):
        return f"gpu {event.action}: {event.message}"
    if isinstance(event, RunFailed):
        return f"failed: {event.error}"
    if isinstance(event, CheckpointSaved):
        return f"checkpoint saved at step {event.step}: {event.path}"
    if isinstance(event, DataPrepared):
        removed = ", ".join(f"{name}: {count}" for name, count in event.removed.items() if count) or "none"
        return (
            f"data: {event.rows_read} rows ({', '.join(f'{k} {v}' for k, v in event.formats.items())}) -> "
            f"{event.train_examples} train / {event.eval_examples} eval, max_seq_len {event.max_seq_len} "
            f"({event.truncated} truncated), {event.trained_fraction:.0%} of tokens trained, "
            f"{'packed' if event.packing else 'padded'} at {event.packing_efficiency:.0%} efficiency; removed: {removed}"
            + (" (cached)" if event.cached else "")
        )
    if isinstance(event, RowsSkipped):
        return f"warning: skipped {event.count} bad rows, first: {event.first[0] if event.first else '?'}"
    if isinstance(event, RewardMetrics):
        return (
            f"{'eval ' if event.split == 'eval' else ''}rewards at step {event.step}: chosen {event.chosen:+.4f}  "
            f"rejected {event.rejected:+.4f}  margin {event.margin:+.4f}  accuracy {event.accuracy:.0%} of {event.pairs} pairs"
        )
    if isinstance(event, EvalMetrics):
        return f"eval at step {event.step}: loss {event.loss:.4f} on {event.examples} examples"
    if isinstance(event, MultiRunProgress):
        return f"run {event.run}/{event.total_runs} on {event.task} (peak lr {event.learning_rate:.2e}) -> {event.run_dir}"
    if isinstance(event, ContinualEval):
        losses = ", ".join(f"{task} {row[-1]:.4f}" for task, row in zip(event.tasks, event.matrix))
        return f"held-out loss after run {event.run}/{event.total_runs}: {losses}"
    if isinstance(event, MultiRunFinished):
        return f"multi-run finished: {event.runs} runs ({event.merge_mode}), adapter {event.adapter_path}"
    if isinstance(event, ExportProgress):
        return f"export [{event.stage}] {event.detail}"
    if isinstance(event, Progress):
        return format_progress(event)
    if isinstance(event, ExportStopped):
        return f"export stopped: {event.message}"
    return ""


def format_comparison(event: Comparison, width: int = 100) -> str:
    """The two sides in columns: the prompt, then the base's reply beside the fine-tune's."""
    half = (width - 3) // 2
    count = len(event.prompts)
    head = (
        f"base vs {event.tuned_label} on {count} prompt{'' if count == 1 else 's'} ({event.source}), greedy"
    )
    if event.base_loss is not None and event.tuned_loss is not None:
        head += (
            f"; held-out loss {event.base_loss:.4f} -> {event.tuned_loss:.4f}, "
            f"perplexity {perplexity(event.base_loss):.2f} -> {perplexity(event.tuned_loss):.2f}"
        )
    lines = [head, f"{'base':<{half}} | {event.tuned_label}"]
    for prompt, base, tuned in zip(event.prompts, event.base, event.tuned):
        lines.append(f"> {prompt}")
        left, right = textwrap.wrap(base, half) or ["(empty)"], textwrap.wrap(tuned, half) or ["(empty)"]
        lines += [f"{a:<{half}} | {b}" for a, b in itertools.zip_longest(left, right, fillvalue="")]
    return "\n".join(lines)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))


def _format_plan(event: RunPlanned) -> str:
    width = max((len(c["name"]) for c in event.choices), default=0)
    lines = [f"plan for {event.model} on {event.device}; predicted peak memory {event.memory}"]
    for choice in event.choices:
        value = choice["value"]
        shown = (
            f"{value:.2g}"
            if isinstance(value, float)
            else ("on" if value else "off")
            if isinstance(value, bool)
            else str(value)
        )
        origin = "you" if choice["by_user"] else "auto"
        lines.append(f"  {choice['name']:<{width}}  {shown:<8} [{origin}] {choice['reason']}")
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
