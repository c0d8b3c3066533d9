"""Turn a model's Jinja chat template into an equivalent Ollama (Go ``text/template``) TEMPLATE.

The Jinja template is not parsed. It is *rendered* for probe conversations whose contents are sentinels,
and the text around the sentinels gives each role's prefix and suffix, the generation prompt and any
default system turn. The derived format is then re-rendered in Python for a set of real conversations and
must reproduce the Jinja output exactly, or the template is refused rather than guessed.

Ollama passes ``.Messages`` (system messages included, consecutive same-role messages joined) and
``.System`` (the system messages' text); the BOS token is added by llama.cpp at tokenization time, so it is
not part of the rendered text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import ExportError

# How a family places the system message: its own turn (ChatML, Llama 3, most templates), folded into the
# last user message when that message ends the conversation (Mistral), or into the first user message (Gemma).
SYSTEM_PLACEMENTS = ("turn", "last_user", "first_user")
FAMILY_MARKERS = {
    "chatml": "<|im_start|>",
    "llama3": "<|start_header_id|>",
    "mistral": "[INST]",
    "gemma": "<start_of_turn>",
}
_S0, _S1, _S2, _S3 = "\x02sys0\x03", "\x02usr1\x03", "\x02ast2\x03", "\x02usr3\x03"

# Conversations the derived format must reproduce byte for byte (also used by the Go template test).
CHECK_CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi there"}],
    [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "Arr, 4."},
        {"role": "user", "content": "And 3 + 3?"},
    ],
    [
        {"role": "system", "content": 'Answer briefly.\nUse "quotes" if needed.'},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another {{ one }} please."},
        {"role": "assistant", "content": "Red — naïve café 😀."},
        {"role": "user", "content": "Thanks"},
    ],
    # Reasoning kept in an earlier assistant turn: a thinking-mode template (Qwen3) drops it, Ollama cannot.
    [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "<think>\nTwo and two.\n</think>\n\nArr, 4."},
        {"role": "user", "content": "And 3 + 3?"},
    ],
]


@dataclass(frozen=True)
class ChatFormat:
    family: str  # chatml, llama3, mistral, gemma or generic
    system_placement: str
    prefixes: dict[str, str]  # role → text before the content
    suffixes: dict[str, str]  # role → text after the content
    generation_prompt: str
    default_system: str = ""  # rendered when the conversation has no system message
    header: str = ""  # rendered first, always: a BOS the template writes but tokenization does not add
    system_separator: str = ""  # between system text and user text when folded into a user message

    def render(self, messages: list[dict[str, str]]) -> str:
        """What Ollama renders with :meth:`go_template` (and the Jinja template renders, BOS aside)."""
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        out = [self.header] + ([] if system else [self.default_system])
        turns = [m for m in messages if m["role"] != "system"]
        for index, message in enumerate(messages):
            role, content = message["role"], message["content"]
            if role == "system":
                if self.system_placement == "turn":
                    out.append(self.prefixes["system"] + content + self.suffixes["system"])
                continue
            folded = (
                role == "user"
                and system
                and (
                    (self.system_placement == "last_user" and index == len(messages) - 1)
                    or (self.system_placement == "first_user" and message is turns[0])
                )
            )
            if folded:
                content = system + self.system_separator + content
            out.append(self.prefixes[role] + content + self.suffixes[role])
        return "".join(out) + self.generation_prompt

    def go_template(self) -> str:
        lines = ["{{- " + json.dumps(self.header, ensure_ascii=False) + " }}"] if self.header else []
        if self.default_system:
            lines.append(f"{{{{- if not .System }}}}{_lit(self.default_system)}{{{{ end }}}}")
        if self.system_placement == "first_user":
            lines.append("{{- $first := true }}")
        lines.append("{{- range $i, $m := .Messages }}")
        keyword = "if"
        for role in ("system", "user", "assistant"):
            if role == "system" and self.system_placement != "turn":
                continue
            body = _lit(self.prefixes[role]) + self._content(role) + _lit(self.suffixes[role])
            lines.append(f'{{{{- {keyword} eq $m.Role "{role}" }}}}{body}')
            keyword = "else if"
        lines.append("{{- end }}")
        lines.append("{{- end }}" + _lit(self.generation_prompt))
        template = "\n".join(lines)
        if '"""' in template:  # cannot be quoted in a Modelfile; our literals never produce it
            raise ExportError('the generated TEMPLATE contains \'"""\' and cannot be written to a Modelfile')
        return template

    def _content(self, role: str) -> str:
        if role != "user" or self.system_placement == "turn":
            return "{{ $m.Content }}"
        sep = _lit(self.system_separator)
        if self.system_placement == "last_user":
            condition = "and $.System (eq (len (slice $.Messages $i)) 1)"
            return f"{{{{ if {condition} }}}}{{{{ $.System }}}}{sep}{{{{ end }}}}{{{{ $m.Content }}}}"
        return (
            f"{{{{ if and $.System $first }}}}{{{{ $.System }}}}{sep}{{{{ end }}}}"
            "{{ $first = false }}{{ $m.Content }}"
        )


def _lit(text: str) -> str:
    """A Go template action printing ``text`` verbatim (a JSON string is a valid Go string literal)."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


def derive_chat_format(tokenizer) -> ChatFormat:
    """Derive the format of ``tokenizer.chat_template``; refuse when the derived format cannot reproduce it."""
    from jinja2 import TemplateError

    render = _Renderer(tokenizer)
    family = next(
        (name for name, marker in FAMILY_MARKERS.items() if marker in (tokenizer.chat_template or "")),
        "generic",
    )
    try:
        fmt = _derive(render, family)
        reproduced = fmt is not None and all(render.expected(c) == fmt.render(c) for c in CHECK_CONVERSATIONS)
    except (ValueError, KeyError, TemplateError):  # e.g. a template that raises for a system message
        reproduced = False
    if not reproduced and "<think>" in (tokenizer.chat_template or ""):
        raise ExportError(
            "the chat template has a thinking mode (Qwen3): it rewrites <think> blocks of earlier assistant turns, "
            "which an Ollama TEMPLATE cannot reproduce byte for byte",
            "export the GGUF without --ollama (llama.cpp uses the template stored in it), or write the TEMPLATE by hand",
        )
    if not reproduced or fmt is None:
        raise ExportError(
            f"the chat template ({family}) is not a plain role/content template that an Ollama TEMPLATE can reproduce",
            "export the GGUF without --ollama, or write the Modelfile TEMPLATE by hand",
        )
    return fmt


class _Renderer:
    """Renders the Jinja template; ``__call__`` drops a leading BOS text, ``expected`` drops it only when
    tokenization adds BOS itself (what the TEMPLATE must reproduce)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.bos = tokenizer.bos_token or ""
        self.bos_added = adds_bos(tokenizer)

    def raw(self, messages: list[dict[str, str]], generation: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    def __call__(self, messages: list[dict[str, str]], generation: bool) -> str:
        text = self.raw(messages, generation)
        return text[len(self.bos) :] if self.bos and text.startswith(self.bos) else text

    def expected(self, messages: list[dict[str, str]]) -> str:
        return self(messages, True) if self.bos_added else self.raw(messages, True)

    def header(self) -> str:
        writes_bos = self.bos and self.raw([{"role": "user", "content": _S1}], False).startswith(self.bos)
        return self.bos if writes_bos and not self.bos_added else ""


def adds_bos(tokenizer) -> bool:
    """Whether tokenization adds BOS (llama.cpp then adds it too, so the TEMPLATE must not render it)."""
    ids = tokenizer("x")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def _between(text: str, start: str | None, end: str | None) -> str:
    begin = text.index(start) + len(start) if start else 0
    return text[begin : text.index(end, begin)] if end else text[begin:]


def _derive(render: _Renderer, family: str) -> ChatFormat | None:
    user, assistant = {"role": "user", "content": _S1}, {"role": "assistant", "content": _S2}
    three = render([user, assistant, {"role": "user", "content": _S3}], False)
    suffix_user = _between(three, _S3, None)
    suffix_assistant = _between(render([user, assistant], False), _S2, None)
    prefix_assistant = _cut_prefix(_between(three, _S1, _S2), suffix_user)
    prefix_user = _cut_prefix(_between(three, _S2, _S3), suffix_assistant)
    head = _between(render([user], False), None, _S1)
    if not head.endswith(prefix_user):
        return None
    default_system = head[: len(head) - len(prefix_user)]
    generation = _cut_prefix(_between(render([user], True), _S1, None), suffix_user)

    with_system = render([{"role": "system", "content": _S0}, user], False)
    between = _between(with_system, _S0, _S1)
    prefixes = {"user": prefix_user, "assistant": prefix_assistant}
    suffixes = {"user": suffix_user, "assistant": suffix_assistant}
    if between.endswith(prefix_user):
        placement, separator = "turn", ""
        prefixes["system"] = _between(with_system, None, _S0)
        suffixes["system"] = between[: len(between) - len(prefix_user)]
    else:
        placement = "last_user" if family == "mistral" else "first_user"
        separator = between
    return ChatFormat(
        family,
        placement,
        prefixes,
        suffixes,
        generation,
        default_system=default_system,
        system_separator=separator,
        header=render.header(),
    )


def _cut_prefix(text: str, prefix: str) -> str:
    if not text.startswith(prefix):
        raise ValueError("the template does not render each message independently")
    return text[len(prefix) :]


def end_of_turn_tokens(tokenizer, fmt: ChatFormat, generation_eos: list[int] | None = None) -> list[str]:
    """Every special token that ends an assistant turn: the EOS, generation_config's EOS ids, and any special
    token in the assistant suffix (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``, ``</s>``)."""
    stops: list[str] = []
    specials = set(tokenizer.all_special_tokens) | {
        t.content for t in tokenizer.added_tokens_decoder.values() if t.special
    }
    candidates = [tokenizer.eos_token] + [tokenizer.convert_ids_to_tokens(i) for i in generation_eos or []]
    candidates += [
        token
        for token in sorted(specials, key=len, reverse=True)
        if token and token in fmt.suffixes["assistant"]
    ]
    for token in candidates:
        if token and token not in stops:
            stops.append(token)
    return stops
