"""Tokenize once: prepared datasets are cached under a fingerprint of (data, tokenizer, template, settings).

Local files are fingerprinted by path, size and modification time (hashing a 2 GB file would cost more
than tokenizing it); hub ids by name, config and split. The cache is plain numpy arrays plus the report as
JSON text in one ``.npz`` (no pickle), written atomically, so a second run starts without tokenizing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..fsutil import atomic_path
from .pairs import PreferenceExample
from .pipeline import DataReport, DataSpec, PreparedData
from .sources import HubId, data_files, resolve_source
from .tokenize import TokenizedExample

PIPELINE_VERSION = 3  # bump when rendering, masking or filtering changes what a fingerprint stands for


def cache_folder() -> Path:
    from ..paths import cache_dir

    return cache_dir() / "datasets"


def fingerprint(spec: DataSpec, tokenizer, model_context: int) -> str:
    from .. import __version__

    digest = hashlib.sha256()
    recipe = {
        "spec": asdict(spec),
        "context": model_context,
        "pipeline": PIPELINE_VERSION,
        "backprop": __version__,
    }
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for source in spec.sources:
        for item in data_files(resolve_source(source)):
            digest.update(_source_identity(item).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update((backend.to_str() if backend is not None else repr(tokenizer.get_vocab())).encode())
    special = {"bos": tokenizer.bos_token, "eos": tokenizer.eos_token, "template": tokenizer.chat_template}
    digest.update(json.dumps(special, sort_keys=True).encode())
    return digest.hexdigest()[:24]


def _source_identity(source: Path | HubId) -> str:
    if isinstance(source, HubId):
        return f"hub:{source}"
    paths = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    return "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths)


def store(key: str, prepared: PreparedData) -> None:
    import numpy as np

    pairs = bool(prepared.train) and isinstance(prepared.train[0], PreferenceExample)
    examples = [side for e in prepared.train + prepared.eval for side in _sides(e)]
    lengths = np.array([len(e.input_ids) for e in examples], dtype=np.int64)
    arrays = {
        "input_ids": np.array([t for e in examples for t in e.input_ids], dtype=np.int64),
        "labels": np.array([t for e in examples for t in e.labels], dtype=np.int64),
        "lengths": lengths,
        "train_count": np.array(len(prepared.train)),
        "pairs": np.array(pairs),
        "report": np.array(json.dumps(prepared.report.to_dict())),
    }
    path = cache_folder() / f"{key}.npz"
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **arrays)


def _sides(example: Any) -> tuple:
    return (example.chosen, example.rejected) if isinstance(example, PreferenceExample) else (example,)


def load(key: str) -> PreparedData | None:
    import numpy as np

    path = cache_folder() / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            ids, labels, lengths = (
                data["input_ids"].tolist(),
                data["labels"].tolist(),
                data["lengths"].tolist(),
            )
            train_count, pairs = int(data["train_count"]), bool(data["pairs"])
            report = DataReport.from_dict(json.loads(str(data["report"])))
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache file is rebuilt, never trusted
    examples: list[Any] = []
    start = 0
    for length in lengths:
        examples.append(TokenizedExample(ids[start : start + length], labels[start : start + length]))
        start += length
    if pairs:
        examples = [
            PreferenceExample(chosen, rejected) for chosen, rejected in zip(examples[::2], examples[1::2])
        ]
    return PreparedData(examples[:train_count], examples[train_count:], report)
