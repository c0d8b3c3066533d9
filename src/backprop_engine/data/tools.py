"""Tool calling: rows' tool calls and tool schemas in one internal form, and a plain text form for chat
templates that cannot render them.

Internal form (what chat templates expect): an assistant message with ``tool_calls`` =
``[{"type": "function", "function": {"name": ..., "arguments": {...}}}]``, results as ``tool`` messages, and
a row's schemas as ``[{"type": "function", "function": {...}}]``, passed as ``apply_chat_template(tools=...)``.

Plain form (README, Data): the schemas go into the system prompt under ``# Tools``, one JSON object per
line; each call is a ``<tool_call>`` block holding ``{"name", "arguments"}`` at the end of the assistant's
reply; each result becomes a user turn in a ``<tool_response>`` block (the Hermes / Qwen layout).
"""

from __future__ import annotations

import json

from .sources import RowProblem, type_name

TOOLS_HEADING = "# Tools\nYou may call one or more of these functions. Their JSON schemas:"
CALL_HINT = 'write a call as {"name": "...", "arguments": {...}} (JSON)'


def parse_calls(value: object, where: str) -> list[dict]:
    """One call or a list of them: objects or JSON text, ``{"name", "arguments"}`` or OpenAI's ``{"function": ...}``."""
    if isinstance(value, str):
        value = _json(value, f"{where} tool call is", CALL_HINT)
    calls = value if isinstance(value, list) else [value]
    if not calls:
        raise RowProblem(f"{where} has an empty list of tool calls", CALL_HINT)
    return [
        _call(call, f"{where} tool call {n}" if len(calls) > 1 else f"{where} tool call")
        for n, call in enumerate(calls)
    ]


def _call(call: object, where: str) -> dict:
    if not isinstance(call, dict):
        raise RowProblem(f"{where} is a {type_name(call)}, not an object", CALL_HINT)
    function = call.get("function", call)
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise RowProblem(f"{where} has no function name", CALL_HINT)
    arguments = function.get("arguments", function.get("parameters", {}))
    if isinstance(arguments, str):
        arguments = _json(
            arguments,
            f"{where} '{function['name']}' has arguments that are",
            "the arguments must be a JSON object",
        )
    if not isinstance(arguments, dict):
        raise RowProblem(
            f"{where} '{function['name']}' arguments are a {type_name(arguments)}, not an object",
            "the arguments must be a JSON object",
        )
    normalized = {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
    if isinstance(call.get("id"), str):
        normalized["id"] = call["id"]
    return normalized


def parse_tools(value: object) -> list[dict] | None:
    """A row's ``tools``: a list of JSON schemas (or JSON text of one), each bare or as ``{"type": "function", ...}``."""
    if value is None or value == "" or value == []:
        return None
    hint = 'list the schemas: [{"name": ..., "description": ..., "parameters": {...}}]'
    if isinstance(value, str):
        value = _json(value, "'tools' is", hint)
    if not isinstance(value, list):
        raise RowProblem(f"'tools' is a {type_name(value)}, expected a list of schemas", hint)
    tools = []
    for index, tool in enumerate(value):
        schema = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            raise RowProblem(f"'tools' entry {index} is not a function schema with a name", hint)
        tools.append({"type": "function", "function": schema})
    return tools or None


def _json(text: str, subject: str, hint: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowProblem(f"{subject} not valid JSON ({exc.msg} at column {exc.colno})", hint) from None


def plain_form(messages: list[dict], tools: list[dict] | None, calls: bool, definitions: bool) -> list[dict]:
    """``messages`` with tool calls/results (unless the template renders them: ``calls``) and the schemas
    (unless ``definitions``) written as plain text in the template's ordinary roles."""
    out: list[dict] = []
    if tools and not definitions:
        schemas = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in tools)
        block = f"{TOOLS_HEADING}\n{schemas}"
        if messages and messages[0]["role"] == "system":
            out.append(
                {
                    **messages[0],
                    "content": f"{messages[0]['content']}\n\n{block}" if messages[0]["content"] else block,
                }
            )
            messages = messages[1:]
        else:
            out.append({"role": "system", "content": block})
    for message in messages:
        if calls:
            out.append(message)
        elif message.get("tool_calls"):
            blocks = [
                f"<tool_call>\n{json.dumps(_plain_call(c), ensure_ascii=False)}\n</tool_call>"
                for c in message["tool_calls"]
            ]
            text = "\n".join(([message["content"]] if message["content"] else []) + blocks)
            out.append({k: v for k, v in message.items() if k != "tool_calls"} | {"content": text})
        elif message["role"] == "tool":
            response = f"<tool_response>\n{message['content']}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1]["content"].startswith("<tool_response>"):
                out[-1] = {
                    **out[-1],
                    "content": f"{out[-1]['content']}\n{response}",
                }  # parallel calls: one turn
            else:
                out.append({"role": "user", "content": response})
        else:
            out.append(message)
    return out


def _plain_call(call: dict) -> dict:
    return {"name": call["function"]["name"], "arguments": call["function"]["arguments"]}
