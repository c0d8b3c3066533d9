"""Checkpoints a run can resume from: the adapter plus the optimizer, scheduler and fp16 loss-scaler state and
the loop's counters, in safetensors and JSON (no pickles)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError
from ..fsutil import atomic_dir
from ..progress import track

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


@dataclass
class CheckpointClock:
    """Time-based checkpoints: due once every ``interval`` seconds of training (pauses excluded); 0 is off."""

    interval: float
    last: float = 0.0

    @classmethod
    def for_config(cls, config) -> CheckpointClock:
        from ..settings import load_settings

        return cls(config.checkpoint_every_s or load_settings()[0].checkpoint_minutes * 60)

    def due(self, trained_seconds: float) -> bool:
        if self.interval <= 0 or trained_seconds - self.last < self.interval:
            return False
        self.last = trained_seconds
        return True


@dataclass
class LoopState:
    step: int
    tokens: int
    first_loss: float
    micro_parts: int  # the out-of-memory back-off in force


def save_checkpoint(
    path: Path, model, optimizer, scheduler, state: LoopState, tokenizer=None, scaler=None
) -> Path:
    from safetensors.torch import save_file

    optimizer_state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            if hasattr(value, "shape"):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    document = {
        "loop": asdict(state),
        "param_groups": optimizer_state["param_groups"],
        "optimizer_scalars": scalars,
        "scheduler": scheduler.state_dict(),
        # The scale the fp16 run has searched its way to: a resume restarting at 2^16 would overflow again.
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    with (
        atomic_dir(path) as tmp,
        track("checkpoint", 4) as saved,
    ):  # it finishes even after a stop: it keeps the work
        model.save_pretrained(tmp, safe_serialization=True)
        saved.advance()
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        saved.advance()
        save_file(tensors, str(tmp / STATE_TENSORS))
        saved.advance()
        (tmp / STATE_JSON).write_text(json.dumps(document))
        saved.advance()
    return path


def newest_checkpoint(checkpoints: Path) -> Path | None:
    """The complete checkpoint with the highest step (names are zero-padded), or None."""
    found = sorted(p for p in checkpoints.glob("step-*") if (p / STATE_JSON).is_file())
    return found[-1] if found else None


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[-1])


def latest_checkpoint(checkpoints: Path) -> Path:
    found = newest_checkpoint(checkpoints)
    if found is None:
        raise ConfigError(
            f"{checkpoints.parent}: no checkpoint to resume from",
            "checkpoints are saved every --save-steps steps and at the midpoint",
        )
    return found


def restore_checkpoint(path: Path, model, optimizer, scheduler, scaler=None) -> LoopState:
    """Load the adapter weights, optimizer, scheduler and loss-scaler state saved in ``path``; returns the
    counters."""
    from safetensors.torch import load_file

    _restore_weights(path, model)
    document = json.loads((path / STATE_JSON).read_text())
    tensors = load_file(str(path / STATE_TENSORS))
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(document["optimizer_scalars"].items()):
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": document["param_groups"]})
    scheduler.load_state_dict(document["scheduler"])
    if scaler is not None and document.get("scaler"):
        scaler.load_state_dict(document["scaler"])
    return LoopState(**document["loop"])


def _restore_weights(path: Path, model) -> None:
    from safetensors.torch import load_file

    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
        return
    weights = {}
    for shard in sorted(path.glob("model*.safetensors")):
        weights.update(load_file(str(shard)))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise ConfigError(
            f"{path}: checkpoint does not match the model", "resume with the settings the run started with"
        )
