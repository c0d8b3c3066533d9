"""The training loop (HF transformers + peft LoRA)."""

from .loop import TrainResult, run_training

__all__ = ["TrainResult", "run_training"]
