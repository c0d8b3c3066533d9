"""DPO under torchrun: two CPU processes (gloo, DDP) with 4 pairs each train, score and evaluate like one
process with 8 pairs. The single process computes its reference in every step; the two ranks precompute it
(auto: the run sees every pair), each rank scoring its half and receiving the other's, so a reference row
that landed on the wrong pair or rank would show in the very first rewards (π = π_ref there).

Tolerances, measured on this machine (fp32, these 6 steps at lr 3e-3): the logged metrics and gradient norms
of the two runs agree to float summation noise (< 1e-6), held to 1e-5 as in tests/test_distributed.py. The
adapter weights differ by up to 1.8e-4: Adam divides each update by the root of its squared gradients, so
noise in near-zero gradient entries is magnified; one process with batch 4 × 2 accumulation (the same rows,
summed in another order) differs from batch 8 by 2.2e-4 alike. A real mistake, training on half the pairs
(batch 4 alone), moves the weights by 1.8e-2 and the step-5 loss by 8e-3: WEIGHTS sits ~9× from both."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from backprop_engine.cli import main
from backprop_engine.config import TrainConfig
from backprop_engine.train.preference import should_precompute

from .preference_data import write_pairs
from .test_distributed import BIN, TOLERANCE, _events, _launch

PAIRS, HELD_OUT, STEPS = 24, 8, 6  # rewards at steps 1, 5, 6 (train) and 3, 6 (eval)
WEIGHTS = 2e-3


def test_torchrun_dpo_two_processes_train_like_one(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    train = ["train", "--data", data, "--objective", "dpo", "--steps", STEPS, "--eval-split", HELD_OUT]
    train = [str(a) for a in [*train, "--eval-steps", STEPS // 2, "--learning-rate", "3e-3", "--json"]]
    single, run = tmp_path / "single", tmp_path / "run"
    assert main([*train, "--batch-size", "8", "--precompute-reference", "off", "--output", str(single)]) == 0
    assert should_precompute(
        TrainConfig(objective="dpo", steps=STEPS, batch_size=4), False, PAIRS - HELD_OUT, 2
    )
    launch = [BIN / "torchrun", "--standalone", "--nproc_per_node", "2", BIN / "backprop"]
    _launch([*launch, *train, "--batch-size", "4", "--output", run])

    events, reference = _events(run), _events(single)
    ranks = next(e for e in events if e["event"] == "ranks")
    assert ranks["backend"] == "gloo" and ranks["steps"] == [STEPS, STEPS] and min(ranks["tokens"]) > 0
    rewards, expected = _rewards(events), _rewards(reference)
    assert (
        rewards.keys()
        == expected.keys()
        == {("train", 1), ("train", 5), ("train", 6), ("eval", 3), ("eval", 6)}
    )
    assert all(r["pairs"] == 8 for r in rewards.values()), "each rank's 4 pairs (and 4 of 8 held out) summed"
    assert rewards["train", 1]["loss"] == pytest.approx(0.6931472, abs=1e-6)  # π = π_ref on every rank
    for key, metrics in expected.items():
        for name in ("loss", "chosen", "rejected", "margin", "accuracy"):
            assert rewards[key][name] == pytest.approx(metrics[name], abs=TOLERANCE), f"{name} at {key}"
    assert rewards["eval", 6]["accuracy"] == 1.0 and rewards["eval", 6]["margin"] > 1
    steps = {e["step"]: e["grad_norm"] for e in events if e["event"] == "step"}
    for step, grad_norm in ((e["step"], e["grad_norm"]) for e in reference if e["event"] == "step"):
        assert steps[step] == pytest.approx(grad_norm, abs=TOLERANCE), f"gradient norm at step {step}"
    weights, reference_weights = (
        load_file(str(r / "adapter" / "adapter_model.safetensors")) for r in (run, single)
    )
    assert max((weights[k] - reference_weights[k]).abs().max().item() for k in reference_weights) < WEIGHTS
    compared = [
        e for e in events if e["event"] == "comparison"
    ]  # rank 0 alone: one panel, chosen replies' loss
    assert len(compared) == 1 and compared[0]["tuned_loss"] < compared[0]["base_loss"]


def _rewards(events: list[dict]) -> dict[tuple[str, int], dict]:
    return {(e["split"], e["step"]): e for e in events if e["event"] == "rewards"}
