"""The training loop (HF transformers + peft LoRA)."""

from .loop import TrainResult, prepare_examples, run_training

__all__ = ["TrainResult", "prepare_examples", "run_training"]
