"""Talk to a GGUF through llama.cpp, with the chat template stored in the file."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, ExportError

LORA_SUFFIX, BASE_SUFFIX = ".lora.gguf", ".base.f16.gguf"  # written by ``backprop export --lora-gguf``


def find_gguf(path: Path) -> Path:
    """``path`` is a GGUF file, an export directory, or a run/adapter/model folder (its newest export is used)."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConfigError(f"{path}: not a .gguf file", "pass a GGUF file or a run directory")
        return path
    if path.is_dir():
        candidates = [*path.glob("*.gguf"), *(path / "export").glob("*.gguf")]
        candidates = [
            p for p in candidates if not p.name.startswith(".") and not p.name.endswith(BASE_SUFFIX)
        ]
        exports = sorted(candidates, key=lambda p: p.stat().st_mtime)
        if exports:
            return exports[-1]
        raise ConfigError(f"{path}: no GGUF export here", f"run `backprop export {path}` first")
    raise ConfigError(f"{path}: no such file or directory", "pass a GGUF file or a run directory")


def open_gguf(
    path: Path, n_ctx: int = 2048, seed: int = 0, logits_all: bool = False, lora: Path | None = None
):
    from llama_cpp import Llama

    lora_path = str(lora) if lora else None
    try:
        return Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            seed=seed,
            logits_all=logits_all,
            lora_path=lora_path,
            verbose=False,
        )
    except ValueError as error:  # llama-cpp-python's only report of a file llama.cpp cannot load
        raise ExportError(
            f"{path}: llama.cpp cannot load this GGUF ({error})", "export it again with `backprop export`"
        ) from None


def open_chat(path: Path, n_ctx: int = 2048):
    """Open what ``find_gguf`` picks; a LoRA adapter GGUF is applied over its base GGUF (written next to it)."""
    model = find_gguf(path)
    if not model.name.endswith(LORA_SUFFIX):
        return open_gguf(model, n_ctx=n_ctx)
    base = model.with_name(model.name[: -len(LORA_SUFFIX)] + BASE_SUFFIX)
    if not base.is_file():
        raise ConfigError(
            f"{model}: a LoRA adapter needs its base model {base.name} next to it",
            "export with --lora-gguf again",
        )
    return open_gguf(base, n_ctx=n_ctx, lora=model)


def chat_reply(llm, messages: list[dict[str, str]], max_tokens: int = 64, temperature: float = 0.0) -> str:
    response = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=temperature)
    return response["choices"][0]["message"]["content"] or ""


def chat_once(path: Path, prompt: str, system: str | None = None, max_tokens: int = 64) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    llm = open_chat(path)
    try:
        return chat_reply(llm, messages, max_tokens=max_tokens)
    finally:
        llm.close()
