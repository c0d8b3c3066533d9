"""Dataset loading and tokenization (messages JSONL for now)."""

from .messages import load_conversations, resolve_data_path
from .tokenize import TokenizedExample, tokenize_conversation, tokenize_dataset

__all__ = [
    "TokenizedExample",
    "load_conversations",
    "resolve_data_path",
    "tokenize_conversation",
    "tokenize_dataset",
]
