"""What this machine has: GPUs through NVML (nvidia-ml-py), CPU and RAM through psutil.

No NVML or no GPU is a normal state (an empty GPU list), never an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    memory_total_mb: float
    memory_used_mb: float
    temperature_c: float | None
    utilization_pct: float | None
    power_w: float | None


@dataclass(frozen=True)
class HardwareReading:
    cpu_cores: int
    cpu_percent: float
    ram_total_mb: float
    ram_available_mb: float
    gpus: list[GpuReading] = field(default_factory=list)

    @property
    def accelerator_memory_mb(self) -> float:
        """Memory a training run can use: the largest GPU's, else available RAM."""
        return max((g.memory_total_mb for g in self.gpus), default=self.ram_available_mb)

    @property
    def device_label(self) -> str:
        return self.gpus[0].name if self.gpus else f"CPU ({self.cpu_cores} cores)"


def probe() -> HardwareReading:
    import psutil

    memory = psutil.virtual_memory()
    return HardwareReading(
        cpu_cores=psutil.cpu_count() or 1,
        cpu_percent=psutil.cpu_percent(interval=None),
        ram_total_mb=memory.total / 2**20,
        ram_available_mb=memory.available / 2**20,
        gpus=read_gpus(),
    )


def read_gpus() -> list[GpuReading]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver, no library, no GPU: all mean "no GPUs"
        return []
    try:
        return [_read_gpu(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


def _read_gpu(pynvml, index: int) -> GpuReading:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    name = pynvml.nvmlDeviceGetName(handle)
    return GpuReading(
        index=index,
        name=name.decode() if isinstance(name, bytes) else name,
        memory_total_mb=memory.total / 2**20,
        memory_used_mb=memory.used / 2**20,
        temperature_c=_optional(lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
        utilization_pct=_optional(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        power_w=_optional(lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000),
    )


def _optional(read):
    try:
        return float(read())
    except Exception:  # a reading the GPU does not support
        return None
