"""GPU check for an H100-class CUDA machine (torch/transformers/peft installed, no network, ~10 minutes).

For `tiny` and a ~1B-parameter random-init Llama built here: the planner's micro-batch and predicted peak
memory vs the measured peak (torch.cuda.max_memory_allocated), training tokens/s, NVML readings sampled
during the run, and the largest micro-batch that really fits (doubling until CUDA OOM) vs the planner's.

    HF_HUB_OFFLINE=1 python bench/gpu_check.py            # on the GPU machine; prints a table and JSON
    HF_HUB_OFFLINE=1 python bench/gpu_check.py --cpu-smoke # exercises the same code on the CPU with tiny only
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from random_llama import build_random_llama

SEQ_LEN = 512
TARGET_BATCH = 16


def build_1b_model(folder: Path) -> Path:
    """A Llama with ~1B parameters (random weights, bf16) sharing tiny's tokenizer."""
    return build_random_llama(
        folder,
        vocab_size=1536,
        hidden_size=2048,
        intermediate_size=8192,
        num_layers=18,
        num_heads=16,
        num_kv_heads=8,
        bf16=True,
    )


class NvmlSampler:
    """Reads every GPU once a second in a thread while training runs."""

    def __init__(self) -> None:
        self.readings: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> NvmlSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from backprop_engine.hardware import read_gpus

        while not self._stop.wait(1.0):
            for gpu in read_gpus():
                self.readings.append(
                    {
                        "t": time.time(),
                        "gpu": gpu.index,
                        "mem_mb": gpu.memory_used_mb,
                        "temp_c": gpu.temperature_c,
                        "util": gpu.utilization_pct,
                        "power_w": gpu.power_w,
                    }
                )

    def summary(self) -> dict:
        if not self.readings:
            return {}
        return {
            "samples": len(self.readings),
            "max_mem_mb": max(r["mem_mb"] for r in self.readings),
            "max_temp_c": max(r["temp_c"] or 0 for r in self.readings),
            "mean_util": sum(r["util"] or 0 for r in self.readings) / len(self.readings),
        }


def measure(model_name: str, facts, budget_mb: float, steps: int, on_gpu: bool, workdir: Path) -> dict:
    import torch

    from backprop_engine import Trainer
    from backprop_engine.planner import plan_batch

    plan = plan_batch(facts, budget_mb, target_batch=TARGET_BATCH, seq_len=SEQ_LEN, on_gpu=on_gpu)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(
        model_name,
        batch_size=plan.micro_batch,
        grad_accum=plan.grad_accum,
        max_seq_len=SEQ_LEN,
        gradient_checkpointing=plan.gradient_checkpointing,
        packing=True,
        logging_steps=max(1, steps // 5),
    )
    with NvmlSampler() as sampler:
        result = trainer.train("sample", steps=steps, output_dir=workdir / f"run-{Path(model_name).name}")
    measured = torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None
    return {
        "model": Path(model_name).name,
        "params_billion": round(facts.parameter_count / 1e9, 3),
        "planner": {
            "micro_batch": plan.micro_batch,
            "grad_accum": plan.grad_accum,
            "gradient_checkpointing": plan.gradient_checkpointing,
            "predicted_mb": round(plan.estimate.total_mb),
        },
        "measured_peak_mb": round(measured) if measured else None,
        "predicted_over_measured": round(plan.estimate.total_mb / measured, 2) if measured else None,
        "tokens_per_second": round(result.tokens_per_second),
        "loss": [round(result.first_loss, 3), round(result.final_loss, 3)],
        "nvml": sampler.summary(),
    }


def largest_micro_batch(model_name: str, limit: int = 256) -> int:
    """Double the micro-batch (3 steps each, no back-off help: one micro-batch per step) until CUDA OOM."""
    import torch

    from backprop_engine import Trainer
    from backprop_engine.errors import TrainingError

    best, micro = 0, 1
    with tempfile.TemporaryDirectory() as tmp:
        while micro <= limit:
            try:
                Trainer(model_name, batch_size=micro, max_seq_len=SEQ_LEN, packing=True).train(
                    "sample", steps=3, output_dir=Path(tmp) / f"m{micro}"
                )
            except (torch.OutOfMemoryError, TrainingError):
                break
            # the engine's back-off would hide an OOM: a run that had to cut its micro-batch does not count
            events = (Path(tmp) / f"m{micro}" / "events.jsonl").read_text()
            if "out of memory" in events:
                break
            best, micro = micro, micro * 2
            torch.cuda.empty_cache()
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="run the tiny part on the CPU (no GPU needed)"
    )
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()

    import torch

    from backprop_engine.hardware import probe
    from backprop_engine.presets import PRESETS, ModelFacts

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.cpu_smoke:
        raise SystemExit("no CUDA device: run this on the GPU machine, or pass --cpu-smoke")
    machine = probe()
    budget = machine.accelerator_memory_mb
    report = {
        "device": machine.device_label,
        "budget_mb": round(budget),
        "torch": torch.__version__,
        "results": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        report["results"].append(measure("tiny", PRESETS["tiny"].facts, budget, args.steps, on_gpu, workdir))
        if on_gpu:
            big = build_1b_model(workdir / "llama-1b-random")
            facts = ModelFacts.from_config(json.loads((big / "config.json").read_text()))
            result = measure(str(big), facts, budget, args.steps, on_gpu, workdir)
            result["largest_micro_batch"] = largest_micro_batch(str(big))
            report["results"].append(result)
    print(
        f"{'model':<22}{'params':>8}{'plan':>12}{'pred MB':>9}{'meas MB':>9}{'ratio':>7}{'tok/s':>9}{'max fit':>8}"
    )
    for r in report["results"]:
        plan = f"{r['planner']['micro_batch']}x{r['planner']['grad_accum']}{'+gc' if r['planner']['gradient_checkpointing'] else ''}"
        print(
            f"{r['model']:<22}{r['params_billion']:>8}{plan:>12}{r['planner']['predicted_mb']:>9}"
            f"{r['measured_peak_mb'] or '-':>9}{r['predicted_over_measured'] or '-':>7}{r['tokens_per_second']:>9}"
            f"{r.get('largest_micro_batch', '-'):>8}"
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
