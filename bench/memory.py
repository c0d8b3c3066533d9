"""Predicted vs measured peak memory of training on the CPU (process RSS), per method and batch shape.

For `tiny` and a ~100M-parameter random-init Llama built here (tiny's tokenizer, a 32k vocabulary so the
logits weigh what they do in real models), each configuration trains a few steps through the engine
(``Trainer(...).train(data)``) in its own subprocess, on chats longer than every sequence length used, so
that every row is cut to exactly ``seq_len`` tokens and a micro-batch is ``batch × seq_len`` tokens, as the
planner assumes, whether the engine packs or pads. Each subprocess reports:

- baseline: its RSS after importing torch, transformers, peft (and bitsandbytes) and the engine, before
  loading the model;
- peak: its peak RSS from then on (``VmHWM``, reset after the baseline: model loading included), split at the
  run's ``RunStarted`` event into the load (tokenizer, weights, the method applied) and the training steps.

Two comparisons are printed: the planner's total (``estimate_memory(..., on_gpu=False)``, which includes a
fixed framework overhead) against the peak, and the planner's total minus that overhead against peak minus
baseline (what the run itself added). "load" rows only load the model (fp32, or nf4 for QLoRA), to check the
weights term alone (``--loads-only``: just those); "plan" rows train with the micro-batch ``plan_batch``
picks for a RAM budget and check that the peak stays inside it.

glibc keeps freed memory below its (self-raising) mmap threshold in the heap, so the peak RSS is above the
peak of live tensors; ``--return-frees`` runs every subprocess with ``MALLOC_MMAP_THRESHOLD_=131072``, which
hands large freed blocks back at once, so its peak is close to what the tensors themselves needed.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/memory.py [--steps 2] [--only tiny|llama-100m] [--return-frees] [--loads-only]
    HF_HUB_OFFLINE=1 .venv/bin/python bench/memory.py --real [--only smollm2|gemma3] [--method qlora]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from random_llama import build_random_llama

BIG_NAME = "llama-100m"
REAL = ("smollm2", "gemma3")  # real weights (tests/realweights.py), measured with --real


@dataclass
class Case:
    model: str  # "tiny" or BIG_NAME
    method: str = "lora"  # lora, qlora, dora; "load" / "load-nf4" only load the weights (fp32 / QLoRA's nf4)
    batch: int = 8
    seq_len: int = 512
    checkpointing: bool = False
    budget_mb: float = 0.0  # set: batch and checkpointing come from plan_batch for this budget

    @property
    def label(self) -> str:
        if self.is_load:
            return "load nf4" if self.method == "load-nf4" else "load fp32"
        what = f"{self.method}{'+gc' if self.checkpointing else ''} {self.batch}x{self.seq_len}"
        return f"plan@{self.budget_mb / 1024:.1f}G {what}" if self.budget_mb else what

    @property
    def is_load(self) -> bool:
        return self.method.startswith("load")


CASES = [
    Case("tiny", "load"),
    Case("tiny", "lora", 8, 128),
    Case("tiny", "lora", 8, 512),
    Case("tiny", "lora", 8, 512, checkpointing=True),
    Case("tiny", "qlora", 8, 512),
    Case("tiny", "dora", 8, 512),
    Case(BIG_NAME, "load"),
    Case(BIG_NAME, "load-nf4"),
    Case(BIG_NAME, "lora", 2, 256),
    Case(BIG_NAME, "lora", 4, 256),
    Case(BIG_NAME, "lora", 2, 512),
    Case(BIG_NAME, "lora", 4, 256, checkpointing=True),
    Case(BIG_NAME, "qlora", 4, 256),
    Case(BIG_NAME, "qlora", 4, 256, checkpointing=True),
    Case(BIG_NAME, "dora", 4, 256),
    Case(BIG_NAME, "lora", seq_len=256, budget_mb=1536),
    Case(BIG_NAME, "lora", seq_len=256, budget_mb=1280),
]
REAL_CASES = [
    Case(model, method, 2, seq_len)
    for model in REAL
    for method in ("lora", "qlora", "full")
    for seq_len in (128, 512)
]


def build_big_model(folder: Path) -> Path:
    """A Llama with ~100M parameters (random weights, fp32) and a 32k vocabulary, with tiny's tokenizer."""
    return build_random_llama(
        folder,
        vocab_size=32000,
        hidden_size=768,
        intermediate_size=2048,
        num_layers=8,
        num_heads=12,
        num_kv_heads=4,
    )


def write_long_chats(path: Path, rows: int = 48, words: int = 700) -> Path:
    """Chats whose replies run past every ``seq_len`` used here, so each row is cut to exactly ``seq_len``."""
    from backprop_engine.tiny import corpus_text

    vocabulary = corpus_text().split()
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as out:
        for _ in range(rows):
            reply = " ".join(rng.choices(vocabulary, k=words))
            out.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": "Tell me a long story."},
                            {"role": "assistant", "content": reply},
                        ]
                    }
                )
                + "\n"
            )
    return path


def facts_of(path: Path):
    from backprop_engine.presets import ModelFacts

    return ModelFacts.from_config(json.loads((path / "config.json").read_text()))


def predict(case: Case, facts, rank: int = 16, targets=None):
    """The planner's estimate for ``case``."""
    from backprop_engine.planner import estimate_memory
    from backprop_engine.presets import ALL_LINEAR

    return estimate_memory(
        facts,
        method=case.method,
        rank=rank,
        targets=targets or ALL_LINEAR,
        seq_len=case.seq_len,
        micro_batch=case.batch,
        gradient_checkpointing=case.checkpointing,
        on_gpu=False,
    )


def planned(case: Case, facts) -> Case:
    from backprop_engine.planner import plan_batch

    plan = plan_batch(
        facts, case.budget_mb, target_batch=8, seq_len=case.seq_len, method=case.method, on_gpu=False
    )
    return Case(
        case.model, case.method, plan.micro_batch, case.seq_len, plan.gradient_checkpointing, case.budget_mb
    )


# ---- the subprocess ---------------------------------------------------------------------------------------


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """The peak RSS since the last :func:`reset_peak` (Linux ``VmHWM``)."""
    status = Path("/proc/self/status").read_text()
    return (
        int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
    )  # kB


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS


def child(case: Case, model_path: Path, data: Path, steps: int, workdir: Path) -> dict:
    import bitsandbytes  # noqa: F401  (peft imports it when installed; part of the baseline for every case)
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    from backprop_engine import Trainer
    from backprop_engine.events import RunStarted
    from backprop_engine.modeling import load_base_model, quiet_transformers

    quiet_transformers()
    torch.set_num_threads(1)  # memory does not depend on it; on a shared, busy CPU two threads crawl
    baseline = rss_mb()
    reset_peak()
    if case.is_load:
        model = load_base_model(model_path, "cpu", torch.float32, four_bit=case.method == "load-nf4")
        for parameter in model.parameters():  # fp32 safetensors are mapped lazily: read a value on every page
            parameter.data.view(-1)[::256].sum()
        return {
            "baseline_mb": baseline,
            "peak_mb": peak_rss_mb(),
            "after_load_mb": rss_mb(),
            "params": sum(p.numel() for p in model.parameters()),
        }
    phases = {}

    def split_at_start(
        event,
    ) -> None:  # the load's peak and what it leaves; then the training steps' own peak
        if isinstance(event, RunStarted):
            phases.update(load_peak_mb=peak_rss_mb(), after_load_mb=rss_mb())
            reset_peak()

    trainer = Trainer(
        str(model_path) if case.model != "tiny" else "tiny",
        on_event=split_at_start,
        method=case.method,
        batch_size=case.batch,
        max_seq_len=case.seq_len,
        gradient_checkpointing=case.checkpointing,
        packing=True,
        logging_steps=1,
        eval_split=0,
        compare_count=0,
    )
    result = trainer.train(str(data), steps=steps, output_dir=workdir / "run")
    events = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    packing = next((e.get("packing") for e in events if e.get("event") == "data"), None)
    used = trainer.config  # what the run used, with the values the engine chose itself (rank, targets, ...)
    return {
        "baseline_mb": baseline,
        "peak_mb": max(phases["load_peak_mb"], peak_rss_mb()),
        **phases,
        "train_peak_mb": peak_rss_mb(),
        "tokens_per_step": result.tokens / result.steps,
        "packing": packing,
        "rank": used.lora_rank,
        "targets": list(used.lora_targets),
        "batch": used.batch_size,
        "seq_len": used.max_seq_len,
        "checkpointing": used.gradient_checkpointing,
    }


def measure(case: Case, model_path: Path, data: Path, steps: int, return_frees: bool) -> dict:
    env = os.environ | ({"MALLOC_MMAP_THRESHOLD_": "131072"} if return_frees else {})
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            __file__,
            "--child",
            json.dumps(asdict(case)),
            "--model-path",
            str(model_path),
            "--data",
            str(data),
            "--steps",
            str(steps),
            "--workdir",
            tmp,
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{case.model} {case.label} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the parent -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--steps",
        type=int,
        default=2,
        help="optimizer steps per case (the peak is in step 2: "
        "activations of the forward pass on top of Adam's moments, created in step 1)",
    )
    parser.add_argument("--only", choices=["tiny", BIG_NAME, *REAL])
    parser.add_argument(
        "--real", action="store_true", help="SmolLM2-135M and Gemma-3-270M (real weights) only"
    )
    parser.add_argument(
        "--return-frees", action="store_true", help="MALLOC_MMAP_THRESHOLD_=131072 in every subprocess"
    )
    parser.add_argument("--loads-only", action="store_true", help="only the rows that load the weights")
    parser.add_argument("--method", help="only the cases of this method (lora, qlora, full, ...)")
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case = Case(**json.loads(args.child))
        print(json.dumps(child(case, Path(args.model_path), Path(args.data), args.steps, Path(args.workdir))))
        return

    from backprop_engine import resolve_model
    from backprop_engine.planner import CPU_OVERHEAD_MB

    with tempfile.TemporaryDirectory() as tmp:
        data = write_long_chats(Path(tmp) / "long_chats.jsonl")
        paths = {"tiny": resolve_model("tiny").path}
        if args.real:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.realweights import gemma3_dir, smollm2_dir

            paths = {"smollm2": smollm2_dir(), "gemma3": gemma3_dir()}
        elif args.only != "tiny":
            paths[BIG_NAME] = build_big_model(Path(tmp) / BIG_NAME)
        print(
            f"{'model':<11}{'case':<24}{'tok/step':>9}{'predicted':>10}{'peak':>7}{'ratio':>7}"
            f"{'pred-ovh':>9}{'peak-base':>10}{'ratio':>7}{'load':>7}{'train':>7}  planner parts (MB)"
        )
        for case in REAL_CASES if args.real else CASES:
            if (
                (args.only and case.model != args.only)
                or (args.loads_only and not case.is_load)
                or (args.method and case.method != args.method)
            ):
                continue
            facts = facts_of(paths[case.model])
            if case.budget_mb:
                case = planned(case, facts)
            row = measure(case, paths[case.model], data, args.steps, args.return_frees)
            added = row["peak_mb"] - row["baseline_mb"]
            if case.is_load:
                estimate = predict(
                    Case(case.model, "qlora" if case.method == "load-nf4" else "lora", 1, 1), facts
                )
                predicted = estimate.weights_mb
                print(
                    f"{case.model:<11}{case.label:<24}{'':>9}{predicted:>10,.0f}{'':>7}{'':>7}{predicted:>9,.0f}"
                    f"{added:>10,.0f}{predicted / added:>7.2f}  weights only; {row['params'] / 1e6:.1f}M params, "
                    f"after load {row['after_load_mb'] - row['baseline_mb']:,.0f} MB over baseline"
                )
                continue
            if (row["batch"], row["seq_len"], row["checkpointing"]) != (
                case.batch,
                case.seq_len,
                case.checkpointing,
            ):
                raise SystemExit(
                    f"{case.label}: the engine trained {row['batch']}x{row['seq_len']} gc={row['checkpointing']}"
                )
            estimate = predict(case, facts, row["rank"], row["targets"])
            parts = (
                f"w {estimate.weights_mb:,.0f} + t {estimate.trainable_mb:,.0f} + a {estimate.activations_mb:,.0f}"
                f" + l {estimate.logits_mb:,.0f} + o {estimate.overhead_mb:,.0f} + s {estimate.allocator_mb:,.0f}"
            )
            verdict = ""
            if case.budget_mb:
                verdict = f"; peak {'inside' if row['peak_mb'] <= case.budget_mb else 'OVER'} the {case.budget_mb:,.0f} MB budget"
            print(
                f"{case.model:<11}{case.label:<24}{row['tokens_per_step']:>9,.0f}{estimate.total_mb:>10,.0f}"
                f"{row['peak_mb']:>7,.0f}{estimate.total_mb / row['peak_mb']:>7.2f}"
                f"{estimate.total_mb - CPU_OVERHEAD_MB:>9,.0f}{added:>10,.0f}"
                f"{(estimate.total_mb - CPU_OVERHEAD_MB) / added:>7.2f}"
                f"{row['load_peak_mb']:>7,.0f}{row['train_peak_mb']:>7,.0f}  {parts}"
                f"{'' if row['packing'] else '; packing OFF'}{verdict}",
                flush=True,
            )
        print(
            f"baseline RSS after imports: ~{row['baseline_mb']:,.0f} MB (the planner's CPU overhead is {CPU_OVERHEAD_MB:,.0f} MB)"
        )


if __name__ == "__main__":
    main()
