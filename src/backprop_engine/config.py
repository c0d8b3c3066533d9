"""Training configuration: defaults live here, validation happens at construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .data.pairs import OBJECTIVES
from .errors import ConfigError
from .presets import ALL_LINEAR
from .tomlcompat import tomllib

METHODS = ("lora", "qlora", "dora", "rslora", "full")
BACKENDS = ("auto", "transformers", "unsloth")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("cosine", "linear", "constant")


def option(default: Any, label: str = "", help: str | None = None, flags: tuple[str, ...] = ()) -> Any:
    """A field as the front ends show it: ``label`` on the app's forms, ``help`` and ``flags`` (default
    ``--field-name``) in the CLI. Both read them from here (:func:`option_of`), so an option is declared once."""
    return field(default=default, metadata={"label": label, "help": help, "flags": flags})


@dataclass(frozen=True)
class Option:
    name: str
    kind: type
    label: str
    help: str | None
    flags: tuple[str, ...]


def option_of(name: str) -> Option:
    """The declaration of TrainConfig field ``name`` (its type is its default's)."""
    spec = next(f for f in fields(TrainConfig) if f.name == name)
    meta = spec.metadata
    flags = meta.get("flags") or ("--" + name.replace("_", "-"),)
    label = meta.get("label") or name.replace("_", " ").capitalize()
    return Option(name, type(spec.default), label, meta.get("help"), flags)


@dataclass
class TrainConfig:
    model: str = "tiny"
    data: str = "sample"
    steps: int = option(60, help="optimizer steps (default: planned from the data size)")
    learning_rate: float = option(2e-4, flags=("--learning-rate", "--lr"))
    method: str = "lora"  # lora, qlora (4-bit nf4 base), dora, rslora, full (every weight; small models)
    backend: str = (
        "auto"  # auto (Unsloth when installed and usable, else transformers), transformers, unsloth
    )
    trust_remote_code: bool = False  # run Python code shipped with a hub model (only for models you trust)
    allow_pickle: bool = False  # load *.bin pickle weights (can run arbitrary code; safetensors otherwise)
    lora_rank: int = option(16, label="LoRA rank")
    lora_alpha: int = option(32, label="LoRA alpha", help="default: 2 × rank (rank for rsLoRA)")
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    batch_size: int = option(8)
    grad_accum: int = option(1)
    max_seq_len: int = option(
        0, label="Max seq len"
    )  # 0: from the data (p99 rounded up to 64), capped by the model's context
    warmup_steps: int = option(5, help="default: 5 %% of the steps")
    lr_scheduler: str = "cosine"  # after warmup: cosine or linear decay to 10 % of the peak, or constant
    precision: str = "auto"  # weights and activations: auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 5
    save_steps: int = option(
        0, help="save a resumable checkpoint every N steps (default: at the midpoint)"
    )  # also when a run stops early
    save_total_limit: int = option(3, help="keep the newest N checkpoints (default: 3; 0: all)")
    checkpoint_every_s: int = (
        0  # also every N seconds of training; 0: the checkpoint_minutes setting (default 20)
    )
    early_stopping_patience: int = option(
        0, help="stop after N evals without improvement (needs --eval-split and --eval-steps)"
    )
    early_stopping_min_delta: float = 0.0  # the eval loss must fall by more than this to count as improvement
    seed: int = option(42)
    threads: int = option(
        0,
        help="CPU threads to train with (default: the cores other processes leave free, re-checked while training)",
    )
    gradient_checkpointing: bool = (
        False  # recompute activations in the backward pass: less memory, ~30 % slower
    )
    # GPU safety (train/safety.py); 0: the user's setting (settings.toml).
    gpu_temperature_warn_c: int = 0  # a warning event
    max_gpu_temperature_c: int = 0  # critical: training pauses until the GPU cools
    gpu_temperature_emergency_c: int = 0  # a checkpoint is saved and training stops
    gpu_memory_warn_pct: int = 0  # GPU memory in use: a warning event
    gpu_cool_timeout_s: int = 0  # a longer pause saves a checkpoint and stops
    report_to: list[str] = field(
        default_factory=list
    )  # experiment trackers: tensorboard, wandb (tracking.py)
    # Data pipeline (see backprop_engine.data.DataSpec, which validates these).
    data_format: str = "auto"  # auto, preference, messages, sharegpt, alpaca, prompt_completion, text
    on_bad_row: str = "skip"  # skip (counted and reported in events) or error
    min_tokens: int = 0
    max_tokens: int = 0
    dedupe: bool = True
    near_dedupe: float = 0.0  # MinHash Jaccard threshold, e.g. 0.85; 0 is off
    max_samples: int = 0
    shuffle: bool = True
    eval_split: float = option(0.0, help="held-out rows: a fraction below 1 or a count (default: none)")
    eval_steps: int = option(0, help="evaluate every N steps (default: at the end only)")
    overlong: str = "truncate"  # rows longer than max_seq_len: truncate or drop
    text_split: str = (
        "auto"  # .txt/.md documents: auto, blank (blank lines), line (one per line), none (whole file)
    )
    chosen_only: bool = False  # preference rows (chosen/rejected): train prompt + chosen reply as a chat
    # Preference tuning (train/preference.py): sft, or dpo / orpo on chosen/rejected pairs.
    objective: str = "sft"  # sft, dpo, orpo (OBJECTIVES)
    dpo_beta: float = option(
        0.1,
        label="DPO β",
        help="DPO β: higher stays closer to the base model (default: 0.1)",
        flags=("--beta",),
    )
    dpo_label_smoothing: float = option(
        0.0,
        help="DPO: the chance a pair's labels are wrong, in [0, 0.5) (default: 0)",
        flags=("--label-smoothing",),
    )
    orpo_lambda: float = option(
        0.1, label="ORPO λ", help="ORPO λ: weight of the odds-ratio term next to SFT (default: 0.1)"
    )
    precompute_reference: str = (
        "auto"  # DPO reference log-probs: auto (once, when the run sees every pair), on, off
    )
    packing: bool = True  # used when a probe on the model shows it is exact; else padding
    # Divergence guard (train/guard.py): non-finite steps are skipped; this many in a row stop the run.
    max_nonfinite_steps: int = option(
        5, help="stop after N steps in a row with a non-finite loss or gradient (default: 5)"
    )
    loss_spike_factor: float = 3.0  # a loss above this × the running median is a warning
    # Did it learn? (compare.py): base vs fine-tune answers at the end; a sample reply during training.
    compare_prompts: str = ""  # a text file, one prompt per line (default: held-out rows)
    compare_count: int = 3  # held-out prompts compared at the end (0: no comparison)
    sample_steps: int = 0  # a sample reply every N steps (0: at every eval, else 4 per run)

    def __post_init__(self) -> None:
        positive = [
            "steps",
            "lora_rank",
            "lora_alpha",
            "batch_size",
            "grad_accum",
            "logging_steps",
            "max_nonfinite_steps",
        ]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}", f"choose one of: {', '.join(METHODS)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}", f"choose one of: {', '.join(BACKENDS)}")
        for name, allowed in (("precision", PRECISIONS), ("lr_scheduler", SCHEDULERS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"unknown {name} {getattr(self, name)!r}", f"choose one of: {', '.join(allowed)}"
                )
        if self.save_total_limit < 0 or self.early_stopping_patience < 0 or self.early_stopping_min_delta < 0:
            raise ConfigError(
                "save_total_limit, early_stopping_patience and early_stopping_min_delta must not be negative"
            )
        if self.early_stopping_patience and not (self.eval_split and self.eval_steps):
            raise ConfigError(
                "early stopping needs periodic evaluation",
                "set --eval-split (held-out rows) and --eval-steps N as well",
            )
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if (
            min(
                self.warmup_steps, self.save_steps, self.eval_steps, self.max_seq_len, self.checkpoint_every_s
            )
            < 0
        ):
            raise ConfigError(
                "warmup_steps, save_steps, eval_steps, max_seq_len and checkpoint_every_s must not be negative"
            )
        if self.compare_count < 0 or self.sample_steps < 0:
            raise ConfigError("compare_count and sample_steps must not be negative")
        if not self.loss_spike_factor > 1:
            raise ConfigError(
                f"loss_spike_factor must be above 1, got {self.loss_spike_factor!r}",
                "e.g. 3: warn above 3× the running median",
            )
        self._check_preference()
        from .data.pipeline import DataSpec  # light module; validates every data setting

        DataSpec.from_config(self)
        from .tracking import parse_report_to
        from .train.safety import SETTING_OF, SafetyLimits

        self.report_to = parse_report_to(self.report_to)
        if any(getattr(self, name) for name in SETTING_OF):  # unset ones are the user's (validated) settings
            SafetyLimits.for_config(self)

    def _check_preference(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"unknown objective {self.objective!r}", f"choose one of: {', '.join(OBJECTIVES)}"
            )
        if not self.dpo_beta > 0 or not self.orpo_lambda > 0:
            raise ConfigError(
                f"dpo_beta and orpo_lambda must be positive, got {self.dpo_beta!r} and {self.orpo_lambda!r}",
                "e.g. 0.1 (the papers' value)",
            )
        if not 0 <= self.dpo_label_smoothing < 0.5:
            raise ConfigError(
                f"dpo_label_smoothing must be in [0, 0.5), got {self.dpo_label_smoothing!r}",
                "0 is plain DPO; 0.1 trusts each label 90 %",
            )
        if self.precompute_reference not in ("auto", "on", "off"):
            raise ConfigError(
                f"unknown precompute_reference {self.precompute_reference!r}", "choose one of: auto, on, off"
            )
        if self.objective != "sft" and self.chosen_only:
            raise ConfigError(
                f"--chosen-only trains SFT on the chosen replies; --objective {self.objective} trains on both",
                "use one of them",
            )

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def with_overrides(cls, **overrides: Any) -> TrainConfig:
        unknown = set(overrides) - cls.field_names()
        if unknown:
            raise ConfigError(
                f"unknown option(s): {', '.join(sorted(unknown))}",
                f"valid options: {', '.join(sorted(cls.field_names()))}",
            )
        return cls(**overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_toml(cls, path: Path) -> TrainConfig:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                f"{path}: cannot read run config ({exc})", "is this a backprop run directory?"
            ) from None
        known = {k: v for k, v in data.get("train", {}).items() if k in cls.field_names()}
        return cls(**known)
