"""The Python API: ``Trainer(model).train(data, steps=...)`` then ``.export("gguf")``."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from .config import TrainConfig
from .data import load_conversations
from .errors import ConfigError
from .events import Event, EventBus, JsonlSink, RunFailed
from .fsutil import atomic_dir
from .paths import default_runs_dir
from .presets import PRESETS, resolve_model
from .rundir import RunDir
from .train import TrainingControl, TrainResult, prepare_examples, run_training

# The built-in tiny models start from random weights and need a much larger step size than a
# pretrained model's adapter; used unless the caller sets learning_rate.
TINY_LEARNING_RATE = 3e-3


class Trainer:
    """Fine-tune ``model`` (a preset name, a local folder or a hub id) with LoRA.

    Keyword overrides are any :class:`TrainConfig` field (``learning_rate``, ``lora_rank``, ...).
    ``on_event`` receives every progress event (see :mod:`backprop_engine.events`).
    """

    def __init__(self, model: str = "tiny", *, on_event: Callable[[Event], None] | None = None, **overrides) -> None:
        if "learning_rate" not in overrides and PRESETS.get(model) and PRESETS[model].source == "builtin":
            overrides["learning_rate"] = TINY_LEARNING_RATE
        self.config = TrainConfig.with_overrides(model=model, **overrides)
        self.bus = EventBus([on_event] if on_event else [])
        self.control = TrainingControl()  # pause/resume/stop/checkpoint-now from another thread
        self.run: RunDir | None = None
        self.result: TrainResult | None = None

    @classmethod
    def from_run(cls, run_dir: str | Path, on_event: Callable[[Event], None] | None = None) -> Trainer:
        """Reopen a finished run (to export it, chat with it or copy its adapter)."""
        run = RunDir.open(Path(run_dir))
        settings = run.read_config().to_dict()
        trainer = cls(settings.pop("model"), on_event=on_event, **settings)
        trainer.run = run
        return trainer

    def train(self, data: str | Path = "sample", steps: int | None = None, output_dir: str | Path | None = None) -> TrainResult:
        """Train on ``data`` (messages JSONL or a built-in dataset); ``output_dir`` becomes the run directory."""
        changes = {"data": str(data)} | ({"steps": steps} if steps is not None else {})
        self.config = TrainConfig.with_overrides(**(self.config.to_dict() | changes))
        # Everything the user can get wrong is checked before the run directory is created.
        conversations = load_conversations(self.config.data)
        model = resolve_model(self.config.model)
        examples = prepare_examples(conversations, model, self.config)
        self.run = RunDir.create(Path(output_dir) if output_dir else self._default_run_path())
        self.run.write_config(self.config, {"model_path": str(model.path)})
        sink = JsonlSink(self.run.events_path)
        self.bus.add(sink)
        try:
            self.result = run_training(self.config, model, examples, self.run, self.bus, self.control)
        except BaseException as exc:
            self.bus.emit(RunFailed(f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            self.bus.remove(sink)
            sink.close()
        return self.result

    def save(self, path: str | Path) -> Path:
        """Copy the trained adapter (safetensors + tokenizer) to ``path``."""
        source = self._require_run().adapter
        with atomic_dir(Path(path)) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        return Path(path)

    def export(self, format: str = "gguf", quantization: str = "q4_k_m", name: str | None = None) -> Path:
        """Merge, convert and quantize; returns the path of the GGUF (``RUN/export/<name>.<quant>.gguf``)."""
        from .export import export_run

        if format != "gguf":
            raise ConfigError(f"unknown export format {format!r}", "the supported format is 'gguf'")
        return export_run(self._require_run(), quantization, name=name, bus=self.bus).path

    def chat(self, prompt: str, system: str | None = None, max_tokens: int = 64) -> str:
        """Reply to ``prompt`` with the newest GGUF export of this run, through llama.cpp."""
        from .export import chat_once

        return chat_once(self._require_run().path, prompt, system=system, max_tokens=max_tokens)

    def _require_run(self) -> RunDir:
        if self.run is None:
            raise ConfigError("nothing trained yet", "call train() first, or use Trainer.from_run(run_dir)")
        return self.run

    def _default_run_path(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        label = Path(self.config.model).name.replace("/", "-")
        return default_runs_dir() / f"{stamp}-{label}"
