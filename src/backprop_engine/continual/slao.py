"""The SLAO update rules (Qiao & Mahdavi, "Merge before Forget", Algorithm 1) on peft adapter state dicts.

A state dict maps peft's saved names (``...q_proj.lora_A.weight``) to tensors. ``lora_A`` factors are
r × n, ``lora_B`` factors m × r. Every tensor that is not a ``lora_A`` factor (``lora_B``, and DoRA's
``lora_magnitude_vector`` should an adapter carry one) follows the B rule: carried over from the previous
fine-tuned run and merged with weight λ(i).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..errors import ConfigError

MERGE_MODES = ("slao", "sequential", "average")
LAMBDA_SCHEDULES = ("inv_sqrt", "inv", "<constant in (0, 1]>")

StateDict = dict  # name → torch.Tensor


def is_lora_a(name: str) -> bool:
    return ".lora_A." in name


def lambda_schedule(spec: str) -> Callable[[int], float]:
    """λ(i) for run i ≥ 1: ``inv_sqrt`` (1/√i, the paper's), ``inv`` (1/i, a plain running mean) or a constant."""
    if spec == "inv_sqrt":
        return lambda i: 1.0 / math.sqrt(i)
    if spec == "inv":
        return lambda i: 1.0 / i
    try:
        constant = float(spec)
    except ValueError:
        constant = float("nan")
    if not 0 < constant <= 1:
        raise ConfigError(f"unknown λ schedule {spec!r}", f"use one of {', '.join(LAMBDA_SCHEDULES)}")
    return lambda i: constant


def check_merge_mode(mode: str) -> str:
    if mode not in MERGE_MODES:
        raise ConfigError(f"unknown merge mode {mode!r}", f"use one of {', '.join(MERGE_MODES)}")
    return mode


def orthonormal_rows(a):
    """Qᵀ where Q, R = QR(Aᵀ) with the signs fixed so that diag(R) ≥ 0 (which makes the QR unique)."""
    import torch

    q, r = torch.linalg.qr(a.double().T, mode="reduced")
    signs = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)
    return (q * signs).T.to(a.dtype).contiguous()


def initial_state(previous_ft: StateDict, mode: str) -> StateDict:
    """The starting factors of run i > 1 from run i−1's fine-tuned ones.

    ``slao``: A ← orthonormal rows spanning the previous A's row space, B ← previous fine-tuned B.
    ``sequential`` and ``average``: plain continued LoRA, every factor as it was.
    """
    if mode != "slao":
        return {name: t.clone() for name, t in previous_ft.items()}
    return {name: orthonormal_rows(t) if is_lora_a(name) else t.clone() for name, t in previous_ft.items()}


def merge_state(
    merged: StateDict | None, ft: StateDict, run: int, mode: str, schedule: Callable[[int], float]
) -> StateDict:
    """The merged adapter after run ``run`` (1-based) from the merged one before it and run ``run``'s fine-tuned one.

    ``slao``: A_merge ← A_ft; B_merge ← B_merge + λ(i)(B_ft − B_merge). ``sequential``: the fine-tuned adapter.
    ``average``: a running mean of every factor (λ = 1/i for A and B).
    """
    if merged is None or run == 1 or mode == "sequential":
        return {name: t.clone() for name, t in ft.items()}
    _check_same_names(merged, ft)
    weight = 1.0 / run if mode == "average" else schedule(run)
    out = {}
    for name, tensor in ft.items():
        if mode == "slao" and is_lora_a(name):
            out[name] = tensor.clone()
        else:
            out[name] = merged[name] + weight * (tensor - merged[name])
    return out


def _check_same_names(merged: StateDict, ft: StateDict) -> None:
    if merged.keys() != ft.keys():
        missing = sorted(merged.keys() ^ ft.keys())[:3]
        raise ConfigError(
            f"the adapters of successive runs differ ({', '.join(missing)} ...)",
            "every run of a multi-run must use the same model, LoRA rank and target modules",
        )
