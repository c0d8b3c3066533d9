"""One readable training loop: LoRA via peft, token-weighted loss on assistant tokens, events as it goes."""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainConfig
from ..data import DataReport, DataSpec, PreparedData, load_chat_tokenizer, prepare_data
from ..data.packing import pack, packed_groups
from ..data.pairs import chats
from ..data.tokenize import IGNORE_INDEX, TokenizedExample
from ..errors import Cancelled, TrainingError
from ..events import (
    CheckpointSaved,
    DataPrepared,
    EvalMetrics,
    EventBus,
    RewardMetrics,
    RowsSkipped,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    StepMetrics,
    WarningEvent,
)
from ..fsutil import atomic_dir
from ..modeling import model_context, pick_device
from ..presets import ResolvedModel
from ..progress import track
from ..rundir import FULL_MODEL_STAMP, RunDir
from ..threads import ThreadGuard
from .backend import build_trainable_model
from .checkpoint import CheckpointClock, LoopState, restore_checkpoint, save_checkpoint
from .control import TrainingControl
from .distributed import ONE_PROCESS, Distributed
from .guard import DivergenceGuard, grad_scaler
from .loss import summed_loss
from .safety import ThermalGuard


@dataclass(kw_only=True)
class TrainResult:
    run_dir: Path
    adapter_path: Path
    steps: int
    final_loss: float
    first_loss: float
    tokens: int
    seconds: float
    stopped_early: bool = False
    eval_loss: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def prepare_dataset(
    config: TrainConfig, model: ResolvedModel, warnings: list[str] | None = None
) -> PreparedData:
    """Every source and format of ``config.data`` through the pipeline (filters, masks, split), cached."""
    tokenizer = load_chat_tokenizer(model.path, warn=warnings.append if warnings is not None else None)
    return prepare_data(DataSpec.from_config(config), tokenizer, model_context(model.path, tokenizer))


def run_training(
    config: TrainConfig,
    model: ResolvedModel,
    examples: list[TokenizedExample],
    run: RunDir,
    bus: EventBus,
    control: TrainingControl | None = None,
    eval_examples: list[TokenizedExample] | None = None,
    report: DataReport | None = None,
    adapter_init: Callable | None = None,
    thermal: ThermalGuard | None = None,
    resume_from: Path | None = None,
    dist: Distributed | None = None,
    compare: bool = False,
) -> TrainResult:
    """Train a LoRA adapter on ``examples``; ``adapter_init(peft_model)`` may set the adapter's starting
    weights (multi-run training starts each run from the previous one's factors). ``dist``: this process's
    place in a torchrun / accelerate launch group (see train/distributed.py). ``compare``: base vs fine-tune
    answers to held-out prompts (compare.py), which needs the model to start as the base."""
    import torch

    dist = (dist or ONE_PROCESS).for_run()
    bus = bus if dist.is_main else EventBus()  # one process per device: rank 0 alone reports
    torch.manual_seed(config.seed)
    device = pick_device()
    threads = ThreadGuard.for_run(config.threads, dist.world_size, device)
    tokenizer = load_chat_tokenizer(model.path)
    built = build_trainable_model(config, model.path, device)
    peft_model = built.model
    if adapter_init is not None:
        adapter_init(peft_model)
    objective = _objective(config, tokenizer.pad_token_id, device)
    packing = config.packing and not objective.pairs and packing_is_exact(peft_model, device)
    longest = max(len(e) for e in examples)
    pack_len = max(report.max_seq_len if report else config.max_seq_len, longest) if packing else 0
    batches = _batch_stream(
        examples, config, tokenizer.pad_token_id, device, pack_len, dist, objective.collate
    )
    trainable, total = _count_parameters(peft_model)
    bus.emit(
        RunStarted(
            run_dir=str(run.path),
            model=config.model,
            total_steps=config.steps,
            num_examples=len(examples),
            trainable_params=trainable,
            total_params=total,
            backend=built.backend,
            backend_reason=built.reason,
        )
    )
    if config.packing and not packing and not objective.pairs:
        bus.emit(
            WarningEvent(
                message="packing is off: this model's attention does not honour per-example position ids"
            )
        )
    if report is not None:
        _emit_data_events(
            bus, report, packing, batch_efficiency(examples, config.batch_size, config.seed, pack_len)
        )
    objective.prepare(
        config, built, examples, eval_examples, dist, adapted=adapter_init is not None
    )  # before a checkpoint is restored

    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    checkpoint_steps = _checkpoint_steps(config)
    scaler = grad_scaler(peft_model, device)
    checkpoints = Checkpointer(
        run.checkpoints,
        config.save_total_limit,
        (peft_model, optimizer, scheduler, scaler),
        bus,
        dist.is_main,
        tokenizer,
    )
    early_stopping = EarlyStopping(config.early_stopping_patience, config.early_stopping_min_delta)
    guard = DivergenceGuard(config.max_nonfinite_steps, config.loss_spike_factor, config.learning_rate, bus)
    check = _learning_check(config, peft_model, tokenizer, eval_examples, examples, bus, dist, compare)
    # A stop during an evaluation or the answers ends them at their next batch or reply (Cancelled, left
    # out here): the run then stops as between two steps, keeping its checkpoint and adapter.
    if compare and check.answers.prompts:  # the base's held-out loss is only reported beside its answers
        with contextlib.suppress(Cancelled):
            check.start(
                evaluate(peft_model, eval_examples, config.batch_size, tokenizer.pad_token_id, device, dist)
                if eval_examples
                else None
            )

    peft_model.train()
    stepping = dist.wrap(peft_model, device)  # DDP across ranks, else the model itself
    micro = MicroBatching()
    control = dist.agreeing(control or TrainingControl())
    thermal = thermal or ThermalGuard.for_config(config)
    clock = CheckpointClock.for_config(config)
    started = time.perf_counter()
    paused_seconds = 0.0
    tokens = step = 0
    first_loss = loss_value = float("nan")
    eval_loss = None
    if resume_from is not None:
        state = restore_checkpoint(resume_from, peft_model, optimizer, scheduler, scaler)
        step, tokens, first_loss, micro.parts = state.step, state.tokens, state.first_loss, state.micro_parts
        for _ in range(step * config.grad_accum):  # the seeded stream continues where the run stopped
            next(batches)
        bus.emit(RunResumed(step=step))
    while step < config.steps and not control.stop_requested:
        paused_seconds += _wait_while_paused(control, step, bus) + thermal.check(step, bus, control)
        if threads is not None and (change := threads.check()):
            bus.emit(WarningEvent(message=change))
        if (
            dist.is_main
            and step + 1 < config.steps
            and clock.due(time.perf_counter() - started - paused_seconds)
        ):
            control.request_checkpoint()  # saved after this step, like a request from the app
        dist.agree(control)  # every rank stops (or saves) at the same step
        if control.stop_requested:
            break
        step += 1
        learning_rate = optimizer.param_groups[0]["lr"]
        loss, grad_norm, step_tokens, applied = _train_step(
            stepping, optimizer, batches, config, micro, bus, dist, StepUpdate(step, guard, scaler), objective
        )
        rewards = objective.take(dist)
        scheduler.step()
        tokens += step_tokens
        if guard.diverged:
            raise guard.error(
                step, str(checkpoints.save(step, LoopState(step, tokens, first_loss, micro.parts)))
            )
        loss_value = loss if applied else loss_value
        first_loss = loss if applied and math.isnan(first_loss) else first_loss
        elapsed = time.perf_counter() - started - paused_seconds
        if applied and (step % config.logging_steps == 0 or step in (1, config.steps)):
            bus.emit(
                _metrics(
                    step,
                    config,
                    loss_value,
                    learning_rate,
                    grad_norm,
                    tokens,
                    elapsed,
                    device,
                    thermal.last_c,
                )
            )
            if rewards is not None:
                bus.emit(RewardMetrics(step=step, split="train", **rewards))
        with contextlib.suppress(Cancelled):
            check.sample(step)
        if eval_examples and config.eval_steps and step % config.eval_steps == 0 and step != config.steps:
            with contextlib.suppress(Cancelled):
                eval_loss = _emit_eval(
                    peft_model,
                    eval_examples,
                    config,
                    tokenizer.pad_token_id,
                    device,
                    step,
                    bus,
                    dist,
                    objective,
                )
                if early_stopping.should_stop(eval_loss, step, bus):
                    break
        if step in checkpoint_steps or control.take_checkpoint_request():
            checkpoints.save(step, LoopState(step, tokens, first_loss, micro.parts))
    if 0 < step < config.steps:  # stopped early: whatever stopped it, the run can continue from here
        checkpoints.save(step, LoopState(step, tokens, first_loss, micro.parts))
    seconds = time.perf_counter() - started - paused_seconds
    if eval_examples:
        with contextlib.suppress(Cancelled):  # after a stop: not begun
            eval_loss = _emit_eval(
                peft_model, eval_examples, config, tokenizer.pad_token_id, device, step, bus, dist, objective
            )
    with contextlib.suppress(Cancelled):
        if (
            compare and objective.pairs and eval_examples
        ):  # the comparison's held-out loss is the chosen replies' (as the base's)
            check.finish(
                step,
                evaluate(peft_model, eval_examples, config.batch_size, tokenizer.pad_token_id, device, dist),
            )
        else:
            check.finish(step, eval_loss)
    adapter = dist.main_only(lambda: _save_trained(built, run, tokenizer))
    dist.report(bus)
    stopped = step < config.steps
    bus.emit(
        RunFinished(
            steps=step,
            final_loss=loss_value,
            tokens=tokens,
            seconds=seconds,
            adapter_path=str(adapter),
            stopped_early=stopped,
        )
    )
    return TrainResult(
        run_dir=run.path,
        adapter_path=adapter,
        steps=step,
        final_loss=loss_value,
        first_loss=first_loss,
        tokens=tokens,
        seconds=seconds,
        stopped_early=stopped,
        eval_loss=eval_loss,
    )


class Checkpointer:
    """Saves resumable checkpoints (once per step) and keeps the newest ``keep`` of them (0: all)."""

    def __init__(
        self, folder: Path, keep: int, parts: tuple, bus: EventBus, writes: bool = True, tokenizer=None
    ) -> None:
        self.folder, self.keep, self.bus = folder, keep, bus
        self.model, self.optimizer, self.scheduler, self.scaler = parts  # the scaler is None unless fp16
        self.last_step = -1
        self.tokenizer = tokenizer  # saved with each checkpoint: the chat template it trains with
        self.writes = writes  # False on every rank but 0 of a multi-process run

    def save(self, step: int, state: LoopState) -> Path:
        path = self.folder / f"step-{step:06d}"
        if step == self.last_step or not self.writes:
            return path
        save_checkpoint(
            path,
            self.model,
            self.optimizer,
            self.scheduler,
            state,
            tokenizer=self.tokenizer,
            scaler=self.scaler,
        )
        self.last_step = step
        self.bus.emit(CheckpointSaved(step=step, path=str(path)))
        if self.keep:
            for old in sorted(self.folder.glob("step-*"))[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        return path


@dataclass
class EarlyStopping:
    """Stop once the eval loss has not improved by more than ``min_delta`` for ``patience`` evals (0: never)."""

    patience: int
    min_delta: float = 0.0
    best: float = math.inf
    best_step: int = 0
    evals_without_gain: int = 0

    def should_stop(self, loss: float, step: int, bus: EventBus) -> bool:
        if not self.patience:
            return False
        if loss < self.best - self.min_delta:
            self.best, self.best_step, self.evals_without_gain = loss, step, 0
            return False
        self.evals_without_gain += 1
        if self.evals_without_gain < self.patience:
            return False
        bus.emit(
            WarningEvent(
                message=f"early stopping at step {step}: eval loss has not improved for {self.patience} evals "
                f"(best {self.best:.4f} at step {self.best_step})"
            )
        )
        return True


def _emit_data_events(bus: EventBus, report: DataReport, packing: bool, efficiency: float) -> None:
    if report.bad_row_count:
        bus.emit(RowsSkipped(count=report.bad_row_count, first=[str(row) for row in report.bad_rows[:5]]))
    for warning in report.warnings:
        bus.emit(WarningEvent(message=warning))
    removed = {step.name: step.removed for step in report.filters}
    bus.emit(
        DataPrepared(
            rows_read=report.rows_read,
            formats=report.formats,
            train_examples=report.train_examples,
            eval_examples=report.eval_examples,
            max_seq_len=report.max_seq_len,
            truncated=report.truncated,
            trained_fraction=report.trained_fraction,
            removed=removed,
            packing=packing,
            packing_efficiency=efficiency,
            cached=report.cached,
        )
    )


def _learning_check(config, model, tokenizer, held_out, trained, bus, dist: Distributed, compare: bool):
    from ..compare import Answers, LearningCheck, choose_prompts, sample_steps

    answers = choose_prompts(config, tokenizer, held_out or [], trained) if compare else Answers([], "")
    return LearningCheck(
        model, tokenizer, answers, bus, sample_steps(config, bool(held_out)), speaks=dist.is_main
    )


def _emit_eval(
    model, examples, config, pad_id, device, step, bus, dist: Distributed, objective=None
) -> float:
    if objective is not None and objective.pairs:
        loss, rewards = objective.evaluate(model, examples, config.batch_size, dist)
    else:
        loss, rewards = evaluate(model, examples, config.batch_size, pad_id, device, dist), None
    bus.emit(EvalMetrics(step=step, loss=loss, examples=len(examples)))
    if rewards is not None:
        bus.emit(RewardMetrics(step=step, split="eval", **rewards))
    return loss


def _wait_while_paused(control: TrainingControl, step: int, bus: EventBus) -> float:
    if not control.paused:
        return 0.0
    bus.emit(RunPaused(step=step))
    started = time.perf_counter()
    control.wait_until_running()
    bus.emit(RunResumed(step=step))
    return time.perf_counter() - started


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine or linear decay to 10% of the peak (or constant)."""
    if step < config.warmup_steps:
        return (step + 1) / (config.warmup_steps + 1)
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    if config.lr_scheduler == "constant":
        return 1.0
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if config.lr_scheduler == "cosine" else 1 - progress
    return 0.1 + 0.9 * decay


def _count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


@dataclass
class Batch:
    input_ids: object  # tensors, [rows, width]
    labels: object
    attention_mask: object  # None when packed: the position ids carry the example boundaries
    position_ids: object
    real_tokens: int

    def pieces(self, parts: int) -> list[Batch]:
        """The rows cut into ``parts`` smaller micro-batches (the out-of-memory back-off); token counts stay
        with the whole batch."""
        size = math.ceil(self.input_ids.size(0) / parts)
        count = math.ceil(self.input_ids.size(0) / size)
        masks = self.attention_mask.split(size) if self.attention_mask is not None else [None] * count
        parts_of = zip(
            self.input_ids.split(size), self.labels.split(size), masks, self.position_ids.split(size)
        )
        return [
            Batch(ids, labels, mask, positions, real_tokens=0) for ids, labels, mask, positions in parts_of
        ]


@dataclass
class MicroBatching:
    """How finely each micro-batch is cut: doubled on every out-of-memory error, kept for the rest of the run."""

    parts: int = 1

    def size(self, rows: int) -> int:
        return math.ceil(rows / self.parts)


def _batch_stream(
    examples: list[TokenizedExample],
    config: TrainConfig,
    pad_id: int,
    device: str,
    pack_len: int = 0,
    dist: Distributed = ONE_PROCESS,
    collate_rows: Callable | None = None,
):
    """Endless micro-batches of ``batch_size`` rows, a seeded shuffle per epoch. With ``pack_len`` each row
    packs several examples up to that many tokens; without, a row is one example. Across ranks, each takes
    its share of ``batch_size × world_size`` rows. ``collate_rows``: how rows become a batch (preference pairs)."""
    rows = pack(examples, pack_len) if pack_len else examples
    rng = random.Random(config.seed)
    size = config.batch_size * dist.world_size
    collate_rows = collate_rows or (lambda part: collate(part, pad_id, device, packed=bool(pack_len)))
    while True:
        order = list(range(len(rows)))
        rng.shuffle(order)
        for start in range(0, len(order), size):
            chunk = [rows[i] for i in order[start : start + size]]
            yield dist.local_batch(chunk, collate_rows)


def collate(rows: list, pad_id: int, device: str, packed: bool) -> Batch:
    """Right-pad rows to the widest; labels are masked on padding. Packed rows keep their position ids."""
    import torch

    width = max(len(r.input_ids) for r in rows)
    pads = [width - len(r.input_ids) for r in rows]
    ids = [r.input_ids + [pad_id] * n for r, n in zip(rows, pads)]
    labels = [r.labels + [IGNORE_INDEX] * n for r, n in zip(rows, pads)]
    if packed:  # the padding forms one more "example" of its own, which nothing attends to
        positions = [r.position_ids + list(range(n)) for r, n in zip(rows, pads)]
        mask = None
    else:
        positions = [list(range(width)) for _ in rows]
        mask = torch.tensor([[1] * len(r.input_ids) + [0] * n for r, n in zip(rows, pads)], device=device)
    tensor = lambda x: torch.tensor(x, device=device)  # noqa: E731
    return Batch(tensor(ids), tensor(labels), mask, tensor(positions), sum(len(r.input_ids) for r in rows))


class TokenLoss:
    """The SFT objective: the loss is summed over trained tokens and averaged over them."""

    pairs = False
    collate = None  # the stream's own padding or packing

    @staticmethod
    def units(batch: Batch) -> int:
        return int((batch.labels[:, 1:] != IGNORE_INDEX).sum())

    @staticmethod
    def summed(model, piece: Batch):
        return summed_loss(model, piece)

    def prepare(self, config, built, examples, eval_examples, dist, adapted: bool = False) -> None:
        pass

    def begin(self) -> None:
        pass

    def take(self, dist: Distributed = ONE_PROCESS) -> None:
        return None


TOKENS = TokenLoss()


def _objective(config: TrainConfig, pad_id: int, device: str):
    """SFT's token loss, or DPO/ORPO's pair loss (train/preference.py)."""
    if config.objective == "sft":
        return TOKENS
    from .preference import PreferenceLoss

    return PreferenceLoss(config, pad_id, device)


@dataclass
class StepUpdate:
    """What decides whether a step's gradients become an update: the divergence guard, and the fp16 loss
    scaler when there is one (train/guard.py)."""

    step: int
    guard: DivergenceGuard | None = None
    scaler: object = None  # torch.amp.GradScaler

    def backward(self, loss) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def apply(self, optimizer, loss: float, grad_norm: float) -> bool:
        scale = self.scaler.get_scale() if self.scaler is not None else None
        applied = self.guard.accept(self.step, loss, grad_norm, scale) if self.guard else True
        if applied:
            self.scaler.step(optimizer) if self.scaler is not None else optimizer.step()
        if self.scaler is not None:
            self.scaler.update()  # an overflow (inf gradients, found when unscaling) halves the scale
        return applied


def _train_step(
    model,
    optimizer,
    batches,
    config: TrainConfig,
    micro: MicroBatching,
    bus: EventBus,
    dist: Distributed = ONE_PROCESS,
    update: StepUpdate | None = None,
    objective=TOKENS,
) -> tuple[float, float, int, bool]:
    """One optimizer step over ``grad_accum`` micro-batches; the loss is averaged over trained tokens.
    Returns the loss, the gradient norm, the tokens and whether the update was applied (``update`` decides).

    On out-of-memory the step is retried with each micro-batch cut in two (twice the accumulation, the
    same effective batch), down to one row per micro-batch.
    """
    import torch

    micro_batches = [next(batches) for _ in range(config.grad_accum)]
    while True:
        try:
            return _accumulate(
                model, optimizer, micro_batches, config, micro.parts, dist, update or StepUpdate(0), objective
            )
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            _free_memory()
            rows = micro_batches[0].input_ids.size(0)
            dist.out_of_memory(micro.size(rows))
            if micro.size(rows) <= 1:
                raise _out_of_memory_at_one_row() from None
            before = micro.size(rows)
            micro.parts *= 2
            bus.emit(
                WarningEvent(
                    message=f"out of memory at micro-batch {before}: retrying with micro-batch {micro.size(rows)} × "
                    f"{config.grad_accum * micro.parts} accumulation (same effective batch)"
                )
            )


def _accumulate(
    model,
    optimizer,
    micro_batches: list[Batch],
    config: TrainConfig,
    parts: int,
    dist: Distributed,
    update: StepUpdate,
    objective=TOKENS,
) -> tuple[float, float, int, bool]:
    import torch

    # Across ranks: every rank's trained tokens (pairs); DDP averages the gradients, so each rank scales by their count.
    trained = dist.total(sum(objective.units(b) for b in micro_batches))
    pieces = [piece for batch in micro_batches for piece in (batch.pieces(parts) if parts > 1 else [batch])]
    total_loss = 0.0
    objective.begin()
    for index, piece in enumerate(pieces):
        with dist.accumulating(model, last=index == len(pieces) - 1):
            loss_sum = objective.summed(model, piece)
            update.backward(loss_sum * dist.world_size / max(trained, 1))
        total_loss += loss_sum.item()
    if update.scaler is not None:
        update.scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm).item()
    loss, tokens = dist.step_totals(total_loss / max(trained, 1), sum(b.real_tokens for b in micro_batches))
    applied = update.apply(optimizer, loss, grad_norm)
    optimizer.zero_grad(set_to_none=True)
    return loss, grad_norm, tokens, applied


def _out_of_memory_at_one_row() -> TrainingError:
    return TrainingError(
        "out of memory even with one row per micro-batch",
        "lower --max-seq-len, use --method qlora or --gradient-checkpointing, or a smaller model",
    )


def in_halving_batches(items: list, batch_size: int, score: Callable[[list], None]) -> Iterator[int]:
    """``score`` consecutive batches of ``items`` (no gradients kept, so a retry repeats nothing); out of
    memory halves the batch and retries it. Yields how many items are scored so far."""
    import torch

    start = 0
    while start < len(items):
        chunk = items[start : start + batch_size]
        try:
            score(chunk)
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise _out_of_memory_at_one_row() from None
            _free_memory()
            batch_size //= 2
            continue
        start += len(chunk)
        yield start


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate(
    model,
    examples: list[TokenizedExample],
    batch_size: int,
    pad_id: int,
    device: str,
    dist: Distributed = ONE_PROCESS,
) -> float:
    """Mean loss per trained token over ``examples`` (padded batches, no gradients; of preference pairs, the
    chosen replies); across ranks, each scores its share and the sums are added up. Out of memory halves the
    batch (the sums stay the same)."""
    import torch

    was_training = model.training
    total, count = 0.0, 0
    examples = dist.shard(chats(examples))

    def add(rows: list) -> None:
        nonlocal total, count
        batch = collate(rows, pad_id, device, packed=False)
        total += summed_loss(model, batch).item()
        count += int((batch.labels[:, 1:] != IGNORE_INDEX).sum())

    # A stop ends it at its next batch, but not across ranks: each must reach the sums' all-reduce.
    with torch.no_grad(), track("evaluate", len(examples), stoppable=not dist.enabled) as scored:
        model.eval()
        try:
            for done in in_halving_batches(examples, batch_size, add):
                scored.report(done)
                scored.check()
        finally:
            model.train(was_training)
    return dist.total(total) / max(dist.total(count), 1)


def packing_is_exact(model, device: str) -> bool:
    """Probe: two short sequences packed into one row must give the logits they give one by one."""
    import torch

    from ..data.packing import PackedRow

    generator = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().num_embeddings
    first, second = (torch.randint(0, vocab, (n,), generator=generator).tolist() for n in (6, 9))
    row = PackedRow(first + second, first + second, list(range(6)) + list(range(9)))
    was_training = model.training
    model.eval()
    with torch.no_grad(), track("probe", 3) as probe:
        packed = model(
            input_ids=torch.tensor([row.input_ids], device=device),
            position_ids=torch.tensor([row.position_ids], device=device),
            use_cache=False,
        ).logits[0]
        probe.advance()
        alone = []
        for ids in (first, second):
            alone.append(model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0])
            probe.advance()
        alone = torch.cat(alone)
    model.train(was_training)
    scale = alone.abs().max().clamp(min=1.0)
    tolerance = 1e-3 if packed.dtype == torch.float32 else 5e-2
    return bool(((packed.float() - alone.float()).abs().max() / scale) < tolerance)


def batch_efficiency(
    examples: list[TokenizedExample], batch_size: int, seed: int, pack_len: int = 0
) -> float:
    """Real tokens / tokens fed (padding included) over one epoch, batched as :func:`_batch_stream` does."""
    lengths = [len(e) for e in examples]
    if pack_len:
        lengths = [sum(lengths[i] for i in group) for group in packed_groups(lengths, pack_len)]
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    chunks = [[lengths[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    return sum(map(sum, chunks)) / sum(max(c) * len(c) for c in chunks)


def _metrics(
    step, config, loss, learning_rate, grad_norm, tokens, elapsed, device, temperature_c=None
) -> StepMetrics:
    rate = tokens / elapsed if elapsed > 0 else 0.0
    eta = elapsed / step * (config.steps - step)
    return StepMetrics(
        step=step,
        total_steps=config.steps,
        loss=loss,
        learning_rate=learning_rate,
        grad_norm=grad_norm,
        tokens_per_second=rate,
        eta_seconds=eta,
        memory_mb=_memory_mb(device),
        temperature_c=temperature_c,
    )


def _memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _checkpoint_steps(config: TrainConfig) -> set[int]:
    if config.save_steps:
        return set(range(config.save_steps, config.steps, config.save_steps))
    return {config.steps // 2} if config.steps >= 4 else set()


def _save_trained(built, run: RunDir, tokenizer) -> Path:
    """The adapter (with the tokenizer) in ``adapter/``; a fully fine-tuned model is itself the merged model."""
    path = run.merged if built.is_full else run.adapter
    with atomic_dir(path) as tmp:
        built.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if built.is_full:
            (tmp / FULL_MODEL_STAMP).write_text('{"full_fine_tune": true}')
    return path
