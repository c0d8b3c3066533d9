"""The Python API: ``Trainer(model).train(data, steps=...)`` then ``.export("gguf")``."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .channel import ControlServer, RunClaim, refuse_if_live, release_unstarted
from .config import TrainConfig
from .continual import MultiRunPlan, MultiRunResult, run_multi
from .defaults import Choice, DataSize, TrainingPlan, default_learning_rate, held_out_rows, plan_training
from .errors import ConfigError
from .events import Event, EventBus, JsonlSink, WarningEvent, attached
from .fsutil import atomic_dir
from .gguf_source import OLLAMA_PREFIX, is_gguf_model
from .paths import default_runs_dir
from .presets import resolve_model
from .quantizations import DEFAULT_QUANTIZATION
from .rundir import RunDir
from .tracking import open_trackers
from .train import TrainingControl, TrainResult, prepare_dataset, run_training
from .train.backend import check_backend, check_method_available
from .train.checkpoint import latest_checkpoint
from .train.distributed import launched


class Trainer:
    """Fine-tune ``model`` (a preset name, a local folder or a hub id) with LoRA.

    Keyword overrides are any :class:`TrainConfig` field (``learning_rate``, ``lora_rank``, ...).
    ``on_event`` receives every progress event (see :mod:`backprop_engine.events`).
    """

    def __init__(
        self, model: str = "tiny", *, on_event: Callable[[Event], None] | None = None, **overrides
    ) -> None:
        self.user_set = set(overrides)  # everything else is chosen by plan() from the model, data and machine
        if is_gguf_model(model) and not model.startswith(OLLAMA_PREFIX):
            model = str(
                Path(model).expanduser().absolute()
            )  # the run's config must find it from any directory
        config = TrainConfig.with_overrides(model=model, **overrides)
        if "learning_rate" not in overrides:
            config = TrainConfig.with_overrides(
                **(config.to_dict() | {"learning_rate": default_learning_rate(config)})
            )
        self.config = config
        self.bus = EventBus([on_event] if on_event else [])
        self.control = TrainingControl()  # pause/resume/stop/checkpoint-now from another thread
        self.dist = (
            launched()
        )  # under torchrun / accelerate launch: this process's rank (see train/distributed.py)
        self.run: RunDir | None = None
        self.result: TrainResult | None = None
        self._held: Path | None = (
            None  # a run directory claimed before its run was created (_held_from_start)
        )

    @classmethod
    def from_run(cls, run_dir: str | Path, on_event: Callable[[Event], None] | None = None) -> Trainer:
        """Reopen a finished run (to export it, chat with it or copy its adapter)."""
        run = RunDir.open(Path(run_dir))
        settings = run.read_config().to_dict()
        trainer = cls(
            settings.pop("model"), on_event=on_event, **settings
        )  # every value as the run recorded it
        trainer.run = run
        return trainer

    def plan(self, data: str | Path = "sample", steps: int | None = None, machine=None) -> TrainingPlan:
        """Every setting ``train`` would use on ``data``, each with its reason (nothing is written, and this
        trainer is left as it was); ``machine``: a hardware reading to plan for (default: this machine, probed now)."""
        config, user_set = self._with_data(data, steps)
        return self._plan(config, user_set, *self._prepare(config), machine=machine)

    def train(
        self, data: str | Path = "sample", steps: int | None = None, output_dir: str | Path | None = None
    ) -> TrainResult:
        """Train on ``data`` (messages JSONL or a built-in dataset); ``output_dir`` becomes the run directory.
        Settings not given to the constructor are chosen by :meth:`plan`."""
        # Everything the user can get wrong is checked before the run directory is created.
        with self._reporting(_NOT_STARTED), self._held_from_start(output_dir):
            self.config, self.user_set = self._with_data(data, steps)
            model, prepared = self.dist.main_first(
                lambda: self._prepare(self.config)
            )  # other ranks reuse its caches
            plan = self.dist.main_only(
                lambda: self._plan(self.config, self.user_set, model, prepared)
            )  # rank 0's plan for all
            self.config = plan.config
            if "eval_split" not in self.user_set and not prepared.eval:
                _hold_out(prepared, int(plan.config.eval_split))
            self.run = self.dist.main_only(lambda: self._create_run(output_dir, model))
            return self._execute(model, prepared, planned=plan.event())

    @contextlib.contextmanager
    def _reporting(self, kept: str) -> Iterator[None]:
        """Progress of the long stages (progress.py) goes to the run's events; a stop ends the running one,
        and only that one: the next run or export of this trainer starts unstopped."""
        from .progress import reporting

        bus = self.bus if self.dist.is_main else EventBus()
        try:
            with reporting(bus.emit, lambda: self.control.stop_requested, kept):
                yield
        finally:
            if self.control.stop_requested:
                self.control = TrainingControl()

    @contextlib.contextmanager
    def _held_from_start(self, output_dir) -> Iterator[None]:
        """A run directory that exists before training (the app's launch made it) is held, its channel served
        and its events.jsonl written from the start: the app shows and stops the stages before the first
        step too. If the run never gets its config.toml, what this wrote is removed again."""
        path = Path(output_dir).expanduser().resolve() if output_dir else None
        if path is None or not self.dist.is_main or not path.is_dir() or (path / "config.toml").exists():
            yield
            return
        events = JsonlSink(path / "events.jsonl")
        self.bus.add(events)
        try:
            with RunClaim(path), ControlServer(path, self.control, self.bus):
                self._held = path
                yield
        finally:
            self._held = None
            self.bus.remove(events)
            events.close()
            if not (path / "config.toml").exists():
                release_unstarted(path)

    def _create_run(self, output_dir, model) -> RunDir:
        run = RunDir.create(Path(output_dir) if output_dir else self._default_run_path())
        run.write_config(self.config, {"model_path": str(model.path), **self.dist.recorded()})
        return run

    def _with_data(self, data: str | Path, steps: int | None) -> tuple[TrainConfig, set[str]]:
        """This trainer's config and user-set names with ``data`` and ``steps`` given (self is unchanged)."""
        changes = {"data": str(data)} | ({"steps": steps} if steps is not None else {})
        return TrainConfig.with_overrides(**(self.config.to_dict() | changes)), self.user_set | set(changes)

    def _prepare(self, config: TrainConfig):
        check_method_available(config)
        if config.compare_prompts:
            from .compare import read_prompt_file

            read_prompt_file(config.compare_prompts)  # a bad file is reported before anything is written
        model = self._resolve_model(config)
        warnings: list[str] = []
        prepared = prepare_dataset(
            config, model, warnings
        )  # every source and format; bad rows per on_bad_row
        prepared.report.warnings += warnings
        return model, prepared

    def _plan(self, config: TrainConfig, user_set: set[str], model, prepared, machine=None) -> TrainingPlan:
        from .data.packing import packed_groups
        from .hardware import probe
        from .modeling import pick_device
        from .presets import ModelFacts

        seq_len = prepared.report.max_seq_len
        held_out = 0 if "eval_split" in user_set or prepared.eval else held_out_rows(len(prepared.train))
        train = prepared.train[: len(prepared.train) - held_out]  # split_eval's rows: the eval rows come last
        lengths = [len(e) for e in train]
        rows = (
            len(packed_groups(lengths, seq_len))
            if config.packing and config.objective == "sft"
            else len(lengths)
        )
        trained = sum(e.trained_tokens for e in train)
        facts = ModelFacts.from_config(json.loads((model.path / "config.json").read_text()))
        size = DataSize(rows, trained, seq_len, examples=len(train), held_out=held_out)
        plan = plan_training(
            config, user_set, facts, size, machine or probe(), pick_device(), self.dist.world_size
        )
        backend = check_backend(config)
        plan.choices.append(Choice("backend", backend.name, backend.reason, by_user="backend" in user_set))
        if plan.device == "cpu":
            plan.choices.append(_threads_choice(config, self.dist.world_size))
        return plan

    def resume(self) -> TrainResult:
        """Continue a run reopened with :meth:`from_run` from its newest checkpoint up to its configured steps
        (the same data order, optimizer state and learning-rate schedule as if it had never stopped)."""
        run = self._require_run()
        refuse_if_live(run.path)
        checkpoint = latest_checkpoint(run.checkpoints)
        check_method_available(
            self.config
        )  # before transformers loads: Unsloth, when chosen, is imported first
        self.dist.check_resume(run.config_path)
        with self._reporting(_NOT_RESUMED):
            model = self.dist.main_first(self._resolve_model)
            return self._execute(
                model,
                self.dist.main_first(lambda: prepare_dataset(self.config, model)),
                resume_from=checkpoint,
            )

    def _execute(
        self, model, data, resume_from: Path | None = None, planned: Event | None = None
    ) -> TrainResult:
        bus = self.bus if self.dist.is_main else EventBus()  # rank 0 alone reports and writes files
        held = self._held == self.run.path  # events.jsonl and the channel are open already
        sinks = (
            [*([] if held else [JsonlSink(self.run.events_path)]), *open_trackers(self.config, self.run.path)]
            if self.dist.is_main
            else []
        )
        kept = _NOT_RESUMED if resume_from else _NO_STEP
        with (
            attached(bus, *sinks),
            self._controlled(self.run.path, bus),
            self._reporting(kept),
        ):  # trackers: --report-to
            if planned is not None:
                bus.emit(planned)
            self.result = run_training(
                self.config,
                model,
                data.train,
                self.run,
                bus,
                self.control,
                eval_examples=data.eval,
                report=data.report,
                resume_from=resume_from,
                dist=self.dist,
                compare=True,
            )
        return self.result

    @contextlib.contextmanager
    def _controlled(self, path: Path, bus: EventBus) -> Iterator[None]:
        """This process holds the run (lock + owner record) and serves its control channel while it trains;
        under a launcher, rank 0 does, and the ranks agree on its requests."""
        if not self.dist.is_main or self._held == path:
            yield
            return
        with RunClaim(path), ControlServer(path, self.control, bus):
            yield

    def multi_run(
        self,
        dataset: str | Path | None = None,
        *,
        datasets: list[str | Path] | None = None,
        num_runs: int | None = None,
        steps_per_run: int | None = None,
        samples_per_run: int = 0,
        merge_mode: str = "slao",
        lambda_schedule: str = "inv_sqrt",
        lr_decay: float = 1.0,
        replay: float = 0.0,
        eval_split: float = 0.1,
        output_dir: str | Path | None = None,
        objectives: list[str] | None = None,
    ) -> MultiRunResult:
        """Several LoRA runs in a row, merged after each (``merge_mode``: slao, sequential or average).

        ``dataset`` with ``num_runs``: successive chunks of ``samples_per_run`` examples of one dataset;
        ``datasets=[task1, task2, ...]``: one run per task. Every task is evaluated on held-out rows after
        every run (preference pairs: the chosen replies' loss); ``objectives`` (one per task: sft, dpo, orpo) mixes
        SFT and preference runs in the sequence. The output directory's ``adapter/`` is the merged adapter, which ``export`` uses; calling
        again with the same ``output_dir`` and settings resumes an interrupted multi-run (its interrupted run
        from that run's newest checkpoint).
        """
        if (dataset is None) == (datasets is None):
            raise ConfigError(
                "pass either dataset= (with num_runs) or datasets=[...]",
                "one dataset in chunks, or a list of tasks",
            )
        if self.dist.enabled:
            raise ConfigError(
                "multi-run training does not run under torchrun / accelerate launch",
                "start it as one process",
            )
        tasks = [dataset] if dataset is not None else list(datasets)
        plan = MultiRunPlan(
            tasks,
            num_runs if num_runs is not None else (len(tasks) if datasets is not None else 0),
            steps_per_run if steps_per_run is not None else self.config.steps,
            chunked=dataset is not None,
            samples_per_run=samples_per_run,
            merge_mode=merge_mode,
            lambda_schedule=lambda_schedule,
            lr_decay=lr_decay,
            replay=replay,
            eval_split=eval_split,
            objectives=list(objectives or []),
        )
        self.config = TrainConfig.with_overrides(
            **(self.config.to_dict() | {"data": plan.tasks[0], "steps": plan.steps_per_run})
        )
        output = Path(output_dir) if output_dir else self._default_run_path()
        with attached(self.bus), self._reporting(""):
            result = run_multi(self.config, plan, output, self.bus, self.control)
        self.run = RunDir(result.path)
        return result

    def save(self, path: str | Path) -> Path:
        """Copy the trained adapter (safetensors + tokenizer; the whole model after full fine-tuning) to ``path``."""
        run = self._require_run()
        source = run.merged if run.full_fine_tuned else run.adapter
        with atomic_dir(Path(path)) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        return Path(path)

    def export(
        self,
        format: str = "gguf",
        quantization: str | list[str] = DEFAULT_QUANTIZATION,
        name: str | None = None,
        *,
        verify: bool = True,
        register_ollama: bool = False,
        model_name: str | None = None,
        system: str | None = None,
    ) -> Path | list[Path]:
        """Merge, convert, quantize and verify; ``RUN/export/<name>.<quant>.gguf`` (a list for a list of quantizations).

        ``register_ollama`` also creates Ollama model ``model_name`` (default: the run's name) from the Modelfile.
        """
        from .export.pipeline import ExportOptions, export, run_source

        if format != "gguf":
            raise ConfigError(f"unknown export format {format!r}", "the supported format is 'gguf'")
        quantizations = (quantization,) if isinstance(quantization, str) else tuple(quantization)
        options = ExportOptions(
            quantizations,
            name=name,
            verify=verify,
            ollama=register_ollama,
            ollama_name=model_name,
            system=system,
        )
        with self._reporting(""):
            paths = [result.path for result in export(run_source(self._require_run()), options, self.bus)]
        return paths[0] if isinstance(quantization, str) else paths

    def chat(self, prompt: str, system: str | None = None, max_tokens: int = 64) -> str:
        """Reply to ``prompt`` with the newest GGUF export of this run, through llama.cpp."""
        from .export import chat_once

        return chat_once(self._require_run().path, prompt, system=system, max_tokens=max_tokens)

    def _resolve_model(self, config: TrainConfig | None = None):
        config = config or self.config
        model = resolve_model(
            config.model, allow_pickle=config.allow_pickle, trust_remote_code=config.trust_remote_code
        )
        if model.quantized_from:
            self.bus.emit(
                WarningEvent(
                    message=f"{config.model}: the base model comes from a {model.quantized_from} GGUF, dequantized into {model.path}; "
                    "it keeps that file's quantization error"
                )
            )
        return model

    def _require_run(self) -> RunDir:
        if self.run is None:
            raise ConfigError("nothing trained yet", "call train() first, or use Trainer.from_run(run_dir)")
        return self.run

    def _default_run_path(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        label = Path(self.config.model).name.replace("/", "-")
        return default_runs_dir() / f"{stamp}-{label}"


# What a stop before the first step keeps (progress.py finishes "stopped during STAGE at N of M: …").
_NOT_STARTED = "the run did not start; nothing was kept"
_NO_STEP = "no step was trained; the run keeps its settings (config.toml): start it again from Runs"
_NOT_RESUMED = "the run is as it was: continue it again from its newest checkpoint"


def _hold_out(prepared, rows: int) -> None:
    """Move the last ``rows`` training examples to the eval split, as ``eval_split=rows`` would have."""
    if rows:
        prepared.train, held = prepared.train[:-rows], prepared.train[-rows:]
        prepared.eval = held + prepared.eval
        prepared.report.train_examples, prepared.report.eval_examples = (
            len(prepared.train),
            len(prepared.eval),
        )


def _threads_choice(config: TrainConfig, processes: int) -> Choice:
    from .threads import CHECK_SECONDS, plan_threads

    threads = plan_threads(config.threads, processes)
    again = f"; re-checked every {CHECK_SECONDS:.0f} s while training" if threads.adaptive else ""
    return Choice("threads", threads.threads, threads.reason + again, by_user=config.threads > 0)
