"""Row formats, detected per source file (with an explicit override), all normalized to one conversation form.

- ``preference``: ``chosen`` + ``rejected`` with ``prompt`` or ``conversations`` (or only full conversations)
- ``messages``: OpenAI chat rows ``{"messages": [{"role", "content"}, ...]}``, tool calls included
- ``sharegpt``: ``{"conversations": [{"from", "value"}, ...]}`` with the usual role aliases, ``function_call``
  and ``observation`` turns
- ``alpaca``: ``instruction`` / optional ``input`` / ``output`` / optional ``system``
- ``prompt_completion``: ``prompt`` and ``completion``, each a string or a list of messages
- ``text``: raw text for continued pre-training (every token is trained)

The internal message: ``role``, ``content`` (a string), and where present ``tool_calls`` and
``reasoning_content`` (assistant), ``name`` / ``tool_call_id`` (tool), ``loss_weight: 0`` (an assistant turn
that stays untrained). Content given as a list of parts is joined here; a row's ``tools`` list rides along.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .sources import FORMAT_FIELDS, BadRow, RawRow, RowProblem, type_name
from .tools import parse_calls, parse_tools

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
    "function_call": "assistant",  # a tool call by the assistant, its value the call's JSON
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}
TEXT_PARTS = ("text", "input_text", "output_text")
REASONING_PARTS = ("reasoning", "thinking")
MEDIA_PARTS = ("image", "image_url", "input_image", "audio", "input_audio", "video", "file")
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")
Message = dict[str, Any]
Row = dict[str, Any]  # one JSON object as read; each normalizer checks the values it uses


@dataclass
class PreferencePair:
    """A prompt and two continuations of it (each the assistant turns that follow), the better one first."""

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]


@dataclass
class Example:
    """One training row in the internal form: a conversation, or raw text when ``text`` is set.

    A preference row keeps its pair and trains as ``prompt + chosen`` (``messages``) when that is asked for.
    """

    origin: str
    format: str
    messages: list[Message] = field(default_factory=list)
    text: str | None = None
    tools: list[dict] | None = None  # the row's tool schemas, for apply_chat_template(tools=...)
    pair: PreferencePair | None = None

    @property
    def has_tool_calls(self) -> bool:
        return bool(self.tools) or any(m["role"] == "tool" or m.get("tool_calls") for m in self.messages)

    @property
    def has_reasoning(self) -> bool:
        return any(m.get("reasoning_content") for m in self.messages)


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
            name, value = self._format_of(row)
            example = Example(row.origin, name, **_NORMALIZERS[name](value))
            if name != "text":
                example.tools = parse_tools(value.get("tools"))
            return example
        except RowProblem as problem:
            return BadRow(row.origin, problem.reason, problem.hint)

    def _format_of(self, row: RawRow) -> tuple[str, Row]:
        """The row's format, and the row as the JSON object it must be."""
        value = row.value
        if not isinstance(value, dict):
            raise RowProblem(
                f"row is a JSON {type_name(value)}, not an object", "write each row as one JSON object"
            )
        if self.override != "auto":
            missing = [c for c in FORMAT_FIELDS[self.override] if c not in value]
            if missing:
                raise RowProblem(
                    f"row has no {' or '.join(repr(m) for m in missing)} field (format {self.override})",
                    _format_hint(),
                )
            return self.override, value
        detected = detect_format(value)
        if detected is None:
            fields = ", ".join(sorted(map(str, value))) or "none"
            raise RowProblem(
                f"row has no 'messages' field, nor any other known format's fields (it has: {fields})",
                _format_hint(),
            )
        expected = self.by_source.setdefault(row.source, detected)
        if detected != expected:
            raise RowProblem(
                f"mixed formats: this row is {detected} but the file's first row is {expected}",
                "keep one format per file, or choose one with --format",
            )
        return detected, value


def _format_hint() -> str:
    return 'expected {"messages": [...]}, {"conversations": [...]}, instruction/output, prompt/completion, chosen/rejected or {"text": ...}'


def _require_text(value: object, what: str, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise RowProblem(f"{what} is a {type_name(value)}, expected a string", "use a JSON string")
    if not allow_empty and not value.strip():
        raise RowProblem(f"{what} is empty", "remove the row or fill it in")
    return value


def _content(value: object, what: str) -> tuple[str, str]:
    """(text, reasoning) of a message's content: a string, or a list of parts joined in order."""
    if not isinstance(value, list):
        if isinstance(value, dict):
            raise RowProblem(
                f"{what} is an object, expected a string or a list of parts",
                'use a string or [{"type": "text", "text": ...}]',
            )
        return _require_text(value, what), ""
    texts, reasoning = [], []
    for index, part in enumerate(value):
        where = f"{what} part {index}"
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise RowProblem(
                f"{where} is a {type_name(part)}, not an object", 'use {"type": "text", "text": ...}'
            )
        kind = part.get("type", "text")
        if kind in TEXT_PARTS:
            texts.append(_part_text(part, where, ("text", "value")))
        elif kind in REASONING_PARTS:
            reasoning.append(_part_text(part, where, ("text", "value", kind)))
        elif kind in MEDIA_PARTS:
            raise RowProblem(
                f"{where} has type {kind!r}: backprop trains text-only models, which cannot read it",
                "remove the image/audio parts, or the row",
            )
        else:
            raise RowProblem(
                f"{where} has unknown type {kind!r}", f"use one of: {', '.join(TEXT_PARTS + REASONING_PARTS)}"
            )
    return "".join(texts), "\n".join(r for r in reasoning if r)


def _part_text(part: dict, where: str, keys: tuple[str, ...]) -> str:
    for key in keys:
        if key in part:
            return _require_text(part[key], f"{where} {key!r}")
    raise RowProblem(
        f"{where} has no {' or '.join(repr(k) for k in keys[:2])}", 'use {"type": "text", "text": ...}'
    )


def _message(role: str, content: object, where: str, source: dict, key: str = "content") -> Message:
    """The internal message for ``role``; ``source`` holds the turn's other fields (reasoning, loss weight)."""
    text, reasoning = _content(content, f"{where} '{key}'")
    message: Message = {"role": role, "content": text}
    for name in REASONING_FIELDS:
        if isinstance(source.get(name), str) and source[name]:
            reasoning = "\n".join(r for r in (source[name], reasoning) if r)
    if reasoning:
        if role != "assistant":
            raise RowProblem(
                f"{where} is a {role} turn with reasoning", "only assistant turns carry reasoning/thinking"
            )
        message["reasoning_content"] = reasoning
    if _loss_weight(source, role, where) == 0 and role == "assistant":
        message["loss_weight"] = 0
    return message


def _loss_weight(source: dict, role: str, where: str) -> int:
    value = source.get("loss_weight", source.get("weight"))
    if value is None:
        return 1 if role == "assistant" else 0
    if isinstance(value, bool) or value not in (0, 1):
        raise RowProblem(f"{where} has loss_weight {value!r}", "use 0 (not trained) or 1 (trained)")
    if value and role != "assistant":
        raise RowProblem(
            f"{where} is a {role} turn with loss_weight 1",
            "only assistant turns are trained; use 0 or drop the field",
        )
    return int(value)


def _messages(value: Row) -> dict:
    turns = value["messages"]
    if not isinstance(turns, list):
        raise RowProblem(
            f"'messages' is a {type_name(turns)}, expected a list",
            "list the turns of the conversation in order",
        )
    return {"messages": _check_conversation([_openai_message(m, i) for i, m in enumerate(turns)])}


def _openai_message(message: object, index: int) -> Message:
    where = f"message {index}"
    if not isinstance(message, dict):
        raise RowProblem(
            f"{where} is a {type_name(message)}, not an object",
            'write each turn as {"role": ..., "content": ...}',
        )
    role = message.get("role")
    if role not in ROLES:
        raise RowProblem(f"{where} has unknown role {role!r}", f"use one of: {', '.join(ROLES)}")
    calls = message.get("tool_calls") if role == "assistant" else None
    if "content" not in message and not calls:
        raise RowProblem(f"{where} has no 'content'", "every turn needs its text in 'content'")
    normalized = _message(
        role, (message.get("content") or "") if calls else message["content"], where, message
    )
    if calls:
        if not isinstance(calls, list):
            raise RowProblem(
                f"{where} 'tool_calls' is a {type_name(calls)}, expected a list",
                'use [{"type": "function", "function": {"name": ..., "arguments": {...}}}]',
            )
        normalized["tool_calls"] = parse_calls(calls, where)
    for key in ("name", "tool_call_id"):
        if role == "tool" and isinstance(message.get(key), str):
            normalized[key] = message[key]
    return normalized


def _check_conversation(messages: list[Message]) -> list[Message]:
    if not messages:
        raise RowProblem("the conversation is empty", "list at least a user turn and an assistant turn")
    replies = [m for m in messages if m["role"] == "assistant"]
    if not replies:
        raise RowProblem(
            "the conversation has no assistant turn", "nothing would be trained; add an assistant reply"
        )
    if all(m.get("loss_weight") == 0 for m in replies):
        raise RowProblem(
            "every assistant turn has loss_weight 0", "nothing would be trained; set loss_weight 1 on a reply"
        )
    return messages


def _sharegpt(value: Row) -> dict:
    messages = _sharegpt_turns(value["conversations"], "'conversations'")
    if (
        isinstance(value.get("system"), str)
        and value["system"]
        and not (messages and messages[0]["role"] == "system")
    ):
        messages.insert(0, {"role": "system", "content": value["system"]})
    return {"messages": _check_conversation(messages)}


def _sharegpt_turns(turns: object, what: str) -> list[Message]:
    if isinstance(turns, dict):
        turns = [turns]
    if not isinstance(turns, list):
        raise RowProblem(f"{what} is a {type_name(turns)}, expected a list", "list the turns in order")
    messages: list[Message] = []
    for index, turn in enumerate(turns):
        where = f"turn {index}"
        if not isinstance(turn, dict):
            raise RowProblem(
                f"{where} is a {type_name(turn)}, not an object",
                'write each turn as {"from": ..., "value": ...}',
            )
        speaker = turn.get("from")
        if not isinstance(speaker, str) or speaker.lower() not in SHAREGPT_ROLES:
            raise RowProblem(
                f"{where} has unknown speaker {speaker!r}", f"use one of: {', '.join(SHAREGPT_ROLES)}"
            )
        role = SHAREGPT_ROLES[speaker.lower()]
        if speaker.lower() == "function_call":
            _add_call(messages, parse_calls(turn.get("value"), f"{where} ({speaker})"), turn, where)
            continue
        message = _message(role, turn.get("value"), where, turn, "value")
        if role == "tool" and messages and len(messages[-1].get("tool_calls", [])) == 1:
            message["name"] = messages[-1]["tool_calls"][0]["function"]["name"]
        messages.append(message)
    return messages


def _add_call(messages: list[Message], calls: list[dict], turn: dict, where: str) -> None:
    """A function_call turn: the calls of the assistant turn before it (its text, earlier calls), or a new one."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last["tool_calls"] = last.get("tool_calls", []) + calls
        return
    message = _message("assistant", "", where, turn, "value")
    message["tool_calls"] = calls
    messages.append(message)


def _alpaca(value: Row) -> dict:
    instruction = _require_text(value["instruction"], "'instruction'", allow_empty=False)
    extra = _require_text(value.get("input") or "", "'input'")
    messages = (
        [{"role": "system", "content": _require_text(value["system"], "'system'")}]
        if value.get("system")
        else []
    )
    messages.append(
        {"role": "user", "content": f"{instruction}\n\n{extra}" if extra.strip() else instruction}
    )
    messages.append({"role": "assistant", "content": _require_text(value["output"], "'output'")})
    return {"messages": messages}


def _prompt_completion(value: Row) -> dict:
    prompt = _turns(value["prompt"], "prompt", "user")
    completion = _turns(value["completion"], "completion", "assistant")
    return {"messages": _check_conversation(prompt + completion)}


def _turns(value: object, what: str, role: str) -> list[Message]:
    """A string (one ``role`` turn), one turn object or a list of them, in OpenAI or ShareGPT form."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return [{"role": role, "content": _require_text(value, f"'{what}'")}]
    if value and all(isinstance(t, dict) and "from" in t for t in value):
        return _sharegpt_turns(value, f"'{what}'")
    try:
        return [_openai_message(m, i) for i, m in enumerate(value)]
    except RowProblem as problem:
        raise RowProblem(f"'{what}' {problem.reason}", problem.hint) from None


def _preference(value: Row) -> dict:
    """``chosen``/``rejected`` after a ``prompt`` or ``conversations`` history, or two whole conversations."""
    if "conversations" in value:
        prompt = _sharegpt_turns(value["conversations"], "'conversations'")
    elif "prompt" in value or "messages" in value:
        prompt = _turns(value.get("prompt", value.get("messages")), "prompt", "user")
    else:
        prompt = []
    chosen, rejected = (
        _turns(value["chosen"], "chosen", "assistant"),
        _turns(value["rejected"], "rejected", "assistant"),
    )
    if not prompt:  # two whole conversations: the prompt is what they share
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        prompt = chosen[:shared]
    chosen, rejected = _after(prompt, chosen), _after(prompt, rejected)
    if not prompt or not any(m["role"] == "user" for m in prompt):
        raise RowProblem(
            "the preference pair has no prompt (no user turn before chosen/rejected)",
            "add a 'prompt' field, or give chosen/rejected as whole conversations",
        )
    for name, side in (("chosen", chosen), ("rejected", rejected)):
        if not any(m["role"] == "assistant" for m in side):
            raise RowProblem(
                f"'{name}' has no assistant turn",
                f"'{name}' should hold the reply (a string or assistant messages)",
            )
    return {
        "messages": _check_conversation(prompt + chosen),
        "pair": PreferencePair(prompt, chosen, rejected),
    }


def _after(prompt: list[Message], side: list[Message]) -> list[Message]:
    """``side`` without the prompt turns it repeats (some datasets write whole conversations in chosen/rejected)."""
    return side[len(prompt) :] if side[: len(prompt)] == prompt else side


def _text(value: Row) -> dict:
    return {"text": _require_text(value["text"], "'text'", allow_empty=False)}


_NORMALIZERS = {
    "preference": _preference,
    "messages": _messages,
    "sharegpt": _sharegpt,
    "alpaca": _alpaca,
    "prompt_completion": _prompt_completion,
    "text": _text,
}
