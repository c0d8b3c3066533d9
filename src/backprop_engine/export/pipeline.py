"""Run directory → merged model → GGUF (f16/f32) → quantized GGUF → checked in llama.cpp."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError
from ..events import EventBus, ExportProgress
from ..fsutil import atomic_write_text
from ..paths import safe_name
from ..presets import resolve_model
from ..rundir import RunDir
from .gguf_writer import convert_hf_to_gguf
from .merge import merge_adapter
from .quantize import DIRECT_TYPES, check_quantization, quantize_gguf

PROBE_TEXT = "Hello world! Arr, matey: 12 + 30 = 42.\n  Yo ho ho!"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    quantization: str
    size_bytes: int


def export_run(run: RunDir, quantization: str = "q4_k_m", name: str | None = None, bus: EventBus | None = None) -> ExportResult:
    quantization = check_quantization(quantization)
    name = safe_name(name or run.path.name, "export name")
    bus = bus or EventBus()
    merged = ensure_merged(run, bus)
    target = run.export / f"{name}.{quantization}.gguf"
    if quantization in DIRECT_TYPES:
        bus.emit(ExportProgress("convert", f"writing {quantization} GGUF"))
        convert_hf_to_gguf(merged, target, quantization, name=name)
    else:
        intermediate = run.export / f".{name}.f16.gguf"
        bus.emit(ExportProgress("convert", "writing f16 GGUF"))
        convert_hf_to_gguf(merged, intermediate, "f16", name=name)
        try:
            bus.emit(ExportProgress("quantize", f"f16 -> {quantization} with llama.cpp"))
            for note in quantize_gguf(intermediate, target, quantization):
                bus.emit(ExportProgress("quantize", note))
        finally:
            intermediate.unlink(missing_ok=True)
    bus.emit(ExportProgress("verify", "loading the GGUF in llama.cpp"))
    verify_gguf(target, merged)
    bus.emit(ExportProgress("done", f"{target} ({target.stat().st_size / 2**20:.1f} MiB)"))
    return ExportResult(target, quantization, target.stat().st_size)


def ensure_merged(run: RunDir, bus: EventBus | None = None) -> Path:
    """Merge once per adapter: the merged folder records the adapter's hash and is reused while it matches."""
    bus = bus or EventBus()
    if not (run.adapter / "adapter_config.json").is_file():
        raise ExportError(f"{run.path}: the run has no trained adapter", "finish `backprop train` before exporting")
    base_path = resolve_model(run.read_config().model).path
    digest = _adapter_digest(run.adapter)
    stamp = run.merged / "backprop_merge.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("adapter_sha256") == digest:
        bus.emit(ExportProgress("merge", "reusing merged model"))
        return run.merged
    bus.emit(ExportProgress("merge", "merging the adapter into the base model"))
    merge_adapter(base_path, run.adapter, run.merged)
    atomic_write_text(stamp, json.dumps({"adapter_sha256": digest, "base": str(base_path)}))
    return run.merged


def _adapter_digest(adapter: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(adapter.glob("adapter_*")):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def verify_gguf(path: Path, hf_dir: Path) -> None:
    """The file loads in llama.cpp, tokenizes a probe exactly like the HF tokenizer, and generates."""
    from ..modeling import load_tokenizer
    from .chat import open_gguf

    expected = load_tokenizer(hf_dir)(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    llm = open_gguf(path, n_ctx=256)
    try:
        actual = llm.tokenize(PROBE_TEXT.encode(), add_bos=False, special=True)
        if actual != expected:
            raise ExportError(f"{path.name}: llama.cpp tokenizes differently from the HF tokenizer", "please report this model")
        llm.create_completion(PROBE_TEXT, max_tokens=4, temperature=0.0)
    finally:
        llm.close()
