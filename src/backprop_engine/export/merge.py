"""Merge a LoRA adapter into its base model and save the result as a plain HF folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..fsutil import atomic_dir
from ..modeling import load_adapted_model

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "generation_config.json",
)


def merge_adapter(base_path: Path, adapter_path: Path, out_dir: Path) -> Path:
    """Fold ``adapter_path`` into the base weights (in the base's own dtype) and write ``out_dir`` atomically."""
    model = load_adapted_model(base_path, adapter_path, "cpu", dtype="auto")
    merged = model.merge_and_unload()
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:  # copied verbatim: a round trip through transformers may rewrite them
            if (Path(base_path) / name).is_file():
                shutil.copy2(Path(base_path) / name, tmp / name)
    return Path(out_dir)
