"""GPU safety: training pauses while a GPU is too hot and resumes once it has cooled down."""

from __future__ import annotations

import time
from typing import Callable

from ..events import EventBus, WarningEvent
from .control import TrainingControl


class ThermalGuard:
    """Every ``every_steps`` steps, read the hottest GPU; at or above ``limit_c`` wait (polling) until it is
    ``hysteresis_c`` below the limit. No GPU (or a limit of 0) means no checks."""

    def __init__(
        self,
        limit_c: int,
        read_gpus: Callable | None = None,
        sleep: Callable[[float], None] | None = None,
        every_steps: int = 10,
        hysteresis_c: int = 5,
        poll_seconds: float = 10.0,
    ) -> None:
        from ..hardware import read_gpus as nvml_read_gpus

        self.limit_c = limit_c
        self.read_gpus = read_gpus or nvml_read_gpus
        self.sleep = sleep or time.sleep
        self.every_steps = every_steps
        self.hysteresis_c = hysteresis_c
        self.poll_seconds = poll_seconds
        self.last_c: float | None = None

    def hottest(self) -> float | None:
        readings = [g.temperature_c for g in self.read_gpus() if g.temperature_c is not None]
        self.last_c = max(readings, default=None)
        return self.last_c

    def check(self, step: int, bus: EventBus, control: TrainingControl) -> float:
        """Seconds spent waiting for the GPU to cool (0 when it is fine or not checked this step)."""
        if not self.limit_c or step % self.every_steps:
            return 0.0
        temperature = self.hottest()
        if temperature is None or temperature < self.limit_c:
            return 0.0
        resume_at = self.limit_c - self.hysteresis_c
        bus.emit(WarningEvent(f"GPU at {temperature:.0f}°C (limit {self.limit_c}°C): pausing until it cools to {resume_at}°C"))
        started = time.perf_counter()
        while temperature is not None and temperature > resume_at and not control.stop_requested:
            self.sleep(self.poll_seconds)
            temperature = self.hottest()
        bus.emit(WarningEvent(f"GPU cooled to {temperature if temperature is not None else '?'}°C: training resumes"))
        return time.perf_counter() - started
