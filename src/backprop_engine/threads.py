"""How many threads torch trains with on the CPU.

torch starts one OpenMP thread per core and its threads wait on each other at every operation; when another
busy process holds a core, every operation waits for the slowest thread (two runs with two threads each on
this 2-core machine trained a tiny model 40x slower than one). So a run on the CPU uses the cores that are
free when it starts, and re-checks every ``CHECK_SECONDS``: another process taking cores (a second run, a
build) lowers the count, its end raises it again; each change is a warning event naming the cause.
``--threads N`` (or ``OMP_NUM_THREADS`` in the environment) fixes the count; DDP ranks on the CPU share
the cores equally.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

CHECK_SECONDS = 15.0
SAMPLE_SECONDS = 0.3  # the first reading, before a run has a window of its own


def _wait(seconds: float) -> None:
    threading.Event().wait(seconds)  # not time.sleep: a test that scripts the run's pauses counts those


@dataclass(frozen=True)
class CpuReading:
    cores: int  # the cores this process may run on
    busy_elsewhere: float  # cores' worth of CPU time other processes used over the window


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    reason: str
    adaptive: bool  # re-checked while training


def allowed_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


class CpuMeter:
    """CPU time other processes used on this process's cores since the last reading."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self._cores = allowed_cores()
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        per_cpu = self._psutil.cpu_times(percpu=True)
        busy = 0.0
        for index in self._cores:
            if index < len(per_cpu):
                times = per_cpu[index]
                busy += sum(times) - times.idle - getattr(times, "iowait", 0.0)
        own = self._process.cpu_times()
        return time.monotonic(), busy, own.user + own.system

    def read(self) -> CpuReading:
        now, busy, own = self._sample()
        then, busy_before, own_before = self._last
        self._last = (now, busy, own)
        elapsed = max(now - then, 1e-3)
        elsewhere = max(0.0, (busy - busy_before) - (own - own_before)) / elapsed
        return CpuReading(len(self._cores), min(elsewhere, float(len(self._cores))))


def fixed_threads(requested: int, processes: int = 1) -> ThreadPlan | None:
    """The plan when the count is not ours to choose: ``--threads``, ``OMP_NUM_THREADS``, DDP ranks."""
    cores = len(allowed_cores())
    if requested > 0:
        return ThreadPlan(requested, "set by you", adaptive=False)
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        count = max(1, int(os.environ["OMP_NUM_THREADS"]))
        return ThreadPlan(count, f"OMP_NUM_THREADS={count} in the environment", adaptive=False)
    if processes > 1:
        count = max(1, cores // processes)
        return ThreadPlan(count, f"{cores} cores shared by {processes} processes", adaptive=False)
    return None


def free_threads(reading: CpuReading) -> ThreadPlan:
    """One thread per core that other processes leave free (at least one)."""
    free = max(1, min(reading.cores, int(reading.cores - reading.busy_elsewhere + 0.5)))
    if free == reading.cores:
        reason = f"all {reading.cores} cores are free"
    else:
        reason = (
            f"other processes use {reading.busy_elsewhere:.1f} of the {reading.cores} cores: "
            f"{free} thread{'s' if free > 1 else ''} (more would wait on the busy cores)"
        )
    return ThreadPlan(free, reason, adaptive=True)


def plan_threads(requested: int = 0, processes: int = 1) -> ThreadPlan:
    """The count a CPU run starts with (shown in the plan); samples the CPU for ``SAMPLE_SECONDS``."""
    fixed = fixed_threads(requested, processes)
    if fixed is not None:
        return fixed
    meter = CpuMeter()
    _wait(SAMPLE_SECONDS)
    return free_threads(meter.read())


class ThreadGuard:
    """Sets torch's thread count at the start of a CPU run and follows the free cores while it trains.

    A change needs two readings in a row that agree, so a short burst elsewhere does not flip it."""

    def __init__(
        self,
        plan: ThreadPlan,
        meter: Callable[[], CpuReading] | None,
        set_threads: Callable[[int], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threads = plan.threads
        self._meter = meter
        self._set = set_threads
        self._clock = clock
        self._next = clock() + CHECK_SECONDS
        self._pending: int | None = None
        set_threads(plan.threads)

    @classmethod
    def for_run(cls, requested: int, processes: int, device: str) -> ThreadGuard | None:
        if device != "cpu":
            return None
        import torch

        fixed = fixed_threads(requested, processes)
        if fixed is not None:
            return cls(fixed, None, torch.set_num_threads)
        meter = CpuMeter()
        _wait(SAMPLE_SECONDS)
        return cls(free_threads(meter.read()), meter.read, torch.set_num_threads)

    def check(self) -> str | None:
        """A message when the count changed (the loop sends it as a warning), else None."""
        if self._meter is None or self._clock() < self._next:
            return None
        self._next = self._clock() + CHECK_SECONDS
        plan = free_threads(self._meter())
        if plan.threads == self.threads:
            self._pending = None
            return None
        if self._pending != plan.threads:
            self._pending = plan.threads
            return None
        before, self.threads, self._pending = self.threads, plan.threads, None
        self._set(plan.threads)
        return f"training threads {before} → {plan.threads}: {plan.reason}"
