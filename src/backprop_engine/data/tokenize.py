"""Render conversations with the model's own chat template and mask everything but assistant turns.

The mask comes from rendering growing prefixes of the conversation: the tokens an assistant message adds
after the generation prompt are trained, everything else (system, user, role headers) is masked. This
works for any template that renders a prefix of a conversation as a prefix of the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def _render_ids(tokenizer, messages, add_generation_prompt: bool = False) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_conversation(tokenizer, messages, max_len: int) -> TokenizedExample:
    input_ids = _render_ids(tokenizer, messages)
    labels = [IGNORE_INDEX] * len(input_ids)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render_ids(tokenizer, messages[:index], add_generation_prompt=True))
        end = len(_render_ids(tokenizer, messages[: index + 1]))
        labels[start:end] = input_ids[start:end]
    return TokenizedExample(input_ids[:max_len], labels[:max_len])


def tokenize_dataset(tokenizer, conversations, max_len: int) -> list[TokenizedExample]:
    examples = [tokenize_conversation(tokenizer, messages, max_len) for messages in conversations]
    return [example for example in examples if example.trained_tokens > 0]
