"""Multi-run continual training: SLAO (merge before forget), plain sequential LoRA, or averaging."""

from .driver import MultiRunPlan, MultiRunResult, run_multi
from .slao import LAMBDA_SCHEDULES, MERGE_MODES, initial_state, lambda_schedule, merge_state, orthonormal_rows

__all__ = [
    "LAMBDA_SCHEDULES",
    "MERGE_MODES",
    "MultiRunPlan",
    "MultiRunResult",
    "initial_state",
    "lambda_schedule",
    "merge_state",
    "orthonormal_rows",
    "run_multi",
]
