"""Base models that live in a GGUF file: a path (``model.gguf``) or the local Ollama store (``ollama:NAME[:TAG]``).

A GGUF holds quantized weights that training cannot update, so the file is dequantized once into an HF folder
(safetensors + tokenizer) under the cache, keyed by the file's sha256, and trained, exported and chatted with
like any other model folder.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .fsutil import atomic_dir

OLLAMA_PREFIX = "ollama:"
# GGUF architectures transformers can dequantize and our trainer, converter and Modelfile know.
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma3")
_STAMP = "backprop_gguf.json"
_NOTHING_KEPT = "nothing was written (the dequantized folder is kept only once complete)"
_OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
_OLLAMA_NAME = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*){0,2}(:[A-Za-z0-9][A-Za-z0-9._-]*)?$"
)


@dataclass(frozen=True)
class GgufFile:
    path: Path
    architecture: str
    file_type: str  # e.g. Q4_K_M, as llama.cpp names it
    sha256: str | None = None  # known without hashing for an Ollama blob (its file name)


def is_gguf_model(name: str) -> bool:
    return name.startswith(OLLAMA_PREFIX) or name.lower().endswith(".gguf")


def locate(name: str) -> GgufFile:
    """The GGUF behind ``name``, checked (complete file, supported architecture) without loading weights."""
    if name.startswith(OLLAMA_PREFIX):
        path, digest = ollama_blob(name[len(OLLAMA_PREFIX) :])
        return inspect_gguf(path, label=name, sha256=digest)
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelError(
            f"{path}: no such GGUF file",
            "pass the path of a .gguf file, or ollama:NAME for a model Ollama has",
        )
    return inspect_gguf(path)


def inspect_gguf(path: Path, label: str | None = None, sha256: str | None = None) -> GgufFile:
    label = label or str(path)
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelError(f"{label}: not a GGUF file (no GGUF magic number)", "pass a .gguf model file")
    try:
        reader = read_gguf(path)
        arch = _field(reader, "general.architecture")
        file_type = _field(reader, "general.file_type")
        end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    except (ValueError, IndexError, OSError, KeyError) as exc:
        raise ModelError(
            f"{label}: truncated or damaged GGUF file ({exc})", "download or export the file again"
        ) from None
    if end > path.stat().st_size:
        raise ModelError(
            f"{label}: truncated GGUF file ({path.stat().st_size} of {end} bytes)",
            "download or export the file again",
        )
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelError(
            f"{label}: GGUF architecture {arch!r} is not supported for fine-tuning",
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}",
        )
    return GgufFile(Path(path), arch, _file_type_name(file_type), sha256)


def read_gguf(path: Path):
    """The gguf package's reader of ``path``, parsing its header ~4x faster (see :func:`_fast_reader`)."""
    return _fast_reader()(path)


@functools.cache
def _fast_reader():
    import gguf
    import numpy as np

    from .progress import track

    array = int(gguf.GGUFValueType.ARRAY)

    class FastReader(gguf.GGUFReader):
        """Slices a plain view of the mapped file: np.memmap's bookkeeping on each of the millions of slices
        the header parse takes (a 262k-token vocabulary, its scores and types) is most of its time. Reports
        the ``metadata`` stage: the entries of the header's arrays, their total growing as each array is met."""

        def __init__(self, path, mode="r") -> None:
            self._depth, self._step = 0, 0
            with track("metadata", kept="nothing was written") as self._tracker:
                super().__init__(path, mode)

        @property
        def data(self):
            return self._plain

        @data.setter
        def data(self, mapped) -> None:
            self._plain = mapped.view(np.ndarray)

        def _get_field_parts(self, orig_offs: int, raw_type: int):
            if self._depth:  # one entry of an array
                self._step += 1
                if self._step == 4096:  # the tracker's own throttle costs more than a header entry
                    self._step = 0
                    self._tracker.advance(4096)
            if raw_type != array:
                return super()._get_field_parts(orig_offs, raw_type)
            length = int(self._get(orig_offs + 4, np.uint64)[0])
            self._tracker.report(self._tracker.done, self._tracker.total + length)
            self._depth += 1
            try:
                return super()._get_field_parts(orig_offs, raw_type)
            finally:
                self._depth -= 1

    return FastReader


@contextlib.contextmanager
def _read_once(path: Path):
    """transformers' GGUF loader parses the file's header three times (config, tokenizer, weights) and builds
    gguf's tensor-name map once per module: meanwhile, one reader of ``path`` and one map per layout serve all."""
    import gguf

    shared, where = read_gguf(path), path.resolve()
    original = gguf.GGUFReader, gguf.get_tensor_name_map

    def reader(file, *args, **kwargs):
        if Path(file).resolve() == where and not args and not kwargs:
            return shared
        return original[0](file, *args, **kwargs)

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.cache(original[1])
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original


def _file_type_name(file_type: int | None) -> str:
    import gguf

    try:
        return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:  # absent, or newer than the gguf package
        return "quantized"


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def ollama_models_dir() -> Path:
    """Where Ollama keeps models: ``$OLLAMA_MODELS``, else ``~/.ollama/models`` (a user's server, macOS,
    Windows), else ``/usr/share/ollama/.ollama/models`` (the Linux service's)."""
    if os.environ.get("OLLAMA_MODELS"):
        return Path(os.environ["OLLAMA_MODELS"]).expanduser()
    candidates = [Path.home() / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]
    return next((c for c in candidates if (c / "manifests").is_dir()), candidates[0])


def ollama_blob(reference: str) -> tuple[Path, str]:
    """``NAME[:TAG]`` (``NS/NAME``, ``HOST/NS/NAME`` as Ollama spells them) → the model layer's blob and its sha256."""
    if not _OLLAMA_NAME.match(reference) or ".." in reference:
        raise ModelError(
            f"invalid Ollama model name {reference!r}",
            "write it as ollama:NAME or ollama:NAME:TAG, e.g. ollama:smollm2:135m",
        )
    store = ollama_models_dir()
    if not (store / "manifests").is_dir():
        raise ModelError(
            f"no Ollama model store at {store}",
            "set OLLAMA_MODELS to the folder Ollama keeps models in, or `ollama pull` a model first",
        )
    name, _, tag = reference.partition(":")
    parts = name.split("/")
    host, namespace = (
        ("registry.ollama.ai", "library")
        if len(parts) == 1
        else ("registry.ollama.ai", parts[0])
        if len(parts) == 2
        else parts[:2]
    )
    manifest = store / "manifests" / host / namespace / parts[-1] / (tag or "latest")
    if not manifest.is_file():
        known = ", ".join(_ollama_models(store)[:8]) or "none"
        raise ModelError(
            f"ollama:{reference}: no such model in the Ollama store at {store}",
            f"`ollama pull {reference}` first; the store has: {known}",
        )
    try:
        layers = json.loads(manifest.read_text(encoding="utf-8")).get("layers", [])
        digest = next(layer["digest"] for layer in layers if layer.get("mediaType") == _OLLAMA_MODEL_LAYER)
    except (ValueError, StopIteration, KeyError, TypeError):
        raise ModelError(
            f"{manifest}: not an Ollama manifest with a model layer", f"`ollama pull {reference}` again"
        ) from None
    blob = store / "blobs" / digest.replace(":", "-")
    if not blob.is_file():
        raise ModelError(
            f"ollama:{reference}: its weights {blob.name} are missing from {store / 'blobs'}",
            f"`ollama pull {reference}` again",
        )
    return blob, digest.removeprefix("sha256:")


def _ollama_models(store: Path) -> list[str]:
    """``name:tag`` of every model in the store (library models without their namespace)."""
    names = []
    for manifest in sorted((store / "manifests").glob("*/*/*/*")):
        host, namespace, model, tag = manifest.relative_to(store / "manifests").parts
        prefix = "" if (host, namespace) == ("registry.ollama.ai", "library") else f"{namespace}/"
        names.append(f"{prefix}{model}:{tag}")
    return names


def dequantized_folder(source: GgufFile, cache_root: Path | None = None) -> tuple[Path, bool]:
    """The HF folder dequantized from ``source`` (built on first use); returns it and whether it was reused."""
    from .export.ollama import file_sha256
    from .paths import cache_dir

    digest = source.sha256 or file_sha256(source.path)
    folder = Path(cache_root or cache_dir() / "from-gguf") / digest[:24]
    if (folder / _STAMP).is_file():
        return folder, True
    with atomic_dir(folder) as tmp:
        _dequantize(source.path, tmp)
        stamp = {
            "gguf": str(source.path),
            "sha256": digest,
            "architecture": source.architecture,
            "file_type": source.file_type,
        }
        (tmp / _STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    return folder, False


def _dequantize(path: Path, out_dir: Path) -> None:
    """transformers' GGUF loader, asked to dequantize to dense float32 (packed weights cannot be saved)."""
    from .modeling import quiet_transformers

    quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from .progress import library_loop

    try:
        with (
            _read_once(path),
            contextlib.redirect_stderr(io.StringIO()),
            library_loop("transformers.modeling_gguf_pytorch_utils", "dequantize", _NOTHING_KEPT),
        ):
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(
                path.parent,
                gguf_file=path.name,
                dtype=torch.float32,
                quantization_config=GgufConfig(gguf_file=path.name, dequantize=True),
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(
            f"{path}: transformers cannot load this GGUF ({exc})", "is it a complete, supported model file?"
        ) from None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
