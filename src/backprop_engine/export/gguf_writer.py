"""Our own HF → GGUF converter on top of the ``gguf`` package, for the architectures of our presets.

Tensors are streamed: the header is written from safetensors metadata alone, then each tensor is read,
converted and written before the next one is touched, so peak memory stays near the largest tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..fsutil import atomic_path

SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
}
SKIPPED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass(frozen=True)
class TensorSource:
    hf_name: str
    gguf_name: str
    file: Path
    shape: tuple[int, ...]


def convert_hf_to_gguf(model_dir: Path, out_path: Path, out_type: str = "f16", name: str | None = None) -> Path:
    """Write ``model_dir`` (a merged HF model with safetensors) as a GGUF file of type f32 or f16."""
    import gguf

    if out_type not in ("f32", "f16"):
        raise ExportError(f"the converter writes f32 or f16, not {out_type!r}", "quantize the f16 file with llama.cpp")
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    arch = _architecture(config, model_dir)
    hparams = _HParams.from_config(config)
    sources = _tensor_sources(model_dir, arch, hparams.block_count)

    writer = gguf.GGUFWriter(path=None, arch=arch)
    _add_metadata(writer, hparams, name or model_dir.name, out_type)
    _add_tokenizer(writer, model_dir, arch, hparams.vocab_size)
    for source in sources:
        dtype = _out_dtype(source, out_type)
        writer.add_tensor_info(source.gguf_name, source.shape, dtype, int(np.prod(source.shape)) * dtype.itemsize)

    with atomic_path(Path(out_path)) as tmp:
        writer.open_output_file(tmp)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for source in sources:
            writer.write_tensor_data(_load_tensor(source, arch, hparams, out_type))
        writer.close()
    return Path(out_path)


@dataclass(frozen=True)
class _HParams:
    vocab_size: int
    context_length: int
    embedding_length: int
    block_count: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float

    @classmethod
    def from_config(cls, config: dict) -> _HParams:
        heads = config["num_attention_heads"]
        rope = config.get("rope_parameters") or {}
        return cls(
            vocab_size=config["vocab_size"],
            context_length=config.get("max_position_embeddings", 2048),
            embedding_length=config["hidden_size"],
            block_count=config["num_hidden_layers"],
            feed_forward_length=config["intermediate_size"],
            head_count=heads,
            head_count_kv=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            rms_norm_eps=config.get("rms_norm_eps", 1e-6),
            rope_theta=rope.get("rope_theta") or config.get("rope_theta", 10000.0),
        )


def _architecture(config: dict, model_dir: Path) -> str:
    for name in config.get("architectures") or []:
        if name in SUPPORTED_ARCHITECTURES:
            if (config.get("rope_parameters") or {}).get("rope_type", "default") != "default":
                raise ExportError(f"{model_dir}: rope scaling is not supported by the converter yet")
            return SUPPORTED_ARCHITECTURES[name]
    raise ExportError(
        f"{model_dir}: architecture {config.get('architectures')} cannot be converted to GGUF yet",
        f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}",
    )


def _add_metadata(writer, hp: _HParams, name: str, out_type: str) -> None:
    import gguf

    writer.add_name(name)
    writer.add_context_length(hp.context_length)
    writer.add_embedding_length(hp.embedding_length)
    writer.add_block_count(hp.block_count)
    writer.add_feed_forward_length(hp.feed_forward_length)
    writer.add_head_count(hp.head_count)
    writer.add_head_count_kv(hp.head_count_kv)
    writer.add_rope_dimension_count(hp.head_dim)
    writer.add_key_length(hp.head_dim)
    writer.add_value_length(hp.head_dim)
    writer.add_layer_norm_rms_eps(hp.rms_norm_eps)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_vocab_size(hp.vocab_size)
    file_type = gguf.LlamaFileType.ALL_F32 if out_type == "f32" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


# Pre-tokenizer split patterns we recognise, and the name llama.cpp knows them by.
_GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
_PRE_TOKENIZERS = {
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "qwen2",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "llama-bpe",
}


def _pre_tokenizer_name(tokenizer_json: dict, model_dir: Path) -> str:
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for step in steps:
        if step.get("type") == "ByteLevel" and step.get("use_regex", True):
            return "gpt-2"
        if step.get("type") == "Split":
            pattern = (step.get("pattern") or {}).get("Regex")
            if pattern in _PRE_TOKENIZERS:
                return _PRE_TOKENIZERS[pattern]
    raise ExportError(
        f"{model_dir}: unrecognised byte-level pre-tokenizer; llama.cpp would split text differently",
        "this tokenizer family is not supported by the converter yet",
    )


def _add_tokenizer(writer, model_dir: Path, arch: str, vocab_size: int) -> None:
    import gguf

    tokenizer_path = model_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ExportError(f"{model_dir}: no tokenizer.json", "only byte-level BPE tokenizers are supported so far")
    tokenizer_json = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    if (tokenizer_json.get("model") or {}).get("type") != "BPE":
        raise ExportError(f"{model_dir}: tokenizer is not BPE", "SentencePiece vocabularies are not supported yet")

    tokens, types = _vocabulary(tokenizer_json, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer_name(tokenizer_json, model_dir))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    special.add_to_gguf(writer)


def _vocabulary(tokenizer_json: dict, vocab_size: int) -> tuple[list[str], list[int]]:
    import gguf

    by_id: dict[int, tuple[str, int]] = {i: (t, gguf.TokenType.NORMAL) for t, i in tokenizer_json["model"]["vocab"].items()}
    for added in tokenizer_json.get("added_tokens", []):
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for token_id in range(size):
        token, kind = by_id.get(token_id, (f"[PAD{token_id}]", gguf.TokenType.UNUSED))
        tokens.append(token)
        types.append(int(kind))
    return tokens, types


def _tensor_sources(model_dir: Path, arch: str, block_count: int) -> list[TensorSource]:
    import gguf
    from safetensors import safe_open

    arch_enum = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}[arch]
    name_map = gguf.get_tensor_name_map(arch_enum, block_count)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir}: no safetensors weights to convert")
    sources = []
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for hf_name in handle.keys():
                if hf_name.endswith(SKIPPED_TENSOR_SUFFIXES):
                    continue
                gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise ExportError(f"{file.name}: no GGUF name for tensor {hf_name!r}")
                shape = tuple(handle.get_slice(hf_name).get_shape())
                sources.append(TensorSource(hf_name, gguf_name, file, shape))
    return sources


def _out_dtype(source: TensorSource, out_type: str) -> np.dtype:
    # llama.cpp keeps norms and biases (1-D) in f32 whatever the file type.
    if out_type == "f16" and len(source.shape) > 1:
        return np.dtype(np.float16)
    return np.dtype(np.float32)


def _load_tensor(source: TensorSource, arch: str, hp: _HParams, out_type: str) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(source.file, framework="pt") as handle:
        array = handle.get_tensor(source.hf_name).float().numpy()
    if arch == "llama" and source.gguf_name.endswith("attn_q.weight"):
        array = permute_rotary(array, hp.head_count)
    elif arch == "llama" and source.gguf_name.endswith("attn_k.weight"):
        array = permute_rotary(array, hp.head_count_kv)
    return np.ascontiguousarray(array.astype(_out_dtype(source, out_type)))


def permute_rotary(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder rows of q/k from HF's rotate-half layout to llama.cpp's interleaved rotary layout."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )
