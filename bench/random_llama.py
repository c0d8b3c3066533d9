"""Random-init Llama checkpoints for the benchmarks, sharing the built-in tiny model's tokenizer."""

from __future__ import annotations

import shutil
from pathlib import Path


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
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from backprop_engine import resolve_model
    from backprop_engine.modeling import quiet_transformers

    quiet_transformers()
    tiny = resolve_model("tiny").path
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=2048,
        eos_token_id=2,
        pad_token_id=0,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    (model.to(torch.bfloat16) if bf16 else model).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (tiny / name).is_file():
            shutil.copy2(tiny / name, folder / name)
    return folder
