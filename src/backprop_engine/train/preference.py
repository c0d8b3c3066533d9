"""Preference tuning on the SFT loop: DPO (Rafailov et al. 2023) and ORPO (Hong et al. 2024).

A micro-batch of n pairs is one forward of 2n rows (the chosen sides, then the rejected ones), masked as
SFT masks (data/pairs.py). A side's log-probability is the sum over its reply tokens.

- DPO: loss = −(1−ε)·log σ(h) − ε·log σ(−h), h = β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))];
  the rewards are β·(log π − log π_ref) of each side. The reference is the same model with its adapter
  disabled (peft ``disable_adapter()``): no second copy of the weights. Its log-probs are computed once,
  before the first step, when the run sees every pair at least once (each pair's reference never changes,
  so that is never more forwards than computing them in every step). Where the run does not start from the
  base, the reference is the model it starts from, always precomputed: full fine-tuning (no adapter to
  switch off) and a multi-run after its first run (e.g. DPO after an SFT run: the SFT model is the reference).
- ORPO: loss = NLL(y_w) − λ·log σ(log odds(y_w) − log odds(y_l)), odds(y) = P/(1−P) with P the
  per-token mean likelihood of the reply, NLL(y_w) its per-token mean negative log-likelihood; no reference.
  Rewards (as TRL reports them) are λ·(mean log-likelihood) of each side.

Losses are averaged over pairs (across micro-batches and ranks, as the SFT loss is over tokens).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

from ..config import TrainConfig
from ..data.pairs import PreferenceExample
from ..data.tokenize import IGNORE_INDEX
from ..errors import ConfigError
from .distributed import ONE_PROCESS, Distributed
from .loop import Batch, collate, in_halving_batches
from .loss import row_summed_losses


@dataclass
class PairBatch:
    """n pairs as one batch of 2n rows: rows [0, n) chosen, [n, 2n) rejected. ``reference``: their
    precomputed reference log-probs, [n, 2] (None: computed in the step)."""

    batch: Any  # a loop.Batch
    reference: Any = None
    real_tokens: int = 0

    @property
    def pairs(self) -> int:
        return self.batch.input_ids.size(0) // 2

    @property
    def input_ids(self):  # one row per pair, for the out-of-memory back-off's row count
        return self.batch.input_ids[: self.pairs]

    @property
    def labels(self):
        return self.batch.labels

    def pieces(self, parts: int) -> list[PairBatch]:
        """Smaller micro-batches that keep each pair's two rows together."""
        import torch

        n = self.pairs
        size = math.ceil(n / parts)
        pieces = []
        for start in range(0, n, size):
            stop = min(n, start + size)
            rows = torch.cat([torch.arange(start, stop), torch.arange(n + start, n + stop)]).to(
                self.batch.input_ids.device
            )
            b = self.batch
            mask = b.attention_mask[rows] if b.attention_mask is not None else None
            reference = self.reference[start:stop] if self.reference is not None else None
            pieces.append(
                PairBatch(Batch(b.input_ids[rows], b.labels[rows], mask, b.position_ids[rows], 0), reference)
            )
        return pieces


def collate_pairs(
    pairs: list[PreferenceExample], pad_id: int, device: str, reference: dict | None = None
) -> PairBatch:
    import torch

    batch = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id, device, packed=False)
    table = torch.stack([reference[id(p)] for p in pairs]) if reference is not None else None
    return PairBatch(batch, table, sum(p.total_tokens for p in pairs))


def sequence_logps(model, batch: Batch):
    """Per row: the summed log-probability of its labelled tokens and how many there are."""
    losses, counts = row_summed_losses(model, batch)
    return -losses, counts


def dpo_losses(chosen, rejected, ref_chosen, ref_rejected, beta: float, label_smoothing: float = 0.0):
    """Per pair: the DPO sigmoid loss and the rewards of both sides (summed log-probs in, tensors out)."""
    import torch.nn.functional as F

    reward_chosen, reward_rejected = beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)
    h = reward_chosen - reward_rejected
    losses = -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    return losses, reward_chosen.detach(), reward_rejected.detach()


def orpo_losses(mean_chosen, mean_rejected, lam: float):
    """Per pair: the ORPO loss from each side's mean per-token log-likelihood, and its rewards."""
    import torch
    import torch.nn.functional as F

    log_odds = (mean_chosen - mean_rejected) - (
        torch.log(-torch.expm1(mean_chosen)) - torch.log(-torch.expm1(mean_rejected))
    )
    losses = -mean_chosen - lam * F.logsigmoid(log_odds)
    return losses, lam * mean_chosen.detach(), lam * mean_rejected.detach()


def unwrapped(model):
    return getattr(model, "module", model)  # DDP's module: the reference pass needs no gradient sync


class PreferenceLoss:
    """The loop's objective for ``dpo`` and ``orpo``: how a step's loss is summed, normalised and reported."""

    pairs = True

    def __init__(self, config: TrainConfig, pad_id: int, device: str) -> None:
        self.kind, self.beta, self.smoothing, self.lam = (
            config.objective,
            config.dpo_beta,
            config.dpo_label_smoothing,
            config.orpo_lambda,
        )
        self.pad_id, self.device = pad_id, device
        self.reference: dict | None = None  # id(pair) → tensor [2], when precomputed
        self._sums = [0.0, 0.0, 0.0, 0.0, 0]  # loss, reward chosen, reward rejected, chosen ahead, pairs

    def collate(self, rows: list[PreferenceExample]) -> PairBatch:
        return collate_pairs(rows, self.pad_id, self.device, self.reference)

    def units(self, batch: PairBatch) -> int:
        """Pairs with something to score (DDP's blank filler rows have none)."""
        return int((batch.labels[: batch.pairs, 1:] != IGNORE_INDEX).any(-1).sum())

    def prepare(
        self,
        config: TrainConfig,
        built,
        examples: list,
        eval_examples: list | None,
        dist: Distributed,
        adapted: bool = False,
    ) -> None:
        """DPO's reference log-probs of every pair, once, when :func:`should_precompute` says so. ``adapted``:
        the adapter starts from earlier runs' weights (multi-run), and the reference is that starting model."""
        if should_precompute(config, built.is_full or adapted, len(examples), dist.world_size):
            self.precompute(
                built.model,
                examples + list(eval_examples or []),
                config.batch_size,
                as_is=built.is_full or adapted,
                dist=dist,
            )

    def begin(self) -> None:
        self._sums = [0.0, 0.0, 0.0, 0.0, 0]

    def summed(self, model, piece: PairBatch):
        """The sum of the piece's pair losses (a tensor to backpropagate); its metrics are added up."""
        logps, counts = sequence_logps(model, piece.batch)
        n = piece.pairs
        valid = (counts[:n] > 0).to(logps.dtype)
        if self.kind == "dpo":
            reference = (
                piece.reference if piece.reference is not None else self.reference_logps(model, piece.batch)
            )
            losses, chosen, rejected = dpo_losses(
                logps[:n], logps[n:], reference[:, 0], reference[:, 1], self.beta, self.smoothing
            )
        else:
            means = logps / counts.clamp(min=1)
            losses, chosen, rejected = orpo_losses(means[:n], means[n:], self.lam)
        loss_sum = (losses * valid).sum()
        for index, value in enumerate(
            (
                loss_sum.detach(),
                (chosen * valid).sum(),
                (rejected * valid).sum(),
                ((chosen > rejected) * valid).sum(),
            )
        ):
            self._sums[index] += float(value)
        self._sums[4] += int(valid.sum())
        return loss_sum

    def reference_logps(self, model, batch: Batch, adapter_off: bool = True):
        """[n, 2] summed log-probs of each pair's sides under the base (the adapter disabled), or with
        ``adapter_off=False`` under the model as it is."""
        import torch

        inner = unwrapped(model)
        with torch.no_grad(), inner.disable_adapter() if adapter_off else contextlib.nullcontext():
            logps, _ = sequence_logps(inner, batch)
        n = logps.size(0) // 2
        return torch.stack([logps[:n], logps[n:]], dim=1)

    def take(self, dist: Distributed = ONE_PROCESS) -> dict:
        """The metrics summed since :meth:`begin`, as means over the pairs of every rank."""
        loss, chosen, rejected, ahead, pairs = (dist.total(value) for value in self._sums)
        pairs = max(pairs, 1)
        return {
            "loss": loss / pairs,
            "chosen": chosen / pairs,
            "rejected": rejected / pairs,
            "margin": (chosen - rejected) / pairs,
            "accuracy": ahead / pairs,
            "pairs": int(pairs),
        }

    def precompute(
        self,
        model,
        examples: list[PreferenceExample],
        batch_size: int,
        as_is: bool,
        dist: Distributed = ONE_PROCESS,
    ) -> None:
        """The reference log-probs of ``examples`` (every pair it will score), once, before any update: of the
        model as it is (``as_is``: its starting weights), else of the base with the adapter disabled. Across
        ranks, each scores its share and every rank gets the whole table."""
        import torch

        was_training = model.training
        model.eval()
        scored: list = []

        def score(pairs: list) -> None:
            batch = collate_pairs(pairs, self.pad_id, self.device).batch
            scored.append(self.reference_logps(model, batch, adapter_off=not as_is))

        for _ in in_halving_batches(dist.shard(examples), batch_size, score):
            pass
        model.train(was_training)
        rows = torch.cat(scored) if scored else torch.zeros(0, 2, device=self.device)
        self.reference = {id(pair): row for pair, row in zip(examples, dist.unshard(rows, len(examples)))}

    def evaluate(
        self, model, examples: list[PreferenceExample], batch_size: int, dist: Distributed = ONE_PROCESS
    ) -> tuple[float, dict]:
        """The mean pair loss over ``examples`` and the same metrics as training (no gradients); out of memory
        halves the batch."""
        import torch

        was_training = model.training
        model.eval()
        self.begin()

        def score(pairs: list) -> None:
            kept = list(self._sums)
            try:
                self.summed(model, self.collate(pairs))
            except torch.OutOfMemoryError:
                self._sums = kept  # the smaller batches add them again
                raise

        with torch.no_grad():
            for _ in in_halving_batches(dist.shard(examples), batch_size, score):
                pass
        model.train(was_training)
        metrics = self.take(dist)
        return metrics["loss"], metrics


def should_precompute(config: TrainConfig, fixed_start: bool, train_pairs: int, world_size: int = 1) -> bool:
    """DPO's reference log-probs once up front (on, or auto when the run scores every pair at least once).
    ``fixed_start``: the reference is the starting model itself (full fine-tuning, or a multi-run's adapter
    after earlier runs), which switching the adapter off cannot give: always up front."""
    if config.objective != "dpo":
        return False
    if fixed_start:
        if config.precompute_reference == "off":
            raise ConfigError(
                "DPO's reference here is the starting model (full fine-tuning, or a multi-run after its first run), "
                "which switching the adapter off cannot give",
                "leave precompute_reference on auto (the reference log-probs are computed before the first update)",
            )
        return True
    if config.precompute_reference != "auto":
        return config.precompute_reference == "on"
    return config.steps * config.batch_size * config.grad_accum * world_size >= train_pairs
