"""The training loop (HF transformers + peft LoRA) and its control object."""

from .control import TrainingControl
from .loop import TrainResult, prepare_dataset, run_training

__all__ = ["TrainResult", "TrainingControl", "prepare_dataset", "run_training"]
