"""A PEFT LoRA adapter as a llama.cpp GGUF adapter (what Ollama's ``ADAPTER`` line loads over the base GGUF).

Each adapted weight ``W`` gets ``<gguf name>.lora_a`` (rank × in) and ``.lora_b`` (out × rank); llama.cpp adds
``alpha / rank · B·A``. Llama's q/k rows are permuted for llama.cpp's rotary layout, so their B rows are too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..fsutil import atomic_path
from .gguf_writer import _architecture, _HParams, permute_rotary, tensor_name_map

_PEFT_PREFIX = "base_model.model."


def convert_lora_to_gguf(adapter_dir: Path, base_dir: Path, out_path: Path) -> Path:
    import gguf
    from safetensors import safe_open

    adapter_dir, base_dir = Path(adapter_dir), Path(base_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    _check_plain_lora(config, adapter_dir)
    base_config = json.loads((base_dir / "config.json").read_text())
    arch = _architecture(base_config, base_dir)
    hparams = _HParams.from_config(base_config)
    name_map = tensor_name_map(arch, hparams.block_count)
    # rsLoRA scales by alpha/sqrt(r); llama.cpp by alpha/r, so the alpha written is rescaled to match.
    alpha = config["lora_alpha"] * (math.sqrt(config["r"]) if config.get("use_rslora") else 1.0)

    writer = gguf.GGUFWriter(path=None, arch=arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    with safe_open(adapter_dir / "adapter_model.safetensors", framework="pt") as handle:
        for key in sorted(handle.keys()):
            module, part = _split(key, adapter_dir)
            target = name_map.get_name(module + ".weight", try_suffixes=(".weight",))
            if target is None:
                raise ExportError(f"{adapter_dir}: no GGUF tensor for adapted module {module!r}")
            array = handle.get_tensor(key).float().numpy()
            if part == "lora_b" and arch == "llama" and target.endswith("attn_q.weight"):
                array = permute_rotary(array, hparams.head_count)
            elif part == "lora_b" and arch == "llama" and target.endswith("attn_k.weight"):
                array = permute_rotary(array, hparams.head_count_kv)
            writer.add_tensor(f"{target}.{part}", np.ascontiguousarray(array, dtype=np.float32))
    with atomic_path(Path(out_path)) as tmp:
        writer.open_output_file(tmp)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return Path(out_path)


def _check_plain_lora(config: dict, adapter_dir: Path) -> None:
    unsupported = [
        name
        for name, present in [
            ("DoRA", config.get("use_dora")),
            ("per-module ranks or alphas", config.get("rank_pattern") or config.get("alpha_pattern")),
            ("modules_to_save", config.get("modules_to_save")),
            ("LoRA biases", config.get("lora_bias") or config.get("bias", "none") != "none"),
        ]
        if present
    ]
    if config.get("peft_type") != "LORA" or unsupported:
        raise ExportError(
            f"{adapter_dir}: a llama.cpp LoRA adapter cannot hold {', '.join(unsupported) or config.get('peft_type')}",
            "export the merged model instead (the default)",
        )


def _split(key: str, adapter_dir: Path) -> tuple[str, str]:
    """``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` → (``model.layers.0.self_attn.q_proj``, ``lora_a``)."""
    for marker, part in ((".lora_A.weight", "lora_a"), (".lora_B.weight", "lora_b")):
        if key.endswith(marker):
            return key.removeprefix(_PEFT_PREFIX)[: -len(marker)], part
    raise ExportError(
        f"{adapter_dir}: unexpected adapter tensor {key!r}", "only plain LoRA A/B weights can be converted"
    )
