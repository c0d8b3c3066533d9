"""The chunked loss (train/loss.py) against the plain full-logits path, on real weights.

For SmolLM2-135M-Instruct (49,152-token vocabulary) and Gemma-3-270M (262,144), each path trains the same
LoRA steps (the engine's own model build, data pipeline and ``_accumulate``; batches of 4 packed rows of the
built-in sample chats at 128 tokens, the default plan's shape) in its own subprocess, alternating, and reports
training tokens/s and the peak RSS the steps added above the loaded model (VmHWM reset after the warm-up step).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/loss.py [--steps 6] [--rounds 2] [--only smollm2|gemma3] [--grads]

``--grads`` instead compares both paths' loss and LoRA gradients in one process (2 packed rows, a non-zero
LoRA B so every adapter weight has a gradient).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEQ_LEN, ROWS = 128, 4


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def child(model_dir: str, variant: str, steps: int) -> dict:
    import torch

    from backprop_engine.config import TrainConfig
    from backprop_engine.data.packing import pack
    from backprop_engine.presets import resolve_model
    from backprop_engine.train import loop
    from backprop_engine.train.backend import build_trainable_model
    from backprop_engine.train.loss import plain_summed_loss

    if variant == "plain":
        loop.summed_loss = plain_summed_loss
    config = TrainConfig(
        model=model_dir, data="sample", batch_size=ROWS, max_seq_len=SEQ_LEN, lora_rank=8, lora_alpha=16
    )
    prepared = loop.prepare_dataset(config, resolve_model(model_dir))
    rows = pack(prepared.train, SEQ_LEN)
    model = build_trainable_model(config, resolve_model(model_dir).path, "cpu").model
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    batches = [
        loop.collate(rows[i : i + ROWS], 0, "cpu", packed=True) for i in range(0, ROWS * (steps + 1), ROWS)
    ]
    trained = sum(int((b.labels[:, 1:] != -100).sum()) for b in batches)
    positions = sum(b.labels[:, 1:].numel() for b in batches)

    def step(batch) -> tuple[float, int]:
        loss, _, tokens, _ = loop._accumulate(
            model, optimizer, [batch], config, 1, loop.ONE_PROCESS, loop.StepUpdate(0)
        )
        return loss, tokens

    first_loss, _ = step(
        batches[0]
    )  # warm-up (allocator, kernels, optimizer state); the same weights in both paths
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here
    before = rss_mb("VmRSS")
    started, tokens, losses = time.perf_counter(), 0, []
    for batch in batches[1:]:
        loss, n = step(batch)
        tokens, losses = tokens + n, losses + [loss]
    seconds = time.perf_counter() - started
    return {
        "tokens_per_s": tokens / seconds,
        "peak_added_mb": rss_mb("VmHWM") - before,
        "rss_mb": rss_mb("VmHWM"),
        "first_loss": first_loss,
        "losses": losses,
        "trained_share": trained / positions,
        "vocab": model.get_output_embeddings().weight.shape[0],
    }


def compare_gradients(model_dir: str) -> dict:
    import torch

    from backprop_engine.config import TrainConfig
    from backprop_engine.data.packing import pack
    from backprop_engine.presets import resolve_model
    from backprop_engine.train import loop
    from backprop_engine.train.backend import build_trainable_model
    from backprop_engine.train.loss import plain_summed_loss, summed_loss

    config = TrainConfig(
        model=model_dir, data="sample", batch_size=2, max_seq_len=SEQ_LEN, lora_rank=8, lora_alpha=16
    )
    batch = loop.collate(
        pack(loop.prepare_dataset(config, resolve_model(model_dir)).train, SEQ_LEN)[:2], 0, "cpu", packed=True
    )
    model = build_trainable_model(config, resolve_model(model_dir).path, "cpu").model
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.01)
    model.train()

    def grads(loss_fn):
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    (plain, a), (chunked, b) = grads(plain_summed_loss), grads(summed_loss)
    norm = lambda gs: sum((g.double() ** 2).sum() for g in gs) ** 0.5  # noqa: E731
    return {
        "loss": [plain, chunked],
        "loss_relative_difference": abs(plain - chunked) / abs(plain),
        "worst_tensor_relative": max(((a[n] - b[n]).abs().max() / a[n].abs().max()).item() for n in a),
        "all_gradients_relative": (norm([a[n] - b[n] for n in a]) / norm(a.values())).item(),
    }


def measure(model_dir: Path, variant: str, steps: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(model_dir), variant, str(steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=["smollm2", "gemma3"])
    parser.add_argument("--grads", action="store_true")
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]))))
        return
    from tests.realweights import gemma3_dir, smollm2_dir

    models = {"smollm2": smollm2_dir, "gemma3": gemma3_dir}
    for name, locate in models.items():
        if args.only and name != args.only:
            continue
        if args.grads:
            print(json.dumps({"model": name} | compare_gradients(str(locate()))), flush=True)
            continue
        runs: dict[str, list[dict]] = {"plain": [], "chunked": []}
        for _ in range(args.rounds):  # alternating, so a change in the machine's load hits both
            for variant in runs:
                runs[variant].append(measure(locate(), variant, args.steps))
        plain, chunked = runs["plain"], runs["chunked"]
        speed = [c["tokens_per_s"] / p["tokens_per_s"] for p, c in zip(plain, chunked)]
        print(
            json.dumps(
                {
                    "model": name,
                    "vocab": plain[0]["vocab"],
                    "trained_share": round(plain[0]["trained_share"], 3),
                    "tokens_per_s": {v: [round(r["tokens_per_s"], 1) for r in rs] for v, rs in runs.items()},
                    "speed_ratio_chunked_over_plain": round(statistics.median(speed), 3),
                    "peak_added_mb": {v: [round(r["peak_added_mb"]) for r in rs] for v, rs in runs.items()},
                    "peak_rss_mb": {v: [round(r["rss_mb"]) for r in rs] for v, rs in runs.items()},
                    "first_loss_difference": max(
                        abs(p["first_loss"] - c["first_loss"]) for p, c in zip(plain, chunked)
                    ),
                    "later_loss_difference": max(
                        abs(a - b) for p, c in zip(plain, chunked) for a, b in zip(p["losses"], c["losses"])
                    ),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
