"""Render conversations with the model's own chat template and train only the assistant turns.

The mask never searches for marker strings. For each assistant message the template renders two prefixes of
the conversation: the turns before it plus the generation prompt (where the reply starts) and the turns up to
and including it (where the reply, with its end-of-turn token, ends). Both are compared character by
character with the full rendering, and the tokenizer's offsets turn that character span into tokens. This
works for every template whose rendering of a prefix of a conversation is a prefix of the whole rendering
(ChatML, Llama 3, Mistral, Gemma, Qwen, Phi ...); a template that breaks that is reported, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .formats import Example, RowProblem

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
            warn(f"{path}: the tokenizer has no chat template; using the plain '### Role:' format (see README, Data)")
    return tokenizer


def template_supports_tools(tokenizer) -> bool:
    """Whether the template renders tool calls and tool results (tried, not guessed from its source)."""
    call = {"type": "function", "function": {"name": "probe_fn_q7", "arguments": {"x": 1}}}
    probe = [
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "probe_result_q7", "name": "probe_fn_q7"},
        {"role": "assistant", "content": "a"},
    ]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False)
    except Exception:  # a template may raise anything (jinja's raise_exception) for roles it does not know
        return False
    return "probe_fn_q7" in text and "probe_result_q7" in text


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # jinja raise_exception() in the template: e.g. roles must alternate
        raise RowProblem(f"the model's chat template rejects this conversation ({exc})", "check the order of the roles") from None


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The full rendering and the character span of every assistant turn (reply + end of turn)."""
    full = render(tokenizer, messages)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = _common_prefix(render(tokenizer, messages[:index], add_generation_prompt=True), full)
        end = _common_prefix(render(tokenizer, messages[: index + 1]), full)
        if end <= start:
            raise RowProblem(
                f"the chat template does not render assistant turn {index} as a prefix of the conversation",
                "this template cannot be masked reliably; report it with the model name",
            )
        spans.append((start, end))
    return full, spans


def _common_prefix(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    if a[:limit] == b[:limit]:
        return limit
    low, high = 0, limit  # binary search on the first differing character
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def tokenize_example(tokenizer, example: Example) -> TokenizedExample:
    """Token ids and labels (IGNORE_INDEX where nothing is trained), not yet truncated."""
    if example.text is not None:
        ids = tokenizer(example.text, add_special_tokens=True)["input_ids"]
        if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids.append(tokenizer.eos_token_id)
        return TokenizedExample(ids, list(ids))
    full, spans = assistant_spans(tokenizer, example.messages)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    labels = [IGNORE_INDEX] * len(ids)
    for position, (begin, _end) in enumerate(encoded["offset_mapping"]):
        # A token belongs to the turn it begins in; one that straddles the header and the reply stays masked.
        if any(start <= begin < end for start, end in spans):
            labels[position] = ids[position]
    return TokenizedExample(ids, labels)


def tokenize_conversation(tokenizer, messages, max_len: int) -> TokenizedExample:
    """Render and mask one conversation (list of messages), truncated to ``max_len`` tokens."""
    try:
        example = tokenize_example(tokenizer, Example("conversation", "messages", list(messages)))
    except RowProblem as problem:
        raise DataError(problem.reason, problem.hint) from None
    return TokenizedExample(example.input_ids[:max_len], example.labels[:max_len])


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

