"""Row formats, detected per source file (with an explicit override), all normalized to one conversation form.

- ``messages``: OpenAI chat rows ``{"messages": [{"role", "content"}, ...]}``, tool calls included
- ``sharegpt``: ``{"conversations": [{"from", "value"}, ...]}`` with the usual role aliases
- ``alpaca``: ``instruction`` / optional ``input`` / ``output`` / optional ``system``
- ``prompt_completion``: ``prompt`` and ``completion``, each a string or a list of messages
- ``text``: raw text for continued pre-training (every token is trained)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .sources import FORMAT_FIELDS, BadRow, RawRow

FORMATS = tuple(FORMAT_FIELDS)
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}
Message = dict


@dataclass
class Example:
    """One training row in the internal form: a conversation, or raw text when ``text`` is set."""

    origin: str
    format: str
    messages: list[Message] = field(default_factory=list)
    text: str | None = None

    @property
    def has_tool_calls(self) -> bool:
        return any(m["role"] == "tool" or m.get("tool_calls") for m in self.messages)


class RowProblem(Exception):
    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason, self.hint = reason, hint


def detect_format(value: object) -> str | None:
    if not isinstance(value, dict):
        return None
    for name, columns in FORMAT_FIELDS.items():
        if all(column in value for column in columns):
            return name
    return None


class FormatTracker:
    """Detects the format of each source from its first good row and flags rows of another format."""

    def __init__(self, override: str = "auto") -> None:
        self.override = override
        self.by_source: dict[str, str] = {}

    def normalize(self, row: RawRow) -> Example | BadRow:
        try:
            name = self._format_of(row)
            return Example(row.origin, name, **_NORMALIZERS[name](row.value))
        except RowProblem as problem:
            return BadRow(row.origin, problem.reason, problem.hint)

    def _format_of(self, row: RawRow) -> str:
        if not isinstance(row.value, dict):
            raise RowProblem(f"row is a JSON {_type_name(row.value)}, not an object", "write each row as one JSON object")
        if self.override != "auto":
            missing = [c for c in FORMAT_FIELDS[self.override] if c not in row.value]
            if missing:
                raise RowProblem(f"row has no {' or '.join(repr(m) for m in missing)} field (format {self.override})", _format_hint())
            return self.override
        detected = detect_format(row.value)
        if detected is None:
            fields = ", ".join(sorted(map(str, row.value))) or "none"
            raise RowProblem(f"row has no 'messages' field, nor any other known format's fields (it has: {fields})", _format_hint())
        expected = self.by_source.setdefault(row.source, detected)
        if detected != expected:
            raise RowProblem(
                f"mixed formats: this row is {detected} but the file's first row is {expected}",
                "keep one format per file, or choose one with --format",
            )
        return detected


def _format_hint() -> str:
    return 'expected {"messages": [...]}, {"conversations": [...]}, instruction/output, prompt/completion or {"text": ...}'


def _type_name(value: object) -> str:
    return {str: "string", int: "number", float: "number", bool: "boolean", list: "list", dict: "object"}.get(type(value), "null" if value is None else type(value).__name__)


def _require_text(value: object, what: str, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        hint = "join the text parts into one string" if isinstance(value, list) else "use a JSON string"
        raise RowProblem(f"{what} is a {_type_name(value)}, expected a string", hint)
    if not allow_empty and not value.strip():
        raise RowProblem(f"{what} is empty", "remove the row or fill it in")
    return value


def _messages(value: object) -> dict:
    turns = value["messages"]
    if not isinstance(turns, list):
        raise RowProblem(f"'messages' is a {_type_name(turns)}, expected a list", "list the turns of the conversation in order")
    return {"messages": _check_conversation([_openai_message(m, i) for i, m in enumerate(turns)])}


def _openai_message(message: object, index: int) -> Message:
    where = f"message {index}"
    if not isinstance(message, dict):
        raise RowProblem(f"{where} is a {_type_name(message)}, not an object", 'write each turn as {"role": ..., "content": ...}')
    role = message.get("role")
    if role not in ROLES:
        raise RowProblem(f"{where} has unknown role {role!r}", f"use one of: {', '.join(ROLES)}")
    if role == "assistant" and message.get("tool_calls"):
        normalized = {"role": role, "content": _require_text(message.get("content") or "", f"{where} 'content'")}
        normalized["tool_calls"] = _tool_calls(message["tool_calls"], where)
        return normalized
    if "content" not in message:
        raise RowProblem(f"{where} has no 'content'", "every turn needs its text in 'content'")
    normalized = {"role": role, "content": _require_text(message["content"], f"{where} 'content'")}
    for key in ("name", "tool_call_id"):
        if role == "tool" and isinstance(message.get(key), str):
            normalized[key] = message[key]
    return normalized


def _tool_calls(calls: object, where: str) -> list[dict]:
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise RowProblem(f"{where} 'tool_calls' must be a list of objects", 'use [{"type": "function", "function": {"name": ..., "arguments": {...}}}]')
    for call in calls:
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RowProblem(f"{where} has a tool call without a function name", 'use {"function": {"name": ..., "arguments": ...}}')
    return calls


def _check_conversation(messages: list[Message]) -> list[Message]:
    if not messages:
        raise RowProblem("the conversation is empty", "list at least a user turn and an assistant turn")
    if not any(m["role"] == "assistant" for m in messages):
        raise RowProblem("the conversation has no assistant turn", "nothing would be trained; add an assistant reply")
    return messages


def _sharegpt(value: object) -> dict:
    turns = value["conversations"]
    if not isinstance(turns, list):
        raise RowProblem(f"'conversations' is a {_type_name(turns)}, expected a list", "list the turns in order")
    messages = []
    for index, turn in enumerate(turns):
        where = f"turn {index}"
        if not isinstance(turn, dict):
            raise RowProblem(f"{where} is a {_type_name(turn)}, not an object", 'write each turn as {"from": ..., "value": ...}')
        speaker = turn.get("from")
        role = SHAREGPT_ROLES.get(speaker.lower()) if isinstance(speaker, str) else None
        if role is None:
            raise RowProblem(f"{where} has unknown speaker {speaker!r}", f"use one of: {', '.join(SHAREGPT_ROLES)}")
        messages.append({"role": role, "content": _require_text(turn.get("value"), f"{where} 'value'")})
    return {"messages": _check_conversation(messages)}


def _alpaca(value: object) -> dict:
    instruction = _require_text(value["instruction"], "'instruction'", allow_empty=False)
    extra = _require_text(value.get("input") or "", "'input'")
    messages = [{"role": "system", "content": _require_text(value["system"], "'system'")}] if value.get("system") else []
    messages.append({"role": "user", "content": f"{instruction}\n\n{extra}" if extra.strip() else instruction})
    messages.append({"role": "assistant", "content": _require_text(value["output"], "'output'")})
    return {"messages": messages}


def _prompt_completion(value: object) -> dict:
    prompt = _turns(value["prompt"], "prompt", "user")
    completion = _turns(value["completion"], "completion", "assistant")
    return {"messages": _check_conversation(prompt + completion)}


def _turns(value: object, what: str, role: str) -> list[Message]:
    if isinstance(value, list):
        return [_openai_message(m, i) for i, m in enumerate(value)]
    return [{"role": role, "content": _require_text(value, f"'{what}'")}]


def _text(value: object) -> dict:
    return {"text": _require_text(value["text"], "'text'", allow_empty=False)}


_NORMALIZERS = {
    "messages": _messages,
    "sharegpt": _sharegpt,
    "alpaca": _alpaca,
    "prompt_completion": _prompt_completion,
    "text": _text,
}
