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

        choices = [
            {"name": c.name, "value": c.value, "reason": c.reason, "by_user": c.by_user} for c in self.choices
        ]
        return RunPlanned(model=self.config.model, device=self.device, memory=self.memory, choices=choices)

    def describe(self) -> str:
        from .events import format_event

        return format_event(self.event())


@dataclass(frozen=True)
class DataSize:
    rows: int  # rows per epoch as batched (packed rows when packing)
    trained_tokens: int
    seq_len: int
    examples: int = 0  # training examples (conversations) in those rows; 0: one per row
    held_out: int = 0  # rows :func:`held_out_rows` set aside from them (not trained)

    @property
    def examples_per_row(self) -> float:
        return (self.examples or self.rows) / max(self.rows, 1)


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


def plan_training(
    config: TrainConfig, user_set: set[str], facts, data: DataSize, machine, device: str, processes: int = 1
) -> TrainingPlan:
    """Fill every setting the user left open; ``facts`` is the model's ModelFacts, ``machine`` a hardware probe,
    ``processes`` the data-parallel ranks (each trains ``batch_size`` rows of every micro-batch)."""
    from .planner import plan_batch

    planner = _Planner(config, set(user_set))
    builtin = config.model in TINY_SPECS
    planner.choose(
        "max_seq_len",
        data.seq_len,
        "the data's 99th-percentile length rounded up to 64, capped by the model's context",
    )
    method = planner.choose(
        "method", config.method, "LoRA trains ~1 % of the weights and merges back losslessly"
    )
    planner.choose("precision", *_precision(device, method))
    rank, alpha = config.lora_rank, config.lora_alpha
    if method != "full":
        rank = planner.choose("lora_rank", *_rank(data.trained_tokens, builtin))
        alpha = planner.choose("lora_alpha", *_alpha(method, rank))
    planner.choose(
        "learning_rate", *_preference_rate(config.objective, *_learning_rate(method, rank, alpha, builtin))
    )
    pairs = _choose_objective(planner, config)
    planner.choose("eval_split", float(data.held_out), _held_out_reason(data.held_out))
    examples = data.examples or data.rows
    wanted, wanted_reason = _target_examples(examples)
    by_user = bool({"batch_size", "grad_accum"} & planner.user_set)
    target = config.batch_size * config.grad_accum if by_user else _rows_for(wanted, data.examples_per_row)
    budget = 0.9 * machine.accelerator_memory_mb
    batch = plan_batch(
        facts,
        budget,
        target_batch=target * (2 if pairs else 1),
        seq_len=data.seq_len,
        method=_memory_method(method),
        rank=rank,
        targets=config.lora_targets,
        on_gpu=device == "cuda",
    )
    fits = f"the largest micro-batch up to {target} rows that fits {budget / 1024:.1f} GB"
    micro = (
        planner.choose("batch_size", max(1, batch.micro_batch // 2), f"{fits}, two sequences a pair")
        if pairs
        else planner.choose("batch_size", batch.micro_batch, fits)
    )
    ranks = f" over {processes} processes" if processes > 1 else ""
    accum = planner.choose(
        "grad_accum", max(1, math.ceil(target / (micro * processes))), f"{target} rows per step{ranks}"
    )
    tight = "memory is tight: activations are recomputed in the backward pass (~30 % slower)"
    planner.choose(
        "gradient_checkpointing",
        batch.gradient_checkpointing,
        tight if batch.gradient_checkpointing else "fits without it: faster",
    )
    rows_per_step = micro * accum * processes
    per_step = rows_per_step * data.examples_per_row
    packed = (
        f" ({rows_per_step} rows of ≈{data.examples_per_row:.1f} packed examples)"
        if data.examples_per_row > 1.05
        else ""
    )
    planner.choices.append(
        Choice(
            "effective_batch",
            round(per_step, 1),
            f"examples per optimizer step{packed}; "
            + ("from your batch_size × grad_accum" if by_user else wanted_reason),
            by_user,
        )
    )
    steps = planner.choose("steps", *_steps(data.rows, examples, rows_per_step))
    after = (
        "a constant rate"
        if config.lr_scheduler == "constant"
        else f"{config.lr_scheduler} decay to 10 % of the peak"
    )
    planner.choose("warmup_steps", max(1, round(0.05 * steps)), f"5 % of the steps, linear, then {after}")
    if pairs:
        planner.choose(
            "packing",
            False,
            "preference pairs are not packed: each side is one padded row, scored as a whole",
        )
    else:
        planner.choose(
            "packing",
            config.packing,
            "several examples per row, no attention across them (checked on the model before use)",
        )
    if pairs and planner.values["objective"] == "dpo":
        planner.choices.append(_reference_choice(planner, method == "full", examples, processes))
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
            return (
                rank,
                f"{trained_tokens:,} trained tokens (< {limit:,}): a larger rank would mostly memorise",
            )
    return 64, f"{trained_tokens:,} trained tokens: enough data to use rank 64"


def _alpha(method: str, rank: int) -> tuple[int, str]:
    if method == "rslora":
        return rank, "rsLoRA scales by α/√r: α = r keeps updates stable as the rank grows"
    return 2 * rank, "α = 2 × rank, the usual LoRA scale of 2"


def _learning_rate(method: str, rank: int, alpha: int, builtin: bool) -> tuple[float, str]:
    if method == "full":
        if builtin:
            return TINY_FULL_LEARNING_RATE, "full fine-tuning of the random-init tiny model"
        return (
            FULL_LEARNING_RATE,
            "full fine-tuning moves every pretrained weight: a small step keeps what it knows",
        )
    base, who = (
        (TINY_LEARNING_RATE, "random-init tiny model")
        if builtin
        else (LORA_LEARNING_RATE, "the usual LoRA rate")
    )
    scale = alpha / math.sqrt(rank) if method == "rslora" else alpha / rank
    if math.isclose(scale, LORA_SCALE):
        return base, f"{who} at the adapter scale α/r = {LORA_SCALE:g}"
    rate = float(f"{base * LORA_SCALE / scale:.2g}")
    return (
        rate,
        f"{who} × {LORA_SCALE:g}/{scale:.3g}: the adapter scale at rank {rank} is {scale:.3g}, not {LORA_SCALE:g}",
    )


def default_learning_rate(config: TrainConfig) -> float:
    """The rate :func:`plan_training` would pick for ``config``'s model, method, adapter scale and objective."""
    return _preference_rate(
        config.objective,
        *_learning_rate(config.method, config.lora_rank, config.lora_alpha, config.model in TINY_SPECS),
    )[0]


PREFERENCE_RATE_FACTOR = (
    0.1  # DPO/ORPO recipes train about 10x below the SFT rate of the same model and method
)
OBJECTIVE_REASONS = {
    "sft": "supervised fine-tuning: the model learns to write the replies",
    "dpo": "DPO: the chosen reply gains on the rejected one relative to the base (adapter off), no reward model",
    "orpo": "ORPO: SFT on the chosen reply plus an odds-ratio push away from the rejected one; no reference pass",
}


def _preference_rate(objective: str, rate: float, reason: str) -> tuple[float, str]:
    if objective == "sft":
        return rate, reason
    return (
        float(f"{rate * PREFERENCE_RATE_FACTOR:.2g}"),
        f"{reason}, × {PREFERENCE_RATE_FACTOR:g} for {objective.upper()}: preference losses steer a model that already answers",
    )


def _choose_objective(planner: _Planner, config: TrainConfig) -> bool:
    """The objective and, for DPO/ORPO, its strength; True when the run trains on pairs."""
    objective = planner.choose("objective", config.objective, OBJECTIVE_REASONS[config.objective])
    if objective == "dpo":
        planner.choose(
            "dpo_beta",
            config.dpo_beta,
            "β = 0.1, the DPO paper's value: higher stays closer to the base, lower follows the pairs further",
        )
    elif objective == "orpo":
        planner.choose(
            "orpo_lambda",
            config.orpo_lambda,
            "λ = 0.1, the ORPO paper's value: the odds-ratio term's weight next to SFT on the chosen reply",
        )
    return objective != "sft"


def _reference_choice(planner: _Planner, full: bool, train_pairs: int, processes: int) -> Choice:
    """Where DPO's reference log-probs come from, as the run will decide it (train/preference.py)."""
    from .train.preference import should_precompute

    by_user = "precompute_reference" in planner.user_set
    if should_precompute(planner.config(), full, train_pairs, processes):
        if full:
            return Choice(
                "dpo_reference",
                "starting weights, precomputed",
                "full fine-tuning has no adapter to switch off: the starting weights score every pair once "
                "before the first update, so no second copy of the model is held",
                by_user,
            )
        reason = (
            "the run sees every pair: each pair's reference is scored once before training, not in every step"
        )
        return Choice("dpo_reference", "base (adapter off), precomputed", reason, by_user)
    reason = "the run sees part of the pairs: one extra forward without gradients per micro-batch"
    return Choice("dpo_reference", "base (adapter off), every step", reason, by_user)


def _memory_method(method: str) -> str:
    return "lora" if method == "rslora" else method


# Examples per optimizer step by dataset size: small data gets small steps, so one epoch holds more updates.
EXAMPLES_PER_STEP = ((200, 4), (2_000, 8), (20_000, 16))
LARGE_EXAMPLES_PER_STEP = 32
MIN_UPDATES = 60  # fewer AdamW updates at LoRA's rate barely move a pretrained model (issue 14: 13 did not)
MAX_STEPS = 3_000  # large data: a first run that ends in hours, not days; --steps for more
HELD_OUT_MIN_ROWS = 8  # below this every row trains


def held_out_rows(examples: int) -> int:
    """Rows set aside (never trained) when the user chose no eval split: the held-out loss and the
    base-vs-fine-tune comparison at the end of the run are measured on them."""
    if examples < HELD_OUT_MIN_ROWS:
        return 0
    return min(200, max(2, examples // 20))


def _held_out_reason(rows: int) -> str:
    if not rows:
        return f"fewer than {HELD_OUT_MIN_ROWS} rows: every row trains (the comparison uses training prompts)"
    return f"{rows} rows held out (5 %, 2 to 200), never trained: held-out loss and base vs fine-tune answers"


def _target_examples(examples: int) -> tuple[int, str]:
    for limit, per_step in EXAMPLES_PER_STEP:
        if examples < limit:
            return per_step, f"{per_step} for fewer than {limit:,} examples: more updates per epoch"
    return LARGE_EXAMPLES_PER_STEP, f"{LARGE_EXAMPLES_PER_STEP} for {examples:,} examples: steadier steps"


def _rows_for(examples_per_step: int, examples_per_row: float) -> int:
    """Rows per step (a power of two, as micro-batches are) nearest to ``examples_per_step`` examples."""
    rows = examples_per_step / max(examples_per_row, 1.0)
    return 2 ** max(0, round(math.log2(rows))) if rows >= 1 else 1


def _steps(rows: int, examples: int, rows_per_step: int) -> tuple[int, str]:
    epochs = 3 if examples < 1_000 else 2 if examples < 10_000 else 1
    per_epoch = rows / rows_per_step
    steps = math.ceil(epochs * per_epoch)
    if steps < MIN_UPDATES:
        return MIN_UPDATES, (
            f"the floor of {MIN_UPDATES} updates for small data: {epochs} epochs would be only {steps}; "
            f"{MIN_UPDATES / per_epoch:.1f} epochs over {examples:,} examples"
        )
    if steps > MAX_STEPS:
        return MAX_STEPS, (
            f"capped at {MAX_STEPS:,} steps, {MAX_STEPS / per_epoch:.2f} of one epoch over {examples:,} examples "
            f"(--steps for more)"
        )
    return steps, f"{epochs} epoch(s) over {examples:,} examples, {per_epoch:.1f} steps each"
