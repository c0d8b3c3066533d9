"""GPU safety between optimizer steps: warn when a GPU is warm or its memory nearly full, pause while it is too
hot, and save a checkpoint and stop at an emergency temperature (or when a pause lasts too long).

The thresholds are the user's settings (settings.toml), each overridable per run (TrainConfig, ``backprop
train`` flags). Every transition is a :class:`GpuSafety` event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..config import TrainConfig
from ..errors import ConfigError
from ..events import EventBus, GpuSafety
from ..hardware import GpuReading
from ..options import options_of
from ..settings import load_settings
from .control import TrainingControl

HYSTERESIS_C = (
    5  # a warning clears, and a pause ends, this far below the threshold: readings near it do not flap
)
MEMORY_HYSTERESIS_PCT = 5

# TrainConfig field (0: use the setting) → the Settings field it overrides, as the field declares it.
SETTING_OF = {option.name: option.setting for option in options_of(TrainConfig).values() if option.setting}
OVERRIDE_HINT = "a run's own values (e.g. --max-gpu-temperature) combine with your settings (Settings screen, settings.toml)"


@dataclass(frozen=True)
class SafetyLimits:
    warn_c: int
    critical_c: int
    emergency_c: int
    memory_pct: int
    cool_timeout_s: int

    @classmethod
    def resolve(cls, overrides: dict[str, int] | None = None, settings=None) -> SafetyLimits:
        """The user's settings with the non-zero ``overrides`` (TrainConfig field names) applied; ConfigError when
        a value is out of range or the temperatures do not rise warn < critical < emergency."""
        if settings is None:
            settings, _ = load_settings()
        chosen = {SETTING_OF[name]: value for name, value in (overrides or {}).items() if value}
        merged = replace(settings, **chosen)
        try:
            merged.validate()
        except ValueError as exc:
            raise ConfigError(f"GPU safety: {exc}", OVERRIDE_HINT) from None
        return cls(
            merged.gpu_temperature_warn_c,
            merged.gpu_temperature_limit_c,
            merged.gpu_temperature_emergency_c,
            merged.gpu_memory_warn_pct,
            merged.gpu_cool_timeout_s,
        )

    @classmethod
    def for_config(cls, config) -> SafetyLimits:
        return cls.resolve({name: getattr(config, name) for name in SETTING_OF})

    def level(self, temperature_c: float) -> str:
        if temperature_c >= self.emergency_c:
            return "emergency"
        if temperature_c >= self.critical_c:
            return "critical"
        return "warn" if temperature_c >= self.warn_c else "normal"


class ThermalGuard:
    """Checked by the training loop every ``every_steps`` steps (and by multi-run between runs).

    ``read_gpus`` and ``sleep`` are NVML and ``time.sleep`` unless a test scripts them. No GPU means nothing to check.
    """

    def __init__(
        self,
        limits: SafetyLimits,
        read_gpus: Callable[[], list[GpuReading]] | None = None,
        sleep: Callable[[float], None] | None = None,
        every_steps: int = 10,
        poll_seconds: float = 10.0,
    ) -> None:
        from ..hardware import read_gpus as nvml_read_gpus

        self.limits = limits
        self.read_gpus = read_gpus or nvml_read_gpus
        self.sleep = sleep or time.sleep
        self.every_steps = every_steps
        self.poll_seconds = poll_seconds
        self.last_c: float | None = None  # the hottest GPU at the last reading, for the step events
        self.level = "normal"  # "normal" or "warn": a warning is sent once per crossing
        self.memory_high = False

    @classmethod
    def for_config(cls, config, **options) -> ThermalGuard:
        return cls(SafetyLimits.for_config(config), **options)

    def check(self, step: int, bus: EventBus, control: TrainingControl) -> float:
        """Seconds spent paused for a hot GPU (0 when there was no pause or this step is not checked)."""
        if step % self.every_steps or control.stop_requested:
            return 0.0
        gpus = self._read()
        self._check_memory(gpus, bus)
        hottest = _hottest(gpus)
        if hottest is None:
            return 0.0
        gpu, celsius = hottest
        level = self.limits.level(celsius)
        if level == "emergency":
            self._emergency(gpu, celsius, bus, control)
        elif level == "critical":
            return self._pause(gpu, celsius, bus, control)
        else:
            self._track_warning(gpu, celsius, level, bus)
        return 0.0

    def _read(self) -> list[GpuReading]:
        gpus = self.read_gpus()
        hottest = _hottest(gpus)
        self.last_c = hottest[1] if hottest else None
        return gpus

    def _track_warning(self, gpu: GpuReading, celsius: float, level: str, bus: EventBus) -> None:
        warn = self.limits.warn_c
        if level == "warn" and self.level != "warn":
            _emit(
                bus,
                "warn",
                "warn",
                gpu,
                f"GPU {gpu.index} at {celsius:.0f}°C (warning at {warn}°C)",
            )
            self.level = "warn"
        elif level == "normal" and self.level == "warn" and celsius < warn - HYSTERESIS_C:
            _emit(
                bus,
                "normal",
                "clear",
                gpu,
                f"GPU {gpu.index} back to {celsius:.0f}°C (warning at {warn}°C)",
            )
            self.level = "normal"

    def _pause(self, gpu: GpuReading, celsius: float, bus: EventBus, control: TrainingControl) -> float:
        """Wait until the GPU has cooled to the critical temperature less the hysteresis; an emergency or the
        timeout stops the run instead."""
        limits = self.limits
        resume_at = limits.critical_c - HYSTERESIS_C
        _emit(
            bus,
            "critical",
            "pause",
            gpu,
            (
                f"GPU {gpu.index} at {celsius:.0f}°C (critical at {limits.critical_c}°C): training paused "
                f"until it cools to {resume_at}°C, at most {limits.cool_timeout_s} s"
            ),
        )
        started = time.perf_counter()
        waited = 0.0
        while not control.stop_requested:
            self.sleep(self.poll_seconds)
            waited += self.poll_seconds
            hottest = _hottest(self._read())
            if hottest is None:  # no reading any more: nothing tells us to keep waiting
                self.level = "normal"
                _emit(
                    bus,
                    "normal",
                    "resume",
                    gpu,
                    f"no GPU temperature reading after {waited:.0f} s: training resumes",
                )
                break
            current, celsius = hottest
            if celsius <= resume_at:
                self.level = limits.level(celsius)
                _emit(
                    bus,
                    self.level,
                    "resume",
                    current,
                    f"GPU {current.index} cooled to {celsius:.0f}°C after {waited:.0f} s: training resumes",
                )
                break
            if limits.level(celsius) == "emergency":
                self._emergency(current, celsius, bus, control)
                break
            if waited >= limits.cool_timeout_s:
                _emit(
                    bus,
                    "critical",
                    "stop",
                    current,
                    (
                        f"GPU {current.index} still at {celsius:.0f}°C after {waited:.0f} s paused "
                        f"(timeout {limits.cool_timeout_s} s): saving a checkpoint and stopping"
                    ),
                )
                _stop_with_checkpoint(control)
                break
        return time.perf_counter() - started

    def _emergency(self, gpu: GpuReading, celsius: float, bus: EventBus, control: TrainingControl) -> None:
        _emit(
            bus,
            "emergency",
            "stop",
            gpu,
            (
                f"GPU {gpu.index} at {celsius:.0f}°C (emergency at {self.limits.emergency_c}°C): "
                "saving a checkpoint and stopping"
            ),
        )
        _stop_with_checkpoint(control)

    def _check_memory(self, gpus: list[GpuReading], bus: EventBus) -> None:
        fullest = max(gpus, key=_memory_pct, default=None)
        if fullest is None:
            return
        used, limit = _memory_pct(fullest), self.limits.memory_pct
        if used >= limit and not self.memory_high:
            self.memory_high = True
            _emit(
                bus,
                "memory",
                "warn",
                fullest,
                (
                    f"GPU {fullest.index} memory {used:.0f}% used ({fullest.memory_used_mb / 1024:.1f} of "
                    f"{fullest.memory_total_mb / 1024:.1f} GB; warning at {limit}%)"
                ),
            )
        elif used < limit - MEMORY_HYSTERESIS_PCT and self.memory_high:
            self.memory_high = False
            _emit(
                bus,
                "memory",
                "clear",
                fullest,
                f"GPU {fullest.index} memory back to {used:.0f}% used (warning at {limit}%)",
            )


def _hottest(gpus: list[GpuReading]) -> tuple[GpuReading, float] | None:
    """The hottest GPU with a temperature reading, and that temperature."""
    read = [(gpu, gpu.temperature_c) for gpu in gpus if gpu.temperature_c is not None]
    return max(read, key=lambda pair: pair[1], default=None)


def _memory_pct(gpu: GpuReading) -> float:
    return 100 * gpu.memory_used_mb / gpu.memory_total_mb if gpu.memory_total_mb else 0.0


def _emit(bus: EventBus, level: str, action: str, gpu: GpuReading, message: str) -> None:
    bus.emit(
        GpuSafety(
            level=level,
            action=action,
            gpu=gpu.index,
            temperature_c=gpu.temperature_c,
            memory_pct=round(_memory_pct(gpu), 1),
            message=message,
        )
    )


def _stop_with_checkpoint(control: TrainingControl) -> None:
    """The loop saves a checkpoint for the request and stops before its next step (the run ends stopped early)."""
    control.request_checkpoint()
    control.stop()
