"""The default plan teaches a real pretrained model: SmolLM2-135M-Instruct, 16 rows of our identity set, every
training default. Phrasings never trained are answered with the taught name by the fine-tune, not by the base."""

from __future__ import annotations

import pytest

from backprop_engine import Trainer
from backprop_engine.compare import compare_run
from backprop_engine.defaults import MIN_UPDATES

from .identity_data import HELD_OUT, knows_identity, write_identity

pytestmark = pytest.mark.realweights


def test_the_default_plan_teaches_the_identity(smollm2_dir, tmp_path):
    data = write_identity(tmp_path / "identity.jsonl", 16)
    events = []
    # Nothing is generated during the run (compare_count=0: no comparison, no samples); compare_run below is
    # the proof. Each reply token costs a full forward pass: CI time.
    trainer = Trainer(str(smollm2_dir), on_event=events.append, compare_count=0)
    result = trainer.train(data, output_dir=tmp_path / "run")
    planned = {c["name"]: c for c in next(e for e in events if e.kind == "run_planned").choices}
    assert planned["steps"]["value"] == MIN_UPDATES and not planned["steps"]["by_user"]
    assert planned["effective_batch"]["value"] == 4 and planned["learning_rate"]["value"] == 2e-4
    assert planned["eval_split"]["value"] == 2  # held out automatically
    assert result.eval_loss < 1.0 < result.first_loss

    # Every taught answer names Tamsin within its first 5 tokens; the base's 10 tokens say who it is.
    asked = compare_run(result.run_dir, prompts=HELD_OUT[:3], max_new_tokens=10)
    assert all(map(knows_identity, asked.tuned)), asked.tuned
    assert not any(map(knows_identity, asked.base)), asked.base
