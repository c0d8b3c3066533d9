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
    """The examples packed into rows as :func:`packed_groups` places them."""
    rows = []
    for group in packed_groups([len(e) for e in examples], max_len):
        row = PackedRow([], [], [])
        for example in (examples[i] for i in group):
            row.input_ids += example.input_ids
            row.labels += [IGNORE_INDEX] + example.labels[1:]
            row.position_ids += list(range(len(example)))
        rows.append(row)
    return rows


def packed_groups(lengths: list[int], max_len: int) -> list[list[int]]:
    """Best-fit decreasing: longest first, each into the fullest row that still has room; the example indices
    of every row. Needs only the lengths, so the planner and the efficiency figure can count rows without
    building them."""
    groups: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row index), sorted
    for index in sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True):
        size = lengths[index]
        slot = bisect.bisect_left(free, (size, -1))
        if slot == len(free):
            groups.append([])
            room, row = max_len, len(groups) - 1
        else:
            room, row = free.pop(slot)
        groups[row].append(index)
        if room - size > 0:
            bisect.insort(free, (room - size, row))
    return groups
