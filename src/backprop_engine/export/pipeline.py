"""Run directory, adapter or model → merged HF folder → GGUF(s) → verified in llama.cpp → Modelfile → Ollama.

Every file is written under a temporary name and renamed; each GGUF gets a JSON report next to it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import ConfigError, ExportError
from ..events import EventBus, ExportProgress, WarningEvent
from ..fsutil import atomic_write_text
from ..paths import default_runs_dir, ensure_writable_dir, safe_name
from ..presets import resolve_model
from ..progress import current as current_reporter
from ..progress import reporting
from ..quantizations import BITS_PER_WEIGHT, DEFAULT_QUANTIZATION, DIRECT_TYPES
from ..rundir import RunDir
from .gguf_writer import convert_hf_to_gguf, model_parameter_count
from .merge import merge_adapter
from .modelfile import Modelfile, check_ollama_name, quote
from .quantize import check_quantization, fallback_summary, quantize_gguf
from .verify import Reference, Verification, verify_gguf

MIN_NUM_CTX = 256


@dataclass(frozen=True)
class ExportOptions:
    quantizations: tuple[str, ...] = (DEFAULT_QUANTIZATION,)
    name: str | None = None  # file name stem; default: the run's (or adapter's, model's) folder name
    output: Path | None = None  # default: RUN/export, or <adapter or model folder>/export
    verify: bool = True
    ollama: bool = False
    ollama_name: str | None = None  # default: the file name stem, lowercased
    ollama_host: str | None = None  # default: $OLLAMA_HOST, else the ollama_host setting
    system: str | None = None  # SYSTEM line of the Modelfile
    lora_gguf: bool = (
        False  # also write the adapter as a llama.cpp LoRA GGUF + the base as f16 (Ollama ADAPTER)
    )
    num_ctx: int | None = (
        None  # Ollama's context cap (PARAMETER num_ctx); default: the ollama_num_ctx setting
    )

    def checked(self) -> ExportOptions:
        """Validate everything a user can get wrong before any work starts."""
        if not self.quantizations:
            raise ConfigError("no quantization given", "pass at least one, e.g. -q q4_k_m")
        quants = tuple(dict.fromkeys(check_quantization(q) for q in self.quantizations))
        if self.name is not None:
            safe_name(self.name, "export name")
        if self.ollama_name is not None:
            check_ollama_name(self.ollama_name)
            if len(quants) > 1 and ":" in self.ollama_name:
                raise ConfigError(
                    f"Ollama name {self.ollama_name!r} has a tag, but {len(quants)} quantizations need one each",
                    "pass the name without ':tag'; each export is registered as NAME:<quantization>",
                )
        if self.system is not None:
            quote(self.system, "SYSTEM prompt")
        if self.num_ctx is not None and not (isinstance(self.num_ctx, int) and self.num_ctx >= MIN_NUM_CTX):
            raise ConfigError(
                f"num_ctx must be an integer of at least {MIN_NUM_CTX}, got {self.num_ctx!r}",
                "e.g. --num-ctx 8192",
            )
        return replace(self, quantizations=quants)


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    path: Path
    quantization: str
    size_bytes: int
    report: Path | None = None
    verification: Verification | None = None
    fallbacks: list[str] = field(default_factory=list)
    modelfile: Path | None = None
    ollama_model: str | None = None


@dataclass(frozen=True)
class ExportSource:
    """What to export: ``prepare`` returns a merged HF folder (merging an adapter on first use)."""

    label: str
    out_dir: Path
    prepare: Callable[[EventBus], Path]
    base_and_adapter: Callable[[], tuple[Path, Path]] | None = None  # None for a plain model


def export(source: ExportSource, options: ExportOptions, bus: EventBus | None = None) -> list[ExportResult]:
    """Write ``RUN/export/<name>.<quant>.gguf`` (+ ``.report.json``, ``.Modelfile``) for each quantization."""
    bus = bus or EventBus()
    if current_reporter() is None:  # called on its own: the stages' progress goes to the same events
        with reporting(bus.emit):
            return export(source, options, bus)
    options = options.checked()
    name = safe_name(options.name or _default_stem(source.label), "export name")
    ollama_names = (
        {q: _ollama_name(name, q, options) for q in options.quantizations} if options.ollama else {}
    )
    if options.lora_gguf and source.base_and_adapter is None:
        raise ConfigError(
            f"{source.label}: a LoRA GGUF needs a run or an adapter, not a plain model", "drop --lora-gguf"
        )
    out_dir = ensure_writable_dir(Path(options.output or source.out_dir), "export directory")
    hf_dir = source.prepare(bus)
    check_disk_space(hf_dir, out_dir, options.quantizations + (("f16",) if options.lora_gguf else ()))
    modelfile_base = _modelfile_base(hf_dir, source, options, bus)
    reference = None
    if options.verify:
        bus.emit(ExportProgress(stage="verify", detail="computing reference logits with the HF model"))
        reference = Reference.from_hf(hf_dir)
    results = []
    with _Intermediate(out_dir, name, hf_dir, bus) as intermediate:
        for quantization in options.quantizations:
            target = out_dir / f"{name}.{quantization}.gguf"
            fallbacks = _write_gguf(hf_dir, target, quantization, intermediate, name, bus)
            result = _finish(target, quantization, fallbacks, reference, modelfile_base, hf_dir, bus)
            if options.ollama:
                modelfile = replace(modelfile_base, model=target.name)
                result = _register(
                    result, modelfile, ollama_names[quantization], options.ollama_host, hf_dir, bus
                )
            results.append(result)
    if options.lora_gguf:
        results.append(_export_lora(source, name, out_dir, reference, modelfile_base, hf_dir, bus))
    return results


def check_disk_space(hf_dir: Path, out_dir: Path, quantizations: tuple[str, ...]) -> None:
    params = model_parameter_count(hf_dir)
    intermediate = 0 if set(quantizations) <= set(DIRECT_TYPES) else 16
    needed = params * (intermediate + sum(BITS_PER_WEIGHT[q] for q in quantizations)) / 8 * 1.05
    free = shutil.disk_usage(out_dir).free
    if needed > free:
        raise ExportError(
            f"not enough disk space in {out_dir}: the export needs about {needed / 2**30:.2f} GiB, {free / 2**30:.2f} GiB are free",
            "free some space, export fewer quantizations, or pass --output on another disk",
        )


def _default_stem(label: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in label).lstrip(".-_") or "model"


class _Intermediate:
    """The f16 GGUF that llama.cpp quantizes from, written once (when needed) and removed at the end."""

    def __init__(self, out_dir: Path, name: str, hf_dir: Path, bus: EventBus) -> None:
        self.path = out_dir / f".{name}.f16.gguf"
        self.hf_dir, self.name, self.bus, self.written = hf_dir, name, bus, False

    def __enter__(self) -> _Intermediate:
        return self

    def get(self) -> Path:
        if not self.written:
            self.bus.emit(ExportProgress(stage="convert", detail="writing f16 GGUF"))
            _convert(self.hf_dir, self.path, "f16", self.name)
            self.written = True
        return self.path

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _write_gguf(
    hf_dir: Path, target: Path, quantization: str, intermediate: _Intermediate, name: str, bus: EventBus
) -> list[str]:
    if quantization in DIRECT_TYPES:
        bus.emit(ExportProgress(stage="convert", detail=f"writing {quantization} GGUF"))
        _convert(hf_dir, target, quantization, name)
        return []
    source = intermediate.get()
    bus.emit(ExportProgress(stage="quantize", detail=f"f16 -> {quantization} with llama.cpp"))
    try:
        fallbacks = quantize_gguf(source, target, quantization)
    except OSError as error:
        raise _disk_error(error, target) from None
    summary = fallback_summary(quantization, fallbacks, target)
    if summary:
        bus.emit(WarningEvent(message=summary))
    return [str(f) for f in fallbacks]


def _convert(hf_dir: Path, target: Path, out_type: str, name: str) -> None:
    try:
        convert_hf_to_gguf(hf_dir, target, out_type, name=name)
    except OSError as error:
        raise _disk_error(error, target) from None


def _disk_error(error: OSError, target: Path) -> Exception:
    if error.errno == errno.ENOSPC:
        return ExportError(
            f"{target}: ran out of disk space while writing",
            "free some space or pass --output on another disk",
        )
    return error


def _finish(target, quantization, fallbacks, reference, modelfile_base, hf_dir, bus) -> ExportResult:
    """Verify, write the Modelfile and the report; a failed verification keeps the files and raises."""
    verification = None
    if reference is not None:
        verification = verify_gguf(target, reference, quantization)
        bus.emit(ExportProgress(stage="verify", detail=f"{target.name}: {verification.verdict()}"))
    modelfile_path = None
    if modelfile_base is not None:
        modelfile_path = target.with_suffix(".Modelfile")
        atomic_write_text(modelfile_path, replace(modelfile_base, model=target.name).text())
    result = ExportResult(
        path=target,
        quantization=quantization,
        size_bytes=target.stat().st_size,
        report=target.with_suffix(".report.json"),
        verification=verification,
        fallbacks=fallbacks,
        modelfile=modelfile_path,
    )
    _write_report(result, hf_dir)
    if verification is not None and not verification.passed:
        raise ExportError(
            f"{target.name} failed verification: {'; '.join(verification.problems)}",
            f"details in {result.report}",
        )
    bus.emit(ExportProgress(stage="done", detail=f"{target} ({result.size_bytes / 2**20:.1f} MiB)"))
    return result


def _export_lora(source, name, out_dir, reference, modelfile_base, hf_dir, bus) -> ExportResult:
    """The adapter as a llama.cpp LoRA GGUF over an f16 GGUF of the base, checked against the merged model."""
    from .lora_gguf import convert_lora_to_gguf

    base, adapter = source.base_and_adapter()
    base_gguf, lora = out_dir / f"{name}.base.f16.gguf", out_dir / f"{name}.lora.gguf"
    bus.emit(
        ExportProgress(
            stage="convert", detail="writing the base model as f16 GGUF and the adapter as LoRA GGUF"
        )
    )
    _convert(base, base_gguf, "f16", f"{name}-base")
    convert_lora_to_gguf(adapter, base, lora)
    verification = None
    if reference is not None:
        verification = verify_gguf(base_gguf, reference, "f16", lora=lora)
        bus.emit(
            ExportProgress(
                stage="verify", detail=f"{lora.name} over {base_gguf.name}: {verification.verdict()}"
            )
        )
    modelfile_path = None
    if modelfile_base is not None:
        modelfile_path = out_dir / f"{name}.lora.Modelfile"
        atomic_write_text(
            modelfile_path, replace(modelfile_base, model=base_gguf.name, adapter=lora.name).text()
        )
    result = ExportResult(
        path=lora,
        quantization="lora",
        size_bytes=lora.stat().st_size,
        report=lora.with_suffix(".report.json"),
        verification=verification,
        fallbacks=[],
        modelfile=modelfile_path,
    )
    _write_report(result, hf_dir, base_gguf=base_gguf.name)
    if verification is not None and not verification.passed:
        raise ExportError(
            f"{lora.name} failed verification: {'; '.join(verification.problems)}",
            f"details in {result.report}",
        )
    return result


def _write_report(result: ExportResult, hf_dir: Path, ollama: dict | None = None, **extra) -> None:
    report = {
        "gguf": result.path.name,
        "quantization": result.quantization,
        "size_bytes": result.size_bytes,
        "source": str(hf_dir),
        "fallbacks": result.fallbacks,
        "verification": result.verification.to_dict() if result.verification else None,
        "modelfile": result.modelfile.name if result.modelfile else None,
        "ollama": ollama,
        **extra,
    }
    atomic_write_text(result.report, json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def _modelfile_base(
    hf_dir: Path, source: ExportSource, options: ExportOptions, bus: EventBus
) -> Modelfile | None:
    """The Modelfile every export gets; without --ollama an unsupported chat template is only a warning."""
    from ..modeling import load_tokenizer
    from .chat_format import derive_chat_format, end_of_turn_tokens

    tokenizer = load_tokenizer(hf_dir)
    try:
        fmt = derive_chat_format(tokenizer)
    except ExportError as error:
        if options.ollama:
            raise
        bus.emit(WarningEvent(message=f"no Ollama Modelfile: {error.message}"))
        return None
    generation = (
        json.loads((hf_dir / "generation_config.json").read_text())
        if (hf_dir / "generation_config.json").is_file()
        else {}
    )
    eos = generation.get("eos_token_id")
    stops = end_of_turn_tokens(
        tokenizer, fmt, eos if isinstance(eos, list) else [eos] if eos is not None else []
    )
    return Modelfile(
        "", fmt.go_template(), stops, ollama_context(hf_dir, tokenizer, options.num_ctx), options.system
    )


def ollama_context(hf_dir: Path, tokenizer, cap: int | None = None) -> int:
    """The model's own context, capped (``cap``, else the ``ollama_num_ctx`` setting): Ollama truncates every
    prompt to num_ctx, and its KV cache grows with it, so neither the training length nor 128k is right."""
    from ..modeling import model_context
    from ..settings import load_settings

    return min(model_context(hf_dir, tokenizer), cap or load_settings()[0].ollama_num_ctx)


def _ollama_name(name: str, quantization: str, options: ExportOptions) -> str:
    """``--ollama-name`` (default: the file stem, lowercased), tagged with the quantization when there are several."""
    model = options.ollama_name or name.lower()
    return check_ollama_name(f"{model}:{quantization}" if len(options.quantizations) > 1 else model)


def _register(
    result: ExportResult, modelfile: Modelfile, model: str, host: str | None, hf_dir: Path, bus: EventBus
) -> ExportResult:
    from .ollama import register

    via = register(model, result.modelfile, modelfile, host=host, bus=bus)
    bus.emit(
        ExportProgress(
            stage="ollama", detail=f"registered {model} via {via}; run it with `ollama run {model}`"
        )
    )
    registered = replace(result, ollama_model=model)
    _write_report(registered, hf_dir, {"model": model, "via": via})
    return registered


# Sources ---------------------------------------------------------------------------------------------------


def resolve_source(target: str | Path) -> ExportSource:
    """A run directory, a LoRA adapter folder, or a model (folder or preset name)."""
    path = Path(target).expanduser()
    if (path / "config.toml").is_file():
        return run_source(RunDir.open(path))
    if (path / "adapter_config.json").is_file():
        return adapter_source(path)
    if (path / "config.json").is_file() or (not path.exists() and str(target) in _preset_names()):
        return model_source(str(target))
    if path.is_dir() and (path / "adapter").is_dir():
        raise ExportError(
            f"{path}: the run has no trained adapter", "finish `backprop train` before exporting"
        )
    raise ConfigError(
        f"{path}: not a run directory, adapter or model folder"
        if path.exists()
        else f"{path}: no such run, adapter or model",
        "pass the directory `backprop train` created, a folder with adapter_config.json, or one with config.json",
    )


def _preset_names() -> set[str]:
    from ..presets import PRESETS

    return set(PRESETS)


def run_source(run: RunDir) -> ExportSource:
    config = run.read_config()
    base_and_adapter = (
        None if run.full_fine_tuned else (lambda: (resolve_model(config.model).path, run.adapter))
    )
    return ExportSource(run.path.name, run.export, lambda bus: ensure_merged(run, bus), base_and_adapter)


def adapter_source(adapter: Path) -> ExportSource:
    adapter = adapter.resolve()
    config = json.loads((adapter / "adapter_config.json").read_text())
    base_name = config.get("base_model_name_or_path")
    if not base_name:
        raise ExportError(
            f"{adapter / 'adapter_config.json'}: no base_model_name_or_path",
            "the adapter must name its base model",
        )
    out_dir = adapter / "export"

    def prepare(bus: EventBus) -> Path:
        base = resolve_model(base_name).path
        return _merge_once(base, adapter, out_dir / "merged", bus)

    return ExportSource(adapter.name, out_dir, prepare, lambda: (resolve_model(base_name).path, adapter))


def model_source(name: str) -> ExportSource:
    model = resolve_model(name)
    local = Path(name).expanduser()
    out_dir = (
        local.resolve() / "export"
        if local.is_dir()
        else default_runs_dir().parent / "exports" / Path(name).name
    )
    return ExportSource(Path(name).name, out_dir, lambda bus: model.path)


def ensure_merged(run: RunDir, bus: EventBus | None = None) -> Path:
    """Merge once per adapter: the merged folder records the adapter's hash and is reused while it matches.
    A fully fine-tuned run's model is already in ``merged/``."""
    if run.full_fine_tuned:
        return run.merged
    if not (run.adapter / "adapter_config.json").is_file():
        raise ExportError(
            f"{run.path}: the run has no trained adapter", "finish `backprop train` before exporting"
        )
    return _merge_once(
        resolve_model(run.read_config().model).path, run.adapter, run.merged, bus or EventBus()
    )


def _merge_once(base_path: Path, adapter: Path, merged: Path, bus: EventBus) -> Path:
    digest = _adapter_digest(adapter)
    stamp = merged / "backprop_merge.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("adapter_sha256") == digest:
        bus.emit(ExportProgress(stage="merge", detail="reusing merged model"))
        return merged
    bus.emit(ExportProgress(stage="merge", detail="merging the adapter into the base model"))
    merge_adapter(base_path, adapter, merged)
    atomic_write_text(stamp, json.dumps({"adapter_sha256": digest, "base": str(base_path)}))
    return merged


def _adapter_digest(adapter: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(adapter.glob("adapter_*")):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
