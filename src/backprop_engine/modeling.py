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
    -300 MB of RSS, bench/memory.py --real)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():  # not the packed 4-bit weights
            tensor.data = tensor.data.clone()


def load_adapted_model(base_path: Path, adapter_path: Path, device: str = "cpu", dtype=None):
    from peft import PeftModel

    base = load_base_model(base_path, device, dtype)
    return PeftModel.from_pretrained(base, adapter_path).to(device)
