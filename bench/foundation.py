"""Foundation benchmark: LoRA training speed on the tiny model and GGUF size per quantization.

Ratios are against baselines measured in this same process: the CPU's fp32 matmul throughput
(for model FLOP utilisation) and the f16 GGUF (for file sizes).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/foundation.py [--steps 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

QUANTS = ["f32", "f16", "q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_m", "q4_0", "q3_k_m", "q2_k"]


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()

    import torch

    from backprop_engine import Trainer
    from backprop_engine.modeling import load_base_model

    peak = matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer("tiny")
        result = trainer.train("sample", steps=args.steps, output_dir=Path(tmp) / "bench")
        params = sum(p.numel() for p in load_base_model(_model_path(trainer)).parameters())
        # LoRA: forward 2N + backward through activations 2N FLOPs per token (no weight gradients).
        achieved = result.tokens_per_second * 4 * params / 1e9
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"baseline fp32 matmul 2048^2: {peak:.1f} GFLOP/s")
        print(
            f"LoRA training tiny ({params / 1e6:.2f}M params), {args.steps} steps: {result.tokens:,} tokens in "
            f"{result.seconds:.1f} s = {result.tokens_per_second:,.0f} tokens/s, ~{achieved:.1f} GFLOP/s, "
            f"MFU {achieved / peak:.1%} of the matmul baseline; loss {result.first_loss:.3f} -> {result.final_loss:.3f}"
        )
        print("\n| quantization | size (KiB) | vs f16 | export time (s) |\n|---|---|---|---|")
        sizes = {}
        for quant in QUANTS:
            started = time.perf_counter()
            path = trainer.export("gguf", quantization=quant)
            sizes[quant] = (path.stat().st_size, time.perf_counter() - started)
        for quant, (size, seconds) in sizes.items():
            print(f"| {quant} | {size / 1024:,.0f} | {size / sizes['f16'][0]:.2f} | {seconds:.2f} |")


def _model_path(trainer) -> Path:
    from backprop_engine import resolve_model

    return resolve_model(trainer.config.model).path


if __name__ == "__main__":
    main()
