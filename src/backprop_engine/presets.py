"""Model presets and resolution of a model name (preset, local folder or hub id) to a local folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .paths import cache_dir
from .tiny import TINY_SPECS, ensure_tiny_model

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Preset:
    name: str
    source: str  # hub id, or "builtin" for the tiny models built locally
    architecture: str
    chat_family: str
    params_billion: float
    context_length: int
    lora_targets: tuple[str, ...] = ALL_LINEAR


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("tiny", "builtin", "llama", "chatml", 0.0024, 2048),
        Preset("tiny-qwen2", "builtin", "qwen2", "chatml", 0.0020, 2048),
        Preset("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", "qwen2", "chatml", 0.49, 32768),
        Preset("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B-Instruct", "qwen2", "chatml", 1.54, 32768),
        Preset("qwen2.5-3b", "Qwen/Qwen2.5-3B-Instruct", "qwen2", "chatml", 3.09, 32768),
        Preset("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", "qwen2", "chatml", 7.62, 32768),
    ]
}


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for (preset name, path or hub id)
    path: Path  # local folder with config.json, tokenizer and safetensors weights


def resolve_model(name: str, rebuild: bool = False, allow_pickle: bool = False) -> ResolvedModel:
    if name in TINY_SPECS:
        return ResolvedModel(name, ensure_tiny_model(name, cache_dir(), rebuild=rebuild))
    source = PRESETS[name].source if name in PRESETS else name
    local = Path(source).expanduser()
    if local.exists():
        folder = local
    elif _HUB_ID.match(source) and not source.startswith((".", "/")):
        folder = _download(source)
    else:
        raise ModelError(
            f"unknown model {name!r}: not a preset, an existing folder or a hub id",
            f"presets: {', '.join(PRESETS)}; or pass a folder with config.json, or an id like Qwen/Qwen2.5-0.5B-Instruct",
        )
    _check_folder(folder, allow_pickle)
    return ResolvedModel(name, folder)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # the hub raises many types: offline, gated, missing, network
        raise ModelError(
            f"could not fetch model {repo_id!r} from the Hugging Face hub: {type(exc).__name__}",
            "check the id and your connection, or unset HF_HUB_OFFLINE; gated models need `hf auth login`",
        ) from None


def _check_folder(folder: Path, allow_pickle: bool) -> None:
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise ModelError(f"{folder} is not a model folder (no config.json)", "pass a folder saved with save_pretrained")
    has_safetensors = any(folder.glob("*.safetensors"))
    has_pickle = any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
    if not has_safetensors and has_pickle and not allow_pickle:
        raise ModelError(
            f"{folder} holds only pickle weights (*.bin), which can run arbitrary code when loaded",
            "convert it to safetensors, or pass allow_pickle=True / --allow-pickle if you trust it",
        )
    if not has_safetensors and not has_pickle:
        raise ModelError(f"{folder} has no weights (*.safetensors)", "pass a complete model folder")
