"""Pinned numbers: the tiny model's loss at every step of a fixed-seed run. A change to the data order, the
masking, packing, the optimizer or the loop moves them; if it was meant, re-pin them and say why in the commit."""

from __future__ import annotations

import pytest

from backprop_engine import Trainer
from backprop_engine.events import StepMetrics

# Every setting given, so the planner (which reads the machine) chooses nothing.
SETTINGS = dict(
    seed=42,
    batch_size=4,
    grad_accum=1,
    learning_rate=1e-3,
    warmup_steps=1,
    max_seq_len=128,
    packing=True,
    lora_rank=8,
    lora_alpha=16,
    precision="fp32",
    gradient_checkpointing=False,
    method="lora",
    eval_split=0,
    save_steps=0,
    logging_steps=1,
)
GOLDEN_LOSSES = [7.428117, 7.370075, 7.242241, 7.099716, 6.992019, 6.962816, 6.812517, 6.802941]


def test_tiny_losses_for_a_fixed_seed_are_pinned(tmp_path):
    events = []
    result = Trainer("tiny", on_event=events.append, **SETTINGS).train(
        "sample", steps=8, output_dir=tmp_path / "run"
    )
    losses = [e.loss for e in events if isinstance(e, StepMetrics)]
    assert losses == pytest.approx(GOLDEN_LOSSES, rel=1e-4), losses
    assert result.final_loss == pytest.approx(GOLDEN_LOSSES[-1], rel=1e-4)
