"""Random-init checkpoints for the benchmarks: any architecture from its config dict (the real SmolLM2 and
Gemma 3 configs in bench/gpu_check.py), or a Llama of a chosen size sharing the built-in tiny model's tokenizer."""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def build_random_model(
    folder: Path, config: dict, tokenizer_from: Path | None = None, bf16: bool = False
) -> Path:
    """A causal LM with ``config``'s exact shapes and random weights, saved as safetensors in ``folder``; the
    tokenizer files are copied from ``tokenizer_from`` (None: ``folder`` already holds them)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from backprop_engine.modeling import quiet_transformers

    quiet_transformers()
    settings = {k: v for k, v in config.items() if k != "model_type"}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(config["model_type"], **settings))
    (model.to(torch.bfloat16) if bf16 else model).save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES if tokenizer_from else ():
        if (tokenizer_from / name).is_file():
            shutil.copy2(tokenizer_from / name, folder / name)
    return folder


def build_random_llama(
    folder: Path,
    *,
    vocab_size: int,
    hidden_size: int,
    intermediate_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    bf16: bool = False,
) -> Path:
    from backprop_engine import resolve_model

    config = {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": 2048,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "bos_token_id": None,
        "tie_word_embeddings": False,
    }
    return build_random_model(folder, config, resolve_model("tiny").path, bf16)
