"""One readable training loop: LoRA via peft, token-weighted loss on assistant tokens, events as it goes."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainConfig
from ..data import tokenize_dataset
from ..data.tokenize import IGNORE_INDEX, TokenizedExample
from ..errors import DataError
from ..events import CheckpointSaved, EventBus, RunFinished, RunPaused, RunResumed, RunStarted, StepMetrics
from ..fsutil import atomic_dir
from ..modeling import load_base_model, load_tokenizer, pick_device, pick_dtype
from ..presets import ResolvedModel
from ..rundir import RunDir
from .control import TrainingControl


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

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def prepare_examples(conversations: list, model: ResolvedModel, config: TrainConfig) -> list[TokenizedExample]:
    """Render and mask every conversation with the model's own chat template."""
    examples = tokenize_dataset(load_tokenizer(model.path), conversations, config.max_seq_len)
    if not examples:
        raise DataError(
            f"{config.data}: no conversation has an assistant token within max_seq_len={config.max_seq_len}",
            "raise --max-seq-len or shorten the prompts",
        )
    return examples


def run_training(
    config: TrainConfig,
    model: ResolvedModel,
    examples: list[TokenizedExample],
    run: RunDir,
    bus: EventBus,
    control: TrainingControl | None = None,
) -> TrainResult:
    import torch

    torch.manual_seed(config.seed)
    device = pick_device()
    tokenizer = load_tokenizer(model.path)
    peft_model = _lora_model(load_base_model(model.path, device, pick_dtype(device)), config)
    trainable, total = _count_parameters(peft_model)
    bus.emit(RunStarted(str(run.path), config.model, config.steps, len(examples), trainable, total))

    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    batches = _batch_stream(examples, config, tokenizer.pad_token_id, device)
    checkpoint_steps = _checkpoint_steps(config)

    peft_model.train()
    control = control or TrainingControl()
    started = time.perf_counter()
    paused_seconds = 0.0
    tokens = step = 0
    first_loss = loss_value = float("nan")
    while step < config.steps and not control.stop_requested:
        paused_seconds += _wait_while_paused(control, step, bus)
        if control.stop_requested:
            break
        step += 1
        learning_rate = optimizer.param_groups[0]["lr"]
        loss_value, grad_norm, step_tokens = _train_step(peft_model, optimizer, batches, config)
        scheduler.step()
        tokens += step_tokens
        first_loss = loss_value if step == 1 else first_loss
        elapsed = time.perf_counter() - started - paused_seconds
        if step % config.logging_steps == 0 or step in (1, config.steps):
            bus.emit(_metrics(step, config, loss_value, learning_rate, grad_norm, tokens, elapsed, device))
        if step in checkpoint_steps or control.take_checkpoint_request():
            path = _save_adapter(peft_model, run.checkpoints / f"step-{step:06d}")
            bus.emit(CheckpointSaved(step, str(path)))
    seconds = time.perf_counter() - started - paused_seconds
    adapter = _save_adapter(peft_model, run.adapter)
    tokenizer.save_pretrained(adapter)
    stopped = step < config.steps
    bus.emit(RunFinished(step, loss_value, tokens, seconds, str(adapter), stopped_early=stopped))
    return TrainResult(run.path, adapter, step, loss_value, first_loss, tokens, seconds, stopped_early=stopped)


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
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora)


def _count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _batch_stream(examples: list[TokenizedExample], config: TrainConfig, pad_id: int, device: str):
    """Endless micro-batches: a seeded shuffle per epoch, right padding, labels masked on padding."""
    import torch

    rng = random.Random(config.seed)
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            chunk = [examples[i] for i in order[start : start + config.batch_size]]
            width = max(len(e.input_ids) for e in chunk)
            ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in chunk]
            labels = [e.labels + [IGNORE_INDEX] * (width - len(e.labels)) for e in chunk]
            mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in chunk]
            yield tuple(torch.tensor(x, device=device) for x in (ids, labels, mask))


def _train_step(model, optimizer, batches, config: TrainConfig) -> tuple[float, float, int]:
    """One optimizer step over ``grad_accum`` micro-batches; the loss is averaged over trained tokens."""
    import torch

    micro_batches = [next(batches) for _ in range(config.grad_accum)]
    trained = sum(int((labels[:, 1:] != IGNORE_INDEX).sum()) for _, labels, _ in micro_batches)
    total_loss = 0.0
    seen_tokens = 0
    for input_ids, labels, attention_mask in micro_batches:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        loss_sum = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)),
            labels[:, 1:].reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        (loss_sum / max(trained, 1)).backward()
        total_loss += loss_sum.item()
        seen_tokens += int(attention_mask.sum())
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm).item()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total_loss / max(trained, 1), grad_norm, seen_tokens


def _metrics(step, config, loss, learning_rate, grad_norm, tokens, elapsed, device) -> StepMetrics:
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
