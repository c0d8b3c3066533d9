"""The Ollama Modelfile: FROM, TEMPLATE, stop tokens, num_ctx and an optional SYSTEM, safely quoted.

Ollama's Modelfile has no escape sequences: a value is bare, "quoted" or \"\"\"triple-quoted\"\"\", and a value ends at the
first whitespace after which it parses as complete. So a value may hold quotes and newlines inside triple
quotes, but never the sequence \"\"\" itself (that would end it early and let the rest become new Modelfile lines),
and never other control characters (Ollama's parser silently drops them). Both are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError

# Ollama model names as `ollama create` takes them: name[:tag], lowercase, no namespace or path parts.
_OLLAMA_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}(:[a-z0-9][a-z0-9._-]{0,79})?$")
_ALLOWED_CONTROL = {"\n", "\t"}


def check_ollama_name(name: str) -> str:
    if not _OLLAMA_NAME.match(name) or ".." in name:
        raise ConfigError(
            f"invalid Ollama model name {name!r}",
            "use lowercase letters, digits, '.', '_' or '-' (optionally ':tag'), no spaces, slashes or '..'",
        )
    return name


def quote(value: str, what: str) -> str:
    """Quote ``value`` for a Modelfile so that it reads back exactly and cannot start another instruction."""
    bad = sorted({c for c in value if not c.isprintable() and c not in _ALLOWED_CONTROL})
    if bad:
        raise ConfigError(
            f"{what} contains control characters {bad!r}", "Ollama's Modelfile drops them; remove them"
        )
    if '"""' in value:
        raise ConfigError(
            f'{what} contains \'"""\', which a Modelfile cannot quote', "use fewer consecutive double quotes"
        )
    if value and not any(c.isspace() or c == '"' for c in value):
        return value
    if '"' not in value and "\n" not in value:
        return f'"{value}"'
    return f'"""{value}"""'


@dataclass(frozen=True)
class Modelfile:
    model: str  # FROM: the GGUF file name, relative to the Modelfile's folder
    template: str
    stops: list[str]
    num_ctx: int
    system: str | None = None
    adapter: str | None = None

    def text(self) -> str:
        lines = [f"FROM {quote('./' + self.model, 'FROM path')}"]
        if self.adapter:
            lines.append(f"ADAPTER {quote('./' + self.adapter, 'ADAPTER path')}")
        lines.append(f"TEMPLATE {quote(self.template, 'TEMPLATE')}")
        lines += [f"PARAMETER stop {quote(stop, 'stop token')}" for stop in self.stops]
        lines.append(f"PARAMETER num_ctx {self.num_ctx}")
        if self.system:
            lines.append(f"SYSTEM {quote(self.system, 'SYSTEM prompt')}")
        return "\n".join(lines) + "\n"

    def parameters(self) -> dict:
        """The same settings for Ollama's HTTP create API."""
        return {"stop": list(self.stops), "num_ctx": self.num_ctx}
