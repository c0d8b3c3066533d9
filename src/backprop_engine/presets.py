"""Model presets and resolution of a model name (preset, local folder or hub id) to a local folder."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .gguf_source import dequantized_folder, is_gguf_model, locate
from .paths import cache_dir
from .tiny import TINY_SPECS, ensure_tiny_model

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelFacts:
    """The shape of a model: enough to count parameters and estimate training memory without loading it."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    context_length: int
    tied_embeddings: bool
    attention_head_dim: int = 0  # 0: hidden_size // num_heads (Gemma 3 and Qwen3 set their own)

    @property
    def head_dim(self) -> int:
        return self.attention_head_dim or self.hidden_size // self.num_heads

    @property
    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear module of one decoder layer, by its usual HF name."""
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        i = self.intermediate_size
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def kquant_warning(self) -> str | None:
        """k-quants (q4_k_m, q6_k, ...) pack rows in blocks of 256: llama.cpp gives other widths q5_0/q8_0."""
        if self.hidden_size % 256 == 0:
            return None
        return f"width {self.hidden_size} is not a multiple of 256: k-quants fall back to q5_0/q8_0 for most tensors"

    @property
    def layer_linear_params(self) -> int:
        return sum(a * b for a, b in self.linear_shapes.values())

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def parameter_count(self) -> int:
        norms = (2 * self.num_layers + 1) * self.hidden_size
        return self.num_layers * self.layer_linear_params + self.embedding_params + norms

    @classmethod
    def from_config(cls, config: dict) -> ModelFacts:
        heads = config["num_attention_heads"]
        return cls(
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            vocab_size=config["vocab_size"],
            context_length=config.get("max_position_embeddings", 2048),
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_head_dim=0
            if config.get("head_dim") in (None, config["hidden_size"] // heads)
            else config["head_dim"],
        )


@dataclass(frozen=True)
class Preset:
    name: str
    source: str  # hub id, or "builtin" for the tiny models built locally
    architecture: str  # HF model_type
    chat_family: str  # chatml, llama3, mistral, gemma, qwen3 (ChatML with a thinking mode)
    facts: ModelFacts
    quantized_source: str | None = None  # a pre-quantized 4-bit (bitsandbytes nf4) checkpoint for QLoRA
    lora_targets: tuple[str, ...] = ALL_LINEAR

    @property
    def params_billion(self) -> float:
        return self.facts.parameter_count / 1e9

    @property
    def context_length(self) -> int:
        return self.facts.context_length


def _facts(hidden, intermediate, layers, heads, kv_heads, vocab, context, tied, head_dim=0) -> ModelFacts:
    return ModelFacts(hidden, intermediate, layers, heads, kv_heads, vocab, context, tied, head_dim)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("tiny", "builtin", "llama", "chatml", _facts(256, 768, 2, 4, 2, 1536, 2048, False)),
        Preset("tiny-qwen2", "builtin", "qwen2", "chatml", _facts(256, 768, 2, 4, 2, 1536, 2048, True)),
        Preset(
            "qwen2.5-0.5b",
            "Qwen/Qwen2.5-0.5B-Instruct",
            "qwen2",
            "chatml",
            _facts(896, 4864, 24, 14, 2, 151936, 32768, True),
            "unsloth/Qwen2.5-0.5B-Instruct-bnb-4bit",
        ),
        Preset(
            "qwen2.5-1.5b",
            "Qwen/Qwen2.5-1.5B-Instruct",
            "qwen2",
            "chatml",
            _facts(1536, 8960, 28, 12, 2, 151936, 32768, True),
            "unsloth/Qwen2.5-1.5B-Instruct-bnb-4bit",
        ),
        Preset(
            "qwen2.5-3b",
            "Qwen/Qwen2.5-3B-Instruct",
            "qwen2",
            "chatml",
            _facts(2048, 11008, 36, 16, 2, 151936, 32768, True),
            "unsloth/Qwen2.5-3B-Instruct-bnb-4bit",
        ),
        Preset(
            "qwen2.5-7b",
            "Qwen/Qwen2.5-7B-Instruct",
            "qwen2",
            "chatml",
            _facts(3584, 18944, 28, 28, 4, 152064, 32768, False),
            "unsloth/Qwen2.5-7B-Instruct-bnb-4bit",
        ),
        Preset(
            "llama-3.2-1b",
            "meta-llama/Llama-3.2-1B-Instruct",
            "llama",
            "llama3",
            _facts(2048, 8192, 16, 32, 8, 128256, 131072, True),
            "unsloth/Llama-3.2-1B-Instruct-bnb-4bit",
        ),
        Preset(
            "llama-3.2-3b",
            "meta-llama/Llama-3.2-3B-Instruct",
            "llama",
            "llama3",
            _facts(3072, 8192, 28, 24, 8, 128256, 131072, True),
            "unsloth/Llama-3.2-3B-Instruct-bnb-4bit",
        ),
        Preset(
            "mistral-7b",
            "mistralai/Mistral-7B-Instruct-v0.3",
            "mistral",
            "mistral",
            _facts(4096, 14336, 32, 32, 8, 32768, 32768, False),
            "unsloth/mistral-7b-instruct-v0.3-bnb-4bit",
        ),
        Preset(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "llama",
            "chatml",
            _facts(576, 1536, 30, 9, 3, 49152, 8192, True),
        ),
        Preset(
            "smollm2-360m",
            "HuggingFaceTB/SmolLM2-360M-Instruct",
            "llama",
            "chatml",
            _facts(960, 2560, 32, 15, 5, 49152, 8192, True),
        ),
        Preset(
            "smollm2-1.7b",
            "HuggingFaceTB/SmolLM2-1.7B-Instruct",
            "llama",
            "chatml",
            _facts(2048, 8192, 24, 32, 32, 49152, 8192, True),
        ),
        Preset(
            "qwen3-0.6b",
            "Qwen/Qwen3-0.6B",
            "qwen3",
            "qwen3",
            _facts(1024, 3072, 28, 16, 8, 151936, 40960, True, head_dim=128),
        ),
        Preset(
            "qwen3-1.7b",
            "Qwen/Qwen3-1.7B",
            "qwen3",
            "qwen3",
            _facts(2048, 6144, 28, 16, 8, 151936, 40960, True, head_dim=128),
        ),
        Preset(
            "qwen3-4b",
            "Qwen/Qwen3-4B",
            "qwen3",
            "qwen3",
            _facts(2560, 9728, 36, 32, 8, 151936, 40960, True, head_dim=128),
        ),
        Preset(
            "qwen3-8b",
            "Qwen/Qwen3-8B",
            "qwen3",
            "qwen3",
            _facts(4096, 12288, 36, 32, 8, 151936, 40960, False, head_dim=128),
        ),
        Preset(
            "gemma-3-270m",
            "google/gemma-3-270m-it",
            "gemma3",
            "gemma",
            _facts(640, 2048, 18, 4, 1, 262144, 32768, True, head_dim=256),
        ),
        Preset(
            "gemma-3-1b",
            "google/gemma-3-1b-it",
            "gemma3",
            "gemma",
            _facts(1152, 6912, 26, 4, 1, 262144, 32768, True, head_dim=256),
        ),
        Preset(
            "gemma-3-4b",
            "google/gemma-3-4b-it",
            "gemma3",
            "gemma",
            _facts(2560, 10240, 34, 8, 4, 262208, 131072, True, head_dim=256),
        ),
    ]
}


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for (preset name, path, hub id, GGUF file or ollama:NAME)
    path: Path  # local folder with config.json, tokenizer and safetensors weights
    quantized_from: str | None = (
        None  # a GGUF's quantization (e.g. Q4_1) when the folder was dequantized from it
    )


def model_facts(name: str) -> ModelFacts | None:
    """The facts of a preset or of a model folder (its config.json); None when they are not known locally."""
    if name in PRESETS:
        return PRESETS[name].facts
    config = Path(name).expanduser() / "config.json"
    try:
        return ModelFacts.from_config(json.loads(config.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError):
        return None


def check_model_name(name: str) -> str:
    """Classify ``name`` without loading or downloading anything: builtin, preset, folder or hub."""
    if name in TINY_SPECS:
        return "builtin"
    if name in PRESETS:
        return "preset"
    if is_gguf_model(name):
        locate(name)
        return "gguf"
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelError(
                f"{local} is not a model folder (no config.json)", "pass a folder saved with save_pretrained"
            )
        return "folder"
    if _HUB_ID.match(name):
        return "hub"
    raise ModelError(
        f"unknown model {name!r}: not a preset, an existing folder or a hub id",
        f"presets: {', '.join(PRESETS)}; or pass a folder with config.json, a .gguf file, ollama:NAME, "
        "or an id like Qwen/Qwen2.5-0.5B-Instruct",
    )


def resolve_model(
    name: str, rebuild: bool = False, allow_pickle: bool = False, trust_remote_code: bool = False
) -> ResolvedModel:
    if name in TINY_SPECS:
        return ResolvedModel(name, ensure_tiny_model(name, cache_dir(), rebuild=rebuild))
    if is_gguf_model(name):
        gguf = locate(name)
        return ResolvedModel(name, dequantized_folder(gguf)[0], gguf.file_type)
    source = PRESETS[name].source if name in PRESETS else name
    local = Path(source).expanduser()
    if local.exists():
        folder = local
    elif _HUB_ID.match(source) and not source.startswith((".", "/")):
        folder = _download(source, allow_pickle, trust_remote_code)
    else:
        raise ModelError(
            f"unknown model {name!r}: not a preset, an existing folder or a hub id",
            f"presets: {', '.join(PRESETS)}; or pass a folder with config.json, or an id like Qwen/Qwen2.5-0.5B-Instruct",
        )
    _check_folder(folder, allow_pickle)
    _check_remote_code(folder, trust_remote_code)
    return ResolvedModel(name, folder)


def _download(repo_id: str, allow_pickle: bool = False, trust_remote_code: bool = False) -> Path:
    from huggingface_hub import snapshot_download

    from .errors import Cancelled
    from .progress import HubDownload

    patterns = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]
    patterns += ["*.bin"] if allow_pickle else []
    patterns += ["*.py"] if trust_remote_code else []
    download = HubDownload()
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=patterns, tqdm_class=download.bar))
        download.finish()
        return path
    except Cancelled:
        raise
    except Exception as exc:  # the hub raises many types: offline, gated, missing, network
        raise ModelError(
            f"could not fetch model {repo_id!r} from the Hugging Face hub: {type(exc).__name__}",
            "check the id and your connection, or unset HF_HUB_OFFLINE; gated models need `hf auth login`",
        ) from None


def _check_folder(folder: Path, allow_pickle: bool) -> None:
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise ModelError(
            f"{folder} is not a model folder (no config.json)", "pass a folder saved with save_pretrained"
        )
    has_safetensors = any(folder.glob("*.safetensors"))
    has_pickle = any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
    if not has_safetensors and has_pickle and not allow_pickle:
        raise ModelError(
            f"{folder} holds only pickle weights (*.bin), which can run arbitrary code when loaded",
            "convert it to safetensors, or pass allow_pickle=True / --allow-pickle if you trust it",
        )
    if not has_safetensors and not has_pickle:
        raise ModelError(f"{folder} has no weights (*.safetensors)", "pass a complete model folder")


def _check_remote_code(folder: Path, trust_remote_code: bool) -> None:
    """A config with ``auto_map`` loads its model class from Python files shipped with the weights."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{folder / 'config.json'}: unreadable ({exc})", "re-download or re-save the model"
        ) from None
    if "auto_map" in config and not trust_remote_code:
        raise ModelError(
            f"{folder} needs trust_remote_code: its config.json maps to Python code shipped with the model",
            "read that code first; then pass --trust-remote-code (trust_remote_code=True) to run it",
        )
