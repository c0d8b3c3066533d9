"""Our own HF → GGUF converter on top of the ``gguf`` package, for the architectures of our presets.

Tensors are streamed: the header is written from safetensors metadata alone (one or several shards), then
each tensor is read, converted and written before the next one is touched, so peak memory stays near the
largest tensor. Vocabularies: byte-level BPE (``gpt2`` with the family's ``pre`` name) and SentencePiece-style
BPE with byte fallback (``llama``: scores, byte and control tokens), both read from ``tokenizer.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..fsutil import atomic_path
from ..progress import track

SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
}
SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")
SKIPPED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)
ROPE_FREQS = "rope_freqs.weight"  # llama.cpp's name for Llama 3.x's per-frequency rope scaling factors


@dataclass(frozen=True)
class TensorSource:
    hf_name: str
    gguf_name: str
    file: Path
    shape: tuple[int, ...]


def convert_hf_to_gguf(
    model_dir: Path, out_path: Path, out_type: str = "f16", name: str | None = None
) -> Path:
    """Write ``model_dir`` (a merged HF model with safetensors) as a GGUF file of type f32 or f16."""
    import gguf

    if out_type not in ("f32", "f16"):
        raise ExportError(
            f"the converter writes f32 or f16, not {out_type!r}", "quantize the f16 file with llama.cpp"
        )
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    arch = _architecture(config, model_dir)
    hparams = _HParams.from_config(config)
    sources = _tensor_sources(model_dir, arch, hparams.block_count)
    rope_factors = llama3_rope_factors(hparams)

    writer = gguf.GGUFWriter(path=None, arch=arch)
    _add_metadata(writer, hparams, name or model_dir.name, out_type)
    _add_tokenizer(writer, model_dir, arch, hparams.vocab_size)
    if rope_factors is not None:
        writer.add_tensor_info(ROPE_FREQS, rope_factors.shape, rope_factors.dtype, rope_factors.nbytes)
    sizes = []
    for source in sources:
        dtype = _out_dtype(source, out_type)
        sizes.append(int(np.prod(source.shape)) * dtype.itemsize)
        writer.add_tensor_info(source.gguf_name, source.shape, dtype, sizes[-1])

    kept = f"no partial {Path(out_path).name} was left (it is written under a temporary name)"
    with atomic_path(Path(out_path)) as tmp, track("convert", sum(sizes), kept=kept) as written:
        writer.open_output_file(tmp)
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            if rope_factors is not None:
                writer.write_tensor_data(rope_factors)
            for source, size in zip(sources, sizes):
                writer.write_tensor_data(_load_tensor(source, arch, hparams, out_type))
                written.advance(size)
        finally:
            writer.close()  # on a stop too: the temporary file is removed, its descriptor with it
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
    rope: dict  # of the full-attention layers (Gemma 3 has another theta for its sliding-window layers)
    rope_theta_swa: float | None = None
    sliding_window: int | None = None
    sliding_layers: tuple[bool, ...] | None = None  # Gemma 3: which layers use the sliding window
    final_logit_softcapping: float | None = None

    @classmethod
    def from_config(cls, config: dict) -> _HParams:
        heads = config["num_attention_heads"]
        parameters = config.get("rope_parameters") or {}
        rope = parameters.get("full_attention", parameters)
        gemma = config.get("model_type") == "gemma3_text"
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
            rope=rope or config.get("rope_scaling") or {},
            rope_theta_swa=(parameters.get("sliding_attention") or {}).get("rope_theta"),
            sliding_window=config.get("sliding_window") if gemma else None,
            sliding_layers=tuple(t == "sliding_attention" for t in config.get("layer_types") or [])
            if gemma
            else None,
            final_logit_softcapping=config.get("final_logit_softcapping"),
        )


def _architecture(config: dict, model_dir: Path) -> str:
    for name in config.get("architectures") or []:
        if name in SUPPORTED_ARCHITECTURES:
            rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
            rope = rope.get("full_attention", rope)
            rope_type = rope.get("rope_type") or rope.get("type") or "default"
            if rope_type not in SUPPORTED_ROPE_TYPES:
                raise ExportError(
                    f"{model_dir}: rope scaling {rope_type!r} is not supported by the converter",
                    f"supported: {', '.join(SUPPORTED_ROPE_TYPES)}",
                )
            _check_gemma3_attention(config, model_dir)
            return SUPPORTED_ARCHITECTURES[name]
    raise ExportError(
        f"{model_dir}: architecture {config.get('architectures')} cannot be converted to GGUF yet",
        f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}",
    )


def _check_gemma3_attention(config: dict, model_dir: Path) -> None:
    """llama.cpp scales Gemma 3's queries by 1/sqrt(head_dim) (but for the 27B) and has no attention softcap."""
    if config.get("model_type") != "gemma3_text":
        return
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    if config.get("query_pre_attn_scalar", head_dim) != head_dim or config.get("attn_logit_softcapping"):
        raise ExportError(
            f"{model_dir}: this Gemma 3 variant (query_pre_attn_scalar {config.get('query_pre_attn_scalar')}, "
            f"head_dim {head_dim}) is not supported by the converter",
            "supported: Gemma 3 text models such as 270M and 1B (Gemma3ForCausalLM)",
        )


def llama3_rope_factors(hp: _HParams) -> np.ndarray | None:
    """Llama 3.x rope scaling as per-frequency divisors: long wavelengths are stretched by ``factor``, short
    ones kept, and the band between blended smoothly (the schedule HF applies to ``inv_freq``), computed in
    float32 as HF and llama.cpp's converter compute it, so the factors match theirs to the bit."""
    import torch

    if (hp.rope.get("rope_type") or hp.rope.get("type")) != "llama3":
        return None
    factor = hp.rope["factor"]
    low, high = hp.rope.get("low_freq_factor", 1.0), hp.rope.get("high_freq_factor", 4.0)
    original = hp.rope["original_max_position_embeddings"]
    frequencies = 1.0 / (
        hp.rope_theta ** (torch.arange(0, hp.head_dim, 2, dtype=torch.float32) / hp.head_dim)
    )
    factors = []
    for frequency in frequencies:
        wavelength = 2 * math.pi / frequency
        if wavelength < original / high:
            factors.append(1.0)
        elif wavelength > original / low:
            factors.append(factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            factors.append(float(1 / ((1 - smooth) / factor + smooth)))
    return torch.tensor(factors, dtype=torch.float32).numpy()


def model_parameter_count(model_dir: Path) -> int:
    """Number of weights in a model folder, from the safetensors headers alone."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            total += sum(int(np.prod(handle.get_slice(key).get_shape())) for key in handle.keys())  # noqa: SIM118 - safe_open is no dict
    return total


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
    if (hp.rope.get("rope_type") or hp.rope.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(hp.rope["factor"])
    if hp.rope_theta_swa is not None:
        writer.add_rope_freq_base_swa(hp.rope_theta_swa)
    if hp.sliding_window is not None:
        writer.add_sliding_window(hp.sliding_window)
        # llama.cpp assumes Gemma 3's five sliding layers then one global; say so when a model differs.
        if hp.sliding_layers and hp.sliding_layers != tuple((i + 1) % 6 != 0 for i in range(hp.block_count)):
            writer.add_sliding_window_pattern(list(hp.sliding_layers))
    if hp.final_logit_softcapping:
        writer.add_final_logit_softcapping(hp.final_logit_softcapping)
    writer.add_vocab_size(hp.vocab_size)
    file_type = gguf.LlamaFileType.ALL_F32 if out_type == "f32" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


# Pre-tokenizer split patterns we recognise, and the name llama.cpp knows them by.
_GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
_PRE_TOKENIZERS = {
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "qwen2",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "llama-bpe",  # noqa: E501 - the split regex verbatim
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
        raise ExportError(
            f"{model_dir}: no tokenizer.json", "save the tokenizer with a fast (tokenizers) backend"
        )
    tokenizer_json = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        raise ExportError(
            f"{tokenizer_path}: {model.get('type')} vocabularies are not supported",
            "supported: byte-level BPE and SentencePiece-style BPE with byte fallback",
        )
    sentencepiece = bool(model.get("byte_fallback"))
    tokens, types = _vocabulary(tokenizer_json, vocab_size, sentencepiece)
    if sentencepiece:
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(_sentencepiece_scores(tokens, model.get("merges") or []))
        writer.add_token_types(types)
        writer.add_add_space_prefix(_adds_space_prefix(tokenizer_json))
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_pre_tokenizer_name(tokenizer_json, model_dir))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=not sentencepiece, n_vocab=len(tokens))
    special.add_to_gguf(writer)


def _vocabulary(tokenizer_json: dict, vocab_size: int, sentencepiece: bool) -> tuple[list[str], list[int]]:
    import gguf

    by_id: dict[int, tuple[str, int]] = {}
    for token, token_id in tokenizer_json["model"]["vocab"].items():
        kind = gguf.TokenType.NORMAL
        if sentencepiece and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            kind = gguf.TokenType.BYTE
        by_id[token_id] = (token, kind)
    unk = tokenizer_json["model"].get("unk_token")
    for added in tokenizer_json.get("added_tokens", []):
        content = added["content"]
        if added.get("special") or looks_special(content):
            kind = gguf.TokenType.CONTROL
        else:  # llama.cpp matches user-defined tokens pre-normalized
            kind, content = gguf.TokenType.USER_DEFINED, content.replace("▁", " ")
        if sentencepiece and content == unk:
            kind = gguf.TokenType.UNKNOWN
        by_id[added["id"]] = (content, kind)
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for token_id in range(size):
        token, kind = by_id.get(token_id, (f"[PAD{token_id}]", gguf.TokenType.UNUSED))
        tokens.append(token)
        types.append(int(kind))
    return tokens, types


def looks_special(token: str) -> bool:
    """Added tokens that models use as control tokens without flagging them special (Qwen2.5's ``<|fim_*|>``,
    ``<|repo_name|>``, Gemma's ``<mask>`` and ``<unusedN>``): llama.cpp's converter writes them as control
    tokens, which its tokenizer matches only in special-token parsing, never inside plain text."""
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def _sentencepiece_scores(tokens: list[str], merges: list) -> list[float]:
    """llama.cpp's SentencePiece tokenizer merges the adjacent pair whose joined piece scores highest; HF's BPE
    applies merges by rank. Scoring each piece by minus the rank of the first merge that makes it gives both the
    same order. Pieces no merge makes (characters, bytes, control tokens) are never merge results: score 0."""
    rank: dict[str, int] = {}
    for index, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, index)
    return [-float(rank[token]) if token in rank else 0.0 for token in tokens]


def _adds_space_prefix(tokenizer_json: dict) -> bool:
    """SentencePiece's dummy prefix: a "▁" prepended by the normalizer or the Metaspace pre-tokenizer."""

    def steps(part: dict | None, key: str) -> list[dict]:
        part = part or {}
        return part.get(key, [part]) if part.get("type") == "Sequence" else [part]

    normalizers = steps(tokenizer_json.get("normalizer"), "normalizers")
    pre_tokenizers = steps(tokenizer_json.get("pre_tokenizer"), "pretokenizers")
    return any(n.get("type") == "Prepend" for n in normalizers) or any(
        p.get("type") == "Metaspace" and p.get("prepend_scheme", "always") != "never" for p in pre_tokenizers
    )


def tensor_name_map(arch: str, block_count: int):
    """The ``gguf`` package's HF → GGUF tensor names for one of our architectures."""
    import gguf

    arch_enum = {
        "llama": gguf.MODEL_ARCH.LLAMA,
        "qwen2": gguf.MODEL_ARCH.QWEN2,
        "qwen3": gguf.MODEL_ARCH.QWEN3,
        "gemma3": gguf.MODEL_ARCH.GEMMA3,
    }[arch]
    return gguf.get_tensor_name_map(arch_enum, block_count)


def _tensor_sources(model_dir: Path, arch: str, block_count: int) -> list[TensorSource]:
    from safetensors import safe_open

    name_map = tensor_name_map(arch, block_count)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir}: no safetensors weights to convert")
    sources = []
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for hf_name in handle.keys():  # noqa: SIM118 - safe_open is no dict
                if hf_name.endswith(SKIPPED_TENSOR_SUFFIXES):
                    continue
                gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise ExportError(f"{file.name}: no GGUF name for tensor {hf_name!r}")
                shape = tuple(handle.get_slice(hf_name).get_shape())
                if arch == "gemma3" and gguf_name == "token_embd.weight":
                    shape = (min(shape[0], _gemma_vocab_rows(model_dir)), *shape[1:])
                sources.append(TensorSource(hf_name, gguf_name, file, shape))
    return sources


def _gemma_vocab_rows(model_dir: Path) -> int:
    """llama.cpp drops Gemma's embedding rows past the tokenizer's entries (vocab plus added tokens, counted
    as its converter counts them)."""
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    return len(tokenizer_json["model"]["vocab"]) + len(tokenizer_json.get("added_tokens", []))


def _out_dtype(source: TensorSource, out_type: str) -> np.dtype:
    # llama.cpp keeps norms and biases (1-D) in f32 whatever the file type.
    if out_type == "f16" and len(source.shape) > 1:
        return np.dtype(np.float16)
    return np.dtype(np.float32)


def _load_tensor(source: TensorSource, arch: str, hp: _HParams, out_type: str) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(source.file, framework="pt") as handle:
        array = handle.get_tensor(source.hf_name).float().numpy()[: source.shape[0]]
    if arch == "gemma3" and source.hf_name.endswith("norm.weight"):
        array = array + np.float32(1.0)  # Gemma's RMSNorm scales by (1 + weight); llama.cpp's by the weight
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
