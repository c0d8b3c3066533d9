"""Smart defaults: every training setting the user did not set, chosen from the model, the data and the
machine, each with the reason it was chosen (``Trainer.plan``, ``backprop train --dry-run``, the TUI)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import TrainConfig
from .tiny import TINY_SPECS

# The built-in tiny models start from random weights and need a much larger step size than a
# pretrained model's adapter.
TINY_LEARNING_RATE = 3e-3
TINY_FULL_LEARNING_RATE = 1e-3
LORA_LEARNING_RATE = 2e-4
FULL_LEARNING_RATE = 2e-5
LORA_SCALE = 2.0  # alpha / rank with the usual alpha = 2 × rank; learning rates are tuned for it


@dataclass(frozen=True)
class Suggestion:
    value: int | float
    reason: str


@dataclass(frozen=True)
class Choice:
    name: str
    value: object
    reason: str
    by_user: bool = False


@dataclass
class TrainingPlan:
    """The configuration a run will use and, for every value, where it came from."""

    config: TrainConfig
    choices: list[Choice] = field(default_factory=list)
    device: str = "cpu"
    memory: str = ""  # the planner's estimate, part by part

    def event(self):
        from .events import RunPlanned

        choices = [{"name": c.name, "value": c.value, "reason": c.reason, "by_user": c.by_user} for c in self.choices]
        return RunPlanned(self.config.model, self.device, self.memory, choices)

    def describe(self) -> str:
        from .events import format_event

        return format_event(self.event())


@dataclass(frozen=True)
class DataSize:
    rows: int  # rows per epoch as batched (packed rows when packing)
    trained_tokens: int
    seq_len: int


class _Planner:
    """Collects choices: a value the user set is kept (and reported as theirs), else the rule decides."""

    def __init__(self, config: TrainConfig, user_set: set[str]) -> None:
        self.values = config.to_dict()
        self.user_set = user_set
        self.choices: list[Choice] = []

    def choose(self, name: str, value, reason: str):
        if name in self.user_set:
            self.choices.append(Choice(name, self.values[name], "set by you", by_user=True))
        else:
            self.values[name] = value
            self.choices.append(Choice(name, value, reason))
        return self.values[name]

    def config(self) -> TrainConfig:
        return TrainConfig.with_overrides(**self.values)


def plan_training(config: TrainConfig, user_set: set[str], facts, data: DataSize, machine, device: str,
                  processes: int = 1) -> TrainingPlan:
    """Fill every setting the user left open; ``facts`` is the model's ModelFacts, ``machine`` a hardware probe,
    ``processes`` the data-parallel ranks (each trains ``batch_size`` rows of every micro-batch)."""
    from .planner import plan_batch

    planner = _Planner(config, set(user_set))
    builtin = config.model in TINY_SPECS
    planner.choose("max_seq_len", data.seq_len, "the data's 99th-percentile length rounded up to 64, capped by the model's context")
    method = planner.choose("method", config.method, "LoRA trains ~1 % of the weights and merges back losslessly")
    planner.choose("precision", *_precision(device, method))
    rank, alpha = config.lora_rank, config.lora_alpha
    if method != "full":
        rank = planner.choose("lora_rank", *_rank(data.trained_tokens, builtin))
        alpha = planner.choose("lora_alpha", *_alpha(method, rank))
    planner.choose("learning_rate", *_learning_rate(method, rank, alpha, builtin))
    target = config.batch_size * config.grad_accum if {"batch_size", "grad_accum"} & planner.user_set else _target_batch(data.rows)
    budget = 0.9 * machine.accelerator_memory_mb
    batch = plan_batch(facts, budget, target_batch=target, seq_len=data.seq_len, method=_memory_method(method),
                       rank=rank, targets=config.lora_targets, on_gpu=device == "cuda")
    micro = planner.choose("batch_size", batch.micro_batch, f"the largest micro-batch up to {target} that fits {budget / 1024:.1f} GB")
    ranks = f" over {processes} processes" if processes > 1 else ""
    accum = planner.choose("grad_accum", max(1, math.ceil(target / (micro * processes))), f"reaches an effective batch of {target} rows{ranks}")
    tight = "memory is tight: activations are recomputed in the backward pass (~30 % slower)"
    planner.choose("gradient_checkpointing", batch.gradient_checkpointing, tight if batch.gradient_checkpointing else "fits without it: faster")
    steps = planner.choose("steps", *_steps(data.rows, micro * accum * processes))
    after = "a constant rate" if config.lr_scheduler == "constant" else f"{config.lr_scheduler} decay to 10 % of the peak"
    planner.choose("warmup_steps", max(1, round(0.05 * steps)), f"5 % of the steps, linear, then {after}")
    planner.choose("packing", config.packing, "several examples per row, no attention across them (checked on the model before use)")
    return TrainingPlan(planner.config(), planner.choices, device, batch.estimate.describe())


def _precision(device: str, method: str) -> tuple[str, str]:
    if method == "full":
        return "fp32", "full fine-tuning: AdamW steps on 16-bit weights would round small updates away"
    if device != "cuda":
        return "fp32", "CPU: fp32 is exact and the CPU kernels are fastest for it"
    import torch

    if torch.cuda.is_bf16_supported():
        return "bf16", f"{torch.cuda.get_device_name()} supports bf16: fp32's range at half the memory"
    return "fp16", "this GPU has no bf16; fp16 computes while the adapter trains in fp32"


def _rank(trained_tokens: int, builtin: bool) -> tuple[int, str]:
    if builtin:
        return 16, "the built-in model learns from scratch: rank 16 gives it room"
    for limit, rank in ((100_000, 8), (5_000_000, 16), (50_000_000, 32)):
        if trained_tokens < limit:
            return rank, f"{trained_tokens:,} trained tokens (< {limit:,}): a larger rank would mostly memorise"
    return 64, f"{trained_tokens:,} trained tokens: enough data to use rank 64"


def _alpha(method: str, rank: int) -> tuple[int, str]:
    if method == "rslora":
        return rank, "rsLoRA scales by α/√r: α = r keeps updates stable as the rank grows"
    return 2 * rank, "α = 2 × rank, the usual LoRA scale of 2"


def _learning_rate(method: str, rank: int, alpha: int, builtin: bool) -> tuple[float, str]:
    if method == "full":
        if builtin:
            return TINY_FULL_LEARNING_RATE, "full fine-tuning of the random-init tiny model"
        return FULL_LEARNING_RATE, "full fine-tuning moves every pretrained weight: a small step keeps what it knows"
    base, who = (TINY_LEARNING_RATE, "random-init tiny model") if builtin else (LORA_LEARNING_RATE, "the usual LoRA rate")
    scale = alpha / math.sqrt(rank) if method == "rslora" else alpha / rank
    if math.isclose(scale, LORA_SCALE):
        return base, f"{who} at the adapter scale α/r = {LORA_SCALE:g}"
    rate = float(f"{base * LORA_SCALE / scale:.2g}")
    return rate, f"{who} × {LORA_SCALE:g}/{scale:.3g}: the adapter scale at rank {rank} is {scale:.3g}, not {LORA_SCALE:g}"


def default_learning_rate(config: TrainConfig) -> float:
    """The rate :func:`plan_training` would pick for ``config``'s model, method and adapter scale."""
    return _learning_rate(config.method, config.lora_rank, config.lora_alpha, config.model in TINY_SPECS)[0]


def _memory_method(method: str) -> str:
    return "lora" if method == "rslora" else method


def _target_batch(rows: int) -> int:
    return 8 if rows < 10_000 else 16


def _steps(rows: int, effective_batch: int) -> tuple[int, str]:
    epochs = 3 if rows < 1_000 else 2 if rows < 10_000 else 1
    steps = max(10, math.ceil(epochs * rows / effective_batch))
    return steps, f"{epochs} epoch(s) over {rows:,} rows at {effective_batch} rows per step"


def suggested_settings(model: str) -> dict[str, Suggestion]:
    """Before any data is chosen (the TUI's Train form): the same rules with the data-dependent parts open."""
    base = TrainConfig()
    builtin = model in TINY_SPECS
    rate, rate_reason = _learning_rate(base.method, base.lora_rank, base.lora_alpha, builtin)
    if builtin:
        steps = Suggestion(60, "enough for the tiny model to pick up the sample data's style")
        batch = Suggestion(base.batch_size, "short chats; 8 per step keeps 2 CPU cores busy")
    else:
        steps = Suggestion(base.steps, "a short first run; raise it once the loss curve looks right")
        batch = Suggestion(base.batch_size, "a common micro-batch for chat data")
    return {
        "steps": steps,
        "learning_rate": Suggestion(rate, rate_reason),
        "batch_size": batch,
        "max_seq_len": Suggestion(base.max_seq_len, _seq_len_reason(base.max_seq_len)),
    }


def _seq_len_reason(value: int) -> str:
    if value == 0:
        return "auto: the data's p99 length rounded up, capped by the model's context"
    return "the longest sequence trained; longer rows are cut"
