"""One readable training loop: LoRA via peft, token-weighted loss on assistant tokens, events as it goes."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import TrainConfig
from ..data import DataReport, DataSpec, PreparedData, load_chat_tokenizer, prepare_data
from ..data.packing import pack
from ..data.tokenize import IGNORE_INDEX, TokenizedExample
from ..errors import TrainingError
from ..events import (
    CheckpointSaved,
    DataPrepared,
    EvalMetrics,
    EventBus,
    RowsSkipped,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    StepMetrics,
    WarningEvent,
)
from ..fsutil import atomic_dir
from ..modeling import load_base_model, pick_device, pick_dtype
from ..presets import ResolvedModel
from ..rundir import RunDir
from .checkpoint import LoopState, restore_checkpoint, save_checkpoint
from .control import TrainingControl
from .safety import ThermalGuard


@dataclass
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


def prepare_dataset(config: TrainConfig, model: ResolvedModel, warnings: list[str] | None = None) -> PreparedData:
    """Every source and format of ``config.data`` through the pipeline (filters, masks, split), cached."""
    tokenizer = load_chat_tokenizer(model.path, warn=warnings.append if warnings is not None else None)
    return prepare_data(DataSpec.from_config(config), tokenizer, model_context(model.path, tokenizer))


def model_context(path: Path, tokenizer) -> int:
    """The longest sequence the model supports (its position embeddings), else the tokenizer's limit."""
    from transformers import AutoConfig

    positions = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
    limit = tokenizer.model_max_length if tokenizer.model_max_length < 10**9 else None
    return positions or limit or 2048


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
) -> TrainResult:
    """Train a LoRA adapter on ``examples``; ``adapter_init(peft_model)`` may set the adapter's starting
    weights (multi-run training starts each run from the previous one's factors)."""
    import torch

    torch.manual_seed(config.seed)
    device = pick_device()
    tokenizer = load_chat_tokenizer(model.path)
    base = load_base_model(model.path, device, pick_dtype(device), four_bit=config.method == "qlora")
    peft_model = _lora_model(base, config)
    if adapter_init is not None:
        adapter_init(peft_model)
    packing = config.packing and packing_is_exact(peft_model, device)
    longest = max(len(e) for e in examples)
    pack_len = max(report.max_seq_len if report else config.max_seq_len, longest) if packing else 0
    batches = _batch_stream(examples, config, tokenizer.pad_token_id, device, pack_len)
    trainable, total = _count_parameters(peft_model)
    bus.emit(RunStarted(str(run.path), config.model, config.steps, len(examples), trainable, total))
    if config.packing and not packing:
        bus.emit(WarningEvent("packing is off: this model's attention does not honour per-example position ids"))
    if report is not None:
        _emit_data_events(bus, report, packing, batch_efficiency(examples, config.batch_size, config.seed, pack_len))

    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    checkpoint_steps = _checkpoint_steps(config)

    peft_model.train()
    micro = MicroBatching()
    control = control or TrainingControl()
    thermal = thermal or ThermalGuard(config.max_gpu_temperature_c)
    started = time.perf_counter()
    paused_seconds = 0.0
    tokens = step = 0
    first_loss = loss_value = float("nan")
    eval_loss = None
    if resume_from is not None:
        state = restore_checkpoint(resume_from, peft_model, optimizer, scheduler)
        step, tokens, first_loss, micro.parts = state.step, state.tokens, state.first_loss, state.micro_parts
        for _ in range(step * config.grad_accum):  # the seeded stream continues where the run stopped
            next(batches)
        bus.emit(RunResumed(step))
    while step < config.steps and not control.stop_requested:
        paused_seconds += _wait_while_paused(control, step, bus) + thermal.check(step, bus, control)
        if control.stop_requested:
            break
        step += 1
        learning_rate = optimizer.param_groups[0]["lr"]
        loss_value, grad_norm, step_tokens = _train_step(peft_model, optimizer, batches, config, micro, bus)
        scheduler.step()
        tokens += step_tokens
        first_loss = loss_value if step == 1 else first_loss
        elapsed = time.perf_counter() - started - paused_seconds
        if step % config.logging_steps == 0 or step in (1, config.steps):
            bus.emit(_metrics(step, config, loss_value, learning_rate, grad_norm, tokens, elapsed, device, thermal.last_c))
        if eval_examples and config.eval_steps and step % config.eval_steps == 0 and step != config.steps:
            eval_loss = _emit_eval(peft_model, eval_examples, config, tokenizer.pad_token_id, device, step, bus)
        if step in checkpoint_steps or control.take_checkpoint_request():
            state = LoopState(step, tokens, first_loss, micro.parts)
            path = save_checkpoint(run.checkpoints / f"step-{step:06d}", peft_model, optimizer, scheduler, state)
            bus.emit(CheckpointSaved(step, str(path)))
    seconds = time.perf_counter() - started - paused_seconds
    if eval_examples:
        eval_loss = _emit_eval(peft_model, eval_examples, config, tokenizer.pad_token_id, device, step, bus)
    adapter = _save_adapter(peft_model, run.adapter)
    tokenizer.save_pretrained(adapter)
    stopped = step < config.steps
    bus.emit(RunFinished(step, loss_value, tokens, seconds, str(adapter), stopped_early=stopped))
    return TrainResult(run.path, adapter, step, loss_value, first_loss, tokens, seconds, stopped_early=stopped, eval_loss=eval_loss)


def _emit_data_events(bus: EventBus, report: DataReport, packing: bool, efficiency: float) -> None:
    if report.bad_row_count:
        bus.emit(RowsSkipped(report.bad_row_count, [str(row) for row in report.bad_rows[:5]]))
    for warning in report.warnings:
        bus.emit(WarningEvent(warning))
    removed = {step.name: step.removed for step in report.filters}
    bus.emit(DataPrepared(
        report.rows_read, report.formats, report.train_examples, report.eval_examples, report.max_seq_len,
        report.truncated, report.trained_fraction, removed, packing, efficiency, report.cached,
    ))


def _emit_eval(model, examples, config, pad_id, device, step, bus) -> float:
    loss = evaluate(model, examples, config.batch_size, pad_id, device)
    bus.emit(EvalMetrics(step, loss, len(examples)))
    return loss


def _wait_while_paused(control: TrainingControl, step: int, bus: EventBus) -> float:
    if not control.paused:
        return 0.0
    bus.emit(RunPaused(step))
    started = time.perf_counter()
    control.wait_until_running()
    bus.emit(RunResumed(step))
    return time.perf_counter() - started


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < config.warmup_steps:
        return (step + 1) / (config.warmup_steps + 1)
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _lora_model(base, config: TrainConfig):
    """LoRA (or DoRA / rsLoRA) on the configured modules; a 4-bit base is prepared for k-bit training."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    if config.gradient_checkpointing:
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()  # frozen embeddings: the checkpointed blocks still need a grad path
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        task_type="CAUSAL_LM",
        use_dora=config.method == "dora",
        use_rslora=config.method == "rslora",
    )
    return get_peft_model(base, lora)


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
        parts_of = zip(self.input_ids.split(size), self.labels.split(size), masks, self.position_ids.split(size))
        return [Batch(ids, labels, mask, positions, real_tokens=0) for ids, labels, mask, positions in parts_of]


@dataclass
class MicroBatching:
    """How finely each micro-batch is cut: doubled on every out-of-memory error, kept for the rest of the run."""

    parts: int = 1

    def size(self, rows: int) -> int:
        return math.ceil(rows / self.parts)


def _batch_stream(examples: list[TokenizedExample], config: TrainConfig, pad_id: int, device: str, pack_len: int = 0):
    """Endless micro-batches of ``batch_size`` rows, a seeded shuffle per epoch. With ``pack_len`` each row
    packs several examples up to that many tokens; without, a row is one example."""
    rows = pack(examples, pack_len) if pack_len else examples
    rng = random.Random(config.seed)
    while True:
        order = list(range(len(rows)))
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            chunk = [rows[i] for i in order[start : start + config.batch_size]]
            yield collate(chunk, pad_id, device, packed=bool(pack_len))


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


def summed_loss(model, batch: Batch):
    """Sum of the token losses over the batch's labels (next-token prediction)."""
    import torch

    logits = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=False
    ).logits[:, :-1]
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), batch.labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def _train_step(model, optimizer, batches, config: TrainConfig, micro: MicroBatching, bus: EventBus) -> tuple[float, float, int]:
    """One optimizer step over ``grad_accum`` micro-batches; the loss is averaged over trained tokens.

    On out-of-memory the step is retried with each micro-batch cut in two (twice the accumulation, the
    same effective batch), down to one row per micro-batch.
    """
    import torch

    micro_batches = [next(batches) for _ in range(config.grad_accum)]
    while True:
        try:
            return _accumulate(model, optimizer, micro_batches, config, micro.parts)
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            _free_memory()
            rows = micro_batches[0].input_ids.size(0)
            if micro.size(rows) <= 1:
                raise TrainingError(
                    "out of memory even with one row per micro-batch",
                    "lower --max-seq-len, use --method qlora or --gradient-checkpointing, or a smaller model",
                ) from None
            before = micro.size(rows)
            micro.parts *= 2
            bus.emit(WarningEvent(
                f"out of memory at micro-batch {before}: retrying with micro-batch {micro.size(rows)} × "
                f"{config.grad_accum * micro.parts} accumulation (same effective batch)"
            ))


def _accumulate(model, optimizer, micro_batches: list[Batch], config: TrainConfig, parts: int) -> tuple[float, float, int]:
    import torch

    trained = sum(int((b.labels[:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches)
    total_loss = 0.0
    for batch in micro_batches:
        for piece in batch.pieces(parts) if parts > 1 else [batch]:
            loss_sum = summed_loss(model, piece)
            (loss_sum / max(trained, 1)).backward()
            total_loss += loss_sum.item()
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm).item()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total_loss / max(trained, 1), grad_norm, sum(b.real_tokens for b in micro_batches)


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate(model, examples: list[TokenizedExample], batch_size: int, pad_id: int, device: str) -> float:
    """Mean loss per trained token over ``examples`` (padded batches, no gradients)."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size], pad_id, device, packed=False)
            total += summed_loss(model, batch).item()
            count += int((batch.labels[:, 1:] != IGNORE_INDEX).sum())
    model.train(was_training)
    return total / max(count, 1)


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
    with torch.no_grad():
        packed = model(input_ids=torch.tensor([row.input_ids], device=device), position_ids=torch.tensor([row.position_ids], device=device), use_cache=False).logits[0]
        alone = torch.cat([model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0] for ids in (first, second)])
    model.train(was_training)
    scale = alone.abs().max().clamp(min=1.0)
    tolerance = 1e-3 if packed.dtype == torch.float32 else 5e-2
    return bool(((packed.float() - alone.float()).abs().max() / scale) < tolerance)


def batch_efficiency(examples: list[TokenizedExample], batch_size: int, seed: int, pack_len: int = 0) -> float:
    """Real tokens / tokens fed (padding included) over one epoch, batched as :func:`_batch_stream` does."""
    lengths = [len(r.input_ids) for r in pack(examples, pack_len)] if pack_len else [len(e) for e in examples]
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    chunks = [[lengths[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    return sum(map(sum, chunks)) / sum(max(c) * len(c) for c in chunks)


def _metrics(step, config, loss, learning_rate, grad_norm, tokens, elapsed, device, temperature_c=None) -> StepMetrics:
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


def _save_adapter(model, path: Path) -> Path:
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
    return path
