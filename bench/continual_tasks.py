"""Four synthetic key→value tasks for the forgetting benchmark, each with its own prompt and answer format,
plus a pre-training set in the same four formats with OTHER facts.

The tiny model starts from random weights, so on its own it would have to learn the formats and the facts
at once. Pre-training it briefly on ``PRETRAIN_FACTS`` (every format, facts that no task uses) gives it the
structure; a task run then only has to learn its 12 new facts. Every prompt carries a ticket number that
changes from row to row (72 rows per task: 12 facts × 6 tickets); the held-out rows are prompts the run
never saw, so exact match needs the fact, not a memorised sentence.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TEMPLATES = {
    "capitals": "#{n} What is the capital of {k}?",
    "colours": "Ticket {n}: colour of a {k}?",
    "opposites": "[{n}] opposite of {k}",
    "sounds": "Q{n}. What sound does a {k} make?",
}
TICKETS_PER_FACT = 6

ANSWERS = {
    "capitals": "The capital is {v}.",
    "colours": "Colour: {v}",
    "opposites": "Opposite = {v}",
    "sounds": "<<{v}>>",
}

TASK_FACTS = {
    "capitals": {
        "France": "Paris",
        "Spain": "Madrid",
        "Italy": "Rome",
        "Japan": "Tokyo",
        "Egypt": "Cairo",
        "Peru": "Lima",
        "Kenya": "Nairobi",
        "Chile": "Santiago",
        "Cuba": "Havana",
        "Greece": "Athens",
        "Norway": "Oslo",
        "Iran": "Tehran",
    },
    "colours": {
        "banana": "yellow",
        "lemon": "yellow",
        "cherry": "red",
        "tomato": "red",
        "lime": "green",
        "pea": "green",
        "plum": "purple",
        "grape": "purple",
        "orange": "orange",
        "carrot": "orange",
        "coconut": "brown",
        "potato": "brown",
    },
    "opposites": {
        "hot": "cold",
        "up": "down",
        "big": "small",
        "fast": "slow",
        "left": "right",
        "day": "night",
        "open": "closed",
        "happy": "sad",
        "early": "late",
        "light": "dark",
        "full": "empty",
        "wet": "dry",
    },
    "sounds": {
        "dog": "woof",
        "cat": "meow",
        "cow": "moo",
        "duck": "quack",
        "sheep": "baa",
        "lion": "roar",
        "owl": "hoot",
        "snake": "hiss",
        "bee": "buzz",
        "horse": "neigh",
        "pig": "oink",
        "frog": "croak",
    },
}

PRETRAIN_FACTS = {
    "capitals": {
        "Germany": "Berlin",
        "Poland": "Warsaw",
        "Austria": "Vienna",
        "Sweden": "Stockholm",
        "Russia": "Moscow",
        "China": "Beijing",
        "India": "Delhi",
        "Canada": "Ottawa",
        "Mexico": "Mexico City",
        "Brazil": "Brasilia",
    },
    "colours": {
        "sky": "blue",
        "snow": "white",
        "coal": "black",
        "grass": "green",
        "blood": "red",
        "sun": "yellow",
        "ash": "grey",
        "milk": "white",
        "violet": "purple",
        "sea": "blue",
    },
    "opposites": {
        "old": "new",
        "rich": "poor",
        "high": "low",
        "hard": "soft",
        "near": "far",
        "strong": "weak",
        "thick": "thin",
        "loud": "quiet",
        "clean": "dirty",
        "long": "short",
    },
    "sounds": {
        "wolf": "howl",
        "mouse": "squeak",
        "goat": "bleat",
        "crow": "caw",
        "bird": "tweet",
        "donkey": "bray",
        "hen": "cluck",
        "bear": "growl",
        "seal": "bark",
        "dove": "coo",
    },
}

TASKS = list(TASK_FACTS)


def rows(facts: dict[str, dict[str, str]], seed: int) -> list[dict]:
    """Every fact of every task asked ``TICKETS_PER_FACT`` times, each with its own ticket number."""
    tickets = random.Random(seed)
    return [
        {
            "messages": [
                {"role": "user", "content": TEMPLATES[task].format(k=key, n=tickets.randrange(100, 1000))},
                {"role": "assistant", "content": ANSWERS[task].format(v=value)},
            ]
        }
        for task, pairs in facts.items()
        for key, value in pairs.items()
        for _ in range(TICKETS_PER_FACT)
    ]


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def write_tasks(folder: Path) -> list[Path]:
    """One messages JSONL per task in ``folder``; returns the paths in training order."""
    return [
        write_jsonl(folder / f"{task}.jsonl", rows({task: TASK_FACTS[task]}, seed=index))
        for index, task in enumerate(TASKS)
    ]


def write_pretraining(folder: Path) -> Path:
    """Every format with the pre-training facts, in one file."""
    return write_jsonl(folder / "pretrain.jsonl", rows(PRETRAIN_FACTS, seed=len(TASKS)))
