"""Packing: several examples share one row of up to ``max_seq_len`` tokens, with no attention between them.

Each example keeps its own position ids (restarting at 0). With no 2-D attention mask, transformers
(>= 5) derives the per-example block-diagonal causal mask from those position ids for SDPA and eager
attention, and the varlen kernels when flash-attention is in use. The first token of every example is
never a label, so no example is trained to predict from its neighbour's last token.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from .tokenize import IGNORE_INDEX, TokenizedExample


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]

    @property
    def real_tokens(self) -> int:
        return len(self.input_ids)


def pack(examples: list[TokenizedExample], max_len: int) -> list[PackedRow]:
    """Best-fit decreasing: longest examples first, each into the fullest row that still has room."""
    rows: list[PackedRow] = []
    free: list[tuple[int, int]] = []  # (room left, row index), sorted
    for example in sorted(examples, key=len, reverse=True):
        size = len(example.input_ids)
        slot = bisect.bisect_left(free, (size, -1))
        if slot == len(free):
            rows.append(PackedRow([], [], []))
            room, index = max_len, len(rows) - 1
        else:
            room, index = free.pop(slot)
        row = rows[index]
        row.input_ids += example.input_ids
        row.labels += [IGNORE_INDEX] + example.labels[1:]
        row.position_ids += list(range(size))
        if room - size > 0:
            bisect.insort(free, (room - size, index))
    return rows
