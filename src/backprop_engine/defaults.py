"""Suggested training settings for a model, each with the reason it was chosen (shown by the TUI)."""

from __future__ import annotations

from dataclasses import dataclass

from .config import TrainConfig
from .tiny import TINY_SPECS

# The built-in tiny models start from random weights and need a much larger step size than a
# pretrained model's adapter; used unless the caller sets learning_rate.
TINY_LEARNING_RATE = 3e-3


@dataclass(frozen=True)
class Suggestion:
    value: int | float
    reason: str


def suggested_settings(model: str) -> dict[str, Suggestion]:
    base = TrainConfig()
    if model in TINY_SPECS:
        return {
            "steps": Suggestion(60, "enough for the tiny model to pick up the sample data's style"),
            "learning_rate": Suggestion(TINY_LEARNING_RATE, "random-init tiny model: a large step size learns fast"),
            "batch_size": Suggestion(base.batch_size, "short chats; 8 per step keeps 2 CPU cores busy"),
            "max_seq_len": Suggestion(base.max_seq_len, _seq_len_reason(base.max_seq_len)),
        }
    return {
        "steps": Suggestion(base.steps, "a short first run; raise it once the loss curve looks right"),
        "learning_rate": Suggestion(base.learning_rate, "the usual LoRA rate for a pretrained model"),
        "batch_size": Suggestion(base.batch_size, "a common micro-batch for chat data"),
        "max_seq_len": Suggestion(base.max_seq_len, _seq_len_reason(base.max_seq_len)),
    }


def _seq_len_reason(value: int) -> str:
    if value == 0:
        return "auto: the data's p99 length rounded up, capped by the model's context"
    return "the longest sequence trained; longer rows are cut"
