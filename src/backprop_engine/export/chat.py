"""Talk to a GGUF through llama.cpp, with the chat template stored in the file."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def find_gguf(path: Path) -> Path:
    """``path`` is a GGUF file or a run directory (its newest export is used)."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConfigError(f"{path}: not a .gguf file", "pass a GGUF file or a run directory")
        return path
    if path.is_dir():
        exports = sorted((path / "export").glob("*.gguf"), key=lambda p: p.stat().st_mtime)
        if exports:
            return exports[-1]
        raise ConfigError(f"{path}: no GGUF export in this run", f"run `backprop export {path}` first")
    raise ConfigError(f"{path}: no such file or directory", "pass a GGUF file or a run directory")


def open_gguf(path: Path, n_ctx: int = 2048, seed: int = 0, logits_all: bool = False):
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=n_ctx, seed=seed, logits_all=logits_all, verbose=False)


def chat_reply(llm, messages: list[dict[str, str]], max_tokens: int = 64, temperature: float = 0.0) -> str:
    response = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=temperature)
    return response["choices"][0]["message"]["content"] or ""


def chat_once(path: Path, prompt: str, system: str | None = None, max_tokens: int = 64) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    llm = open_gguf(find_gguf(path))
    try:
        return chat_reply(llm, messages, max_tokens=max_tokens)
    finally:
        llm.close()
