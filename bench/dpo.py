"""Preference tuning speed and memory: backprop's DPO and ORPO vs SFT on the chosen replies vs TRL's DPOTrainer.

Every contender trains the same LoRA (rank 16, α 32, every linear layer, no dropout), learning rate, batch of
pairs, steps and max length on the same pairs (tests/preference_data.py, our pirate set), each in a fresh
process so its peak RSS is its own (model loading included in memory, excluded from time):

- sft-chosen: ``Trainer(model, chosen_only=True)``: SFT on prompt + chosen, the baseline.
- dpo, ref precomputed: ``Trainer(model, objective="dpo", precompute_reference="on")``: the reference
  log-probs of every pair once, before the first step (inside the timed window); ``auto`` does this when the
  run sees every pair at least once.
- dpo, ref each step: ``precompute_reference="off"``: the reference forward (adapter disabled) in every step.
- orpo: ``Trainer(model, objective="orpo")``: no reference pass.
- trl-dpo: ``trl.DPOTrainer`` + ``DPOConfig`` with TRL's defaults for everything not matched above (β 0.1,
  sigmoid loss, gradient checkpointing, bf16, reference = the adapter disabled, not precomputed);
  ``use_cpu=True`` on a machine without a GPU.
- trl-dpo fp32: the same with ``bf16=False, gradient_checkpointing=False`` (the engine's own CPU settings).

pairs/s = pairs trained / seconds of the training loop (for SFT: chosen replies). tokens/s = the non-pad tokens
of those pairs (both sides; SFT: prompt + chosen) as the engine tokenizes them; TRL's count is taken from the
same pairs. peak MB: the process's maximum RSS (CPU) or ``torch.cuda.max_memory_allocated`` (GPU).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/dpo.py [--model tiny|smollm2] [--pairs 32] [--steps 24] [--batch 4] [--only NAME]

Needs TRL: ``.venv/bin/pip install -c constraints.txt -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0)
LEARNING_RATE = 5e-5
ENGINE = {
    "sft-chosen": {"chosen_only": True},
    "dpo, ref precomputed": {"objective": "dpo", "precompute_reference": "on"},
    "dpo, ref each step": {"objective": "dpo", "precompute_reference": "off"},
    "orpo": {"objective": "orpo"},
}
TRL = {"trl-dpo": {}, "trl-dpo fp32": {"bf16": False, "gradient_checkpointing": False}}


def model_path(name: str) -> Path:
    if name == "tiny":
        from backprop_engine import resolve_model

        return resolve_model("tiny").path
    from tests.realweights import smollm2_dir

    return smollm2_dir()


def peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def engine_pairs(path: Path, data: Path, objective: str):
    """The pairs as the engine tokenizes them (their token counts are what tokens/s counts), and max_seq_len."""
    from backprop_engine.config import TrainConfig
    from backprop_engine.data import DataSpec, load_chat_tokenizer, prepare_data
    from backprop_engine.modeling import model_context

    tokenizer = load_chat_tokenizer(path)
    spec = DataSpec.from_config(TrainConfig(data=str(data), objective=objective))
    prepared = prepare_data(spec, tokenizer, model_context(path, tokenizer), use_cache=False)
    return prepared.train, prepared.report.max_seq_len


def run_engine(name: str, path: Path, data: Path, steps: int, batch: int, workdir: Path) -> dict:
    from backprop_engine import Trainer

    marks = {}

    def on_event(event) -> None:
        if event.kind == "run_started":
            marks["start"], marks["cpu_start"] = time.perf_counter(), time.process_time()
        elif event.kind == "step" and event.step == steps:
            marks["stop"], marks["cpu_stop"] = time.perf_counter(), time.process_time()

    options = dict(
        batch_size=batch,
        grad_accum=1,
        learning_rate=LEARNING_RATE,
        lora_rank=LORA["r"],
        lora_alpha=LORA["lora_alpha"],
        compare_count=0,
        eval_split=0,
        logging_steps=steps,
        warmup_steps=1,
    )
    trainer = Trainer(str(path), on_event=on_event, **options, **ENGINE[name])
    result = trainer.train(str(data), steps=steps, output_dir=workdir / "run")
    return {"pairs": steps * batch, "tokens": result.tokens, "loss": result.final_loss, **_spans(marks)}


def _spans(marks: dict) -> dict:
    return {"seconds": marks["stop"] - marks["start"], "cpu_seconds": marks["cpu_stop"] - marks["cpu_start"]}


def run_trl(name: str, path: Path, data: Path, steps: int, batch: int, workdir: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from backprop_engine.data import load_chat_tokenizer
    from backprop_engine.presets import ALL_LINEAR

    pairs, max_len = engine_pairs(path, data, "dpo")
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    conversational = [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in rows
    ]
    marks = {}

    class LoopClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks["start"], marks["cpu_start"] = time.perf_counter(), time.process_time()

        def on_train_end(self, args, state, control, **kwargs):
            marks["stop"], marks["cpu_stop"] = time.perf_counter(), time.process_time()

    args = DPOConfig(
        output_dir=str(workdir / "trl"),
        max_steps=steps,
        learning_rate=LEARNING_RATE,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        max_length=max_len,
        seed=42,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        **TRL[name],
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path, use_safetensors=True),
        args=args,
        train_dataset=Dataset.from_list(conversational),
        processing_class=load_chat_tokenizer(path),
        peft_config=LoraConfig(**LORA, target_modules=list(ALL_LINEAR), task_type="CAUSAL_LM"),
        callbacks=[LoopClock()],
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        output = trainer.train()
    seen = steps * batch
    per_pair = sum(p.total_tokens for p in pairs) / len(pairs)
    return {"pairs": seen, "tokens": round(seen * per_pair), "loss": output.training_loss, **_spans(marks)}


def child(args) -> None:
    """One contender in this process; prints its measurement as JSON."""
    import warnings

    warnings.filterwarnings("ignore")
    path = model_path(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        run = run_trl if args.child in TRL else run_engine
        measured = run(args.child, path, Path(args.data), args.steps, args.batch, Path(tmp))
    print(json.dumps(measured | {"peak_mb": peak_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", choices=("tiny", "smollm2"))
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument(
        "--steps", type=int, default=24, help="24 steps × 4 pairs: three epochs over 32 pairs"
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--only", action="append", help="run only these contenders (repeatable)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    from tests.preference_data import write_pairs

    model_path(args.model)  # built once (SmolLM2: dequantized from its GGUF) before the timed children
    names = args.only or [*ENGINE, *TRL]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_pairs(Path(tmp) / "pairs.jsonl", args.pairs)
        for name in names:
            command = [
                sys.executable,
                __file__,
                "--child",
                name,
                "--data",
                str(data),
                "--model",
                args.model,
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
            ]
            done = subprocess.run(
                command, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT / "src")}
            )
            if done.returncode:
                raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  {name}: {results[name]}", flush=True)
    report(results, args)


def report(results: dict, args) -> None:
    """Wall-clock rates, and per CPU-second (this process's CPU time over the same span: on a shared machine
    the steadier figure, as each process runs one thread), both as ratios to SFT and to TRL."""
    base = results.get("sft-chosen")
    trl = results.get("trl-dpo") or results.get("trl-dpo fp32")

    def ratio(m: dict, other: dict | None, clock: str) -> str:
        return f"{(m['pairs'] / m[clock]) / (other['pairs'] / other[clock]):.2f}" if other else "-"

    print(
        f"\n{args.model}: {args.pairs} pairs, {args.steps} steps × {args.batch} pairs, {os.cpu_count()} CPUs, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}; 'vs trl': against {'trl-dpo' if 'trl-dpo' in results else 'trl-dpo fp32'}"
    )
    print(
        f"{'contender':<21}{'pairs/s':>8}{'tokens/s':>9}{'vs sft':>7}{'vs trl':>7}{'pairs/CPU-s':>12}{'vs sft':>7}{'vs trl':>7}"
        f"{'peak MB':>8}{'vs sft':>7}{'loss':>7}"
    )
    for name, m in results.items():
        memory = f"{m['peak_mb'] / base['peak_mb']:.2f}" if base else "-"
        print(
            f"{name:<21}{m['pairs'] / m['seconds']:>8.2f}{m['tokens'] / m['seconds']:>9,.0f}{ratio(m, base, 'seconds'):>7}"
            f"{ratio(m, trl, 'seconds'):>7}{m['pairs'] / m['cpu_seconds']:>12.2f}{ratio(m, base, 'cpu_seconds'):>7}"
            f"{ratio(m, trl, 'cpu_seconds'):>7}{m['peak_mb']:>8,.0f}{memory:>7}{m['loss']:>7.3f}"
        )


if __name__ == "__main__":
    main()
