"""Merge a LoRA adapter into its base model and save the result as a plain HF folder.

A base saved 4-/8-bit quantized (bitsandbytes) is dequantized to its compute dtype first: the adapter is
folded into 16/32-bit weights, never into quantized ones, and GGUF conversion sees a plain model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..fsutil import atomic_dir
from ..modeling import load_adapted_model, quiet_transformers
from ..progress import library_loop

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "generation_config.json",
)


def merge_adapter(base_path: Path, adapter_path: Path, out_dir: Path) -> Path:
    """Fold ``adapter_path`` into the base weights (in the base's own dtype) and write ``out_dir`` atomically."""
    if is_quantized(base_path):
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_dequantized(base_path), adapter_path)
    else:
        model = load_adapted_model(base_path, adapter_path, "cpu", dtype="auto")
    with library_loop("peft.tuners.tuners_utils", "merge", "nothing was written; the adapter is unchanged"):
        merged = model.merge_and_unload(progressbar=True)  # its loop over the modules reports the merge
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:  # copied verbatim: a round trip through transformers may rewrite them
            if (Path(base_path) / name).is_file():
                shutil.copy2(Path(base_path) / name, tmp / name)
        _keep_trained_template(Path(adapter_path), tmp)
    return Path(out_dir)


def _keep_trained_template(adapter: Path, merged: Path) -> None:
    """A base without a chat template was trained with the fallback one, saved with the adapter's tokenizer:
    the merged model speaks that format, so it gets that template."""
    from ..modeling import load_tokenizer

    if (adapter / "tokenizer_config.json").is_file() and not load_tokenizer(merged).chat_template:
        template = load_tokenizer(adapter).chat_template
        if template:
            (merged / "chat_template.jinja").write_text(template, encoding="utf-8")


def is_quantized(model_path: Path) -> bool:
    config = json.loads((Path(model_path) / "config.json").read_text())
    return (config.get("quantization_config") or {}).get("quant_method") == "bitsandbytes"


def load_dequantized(model_path: Path):
    """Load a bitsandbytes-quantized checkpoint on the CPU and turn its layers back into plain ``nn.Linear``."""
    quiet_transformers()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, device_map="cpu", use_safetensors=True)
    return model.dequantize()
