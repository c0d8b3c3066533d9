"""The hardware probe, with NVML faked (no GPU can exist on this machine)."""

from __future__ import annotations

import sys
import types

from backprop_engine.hardware import probe, read_gpus


def fake_pynvml(temperature_error: bool = False) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    module.NVML_TEMPERATURE_GPU = 0
    module.nvmlInit = lambda: None
    module.nvmlShutdown = lambda: None
    module.nvmlDeviceGetCount = lambda: 2
    module.nvmlDeviceGetHandleByIndex = lambda index: index
    module.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 * 2**30, used=(10 + h) * 2**30)
    module.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3" if h == 0 else "NVIDIA H100 80GB HBM3"

    def temperature(handle, sensor):
        if temperature_error:
            raise RuntimeError("not supported")
        return 60 + handle

    module.nvmlDeviceGetTemperature = temperature
    module.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=90)
    module.nvmlDeviceGetPowerUsage = lambda h: 500_000
    return module


def test_gpus_are_read_through_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    gpus = read_gpus()
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].name == gpus[1].name == "NVIDIA H100 80GB HBM3"
    assert gpus[1].memory_used_mb == 11 * 1024 and gpus[0].memory_total_mb == 80 * 1024
    assert (gpus[1].temperature_c, gpus[0].utilization_pct, gpus[0].power_w) == (61.0, 90.0, 500.0)
    reading = probe()
    assert reading.accelerator_memory_mb == 80 * 1024 and reading.device_label.startswith("NVIDIA")


def test_an_unsupported_reading_is_none_not_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(temperature_error=True))
    assert all(g.temperature_c is None for g in read_gpus())


def test_no_nvml_is_a_normal_cpu_machine():
    # This machine has no NVIDIA driver: the real pynvml raises at nvmlInit.
    reading = probe()
    assert reading.gpus == []
    assert reading.cpu_cores >= 1 and 0 < reading.ram_available_mb <= reading.ram_total_mb
    assert reading.accelerator_memory_mb == reading.ram_available_mb
