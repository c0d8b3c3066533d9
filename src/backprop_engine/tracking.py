"""Optional experiment tracking (``report_to`` / ``--report-to``): TensorBoard and Weights & Biases as event sinks.

Off by default, and nothing here touches the network: TensorBoard writes event files under ``RUN/tensorboard/``;
wandb runs in offline mode (files under ``RUN/wandb/``, uploaded only by a later ``wandb sync``) unless the user
has set ``WANDB_MODE`` themselves.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import ConfigError
from .events import EvalMetrics, Event, RewardMetrics, StepMetrics

TRACKERS = ("tensorboard", "wandb")
INSTALL_HINTS = {
    "tensorboard": "pip install 'backprop[tracking]' (or: pip install tensorboard)",
    "wandb": "pip install wandb",
}


def parse_report_to(value) -> list[str]:
    """``"none"``, ``"tensorboard,wandb"`` or a list of names → the list of trackers; each must be installed."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) for name in value):
        raise ConfigError(f"report_to must be a list of names or a comma-separated string, got {value!r}")
    names = list(dict.fromkeys(name.strip().lower() for name in value if name.strip()))
    if names == ["none"]:
        return []
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise ConfigError(
            f"unknown report_to {', '.join(unknown)}", f"use none, or one or more of: {', '.join(TRACKERS)}"
        )
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f"report_to {name}: the {name} package is not installed", INSTALL_HINTS[name])
    return names


def open_trackers(config, run_dir: Path) -> list:
    """One sink per tracker in ``config.report_to``, each with a ``close()``."""
    opened = {"tensorboard": TensorBoardSink, "wandb": WandbSink}
    return [opened[name](run_dir, config) for name in config.report_to]


def step_scalars(event: StepMetrics) -> dict[str, float]:
    scalars = {
        "train/loss": event.loss,
        "train/learning_rate": event.learning_rate,
        "train/grad_norm": event.grad_norm,
        "train/tokens_per_second": event.tokens_per_second,
        "train/memory_mb": event.memory_mb,
    }
    if event.temperature_c is not None:
        scalars["train/gpu_temperature_c"] = event.temperature_c
    return scalars


def reward_scalars(event: RewardMetrics) -> dict[str, float]:
    """DPO/ORPO: the rewards of a train step or an eval, under ``train/rewards/…`` or ``eval/rewards/…``."""
    return {
        f"{event.split}/rewards/{name}": getattr(event, name)
        for name in ("chosen", "rejected", "margin", "accuracy")
    }


def hyperparameters(config) -> dict[str, int | float | str | bool]:
    """The run config flattened to scalar values (lists become comma-separated text)."""
    return {
        name: ",".join(map(str, value)) if isinstance(value, list) else value
        for name, value in config.to_dict().items()
    }


class TensorBoardSink:
    """Scalars per step and eval under ``RUN/tensorboard/``; the hyperparameters for TensorBoard's HParams tab."""

    def __init__(self, run_dir: Path, config) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        # The HParams tab shows these next to the run's last train/eval loss.
        for summary in hparams(hyperparameters(config), {"train/loss": None, "eval/loss": None}):
            self.writer.file_writer.add_summary(summary)

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepMetrics):
            for tag, value in step_scalars(event).items():
                self.writer.add_scalar(tag, value, event.step)
        elif isinstance(event, EvalMetrics):
            self.writer.add_scalar("eval/loss", event.loss, event.step)
        elif isinstance(event, RewardMetrics):
            for tag, value in reward_scalars(event).items():
                self.writer.add_scalar(tag, value, event.step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """The same scalars to a Weights & Biases run under ``RUN/wandb/``, offline unless ``WANDB_MODE`` says otherwise."""

    def __init__(self, run_dir: Path, config) -> None:
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "backprop"),
            name=Path(run_dir).name,
            dir=str(run_dir),
            config=config.to_dict(),
            mode=os.environ.get("WANDB_MODE", "offline"),
        )

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepMetrics):
            self.run.log(step_scalars(event), step=event.step)
        elif isinstance(event, EvalMetrics):
            self.run.log({"eval/loss": event.loss}, step=event.step)
        elif isinstance(event, RewardMetrics):
            self.run.log(reward_scalars(event), step=event.step)

    def close(self) -> None:
        self.run.finish()
