"""Did it learn? The base model's and the fine-tune's greedy answers to held-out prompts, in two columns, with
the held-out loss and perplexity of each; during training, the latest sample reply to a fixed held-out prompt.

Fed with the engine's ``SampleReply`` and ``Comparison`` events (typed, live or read back from events.jsonl);
hidden until the first one arrives.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widget import Widget

from backprop_engine.events import Comparison, Event, SampleReply, perplexity

EVENTS = (SampleReply, Comparison)  # what :meth:`ComparisonPanel.show` takes


class ComparisonPanel(Widget):
    DEFAULT_CSS = "ComparisonPanel { height: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reset()

    def reset(self) -> None:
        self.sample: SampleReply | None = None
        self.comparison: Comparison | None = None
        self.display = False

    def show(self, event: Event) -> None:
        """Take one event (one of :data:`EVENTS`)."""
        if isinstance(event, Comparison):
            self.comparison = event
        elif isinstance(event, SampleReply):
            self.sample = event
        self.display = True
        self.refresh(layout=True)

    def render(self) -> Group:
        parts = []
        if self.sample and not self.comparison:
            parts.append(self._sample_line())
        if self.comparison:
            parts += [self._headline(), self._table()]
        return Group(*parts)

    def _sample_line(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        step = self.sample.step
        text.append("sample ", style="bold").append("base" if step == 0 else f"step {step}", style="bold")
        text.append(f" › {self.sample.prompt} ", style="dim")
        return text.append(_one_line(self.sample.reply) or "(empty)")

    def _headline(self) -> Text:
        event = self.comparison
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("Did it learn?", style="bold")
        base, tuned = event.base_loss, event.tuned_loss
        if base is not None and tuned is not None:
            style = "green" if tuned < base else "red"
            text.append(" held-out loss ").append(f"{base:.3f} → {tuned:.3f}", style=style)
            text.append(f" (ppl {_short(perplexity(base))} → {_short(perplexity(tuned))})")
        return text.append(f" · {event.source}", style="dim")

    def _table(self) -> Table:
        event = self.comparison
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold", expand=True)
        table.add_column("base", ratio=1, overflow="fold")
        table.add_column(event.tuned_label, ratio=1, overflow="fold")
        for prompt, base, tuned in zip(event.prompts, event.base, event.tuned):
            table.add_row(
                Text(f"› {_one_line(prompt)}", style="bold cyan", no_wrap=True, overflow="ellipsis"), ""
            )
            changed = "" if tuned == base else "green"
            table.add_row(
                Text(_one_line(base) or "(empty)"), Text(_one_line(tuned) or "(empty)", style=changed)
            )
        return table


def _short(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _one_line(text: str) -> str:
    return " ".join(text.split())
