"""Render conversations with the model's own chat template and train only the assistant turns.

The mask never searches for marker strings. For each trained assistant message the template renders two
prefixes of the conversation: the turns before it plus the generation prompt (where the reply starts) and
the turns up to and including it (where the reply, with its end-of-turn token, ends). When both are true
prefixes of the full rendering, one render of the whole conversation is trained with those spans (ChatML,
Llama 3, Gemma, Qwen2.5 ...). When they are not, the template rewrites earlier turns as the conversation
goes on (Mistral folding the system prompt into the last user turn, Qwen3 dropping earlier reasoning), and
each trained turn becomes its own example, written as inference sees it: the rendered prompt with the
generation prompt, then the reply as the template renders it, and only the reply is trained.
Spans and the text between them are tokenized separately, so the trained tokens are exactly a span's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import DataError
from .formats import Example
from .sources import RowProblem
from .tools import plain_form

IGNORE_INDEX = -100

# Used (with a warning) when a model has no chat template. Documented in the README's Data section.
PLAIN_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '### ' + message['role'] | capitalize + ':\\n' + message['content'] }}"
    "{%- if message['role'] == 'assistant' %}{{- eos_token }}{%- endif %}"
    "{{- '\\n\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '### Assistant:\\n' }}{%- endif %}"
)


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)

    def __len__(self) -> int:
        return len(self.input_ids)


def load_chat_tokenizer(path: Path, warn=None):
    """The model's tokenizer; without a chat template it gets :data:`PLAIN_TEMPLATE` and ``warn`` is called."""
    from ..modeling import load_tokenizer

    tokenizer = load_tokenizer(path)
    if not tokenizer.chat_template:
        tokenizer.chat_template = PLAIN_TEMPLATE
        if warn:
            warn(
                f"{path}: the tokenizer has no chat template; using the plain '### Role:' format (see README, Data)"
            )
    return tokenizer


WHOLE = "in one render"  # every prefix renders as a prefix: each trained turn masked in place
PER_TURN = "as one example per reply"  # the template rewrites earlier turns: each reply after its prompt
PLAIN_TOOLS = "tools in the plain form"
REASONING_DROPPED = "reasoning dropped"
_PROBE_CALL = {"type": "function", "function": {"name": "probe_fn_q7", "arguments": {"x": 1}}}
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "probe_tool_q7",
        "description": "d",
        "parameters": {"type": "object", "properties": {}},
    },
}


class TemplateSupport:
    """What a chat template renders, each tried once on probe messages (never guessed from its source)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    @cached_property
    def tool_calls(self) -> bool:
        probe: list[dict] = [
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL]},
            {"role": "tool", "content": "probe_result_q7", "name": "probe_fn_q7"},
            {"role": "assistant", "content": "a"},
        ]
        text = self._try(probe)
        return "probe_fn_q7" in text and "probe_result_q7" in text

    @cached_property
    def tool_schemas(self) -> bool:
        return "probe_tool_q7" in self._try(
            [{"role": "user", "content": "u"}], tools=[_PROBE_TOOL], add_generation_prompt=True
        )

    @cached_property
    def reasoning_key(self) -> str | None:
        """The message field the template renders reasoning from (Qwen3: reasoning_content), or None."""
        for key in ("reasoning_content", "thinking"):
            if "probe_reason_q7" in self._try(
                [
                    {"role": "user", "content": "u"},
                    {"role": "assistant", "content": "a", key: "probe_reason_q7"},
                ]
            ):
                return key
        return None

    def _try(self, messages: list[dict], **options) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, **options)
        except Exception:  # a template may raise anything (jinja's raise_exception) for what it does not know
            return ""

    def adapt(self, example: Example) -> tuple[list[dict], list[dict] | None, list[str]]:
        """The row's messages and tools as this template can render them, and what had to change."""
        messages, tools, changes = example.messages, example.tools, []
        if example.has_tool_calls:
            calls = not any(m["role"] == "tool" or m.get("tool_calls") for m in messages) or self.tool_calls
            schemas = not tools or self.tool_schemas
            if not (calls and schemas):
                messages, changes = plain_form(messages, tools, calls, schemas), [PLAIN_TOOLS]
            tools = tools if schemas else None
        if example.has_reasoning and self.reasoning_key != "reasoning_content":
            key = self.reasoning_key
            messages = [_rename(m, "reasoning_content", key) for m in messages]
            changes += [] if key else [REASONING_DROPPED]
        return messages, tools, changes


def _rename(message: dict, old: str, new: str | None) -> dict:
    if old not in message:
        return message
    renamed = {k: v for k, v in message.items() if k != old}
    if new:
        renamed[new] = message[old]
    return renamed


def render(
    tokenizer, messages: list[dict], add_generation_prompt: bool = False, tools: list[dict] | None = None
) -> str:
    options = {"tools": tools} if tools else {}
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **options
        )
    except Exception as exc:  # jinja raise_exception() in the template: e.g. roles must alternate
        raise RowProblem(
            f"the model's chat template rejects this conversation ({exc})", "check the order of the roles"
        ) from None


@dataclass
class Rendered:
    """A text to train on and the character spans of it that are trained."""

    text: str
    spans: list[tuple[int, int]]


def render_for_training(
    tokenizer, messages: list[dict], tools: list[dict] | None = None
) -> tuple[str, list[Rendered]]:
    """The mask scheme (:data:`WHOLE` or :data:`PER_TURN`) and the texts it trains for this conversation."""
    trained = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("loss_weight", 1)]
    prompts = {i: render(tokenizer, messages[:i], True, tools) for i in trained}
    turns = {i: render(tokenizer, messages[: i + 1], False, tools) for i in trained}
    full = (
        turns[len(messages) - 1] if len(messages) - 1 in turns else render(tokenizer, messages, False, tools)
    )
    if all(full.startswith(turns[i]) and _continues(turns[i], prompts[i]) for i in trained):
        return WHOLE, [Rendered(full, [(len(prompts[i]), len(turns[i])) for i in trained])]
    examples = []
    for i in trained:
        reply = _reply(tokenizer, messages, i, prompts[i], turns[i], tools)
        examples.append(Rendered(prompts[i] + reply, [(len(prompts[i]), len(prompts[i]) + len(reply))]))
    return PER_TURN, examples


def _continues(text: str, prefix: str) -> bool:
    return len(text) > len(prefix) and text.startswith(prefix)


def _reply(tokenizer, messages: list[dict], index: int, prompt: str, turn: str, tools) -> str:
    """Assistant turn ``index`` as the template renders it after ``prompt`` (its generation prompt excluded)."""
    if _continues(turn, prompt):
        return turn[len(prompt) :]
    # The context renders differently once the reply follows it (e.g. the system prompt moves): take the
    # reply as the template writes it after the turns since the previous reply, without the system prompt.
    start = max([i + 1 for i in range(index) if messages[i]["role"] == "assistant"], default=0)
    context = [m for m in messages[start:index] if m["role"] != "system"]
    alone, both = (
        render(tokenizer, context, True, tools),
        render(tokenizer, context + [messages[index]], False, tools),
    )
    if not _continues(both, alone):
        raise RowProblem(
            f"the chat template does not render assistant turn {index} as a continuation of its prompt",
            "this template cannot be masked reliably; report it with the model name",
        )
    return both[len(alone) :]


def tokenize_rendered(tokenizer, rendered: Rendered) -> TokenizedExample:
    """Each trained span and each stretch between spans is tokenized on its own: no token straddles a reply's
    edge, and a reply's first token is the one the model generates after its prompt (not one merged with the
    prompt's last characters, e.g. the space after "Assistant:")."""
    cuts = [0, *(edge for span in rendered.spans for edge in span), len(rendered.text)]
    pieces = [rendered.text[start:end] for start, end in itertools.pairwise(cuts)]
    ids: list[int] = []
    labels: list[int] = []
    for index, piece in enumerate(_encode(tokenizer, pieces)):
        ids += piece
        labels += piece if index % 2 else [IGNORE_INDEX] * len(piece)
    return TokenizedExample(ids, labels)


def _encode(tokenizer, pieces: list[str]) -> list[list[int]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer(pieces, add_special_tokens=False)["input_ids"]
    # The Rust tokenizer one piece at a time: the same ids as the wrapper, ~2.4x faster on short pieces.
    return [backend.encode(piece, add_special_tokens=False).ids for piece in pieces]


def tokenize_text(tokenizer, text: str) -> TokenizedExample:
    """Raw text for continued pre-training: every token trained, an end-of-sequence token appended."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    return TokenizedExample(ids, list(ids))


def tokenize_example(
    tokenizer, example: Example, support: TemplateSupport | None = None
) -> list[TokenizedExample]:
    """The training examples of one row (one, or one per turn), not yet truncated; RowProblem if unusable."""
    if example.text is not None:
        return [tokenize_text(tokenizer, example.text)]
    messages, tools, _ = (support or TemplateSupport(tokenizer)).adapt(example)
    _, rendered = render_for_training(tokenizer, messages, tools)
    return [tokenize_rendered(tokenizer, r) for r in rendered]


def tokenize_conversation(tokenizer, messages, max_len: int) -> TokenizedExample:
    """Render and mask one conversation (list of messages), truncated to ``max_len`` tokens.

    For a template that is not prefix-stable on it, use :func:`tokenize_example` (one example per turn).
    """
    try:
        examples = tokenize_example(tokenizer, Example("conversation", "messages", list(messages)))
    except RowProblem as problem:
        raise DataError(problem.reason, problem.hint) from None
    if len(examples) != 1:
        raise DataError(
            f"this chat template renders the conversation as {len(examples)} per-turn examples",
            "use backprop_engine.data.tokenize.tokenize_example, which returns them all",
        )
    return TokenizedExample(examples[0].input_ids[:max_len], examples[0].labels[:max_len])


def marked_spans(tokenizer, example: TokenizedExample) -> list[tuple[str, bool]]:
    """The example's text as (text, trained) runs, decoded run by run so multi-byte characters stay whole."""
    runs: list[tuple[list[int], bool]] = []
    for token, label in zip(example.input_ids, example.labels):
        trained = label != IGNORE_INDEX
        if runs and runs[-1][1] == trained:
            runs[-1][0].append(token)
        else:
            runs.append(([token], trained))
    return [(tokenizer.decode(ids), trained) for ids, trained in runs]
