"""Loading tokenizers, base models and adapters (heavy imports stay inside the functions)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from .errors import ModelError


def quiet_transformers() -> None:
    """Our own events report progress; silence library progress bars and info logs."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # bitsandbytes (imported by peft when installed) logs about an optional hub-downloaded CPU kernel.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    # QLoRA on CPU backpropagates through bitsandbytes' gemv_4bit via torch's fallback; the gradients are
    # checked against a dequantized twin in tests/test_methods.py.
    warnings.filterwarnings(
        "ignore", message="bitsandbytes::gemv_4bit: an autograd kernel was not registered"
    )
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from .progress import hook_transformers

    hook_transformers()


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str):
    import torch

    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    """The tokenizer as saved with the model (a pad token is borrowed from EOS when missing)."""
    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{path}: cannot load tokenizer ({exc})", "the folder needs tokenizer.json or tokenizer files"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_context(path: Path, tokenizer) -> int:
    """The longest sequence the model supports (its position embeddings), else the tokenizer's limit."""
    from transformers import AutoConfig

    positions = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
    limit = tokenizer.model_max_length if tokenizer.model_max_length < 10**9 else None
    return positions or limit or 2048


def load_base_model(
    path: Path, device: str = "cpu", dtype=None, trust_remote_code: bool = False, four_bit: bool = False
):
    """The model in ``dtype``; ``four_bit`` quantizes its linear layers to bitsandbytes nf4 with double
    quantization (QLoRA), computing in ``dtype``. bitsandbytes runs this on the CPU too."""
    quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM

    extra = {}
    if four_bit:
        from transformers import BitsAndBytesConfig

        extra["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype or torch.float32,
        )
        extra["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dtype or torch.float32,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            **extra,
        )
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{path}: cannot load model ({exc})", "pass a causal-LM folder with safetensors weights"
        ) from None
    if four_bit and device == "cpu":
        _own_unquantized_tensors(model)
    return model if four_bit else model.to(device)


def _own_unquantized_tensors(model) -> None:
    """On the CPU the tensors QLoRA leaves unquantized (embeddings, norms) are views of the memory-mapped
    checkpoint, which keeps every page of it that quantizing read resident: copies release the file (SmolLM2:
    -300 MB of RSS, bench/memory.py --real). The file's pages are handed back before and while the copies are
    made, so the file is never resident beside them (Gemma-3-270M: the load peaked at its whole 1 GB file plus
    the 0.7 GB embedding copy). Tensors the loader already copied (a 16-bit file) are kept as they are."""
    mappings = _checkpoint_mappings()
    for low, high, clean in mappings:  # the pages no copy needs (the quantized weights' sources) go first
        if clean:
            _release_pages(low, high)
    copies: dict[tuple, object] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():  # not the packed 4-bit weights
            key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
            if key not in copies:
                copies[key] = _own_copy(tensor.data, mappings)
            tensor.data = copies[key]


COPY_CHUNK_BYTES = 64 * 2**20


def _own_copy(tensor, mappings: list[tuple[int, int, bool]]):
    """``tensor`` in memory of its own: as it is when it is not in a checkpoint mapping, else a copy; from a
    clean mapping, whose pages are handed back chunk by chunk as they are copied."""
    import torch

    start = tensor.data_ptr()
    mapping = next((m for m in mappings if m[0] <= start < m[1]), None)
    if mapping is None:
        return tensor
    if not mapping[2] or not tensor.is_contiguous():
        return tensor.clone()
    source, copy = tensor.view(-1), torch.empty_like(tensor)
    size, step = tensor.element_size(), max(1, COPY_CHUNK_BYTES // tensor.element_size())
    for first in range(0, source.numel(), step):
        last = min(source.numel(), first + step)
        copy.view(-1)[first:last] = source[first:last]
        _release_pages(start + first * size, start + last * size)
    return copy


def _checkpoint_mappings() -> list[tuple[int, int, bool]]:
    """Address ranges of the process's safetensors mappings, and whether each is clean: it holds no page of
    its own (nothing was written to it), so dropping a page loses nothing (touching it again reads it back
    from the file). Linux only; none elsewhere."""
    try:
        smaps = Path("/proc/self/smaps").read_text()
    except OSError:
        return []
    ranges, current = [], None
    for line in smaps.splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            low, high = (int(x, 16) for x in fields[0].split("-"))
            current = (low, high) if fields[-1].endswith(".safetensors") else None
        elif current is not None and fields[0] == "Anonymous:":
            ranges.append((*current, fields[1] == "0"))
            current = None
    return ranges


def _release_pages(low: int, high: int) -> None:
    """``madvise(MADV_DONTNEED)`` on the whole pages inside [low, high) of a file mapping: they leave the
    process's RSS and are read back from the file if touched again."""
    import ctypes
    import mmap

    first = -(-low // mmap.PAGESIZE) * mmap.PAGESIZE
    last = high // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), mmap.MADV_DONTNEED)


def load_adapted_model(base_path: Path, adapter_path: Path, device: str = "cpu", dtype=None):
    from peft import PeftModel

    base = load_base_model(base_path, device, dtype)
    return PeftModel.from_pretrained(base, adapter_path).to(device)
