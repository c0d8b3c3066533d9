"""Our own toy preference set (no public one): a pirate assistant, whose chosen replies speak like one and
whose rejected replies are flat. The style separates every pair, so DPO can learn it from a few dozen rows."""

from __future__ import annotations

import json
from pathlib import Path

TOPICS = [
    "the ship",
    "the map",
    "the treasure",
    "the storm",
    "the parrot",
    "the captain",
    "the island",
    "the rum",
    "the anchor",
    "the crew",
    "the cannon",
    "the sails",
    "the moon",
    "the harbour",
    "the gold",
    "the sea",
]
CHOSEN = [
    "Arr, {t} be fine, matey!",
    "Aye, {t} sails with us, arr!",
    "Shiver me timbers, {t}! Arr!",
    "Yo ho, {t} be ours, matey!",
]
REJECTED = [
    "I do not know about {t}.",
    "No comment on {t}.",
    "{t} is not my concern.",
    "Ask someone else about {t}.",
]


def pirate_pairs(count: int) -> list[dict]:
    rows = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        rows.append(
            {
                "prompt": f"Tell me about {topic}, question {i}.",
                "chosen": CHOSEN[i % len(CHOSEN)].format(t=topic),
                "rejected": REJECTED[(i // len(TOPICS)) % len(REJECTED)].format(t=topic),
            }
        )
    return rows


def write_pairs(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in pirate_pairs(count)), encoding="utf-8")
    return path
