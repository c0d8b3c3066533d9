"""The multi-run driver: N LoRA runs in a row, each started and merged by the chosen rule (SLAO by default)."""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..channel import ControlServer, RunClaim
from ..config import TrainConfig
from ..data import DataSpec, load_chat_tokenizer, prepare_data
from ..data.pairs import OBJECTIVES, PreferenceExample
from ..data.tokenize import TokenizedExample
from ..errors import ConfigError, DataError
from ..events import ContinualEval, EventBus, JsonlSink, MultiRunFinished, MultiRunProgress, attached
from ..fsutil import atomic_dir
from ..modeling import model_context
from ..presets import ResolvedModel, resolve_model
from ..rundir import RunDir
from ..train import TrainingControl, run_training
from ..train.checkpoint import latest_checkpoint
from ..train.loop import evaluate
from .slao import check_merge_mode, initial_state, lambda_schedule, merge_state
from .state import MultiRunDir, Progress


@dataclass
class MultiRunPlan:
    """What to train in which order. ``tasks`` are data sources: one per run, or one dataset cut into
    ``num_runs`` successive chunks of ``samples_per_run`` examples (``chunked``)."""

    tasks: list[str]
    num_runs: int
    steps_per_run: int
    chunked: bool = False
    samples_per_run: int = 0  # chunked: 0 splits the data evenly; tasks: 0 uses every example
    merge_mode: str = "slao"  # slao | sequential | average
    lambda_schedule: str = "inv_sqrt"  # inv_sqrt | inv | a constant in (0, 1]
    lr_decay: float = 1.0  # run i trains at peak learning_rate · lr_decay^(i−1) (warmup in every run)
    replay: float = 0.0  # extra examples from earlier runs, as a fraction of this run's
    eval_split: float = 0.1  # held-out rows per task, evaluated after every run
    objectives: list[str] = field(
        default_factory=list
    )  # one per task (sft, dpo, orpo); empty: the config's for all

    def __post_init__(self) -> None:
        self.tasks = [str(t) for t in self.tasks]
        if not self.tasks:
            raise ConfigError(
                "no tasks given", "pass dataset=... (with num_runs) or datasets=[task1, task2, ...]"
            )
        for name in ("num_runs", "steps_per_run"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"{name} must be a positive integer, got {value!r}", "e.g. 3 runs of 100 steps each"
                )
        if not self.chunked and self.num_runs != len(self.tasks):
            raise ConfigError(
                f"{len(self.tasks)} tasks but num_runs={self.num_runs}",
                "one run per task: leave num_runs out",
            )
        if not isinstance(self.samples_per_run, int) or self.samples_per_run < 0:
            raise ConfigError(
                f"samples_per_run must be a non-negative integer, got {self.samples_per_run!r}",
                "0 splits the data evenly",
            )
        check_merge_mode(self.merge_mode)
        lambda_schedule(self.lambda_schedule)
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(
                f"lr_decay must be in (0, 1], got {self.lr_decay!r}", "1 keeps the same peak in every run"
            )
        if not 0 <= self.replay <= 1:
            raise ConfigError(
                f"replay must be in [0, 1], got {self.replay!r}",
                "e.g. 0.2 adds 20% examples from earlier runs; 0 is off",
            )
        if not 0 < self.eval_split < 1 and not (
            self.eval_split >= 1 and self.eval_split == int(self.eval_split)
        ):
            raise ConfigError(
                f"eval_split must be a fraction in (0, 1) or a number of rows, got {self.eval_split!r}",
                "multi-run evaluates every task on held-out rows after every run",
            )
        if self.objectives and (
            len(self.objectives) != len(self.tasks) or set(self.objectives) - set(OBJECTIVES)
        ):
            raise ConfigError(
                f"objectives {self.objectives} do not match the {len(self.tasks)} task(s)",
                f"give one per task, each one of: {', '.join(OBJECTIVES)}",
            )

    def objective(self, config: TrainConfig, task: int) -> str:
        """The objective task ``task`` (0-based) trains with."""
        return self.objectives[task] if self.objectives else config.objective


@dataclass
class Task:
    name: str
    train: list[TokenizedExample]
    eval: list[TokenizedExample]


@dataclass(kw_only=True)
class MultiRunResult:
    path: Path
    adapter_path: Path
    tasks: list[str]
    matrix: list[list[float]]  # matrix[task][run]: held-out loss after each run
    completed_runs: int
    stopped_early: bool = False
    run_dirs: list[Path] = field(default_factory=list)


def run_multi(
    config: TrainConfig,
    plan: MultiRunPlan,
    output: Path,
    bus: EventBus,
    control: TrainingControl | None = None,
) -> MultiRunResult:
    """Train the plan's runs into ``output``; a directory holding an unfinished multi-run with the same plan resumes
    at its first unfinished run, from that run's newest checkpoint (or its first step when it saved none)."""
    if config.method == "full":
        raise ConfigError(
            "multi-run merges LoRA adapters, and method 'full' trains none",
            "use method lora, dora, rslora or qlora",
        )
    control = control or TrainingControl()
    model = resolve_model(config.model)
    tasks, runs = prepare_tasks(config, plan, model)  # every data problem surfaces before anything is written
    state = MultiRunDir(Path(output).expanduser().resolve())
    progress = _open(state, config, plan, model)
    sink = JsonlSink(state.run.events_path)
    # The failure goes to the file (for `backprop watch` and the Runs screen); callers hear it from Trainer.
    with (
        attached(bus, sink, report_to=sink),
        RunClaim(state.run.path),
        ControlServer(state.run.path, control, bus),
    ):
        return _train_runs(config, plan, model, tasks, runs, state, progress, bus, control)


def prepare_tasks(
    config: TrainConfig, plan: MultiRunPlan, model: ResolvedModel
) -> tuple[list[Task], list[Task]]:
    """(the tasks evaluated after every run, the data of each run)."""
    tokenizer = load_chat_tokenizer(model.path)
    context = model_context(model.path, tokenizer)
    tasks = []
    for index, source in enumerate(plan.tasks):
        task_config = replace(config, data=source, objective=plan.objective(config, index))
        spec = replace(DataSpec.from_config(task_config), eval_split=plan.eval_split)
        data = prepare_data(spec, tokenizer, context)
        if not data.train or not data.eval:
            raise DataError(
                f"{source}: {len(data.train)} training and {len(data.eval)} held-out examples after filtering",
                "every task needs examples to train on and held-out rows to evaluate (see `backprop data inspect`)",
            )
        tasks.append(Task(source, data.train, data.eval))
    if not plan.chunked:
        cap = plan.samples_per_run or None
        return tasks, [Task(t.name, t.train[:cap], t.eval) for t in tasks]
    return tasks, _chunks(tasks[0], plan)


def _chunks(task: Task, plan: MultiRunPlan) -> list[Task]:
    size = plan.samples_per_run or len(task.train) // plan.num_runs
    if size < 1 or size * plan.num_runs > len(task.train):
        raise DataError(
            f"{task.name}: {len(task.train)} training examples cannot fill {plan.num_runs} runs of {size or plan.samples_per_run}",
            "lower --runs or --samples, or add data",
        )
    return [
        Task(f"{task.name}[{i * size}:{(i + 1) * size}]", task.train[i * size : (i + 1) * size], task.eval)
        for i in range(plan.num_runs)
    ]


def _open(state: MultiRunDir, config: TrainConfig, plan: MultiRunPlan, model: ResolvedModel) -> Progress:
    """Resume the progress found in ``state`` (same plan and settings only), or start a new multi-run there."""
    wanted = {"train": config.to_dict(), "multirun": asdict(plan)}
    progress = state.read_progress()
    if progress is not None:
        if progress.plan != wanted:
            changed = sorted(
                k
                for section in wanted
                for k in wanted[section]
                if progress.plan.get(section, {}).get(k) != wanted[section][k]
            )
            raise ConfigError(
                f"{state.progress_path}: the multi-run there was started with other settings ({', '.join(changed)})",
                "resume with the same settings, or choose a new --output",
            )
        return progress
    run = RunDir.create(state.path)
    run.write_config(config, {"model_path": str(model.path)})
    progress = Progress(wanted)
    state.write_progress(progress)
    return progress


def _train_runs(config, plan, model, tasks, runs, state, progress, bus, control) -> MultiRunResult:
    schedule = lambda_schedule(plan.lambda_schedule)
    previous_ft = state.load_factors(progress.completed_runs, "ft") if progress.completed_runs else None
    merged = state.load_factors(progress.completed_runs, "merged") if progress.completed_runs else None
    pad_id = load_chat_tokenizer(model.path).pad_token_id
    for index in range(progress.completed_runs + 1, plan.num_runs + 1):
        _between_runs(config, bus, control)
        if control.stop_requested:
            break
        run_config = _run_config(config, plan, index)
        run, checkpoint = _open_run_dir(state, index, run_config, model)
        bus.emit(
            MultiRunProgress(
                run=index,
                total_runs=plan.num_runs,
                task=runs[index - 1].name,
                run_dir=str(run.path),
                learning_rate=run_config.learning_rate,
            )
        )
        built: list[Any] = []  # the peft model the run builds

        def adapter_init(
            peft_model, start=previous_ft, built=built
        ):  # a checkpoint's weights replace these, after DPO's reference is taken
            built.append(peft_model)
            if start is not None:
                _load_state(peft_model, initial_state(start, plan.merge_mode))

        run_sink = JsonlSink(
            run.events_path
        )  # each run's own events.jsonl, so `backprop watch RUN` follows it
        with attached(bus, run_sink, report_failure=False):  # the multi-run's own file reports it
            result = run_training(
                run_config,
                model,
                _with_replay(runs, index, plan, config.seed),
                run,
                bus,
                control,
                eval_examples=runs[index - 1].eval,
                adapter_init=adapter_init,
                resume_from=checkpoint,
            )
        if (
            result.stopped_early and control.stop_requested
        ):  # interrupted, not early-stopped: a resume continues it
            break
        peft_model = built[-1]  # the model the run finished with
        previous_ft = _adapter_state(peft_model)
        merged = merge_state(merged, previous_ft, index, plan.merge_mode, schedule)
        state.save_factors(index, "ft", previous_ft)
        state.save_factors(index, "merged", merged)
        _load_state(peft_model, merged)
        column = [evaluate(peft_model, t.eval, config.batch_size, pad_id, _device(peft_model)) for t in tasks]
        progress.matrix = [row + [loss] for row, loss in zip(progress.matrix or [[] for _ in tasks], column)]
        progress.completed_runs = index
        state.write_progress(progress)
        bus.emit(
            ContinualEval(
                run=index, total_runs=plan.num_runs, tasks=[t.name for t in tasks], matrix=progress.matrix
            )
        )
    done = progress.completed_runs == plan.num_runs
    if done:
        _write_merged_adapter(state, plan.num_runs)
        bus.emit(
            MultiRunFinished(
                runs=plan.num_runs, merge_mode=plan.merge_mode, adapter_path=str(state.run.adapter)
            )
        )
    return MultiRunResult(
        path=state.path,
        adapter_path=state.run.adapter,
        tasks=[t.name for t in tasks],
        matrix=progress.matrix,
        completed_runs=progress.completed_runs,
        stopped_early=not done,
        run_dirs=[state.run_dir(i).path for i in range(1, progress.completed_runs + 1)],
    )


def _run_config(config: TrainConfig, plan: MultiRunPlan, index: int) -> TrainConfig:
    peak = config.learning_rate * plan.lr_decay ** (index - 1)
    task = 0 if plan.chunked else index - 1
    return replace(
        config,
        data=plan.tasks[task],
        steps=plan.steps_per_run,
        learning_rate=peak,
        seed=config.seed + index - 1,
        eval_split=plan.eval_split,
        objective=plan.objective(config, task),
    )


def _open_run_dir(
    state: MultiRunDir, index: int, config: TrainConfig, model: ResolvedModel
) -> tuple[RunDir, Path | None]:
    """Run ``index``'s directory and the newest checkpoint an interrupted attempt left there (None: start afresh;
    anything else that attempt left is discarded). The plan check in :func:`_open` guarantees the same settings."""
    run = state.run_dir(index)
    checkpoint = _newest_checkpoint(run)
    if checkpoint is not None:
        return run, checkpoint
    if run.path.exists():
        shutil.rmtree(run.path)
    run = RunDir.create(run.path)
    run.write_config(config, {"model_path": str(model.path), "multirun": str(state.path)})
    return run, None


def _newest_checkpoint(run: RunDir) -> Path | None:
    try:
        return latest_checkpoint(run.checkpoints)
    except ConfigError:  # none saved yet
        return None


def _with_replay(runs: list[Task], index: int, plan: MultiRunPlan, seed: int) -> list[TokenizedExample]:
    """Run ``index``'s examples plus ``replay`` × as many drawn (seeded) from the runs before it."""
    examples = runs[index - 1].train
    pairs = isinstance(examples[0], PreferenceExample)  # SFT and DPO/ORPO runs replay only their own kind
    earlier = [
        e for task in runs[: index - 1] for e in task.train if isinstance(e, PreferenceExample) == pairs
    ]
    count = min(len(earlier), round(plan.replay * len(examples)))
    return examples + random.Random(seed + index).sample(earlier, count) if count else examples


def _between_runs(config: TrainConfig, bus: EventBus, control: TrainingControl) -> None:
    """GPU safety between runs: free cached GPU memory, then the run's safety check (wait while a GPU is at the
    critical temperature; stop at the emergency one)."""
    from ..train.safety import ThermalGuard

    _empty_gpu_cache()
    ThermalGuard.for_config(config).check(0, bus, control)


def _empty_gpu_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _adapter_state(peft_model) -> dict:
    from peft import get_peft_model_state_dict

    return {name: t.detach().cpu().clone() for name, t in get_peft_model_state_dict(peft_model).items()}


def _load_state(peft_model, state: dict) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(peft_model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ConfigError(
            f"the saved factors do not fit this model ({unexpected[0]} ...)",
            "resume with the same model and LoRA settings",
        )


def _write_merged_adapter(state: MultiRunDir, last: int) -> None:
    """OUT/adapter: the last run's adapter folder (config, tokenizer) holding the merged factors."""
    from safetensors.torch import save_file

    source = state.run_dir(last).adapter
    merged = state.load_factors(last, "merged")
    with atomic_dir(state.run.adapter) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        save_file(merged, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})


def _device(peft_model) -> str:
    return next(peft_model.parameters()).device.type
