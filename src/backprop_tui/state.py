"""What the user has chosen so far, shared by every screen of the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from backprop_engine.settings import Settings

THEMES = ("textual-dark", "textual-light")  # the first is the default


def theme_of(settings: Settings) -> str:
    """The settings' theme, or the default where it is empty or not one of ours."""
    return settings.theme if settings.theme in THEMES else THEMES[0]


@dataclass
class Session:
    settings: Settings
    model: str = "tiny"
    method: str | None = None  # None: the plan chooses, as when the flag is omitted
    lora_rank: int | None = None  # likewise
    data: str = "sample"
    data_options: dict = field(
        default_factory=dict
    )  # filter settings from the Data screen (TrainConfig fields)
    run_dir: Path | None = None  # the run trained, watched or opened last

    def model_options(self) -> dict:
        """The Model screen's choices the user made (TrainConfig fields); the rest is left to the plan."""
        chosen = {"method": self.method, "lora_rank": self.lora_rank}
        return {name: value for name, value in chosen.items() if value is not None}

    def model_summary(self) -> str:
        return f"{self.method or 'method auto'} · rank {self.lora_rank or 'auto'}"
