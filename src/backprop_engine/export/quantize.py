"""Quantization through llama.cpp's own ``llama_model_quantize`` (llama-cpp-python)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ExportError
from ..fsutil import atomic_path
from ..progress import MIN_INTERVAL, Tracker, held_at, track
from ..quantizations import QUANTIZATIONS
from .quantize_child import quantize as _quantize

# llama.cpp's log line for a tensor it cannot give the requested type (k-quants need rows divisible by 256).
_FALLBACK = re.compile(
    r"warning: (?P<tensor>\S+)\s+- ncols\s+(?P<cols>\d+) not divisible by (?P<block>\d+) "
    r"\(required for type\s+(?P<wanted>\S+)\) -> falling back to\s+(?P<used>\S+)"
)


def check_quantization(name: str) -> str:
    normalized = name.lower()
    if normalized not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {name!r}", f"choose one of: {', '.join(QUANTIZATIONS)}")
    return normalized


def file_type_id(name: str) -> int:
    import llama_cpp

    return int(getattr(llama_cpp, QUANTIZATIONS[check_quantization(name)]))


@dataclass(frozen=True)
class Fallback:
    """A tensor llama.cpp quantized to another type than asked for."""

    tensor: str
    wanted: str
    used: str
    columns: int
    block: int

    def __str__(self) -> str:
        return f"{self.tensor}: {self.used} instead of {self.wanted} ({self.columns} columns, not a multiple of {self.block})"


def fallback_summary(quantization: str, fallbacks: list[Fallback], target: Path) -> str | None:
    """One line for the user, e.g. ``q4_k_m: 180 of 211 tensors used q5_0/q8_0: rows of 576 are not a multiple
    of 256; quality is close to q5_0`` (each tensor is in the report)."""
    if not fallbacks:
        return None
    from ..gguf_source import read_gguf

    matrices = sum(len(t.shape) > 1 for t in read_gguf(target).tensors)
    used = Counter(f.used for f in fallbacks)
    widths = ", ".join(str(c) for c in sorted({f.columns for f in fallbacks}))
    blocks = "/".join(str(b) for b in sorted({f.block for f in fallbacks}))
    return (
        f"{quantization}: {len(fallbacks)} of {matrices} tensors used {'/'.join(sorted(used))}: rows of {widths} "
        f"are not a multiple of {blocks}; quality is close to {used.most_common(1)[0][0]}"
    )


def quantize_gguf(source: Path, target: Path, quantization: str, threads: int = 0) -> list[Fallback]:
    """Quantize an f16/f32 GGUF into ``target`` (written atomically); returns the tensors that llama.cpp had to
    quantize to another type than asked for."""
    ftype = file_type_id(quantization)
    source, target = Path(source), Path(target)
    with atomic_path(target) as tmp, tempfile.TemporaryFile() as file:
        log = _Log(file)
        with _tensor_progress(log, target) as tensors:
            if source.stat().st_size < IN_PROCESS_BELOW:
                with _captured_stderr(file):
                    status = _quantize(source, tmp, ftype, threads)
                tensors.check()  # llama.cpp cannot be stopped mid-file: a stop asked for meanwhile drops it now
            else:
                status = _quantize_in_child(source, tmp, ftype, threads, file, tensors)
        if status != 0:
            how = f"status {status}" if status > 0 else f"killed by signal {-status}"
            raise ExportError(
                f"llama.cpp failed to quantize {source.name} to {quantization} ({how})",
                "; ".join(log.read().splitlines()[-3:]) or None,
            )
        return [
            Fallback(m["tensor"], m["wanted"], m["used"], int(m["cols"]), int(m["block"]))
            for m in _FALLBACK.finditer(log.read())
        ]


# llama.cpp's quantize has no progress callback and no way to stop it: a larger file is quantized in a child
# process that a stop ends at once. A smaller one takes about a second, less than starting that process.
IN_PROCESS_BELOW = 128 * 2**20  # bytes of the source GGUF


def _quantize_in_child(source: Path, target: Path, ftype: int, threads: int, log, tensors: Tracker) -> int:
    """llama.cpp's exit status (negative: the signal that ended it), its log in ``log``; a stop kills it."""
    arguments = [str(source), str(target), str(ftype), str(threads), held_at("quantize")]
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("quantize_child.py")), *arguments],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        close_fds=True,
    )
    try:
        while True:
            try:
                status = child.wait(MIN_INTERVAL)
            except subprocess.TimeoutExpired:
                tensors.check()
                continue
            tensors.check()  # a Ctrl+C ends the child too: the stop is the parent's to report
            return status
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


class _Log:
    def __init__(self, file) -> None:
        self._file = file

    def read(self) -> str:
        self._file.seek(0)
        return self._file.read().decode("utf-8", errors="replace")

    def peek(self) -> str:
        """What was logged so far, read without moving the offset llama.cpp writes at."""
        fd = self._file.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", errors="replace")


_TENSOR_LINE = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")  # llama.cpp's "[  12/ 211] blk.0.attn_q.weight - ..."


@contextlib.contextmanager
def _tensor_progress(log: _Log, target: Path) -> Iterator[Tracker]:
    """llama.cpp's quantize has no progress callback; it logs a line per tensor, which a thread counts."""
    tracker = track(
        "quantize", kept=f"no partial {target.name} was left (it is written under a temporary name)"
    )
    stop = threading.Event()

    def count() -> None:
        found = _TENSOR_LINE.findall(log.peek()[-4096:])
        if found:
            tracker.report(int(found[-1][0]), int(found[-1][1]))

    def watch() -> None:
        while not stop.wait(MIN_INTERVAL):
            count()

    watcher = threading.Thread(target=watch, name="backprop-quantize-progress", daemon=True)
    if tracker.reporter is not None:
        watcher.start()
    try:
        yield tracker
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
    count()
    tracker.finish()


@contextlib.contextmanager
def _captured_stderr(file) -> Iterator[None]:
    """llama.cpp logs to file descriptor 2 from C, or through llama-cpp-python's log callback to ``sys.stderr``
    (filtered by its logger's level); all of it goes to ``file``, none to our output."""
    callback_logger = logging.getLogger("llama-cpp-python")
    saved_level, saved_stream = callback_logger.level, sys.stderr
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - restored below
    callback_logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = saved_stream
        callback_logger.setLevel(saved_level)
        os.dup2(saved, 2)
        os.close(saved)
