"""Row filters before tokenization: exact and near-duplicate removal, seeded shuffle, sample cap, eval split.

Each filter returns the rows it keeps; the caller records how many each one removed.
"""

from __future__ import annotations

import hashlib
import json
import random

from .formats import Example

NEAR_DUPLICATE_PERMUTATIONS = 128
SHINGLE_WORDS = 3


def example_key(example: Example) -> str:
    if example.text is not None:
        return example.text
    rejected = (
        example.pair.rejected if example.pair is not None else None
    )  # pairs differing only there are two rows
    return json.dumps(
        [example.messages, example.tools, *([rejected] if rejected else [])],
        sort_keys=True,
        ensure_ascii=False,
    )


def drop_exact_duplicates(examples: list[Example]) -> list[Example]:
    seen: set[bytes] = set()
    kept = []
    for example in examples:
        digest = hashlib.blake2b(example_key(example).encode(), digest_size=16).digest()
        if digest not in seen:
            seen.add(digest)
            kept.append(example)
    return kept


def drop_near_duplicates(examples: list[Example], threshold: float, seed: int = 1) -> list[Example]:
    """Keep the first of every group whose word-shingle Jaccard similarity is estimated above ``threshold``.

    MinHash + LSH from datasketch (maintained, numpy-only): linear in the number of rows, unlike pairwise
    comparison.
    """
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NEAR_DUPLICATE_PERMUTATIONS)
    kept = []
    for index, example in enumerate(examples):
        signature = MinHash(num_perm=NEAR_DUPLICATE_PERMUTATIONS, seed=seed)
        signature.update_batch([s.encode() for s in _shingles(_plain_text(example))])
        if lsh.query(signature):
            continue
        lsh.insert(str(index), signature)
        kept.append(example)
    return kept


def _plain_text(example: Example) -> str:
    if example.text is not None:
        return example.text
    return "\n".join(f"{m['role']}: {m['content']}" for m in example.messages)


def _shingles(text: str) -> set[str]:
    words = text.lower().split()
    if len(words) <= SHINGLE_WORDS:
        return {" ".join(words)}
    return {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)}


def shuffled(examples: list, seed: int) -> list:
    order = list(examples)
    random.Random(seed).shuffle(order)
    return order


def split_eval(examples: list, eval_split: float) -> tuple[list, list]:
    """``eval_split`` below 1 is a fraction of the rows, 1 or more a count; the eval rows come last."""
    if eval_split <= 0:
        return examples, []
    count = int(eval_split) if eval_split >= 1 else max(1, round(len(examples) * eval_split))
    count = min(count, len(examples) - 1)
    return examples[: len(examples) - count], examples[len(examples) - count :]
