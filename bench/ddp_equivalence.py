"""How closely two DDP processes (torchrun, gloo, CPU) follow one process with the same effective batch.

Trains `tiny` on the sample chats for N steps, every run with one torch thread per process and the same
learning rate, and compares each with the reference, one process at batch 8:

- ddp 2 × 4: ``torchrun --standalone --nproc_per_node 2 backprop train --batch-size 4`` (the same rows per step)
- accum 4 × 2: one process, batch 4 with 2 accumulation steps (the same rows, summed in another order): the
  float-noise floor
- half 4: one process at batch 4 (half the rows): what a sharding mistake would look like

Printed: the largest difference over the logged steps in loss and gradient norm, the largest difference in
any adapter weight after the last step, and each run's wall seconds (startup included).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/ddp_equivalence.py [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    train = [str(BIN / "backprop"), "train", "--steps", str(args.steps), "--learning-rate", "1e-3", "--json"]
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    runs = {
        "single 8": train + ["--batch-size", "8"],
        "ddp 2 × 4": torchrun + train + ["--batch-size", "4"],
        "accum 4 × 2": train + ["--batch-size", "4", "--grad-accum", "2"],
        "half 4": train + ["--batch-size", "4"],
    }
    with tempfile.TemporaryDirectory() as root:
        results = {
            name: _train(command, Path(root) / name.replace(" ", "-")) for name, command in runs.items()
        }
    reference = results["single 8"]
    print(f"{'run':<13}{'|Δ loss|':>10}{'|Δ grad norm|':>15}{'|Δ weight|':>12}{'tokens':>8}{'wall s':>8}")
    for name, result in results.items():
        loss = max(abs(result["steps"][s][0] - reference["steps"][s][0]) for s in reference["steps"])
        grad = max(abs(result["steps"][s][1] - reference["steps"][s][1]) for s in reference["steps"])
        weight = max(
            (result["weights"][k] - reference["weights"][k]).abs().max().item() for k in reference["weights"]
        )
        print(
            f"{name:<13}{loss:>10.2e}{grad:>15.2e}{weight:>12.2e}{result['tokens']:>8}{result['seconds']:>8.1f}"
        )
    print(f"reference losses at the logged steps: {[round(v[0], 4) for v in reference['steps'].values()]}")


def _train(command: list[str], run: Path) -> dict:
    started = time.perf_counter()
    subprocess.run(
        command + ["--output", str(run)],
        check=True,
        capture_output=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    seconds = time.perf_counter() - started
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return {
        "steps": {e["step"]: (e["loss"], e["grad_norm"]) for e in events if e["event"] == "step"},
        "tokens": next(e for e in events if e["event"] == "finished")["tokens"],
        "weights": load_file(str(run / "adapter" / "adapter_model.safetensors")),
        "seconds": seconds,
    }


if __name__ == "__main__":
    main()
