"""Training that cannot silently diverge.

A step whose loss or gradient norm is not finite is skipped (no optimizer update: the adapter and the
optimizer state stay as they were) and reported; ``limit`` such steps in a row stop the run with a checkpoint
of that last good state. With fp16 weights the gradients are loss-scaled (torch.amp GradScaler): an overflow
at a large scale is the scaler's normal search for its scale, not divergence, and counts only once the scale
has fallen to 1. A finite loss far above the running median is a warning.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import deque

from ..errors import TrainingError
from ..events import EventBus, StepSkipped, WarningEvent

SPIKE_WINDOW = 20  # losses in the running median
SPIKE_MIN_HISTORY = 5
FP16_INIT_SCALE = 2.0**16  # torch's default


def grad_scaler(model, device: str):
    """A GradScaler when the frozen weights compute in fp16 and the trained ones are fp32 (else None)."""
    import torch

    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    if torch.float16 not in frozen or trained != {torch.float32}:
        return None
    return torch.amp.GradScaler(device, init_scale=FP16_INIT_SCALE)


class DivergenceGuard:
    def __init__(self, limit: int, spike_factor: float, learning_rate: float, bus: EventBus) -> None:
        self.limit, self.spike_factor, self.learning_rate, self.bus = limit, spike_factor, learning_rate, bus
        self.in_a_row = 0
        self.first_bad_step = 0
        self.recent: deque[float] = deque(maxlen=SPIKE_WINDOW)
        # A skipped step still advances the schedule, so the scheduler may step before the optimizer ever has.
        warnings.filterwarnings(
            "ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"
        )

    def accept(self, step: int, loss: float, grad_norm: float, scale: float | None = None) -> bool:
        """Whether this step's update may be applied; reports skipped steps and loss spikes."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.in_a_row = 0
            self._check_spike(step, loss)
            return True
        if scale is not None and scale > 1 and math.isfinite(loss):
            self.bus.emit(
                StepSkipped(
                    step=step,
                    loss=loss,
                    grad_norm=grad_norm,
                    reason=f"fp16 gradient overflow at loss scale {scale:.6g}: the scale is halved",
                    in_a_row=0,
                    limit=self.limit,
                )
            )
            return False
        self.in_a_row += 1
        self.first_bad_step = step if self.in_a_row == 1 else self.first_bad_step
        what = "loss" if not math.isfinite(loss) else "gradient norm"
        self.bus.emit(
            StepSkipped(
                step=step,
                loss=loss,
                grad_norm=grad_norm,
                reason=f"the {what} is not finite",
                in_a_row=self.in_a_row,
                limit=self.limit,
            )
        )
        return False

    @property
    def diverged(self) -> bool:
        return self.in_a_row >= self.limit

    def error(self, step: int, checkpoint: str) -> TrainingError:
        good = self.first_bad_step - 1
        lower = float(f"{self.learning_rate / 4:.1g}")
        return TrainingError(
            f"training diverged: the loss or gradient was not finite for {self.in_a_row} steps in a row "
            f"(steps {self.first_bad_step}-{step}); the adapter as it was after step {good} is saved in {checkpoint}",
            f"lower the learning rate: start again with --learning-rate {lower:g} (this run used {self.learning_rate:g})",
        )

    def _check_spike(self, step: int, loss: float) -> None:
        if len(self.recent) >= SPIKE_MIN_HISTORY:
            median = statistics.median(self.recent)
            if median > 0 and loss > self.spike_factor * median:
                self.bus.emit(
                    WarningEvent(
                        message=f"loss spike at step {step}: {loss:.4f} is {loss / median:.1f}× the running median {median:.4f}; "
                        f"if it keeps rising, lower the learning rate (this run: {self.learning_rate:g})"
                    )
                )
        self.recent.append(loss)
