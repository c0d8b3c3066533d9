"""Four synthetic key→value tasks for the forgetting benchmark, each with its own prompt and answer format.

Every task has 12 facts asked with 6 phrasings (72 conversations); the held-out rows are phrasing × fact
combinations the run never trains on, so exact match needs the fact, not the memorised sentence.
"""

from __future__ import annotations

import json
from pathlib import Path

TASKS = {
    "capitals": (
        {"France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Japan": "Tokyo", "Egypt": "Cairo", "Peru": "Lima",
         "Kenya": "Nairobi", "Chile": "Santiago", "Cuba": "Havana", "Greece": "Athens", "Norway": "Oslo", "Iran": "Tehran"},
        ["What is the capital of {k}?", "Capital of {k}?", "Name the capital city of {k}.", "{k}: which city is the capital?",
         "Tell me the capital of {k}.", "Which city is the capital of {k}?"],
        "The capital is {v}.",
    ),
    "colours": (
        {"banana": "yellow", "lemon": "yellow", "cherry": "red", "tomato": "red", "lime": "green", "pea": "green",
         "plum": "purple", "grape": "purple", "orange": "orange", "carrot": "orange", "coconut": "brown", "potato": "brown"},
        ["What colour is a {k}?", "Colour of a {k}?", "A {k} is which colour?", "Tell me the colour of a {k}.",
         "{k} colour please", "Which colour does a {k} have?"],
        "Colour: {v}",
    ),
    "opposites": (
        {"hot": "cold", "up": "down", "big": "small", "fast": "slow", "left": "right", "day": "night", "open": "closed",
         "happy": "sad", "early": "late", "light": "dark", "full": "empty", "wet": "dry"},
        ["What is the opposite of {k}?", "Opposite of {k}?", "Give the antonym of {k}.", "{k} -> opposite?",
         "Say the reverse of {k}.", "Which word means the opposite of {k}?"],
        "Opposite = {v}",
    ),
    "sounds": (
        {"dog": "woof", "cat": "meow", "cow": "moo", "duck": "quack", "sheep": "baa", "lion": "roar", "owl": "hoot",
         "snake": "hiss", "bee": "buzz", "horse": "neigh", "pig": "oink", "frog": "croak"},
        ["What sound does a {k} make?", "Sound of a {k}?", "How does a {k} sound?", "A {k} says what?",
         "Make the noise of a {k}.", "Which noise comes from a {k}?"],
        "<<{v}>>",
    ),
}


def write_tasks(folder: Path) -> list[Path]:
    """One messages JSONL per task in ``folder``; returns the paths in training order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (facts, phrasings, answer) in TASKS.items():
        rows = [
            {"messages": [{"role": "user", "content": phrasing.format(k=key)}, {"role": "assistant", "content": answer.format(v=value)}]}
            for key, value in facts.items()
            for phrasing in phrasings
        ]
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        paths.append(path)
    return paths
