"""The dataset pipeline: load → detect format → normalize → filter → render/mask → length policy → pack.

UI-free: ``data check``/``data inspect``, the trainer and the TUI call the same functions.
"""

from .formats import FORMATS, Example, PreferencePair
from .messages import load_conversations
from .pipeline import (
    DataPreview,
    DataReport,
    DataSpec,
    FilterStep,
    LengthStats,
    PreparedData,
    Sample,
    check_data,
    prepare_data,
)
from .sources import BadRow
from .tokenize import TokenizedExample, load_chat_tokenizer, tokenize_conversation

__all__ = [
    "FORMATS",
    "BadRow",
    "DataPreview",
    "DataReport",
    "DataSpec",
    "Example",
    "FilterStep",
    "LengthStats",
    "PreferencePair",
    "PreparedData",
    "Sample",
    "TokenizedExample",
    "check_data",
    "load_chat_tokenizer",
    "load_conversations",
    "prepare_data",
    "tokenize_conversation",
]
