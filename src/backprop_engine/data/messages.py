"""Read OpenAI ``messages`` JSONL, one conversation per line, with errors that name file and line."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ..errors import DataError

BUILTIN_DATASETS = {"sample": "sample.jsonl"}
VALID_ROLES = {"system", "user", "assistant"}
Conversation = list[dict[str, str]]


def resolve_data_path(source: str | Path) -> Path:
    if str(source) in BUILTIN_DATASETS:
        resource = resources.files("backprop_engine.resources").joinpath(BUILTIN_DATASETS[str(source)])
        return Path(str(resource))
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"{path}: no such data file",
            f"pass a messages JSONL file, or one of the built-in datasets: {', '.join(BUILTIN_DATASETS)}",
        )
    if path.is_dir():
        raise DataError(f"{path}: is a directory", "pass a .jsonl file with one conversation per line")
    return path


def load_conversations(source: str | Path) -> list[Conversation]:
    path = resolve_data_path(source)
    conversations = []
    with path.open("r", encoding="utf-8", errors="strict") as lines:
        try:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    conversations.append(parse_row(line, path, number))
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason})", "save the file as UTF-8") from None
    if not conversations:
        raise DataError(f"{path}: the file is empty", 'add one JSON object per line: {"messages": [...]}')
    return conversations


def parse_row(line: str, path: Path, number: int) -> Conversation:
    where = f"{path}:{number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})", "each line must be one JSON object") from None
    if not isinstance(row, dict) or "messages" not in row:
        raise DataError(f"{where}: row has no 'messages' field", 'expected {"messages": [{"role": ..., "content": ...}, ...]}')
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list", "list the turns of the conversation in order")
    for index, message in enumerate(messages):
        _check_message(message, f"{where}: message {index}")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: conversation has no assistant turn", "nothing would be trained; add an assistant reply")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _check_message(message: object, where: str) -> None:
    if not isinstance(message, dict):
        raise DataError(f"{where} is not an object", 'write each turn as {"role": ..., "content": ...}')
    role, content = message.get("role"), message.get("content")
    if role not in VALID_ROLES:
        raise DataError(f"{where} has role {role!r}", f"use one of: {', '.join(sorted(VALID_ROLES))}")
    if not isinstance(content, str):
        raise DataError(f"{where} has no text 'content'", "content must be a string")
