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

from ..fsutil import atomic_path
from .pipeline import DataReport, DataSpec, PreparedData
from .sources import HubId, data_files, resolve_source
from .tokenize import TokenizedExample

PIPELINE_VERSION = 2  # bump when rendering, masking or filtering changes what a fingerprint stands for


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

    examples = prepared.train + prepared.eval
    lengths = np.array([len(e.input_ids) for e in examples], dtype=np.int64)
    arrays = {
        "input_ids": np.array([t for e in examples for t in e.input_ids], dtype=np.int64),
        "labels": np.array([t for e in examples for t in e.labels], dtype=np.int64),
        "lengths": lengths,
        "train_count": np.array(len(prepared.train)),
        "report": np.array(json.dumps(prepared.report.to_dict())),
    }
    path = cache_folder() / f"{key}.npz"
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **arrays)


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
            train_count = int(data["train_count"])
            report = DataReport.from_dict(json.loads(str(data["report"])))
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache file is rebuilt, never trusted
    examples, start = [], 0
    for length in lengths:
        examples.append(TokenizedExample(ids[start : start + length], labels[start : start + length]))
        start += length
    return PreparedData(examples[:train_count], examples[train_count:], report)
