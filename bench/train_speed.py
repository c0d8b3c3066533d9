"""Training speed on `tiny` with the bundled sample chats: backprop's engine vs TRL's SFTTrainer vs a bare loop.

All three train the same LoRA (rank, alpha, targets, dropout), learning rate, batch size, steps and max length
(the values the engine plans for tiny on this data) on the same 320 conversations, in this one process,
alternating so a busy machine slows them alike:

- engine: ``backprop_engine.Trainer("tiny").train("sample", steps=N)``, its defaults (packing, a checkpoint at
  the midpoint, step events).
- trl: ``trl.SFTTrainer`` + ``SFTConfig`` with TRL's defaults for everything not matched above (gradient
  checkpointing, bf16 autocast, padding without packing, a fused chunked log-prob LM head, loss on every token,
  a log every 10 steps, a progress bar). ``use_cpu=True`` is the one setting TRL needs on a machine without GPU.
- bare: forward / cross-entropy / backward / AdamW over the same peft LoRA, on the engine's own packed batches,
  collated before the clock starts: the floor for this model on this CPU.

tokens/s = non-pad input tokens of the batches trained / seconds of the training loop (model loading and data
preparation excluded for all three). tokens per CPU-second uses this process's CPU time over the same span,
which a busy machine disturbs less. ``--ablations`` also times TRL and the engine with one setting changed at a
time, ``--profile`` adds a cProfile breakdown of one engine and one TRL run: together, where the time goes.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_speed.py [--steps 60] [--repeats 5] [--threads 1] [--ablations] [--profile]

Needs TRL: ``.venv/bin/pip install -c constraints.txt -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import pstats
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass
class Setup:
    model_path: Path
    examples: list  # the engine's tokenized training examples
    conversations: list[dict]  # the same rows as messages, for TRL's own chat-template tokenization
    config: object  # the engine's TrainConfig for tiny (the hyperparameters every contender uses)
    max_len: int  # the sequence length the engine picks from the data (TRL's max_length)
    pad_id: int


@dataclass
class Measurement:
    tokens: int
    seconds: float  # wall clock of the training loop
    cpu_seconds: (
        float  # this process's CPU time (all threads) over the same span: less sensitive to a busy machine
    )
    loss: float

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    @property
    def cpu_rate(self) -> float:
        return self.tokens / self.cpu_seconds


class Clock:
    """Wall and process CPU time between ``start()`` and ``stop()``."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def build_setup(steps: int) -> Setup:
    from backprop_engine import Trainer, resolve_model
    from backprop_engine.data import load_chat_tokenizer
    from backprop_engine.train.loop import prepare_dataset

    config = Trainer("tiny").plan("sample", steps=steps).config  # what the engine picks for tiny on this data
    model = resolve_model("tiny")
    data = prepare_dataset(config, model)
    lines = (
        resources.files("backprop_engine.resources")
        .joinpath("sample.jsonl")
        .read_text(encoding="utf-8")
        .splitlines()
    )
    conversations = [json.loads(line) for line in lines if line.strip()]
    if len(conversations) != len(data.train) or data.report.truncated:
        raise SystemExit("the engine filtered or truncated rows: TRL would not see the same data")
    tokenizer = load_chat_tokenizer(model.path)
    return Setup(
        model.path, data.train, conversations, config, data.report.max_seq_len, tokenizer.pad_token_id
    )


def lora_config(config):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        task_type="CAUSAL_LM",
    )


def run_engine(setup: Setup, steps: int, workdir: Path, **overrides) -> Measurement:
    from backprop_engine import Trainer
    from backprop_engine.events import RunStarted, StepMetrics

    clock = Clock()

    def on_event(event) -> None:  # the loop runs from RunStarted to the last step's metrics
        if isinstance(event, RunStarted):
            clock.start()
        elif isinstance(event, StepMetrics) and event.step == steps:
            clock.stop()

    trainer = Trainer("tiny", on_event=on_event, **overrides)
    result = trainer.train("sample", steps=steps, output_dir=workdir / f"engine-{time.monotonic_ns()}")
    return Measurement(result.tokens, clock.wall, clock.cpu, result.final_loss)


def run_trl(setup: Setup, steps: int, workdir: Path, **overrides) -> Measurement:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from backprop_engine.data import load_chat_tokenizer

    class LoopClock(TrainerCallback, Clock):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start()

        def on_train_end(self, args, state, control, **kwargs):
            self.stop()

    config = setup.config
    args = SFTConfig(
        output_dir=str(workdir / f"trl-{time.monotonic_ns()}"),
        max_steps=steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        max_length=setup.max_len,
        seed=config.seed,
        report_to="none",
        use_cpu=True,  # TRL's default bf16 refuses a machine without a GPU unless told it is on the CPU
        **overrides,
    )
    model = AutoModelForCausalLM.from_pretrained(setup.model_path, use_safetensors=True)
    clock = LoopClock()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(setup.conversations),
        processing_class=load_chat_tokenizer(setup.model_path),
        peft_config=lora_config(config),
        callbacks=[clock],
    )
    # Its progress bar and per-log dicts (defaults) are still drawn and formatted, into a buffer instead of the terminal.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        output = trainer.train()
    # TRL's own count of the non-pad tokens of every trained batch (attention mask, or the packed row length).
    return Measurement(trainer._total_train_tokens, clock.wall, clock.cpu, output.training_loss)


def engine_batches(setup: Setup, steps: int) -> list:
    """The engine's first ``steps`` packed micro-batches, in its seeded order."""
    from backprop_engine.train.loop import _batch_stream

    stream = _batch_stream(setup.examples, setup.config, setup.pad_id, "cpu", setup.max_len)
    return [next(stream) for _ in range(steps * setup.config.grad_accum)]


def run_bare(setup: Setup, steps: int, workdir: Path) -> Measurement:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    config = setup.config
    torch.manual_seed(config.seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(setup.model_path, use_safetensors=True), lora_config(config)
    )
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    batches = engine_batches(setup, steps)
    accumulate = config.grad_accum
    clock = Clock()
    clock.start()
    for index, batch in enumerate(batches, start=1):
        logits = model(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            attention_mask=batch.attention_mask,
            use_cache=False,
        ).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), batch.labels[:, 1:].reshape(-1)
        )
        (loss / accumulate).backward()
        if index % accumulate == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    clock.stop()
    return Measurement(sum(b.real_tokens for b in batches), clock.wall, clock.cpu, loss.item())


CONTENDERS = {
    "engine": (run_engine, {}),
    "trl": (run_trl, {}),
    "bare": (run_bare, {}),
}
ABLATIONS = {
    "engine, packing off": (run_engine, {"packing": False}),
    "trl, no grad. ckpt": (run_trl, {"gradient_checkpointing": False}),
    "trl, no ckpt, fp32": (run_trl, {"gradient_checkpointing": False, "bf16": False}),
    "trl, no ckpt, fp32, packing": (
        run_trl,
        {"gradient_checkpointing": False, "bf16": False, "packing": True},
    ),
}


def measure_all(
    setup: Setup, contenders: dict, steps: int, repeats: int, workdir: Path
) -> dict[str, list[Measurement]]:
    """Every contender ``repeats`` times, the order rotated each round; one short untimed warm-up each first."""
    names = list(contenders)
    for name in names:
        run, overrides = contenders[name]
        run(setup, 3, workdir, **overrides)
    results: dict[str, list[Measurement]] = {name: [] for name in names}
    for round_ in range(repeats):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            run, overrides = contenders[name]
            results[name].append(run(setup, steps, workdir, **overrides))
            print(f"  round {round_ + 1} {name}: {results[name][-1].rate:,.0f} tokens/s", flush=True)
    return results


def report(results: dict[str, list[Measurement]], steps: int) -> None:
    trl, bare = (statistics.median(m.rate for m in results[name]) for name in ("trl", "bare"))
    trl_cpu = statistics.median(m.cpu_rate for m in results["trl"])
    print(
        f"\n{'contender':<29}{'tok/step':>9}{'tokens/s':>10}{'min–max':>15}{'vs trl':>8}{'vs bare':>8}"
        f"{'tok/CPU-s':>10}{'vs trl':>8}{'loss':>6}"
    )
    for name, runs in results.items():
        rates = sorted(m.rate for m in runs)
        median, cpu = statistics.median(rates), statistics.median(m.cpu_rate for m in runs)
        per_step = statistics.median(m.tokens for m in runs) / steps
        spread = f"{rates[0]:,.0f}–{rates[-1]:,.0f}"
        print(
            f"{name:<29}{per_step:>9,.0f}{median:>10,.0f}{spread:>15}{median / trl:>8.2f}{median / bare:>8.2f}"
            f"{cpu:>10,.0f}{cpu / trl_cpu:>8.2f}{statistics.median(m.loss for m in runs):>6.2f}"
        )


# (label, file suffix, function): cProfile's cumulative time of each; "  …" rows are part of the row above.
PARTS = {
    "engine": [
        ("forward + loss", "backprop_engine/train/loop.py", "summed_loss"),
        ("backward", "torch/_tensor.py", "backward"),
        ("AdamW step", "torch/optim/adam.py", "step"),
        ("grad-norm clip", "torch/nn/utils/clip_grad.py", "clip_grad_norm_"),
        ("batches: pack + collate", "backprop_engine/train/loop.py", "_batch_stream"),
        ("step events", "backprop_engine/events.py", "emit"),
        ("midpoint checkpoint", "backprop_engine/train/checkpoint.py", "save_checkpoint"),
    ],
    "trl": [
        ("forward + loss", "trl/trainer/sft_trainer.py", "compute_loss"),
        ("  chunked log-prob LM head", "trl/kernels/chunked_logprob.py", "forward"),
        ("backward", "accelerate/accelerator.py", "backward"),
        ("  gradient-checkpoint recompute", "torch/utils/checkpoint.py", "recompute_fn"),
        ("  chunked log-prob LM head", "trl/kernels/chunked_logprob.py", "backward"),
        ("AdamW step", "torch/optim/adam.py", "step"),
        ("grad-norm clip", "transformers/trainer.py", "_clip_grad_norm"),
        ("batches: dataloader + collator", "accelerate/data_loader.py", "__iter__"),
        ("logging + final checkpoint", "transformers/trainer.py", "_maybe_log_save_evaluate"),
    ],
}


def profile(setup: Setup, steps: int, workdir: Path) -> None:
    """Where the loop's time goes in one engine run and one TRL run (cProfile; it slows Python code, so the
    shares of Python-side overheads are upper bounds)."""
    for name, parts in PARTS.items():
        run, overrides = CONTENDERS[name]
        profiler = cProfile.Profile()
        profiler.enable()
        measurement = run(setup, steps, workdir, **overrides)
        profiler.disable()
        stats = pstats.Stats(profiler).stats
        total = measurement.seconds
        print(f"\n{name}: {steps} steps under cProfile, loop {total:.1f} s, {measurement.rate:,.0f} tokens/s")
        attributed = 0.0
        for label, suffix, function in parts:
            seconds = sum(
                v[3] for (path, _, func), v in stats.items() if path.endswith(suffix) and func == function
            )
            attributed += 0.0 if label.startswith(" ") else seconds
            print(f"  {label:<34}{seconds:>7.2f} s {seconds / total:>6.1%}")
        print(
            f"  {'rest (Python glue, callbacks)':<34}{total - attributed:>7.2f} s {(total - attributed) / total:>6.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--ablations", action="store_true", help="also time single-setting changes of TRL and the engine"
    )
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile breakdown of one engine and one TRL run"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads for every contender (0: "
        "torch's default); 1 on a shared, busy machine, where two threads spin on each other",
    )
    args = parser.parse_args()

    import datasets
    import torch
    import transformers
    import trl

    from backprop_engine.modeling import quiet_transformers

    quiet_transformers()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    datasets.disable_progress_bars()  # TRL tokenizes with datasets.map before training (outside the timed loop)
    setup = build_setup(args.steps)
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
        f"trl {trl.__version__}; tiny, {len(setup.examples)} conversations, {sum(map(len, setup.examples)):,} tokens, "
        f"max length {setup.max_len}; LoRA r={setup.config.lora_rank} alpha={setup.config.lora_alpha} on "
        f"{len(setup.config.lora_targets)} modules, lr {setup.config.learning_rate}, batch {setup.config.batch_size}"
        f"×{setup.config.grad_accum}, {args.steps} steps, {args.repeats} rounds"
    )
    contenders = CONTENDERS | (ABLATIONS if args.ablations else {})
    with tempfile.TemporaryDirectory() as tmp:
        results = measure_all(setup, contenders, args.steps, args.repeats, Path(tmp))
        report(results, args.steps)
        if args.profile:
            profile(setup, args.steps, Path(tmp))


if __name__ == "__main__":
    main()
