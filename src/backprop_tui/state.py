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
    method: str = "lora"
    lora_rank: int = 16
    data: str = "sample"
    data_options: dict = field(
        default_factory=dict
    )  # filter settings from the Data screen (TrainConfig fields)
    run_dir: Path | None = None  # the run trained, watched or opened last
