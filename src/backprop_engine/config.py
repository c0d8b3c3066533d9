"""Training configuration: defaults live here, validation happens at construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .data.formats import FORMATS
from .data.pairs import OBJECTIVES
from .data.sources import ON_BAD_ROW, OVERLONG, TEXT_SPLITS
from .errors import ConfigError
from .options import NOT_NEGATIVE, POSITIVE, POSITIVE_INT, Bounds, Option, option, options_of, problems
from .presets import ALL_LINEAR
from .tomlcompat import tomllib

METHODS = ("lora", "qlora", "dora", "rslora", "full")
BACKENDS = ("auto", "transformers", "unsloth")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("cosine", "linear", "constant")
PRECOMPUTE = ("auto", "on", "off")


def option_of(name: str) -> Option:
    """The declaration of TrainConfig field ``name`` (config.option)."""
    return options_of(TrainConfig)[name]


@dataclass
class TrainConfig:
    model: str = option(
        "tiny", help="preset name, local folder, hub id, a .gguf file or ollama:NAME[:TAG] (default: tiny)"
    )
    data: str = option(
        "sample",
        help="data file, folder, saved dataset, hub id org/name[:config][@split] or built-in (default: sample)",
    )
    steps: int = option(60, bounds=POSITIVE_INT, help="optimizer steps (default: planned from the data size)")
    learning_rate: float = option(
        2e-4,
        bounds=Bounds(0, 1, low_open=True, high_open=True),
        flags=("--learning-rate", "--lr"),
        help="peak learning rate (default: planned from the method, adapter scale and objective)",
    )
    method: str = option(
        "lora",
        choices=METHODS,
        help="default: lora; qlora loads the base in 4-bit nf4; full trains every weight (small models)",
    )
    backend: str = option(
        "auto", choices=BACKENDS, help="default: auto (Unsloth when installed and usable, else transformers)"
    )
    trust_remote_code: bool = option(
        False, help="run Python code shipped with the model (only for models you trust)"
    )
    allow_pickle: bool = option(
        False, help="load *.bin pickle weights (they can run code; safetensors otherwise)"
    )
    lora_rank: int = option(
        16, label="LoRA rank", bounds=Bounds(1, 1024), help="rank r of each adapter (default: 16)"
    )
    lora_alpha: int = option(
        32, label="LoRA alpha", bounds=POSITIVE_INT, help="default: 2 × rank (rank for rsLoRA)"
    )
    lora_dropout: float = option(
        0.0,
        label="LoRA dropout",
        bounds=Bounds(0, 1, high_open=True),
        help="dropout on the LoRA path (default: 0)",
    )
    lora_targets: list[str] = option(
        factory=lambda: list(ALL_LINEAR),
        label="LoRA targets",
        help="module names LoRA wraps (default: every linear layer)",
        flags=None,  # a list of module names: set from Python
    )
    batch_size: int = option(
        8, bounds=POSITIVE_INT, help="rows per micro-batch (default: planned to fit memory)"
    )
    grad_accum: int = option(
        1,
        bounds=POSITIVE_INT,
        help="micro-batches per optimizer step (default: planned from the rows per step)",
    )
    max_seq_len: int = option(
        0,
        label="Max seq len",
        bounds=NOT_NEGATIVE,
        help="default: from the data (p99 rounded up to 64), capped by the model's context",
    )
    warmup_steps: int = option(5, bounds=NOT_NEGATIVE, help="default: 5 % of the steps")
    lr_scheduler: str = option(
        "cosine", choices=SCHEDULERS, help="after warmup (default: cosine to 10 % of the peak)"
    )
    precision: str = option(
        "auto",
        choices=PRECISIONS,
        help="weights and activations (default: auto: bf16/fp16 on GPU by capability, fp32 on CPU)",
    )
    weight_decay: float = option(0.0, bounds=NOT_NEGATIVE, help="AdamW weight decay (default: 0)")
    max_grad_norm: float = option(1.0, bounds=POSITIVE, help="clip the gradient norm to this (default: 1)")
    logging_steps: int = option(5, bounds=POSITIVE_INT, help="a step event every N steps (default: 5)")
    save_steps: int = option(
        0,
        bounds=NOT_NEGATIVE,
        help="save a resumable checkpoint every N steps (default: at the midpoint; also when a run stops early)",
    )
    save_total_limit: int = option(
        3, bounds=NOT_NEGATIVE, help="keep the newest N checkpoints (default: 3; 0: all)"
    )
    checkpoint_every_s: int = option(
        0,
        bounds=NOT_NEGATIVE,
        flags=("--checkpoint-every",),
        metavar="S",
        help="also a checkpoint every N seconds of training (default: the checkpoint_minutes setting, 20 min)",
    )
    early_stopping_patience: int = option(
        0,
        bounds=NOT_NEGATIVE,
        help="stop after N evals without improvement (needs --eval-split and --eval-steps)",
    )
    early_stopping_min_delta: float = option(
        0.0, bounds=NOT_NEGATIVE, help="the eval loss must fall by more than this to count (default: 0)"
    )
    seed: int = option(42, help="for data order, dropout and initialisation (default: 42)")
    threads: int = option(
        0,
        bounds=NOT_NEGATIVE,
        help="CPU threads to train with (default: the cores other processes leave free, re-checked while training)",
    )
    gradient_checkpointing: bool = option(
        False, help="recompute activations in the backward pass: less memory, ~30 % slower"
    )
    # GPU safety (train/safety.py): each overrides, when non-zero, the user's setting it names (and its range).
    gpu_temperature_warn_c: int = option(
        0,
        flags=("--gpu-temperature-warn",),
        metavar="C",
        setting="gpu_temperature_warn_c",
        help="warn when a GPU reaches this °C",
    )
    max_gpu_temperature_c: int = option(
        0,
        flags=("--max-gpu-temperature",),
        metavar="C",
        setting="gpu_temperature_limit_c",
        help="pause while a GPU is this hot in °C",
    )
    gpu_temperature_emergency_c: int = option(
        0,
        flags=("--gpu-temperature-emergency",),
        metavar="C",
        setting="gpu_temperature_emergency_c",
        help="save a checkpoint and stop at this °C",
    )
    gpu_memory_warn_pct: int = option(
        0,
        flags=("--gpu-memory-warn",),
        metavar="PCT",
        setting="gpu_memory_warn_pct",
        help="warn when a GPU's memory is this % used",
    )
    gpu_cool_timeout_s: int = option(
        0,
        flags=("--gpu-cool-timeout",),
        metavar="S",
        setting="gpu_cool_timeout_s",
        help="a longer pause saves a checkpoint and stops",
    )
    report_to: list[str] = option(
        factory=list,
        help="experiment trackers, comma-separated: tensorboard, wandb (offline) or none (default)",
    )
    # Data pipeline (see backprop_engine.data.DataSpec, which validates these further).
    data_format: str = option(
        "auto",
        choices=("auto", *FORMATS),
        flags=("--format",),
        help="row format (default: auto, detected per file)",
    )
    on_bad_row: str = option(
        "skip", choices=ON_BAD_ROW, help="stop at the first bad row, or skip and count them (default: skip)"
    )
    min_tokens: int = option(0, short="min tok", bounds=NOT_NEGATIVE, help="drop rows shorter than this")
    max_tokens: int = option(0, short="max tok", bounds=NOT_NEGATIVE, help="drop rows longer than this")
    dedupe: bool = option(True, help="keep exact duplicates")
    near_dedupe: float = option(
        0.0,
        bounds=Bounds(0, 1, high_open=True),
        help="drop near-duplicates above this similarity (e.g. 0.85)",
    )
    max_samples: int = option(0, short="rows", bounds=NOT_NEGATIVE, help="use at most this many rows")
    shuffle: bool = option(True, help="keep the file order")
    eval_split: float = option(
        0.0,
        short="eval",
        bounds=NOT_NEGATIVE,
        help="held-out rows: a fraction below 1 or a count, 0 for none (default: a few rows, chosen by the plan)",
    )
    eval_steps: int = option(0, bounds=NOT_NEGATIVE, help="evaluate every N steps (default: at the end only)")
    overlong: str = option("truncate", choices=OVERLONG, help="rows over max_seq_len (default: truncate)")
    text_split: str = option(
        "auto",
        choices=("auto", *TEXT_SPLITS),
        help=".txt/.md documents end at blank lines, at every line, or with the file (default: auto, from the file)",
    )
    chosen_only: bool = option(
        False, help="preference pairs (chosen/rejected): train on the prompt + chosen reply"
    )
    # Preference tuning (train/preference.py): sft, or dpo / orpo on chosen/rejected pairs.
    objective: str = option(
        "sft", choices=OBJECTIVES, help="sft (default); dpo or orpo train on chosen/rejected pairs"
    )
    dpo_beta: float = option(
        0.1,
        label="DPO β",
        bounds=POSITIVE,
        help="DPO β: higher stays closer to the base model (default: 0.1)",
        flags=("--beta",),
    )
    dpo_label_smoothing: float = option(
        0.0,
        bounds=Bounds(0, 0.5, high_open=True),
        help="DPO: the chance a pair's labels are wrong, in [0, 0.5) (default: 0)",
        flags=("--label-smoothing",),
    )
    orpo_lambda: float = option(
        0.1,
        label="ORPO λ",
        bounds=POSITIVE,
        help="ORPO λ: weight of the odds-ratio term next to SFT (default: 0.1)",
    )
    precompute_reference: str = option(
        "auto",
        choices=PRECOMPUTE,
        help="DPO reference log-probs once before training (auto: when the run sees every pair)",
    )
    packing: bool = option(
        True, help="one example per row, padded (default: packed when a probe on the model shows it is exact)"
    )
    # Divergence guard (train/guard.py): non-finite steps are skipped; this many in a row stop the run.
    max_nonfinite_steps: int = option(
        5,
        bounds=POSITIVE_INT,
        help="stop after N steps in a row with a non-finite loss or gradient (default: 5)",
    )
    loss_spike_factor: float = option(
        3.0,
        bounds=Bounds(1, low_open=True),
        help="warn when a loss is above this × the running median (default: 3)",
    )
    # Did it learn? (compare.py): base vs fine-tune answers at the end; a sample reply during training.
    compare_prompts: str = option(
        "",
        metavar="FILE",
        help="prompts (one per line) the base and the fine-tune answer at the end (default: held-out rows)",
    )
    compare_count: int = option(
        3, bounds=NOT_NEGATIVE, help="held-out prompts compared at the end (default: 3; 0: no comparison)"
    )
    sample_steps: int = option(
        0, bounds=NOT_NEGATIVE, help="a sample reply every N steps (default: at every eval, else 4 per run)"
    )

    def __post_init__(self) -> None:
        problem = problems(self)  # each field's declared bounds and choices
        if problem is not None:
            raise ConfigError(problem)
        if self.early_stopping_patience and not (self.eval_split and self.eval_steps):
            raise ConfigError(
                "early stopping needs periodic evaluation",
                "set --eval-split (held-out rows) and --eval-steps N as well",
            )
        if self.objective != "sft" and self.chosen_only:
            raise ConfigError(
                f"--chosen-only trains SFT on the chosen replies; --objective {self.objective} trains on both",
                "use one of them",
            )
        from .data.pipeline import DataSpec  # light module; validates every data setting

        DataSpec.from_config(self)
        from .tracking import parse_report_to
        from .train.safety import SETTING_OF, SafetyLimits

        self.report_to = parse_report_to(self.report_to)
        if any(getattr(self, name) for name in SETTING_OF):  # unset ones are the user's (validated) settings
            SafetyLimits.for_config(self)

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
