"""Shared fixtures. Every test runs offline, with caches and runs in a private temporary home."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="backprop-tests-"))
os.environ.update(
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    XDG_CACHE_HOME=str(_HOME / "cache"),
    XDG_DATA_HOME=str(_HOME / "data"),
    XDG_CONFIG_HOME=str(_HOME / "config"),
)

ARCHITECTURES = ["tiny", "tiny-qwen2"]


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    from backprop_engine import resolve_model

    return {name: resolve_model(name).path for name in ARCHITECTURES}


class TrainedRuns:
    """Trains each tiny architecture once per session (20 steps) and hands out the Trainer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._trainers: dict = {}

    def __call__(self, name: str):
        if name not in self._trainers:
            from backprop_engine import Trainer

            trainer = Trainer(name, batch_size=8)
            trainer.train("sample", steps=20, output_dir=self.root / name)
            self._trainers[name] = trainer
        return self._trainers[name]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRuns:
    return TrainedRuns(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def merged_model(trained_run):
    """name → folder of the merged (base + adapter) model of that architecture's trained run."""
    from backprop_engine.export.pipeline import ensure_merged

    return lambda name: ensure_merged(trained_run(name).run)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct dequantized from the registry's GGUF (tests/realweights.py)."""
    from .realweights import smollm2_dir

    return smollm2_dir()


@pytest.fixture(scope="session")
def gemma3_dir() -> Path:
    """Gemma-3-270M (base) dequantized from the registry's GGUF (tests/realweights.py)."""
    from .realweights import gemma3_dir

    return gemma3_dir()


@pytest.fixture(scope="session")
def go(tmp_path_factory) -> str:
    """The Ollama TEMPLATE renderer (tests/gotemplate), built once per session with Go's own text/template."""
    go_tool = shutil.which("go")
    if go_tool is None:
        pytest.fail(
            "Go is not installed: `make test` installs Debian's golang-go (apt-get install golang-go)"
        )
    binary = tmp_path_factory.mktemp("go") / "render"
    build = subprocess.run(
        [go_tool, "build", "-o", str(binary), str(Path(__file__).parent / "gotemplate" / "render.go")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GO111MODULE": "off"},
    )
    assert build.returncode == 0, build.stderr
    return str(binary)
