"""Preference pairs for DPO and ORPO: one prompt, two replies, each side rendered and masked as SFT does.

Each side is ``prompt + reply`` through the model's chat template and :func:`render_for_training`, so only
the reply's tokens (end-of-turn included) are trained, exactly as a chat row's; assistant turns inside the
prompt stay untrained. Truncation keeps the end of the prompt and the start of both replies.
"""

from __future__ import annotations

from dataclasses import dataclass

from .formats import Example
from .sources import RowProblem
from .tokenize import IGNORE_INDEX, TemplateSupport, TokenizedExample, render_for_training, tokenize_rendered

OBJECTIVES = ("sft", "dpo", "orpo")
PAIR_OBJECTIVES = OBJECTIVES[1:]  # those that train on both replies of a pair


@dataclass
class PreferenceExample:
    """A tokenized pair: prompt + chosen reply and prompt + rejected reply (the same prompt tokens)."""

    chosen: TokenizedExample
    rejected: TokenizedExample

    def __len__(self) -> int:  # the width a batch row needs
        return max(len(self.chosen), len(self.rejected))

    @property
    def trained_tokens(self) -> int:
        return self.chosen.trained_tokens + self.rejected.trained_tokens

    @property
    def total_tokens(self) -> int:
        return len(self.chosen) + len(self.rejected)

    def truncated(self, limit: int) -> PreferenceExample:
        """At most ``limit`` tokens a side: the prompt loses its start (down to half of ``limit`` when the
        replies are long), the replies their ends."""
        if len(self) <= limit:
            return self
        prompt = reply_start(self.chosen)
        reply = max(len(self.chosen) - prompt, len(self.rejected) - reply_start(self.rejected))
        keep = min(prompt, max(limit - reply, limit // 2))
        return PreferenceExample(_window(self.chosen, keep, limit), _window(self.rejected, keep, limit))


def reply_start(example: TokenizedExample) -> int:
    return next((i for i, label in enumerate(example.labels) if label != IGNORE_INDEX), len(example.labels))


def _window(example: TokenizedExample, prompt_tokens: int, limit: int) -> TokenizedExample:
    start = max(0, reply_start(example) - prompt_tokens)
    return TokenizedExample(example.input_ids[start : start + limit], example.labels[start : start + limit])


def tokenize_pair(tokenizer, example: Example, support: TemplateSupport) -> PreferenceExample:
    """Both sides of a preference row; RowProblem for a row that is no pair, or whose replies are the same."""
    pair = example.pair
    if pair is None:
        raise RowProblem(
            f"row is {example.format}, not a preference pair (chosen/rejected)",
            "DPO and ORPO train on prompt/chosen/rejected rows; train chats with --objective sft",
        )
    if pair.chosen == pair.rejected:
        raise RowProblem(
            "'chosen' and 'rejected' are the same reply",
            "a pair needs two different replies: fix or remove the row",
        )
    prompt = [{**m, "loss_weight": 0} if m["role"] == "assistant" else m for m in pair.prompt]
    return PreferenceExample(
        *(_side(tokenizer, example, prompt + side, support) for side in (pair.chosen, pair.rejected))
    )


def _side(tokenizer, example: Example, messages: list[dict], support: TemplateSupport) -> TokenizedExample:
    messages, tools, _ = support.adapt(Example(example.origin, example.format, messages, tools=example.tools))
    _, rendered = render_for_training(tokenizer, messages, tools)
    if len(rendered) != 1:
        raise RowProblem(
            "this chat template renders a multi-turn reply as one example per turn, which a pair cannot score as one",
            "give chosen/rejected as one assistant reply each",
        )
    return tokenize_rendered(tokenizer, rendered[0])


def chats(examples: list) -> list[TokenizedExample]:
    """The chosen side of each pair (other examples as they are): what held-out loss and comparisons read."""
    return [e.chosen if isinstance(e, PreferenceExample) else e for e in examples]
