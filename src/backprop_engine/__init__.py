"""backprop's engine: fine-tune chat models with LoRA and export them to GGUF. No UI imports here."""

from .config import TrainConfig
from .errors import BackpropError, ConfigError, DataError, ExportError, ModelError
from .presets import PRESETS, resolve_model
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "BackpropError",
    "ConfigError",
    "DataError",
    "ExportError",
    "ModelError",
    "TrainConfig",
    "Trainer",
    "resolve_model",
]
