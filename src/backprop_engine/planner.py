"""Memory estimate and batch planner: how much a run needs, and the micro-batch that fits the budget.

The estimate is a sum of named parts so a user can see where the memory goes:
- weights: frozen base weights (16-bit on GPU, fp32 on CPU; ~4.5 bits per linear weight for QLoRA nf4
  with double quantization, its embeddings and norms in fp32; fp32 master weights for full fine-tuning),
- trainable: LoRA factors in fp32 with their gradient and two Adam moments (16 bytes per parameter), or for
  full fine-tuning the gradient and moments of every weight (12 bytes),
- activations: what a decoder layer keeps per token for the backward pass (:func:`layer_activation_values`,
  in 16-bit on GPU, fp32 on CPU, plus on a GPU the fp32 copies of the adapted modules' inputs) without
  gradient checkpointing; with it, one hidden state per layer plus one layer's worth (DoRA adds W + s·BA
  per module),
- logits: fp32 logits over the vocabulary, their softmax and its gradient (and on a GPU the 16-bit logits)
  for one chunk of positions at a time (train/loss.py), plus the trained positions' hidden states and their
  gradient,
- overhead: the framework itself (CUDA context; on the CPU the imported libraries),
- allocator: on the CPU, freed memory glibc keeps in its heap (:data:`CPU_HEAP_SLACK`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError
from .presets import ALL_LINEAR, ModelFacts
from .train.loss import chunk_tokens

MB = 2**20
NF4_BYTES_PER_WEIGHT = 4.5 / 8  # 4-bit values + double-quantized absmax per 64-weight block
GPU_OVERHEAD_MB = 600.0
CPU_OVERHEAD_MB = 430.0  # RSS after importing torch, transformers, peft and the engine (bench/memory.py)
# glibc keeps freed activation memory in its heap: with an adapter the CPU process peaked at 1.6-2.3x what the
# activations and logits need (SmolLM2, Gemma-3-270M; bench/memory.py --real). Full fine-tuning reuses that
# memory for the weights' gradients, so it shows none.
CPU_HEAP_SLACK = 1.9


@dataclass(frozen=True)
class MemoryEstimate:
    weights_mb: float
    trainable_mb: float
    activations_mb: float
    logits_mb: float
    overhead_mb: float
    allocator_mb: float = 0.0  # freed memory the CPU allocator keeps (CPU_HEAP_SLACK)

    @property
    def total_mb(self) -> float:
        return (
            self.weights_mb
            + self.trainable_mb
            + self.activations_mb
            + self.logits_mb
            + self.overhead_mb
            + self.allocator_mb
        )

    def describe(self) -> str:
        parts = [
            ("weights", self.weights_mb),
            ("trainable+optimizer", self.trainable_mb),
            ("activations", self.activations_mb),
            ("logits", self.logits_mb),
            ("overhead", self.overhead_mb),
        ] + ([("allocator", self.allocator_mb)] if self.allocator_mb else [])
        if self.total_mb < 1024:
            return f"{self.total_mb:.0f} MB = " + " + ".join(f"{name} {mb:.0f}" for name, mb in parts)
        return f"{self.total_mb / 1024:.1f} GB = " + " + ".join(
            f"{name} {mb / 1024:.1f}" for name, mb in parts
        )


def lora_parameter_count(facts: ModelFacts, rank: int, targets=ALL_LINEAR) -> int:
    shapes = facts.linear_shapes
    return facts.num_layers * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)


def adapter_input_values(facts: ModelFacts, targets=ALL_LINEAR) -> int:
    """Values per token and layer of the adapted modules' inputs (each module keeps its own fp32 copy)."""
    shapes = facts.linear_shapes
    return sum(shapes[t][0] for t in targets if t in shapes)


def layer_activation_values(facts: ModelFacts) -> int:
    """Values one decoder layer keeps per token for the backward pass (LoRA on every linear, or full
    fine-tuning): its input, the attention's normed input, q, k, v, the attention output as attention keeps it
    and as o_proj reads it, the MLP's normed input, gate, up, activation and product. Checked against autograd's
    saved tensors in tests/test_planner.py."""
    kv = facts.num_kv_heads * facts.head_dim
    return 6 * facts.hidden_size + 2 * kv + 4 * facts.intermediate_size


def estimate_memory(
    facts: ModelFacts,
    *,
    method: str = "lora",
    rank: int = 16,
    targets=ALL_LINEAR,
    seq_len: int = 512,
    micro_batch: int = 8,
    gradient_checkpointing: bool = False,
    on_gpu: bool = True,
) -> MemoryEstimate:
    """Predicted peak memory of one training step (see the module docstring for the parts)."""
    if method not in ("lora", "qlora", "dora", "full"):
        raise ConfigError(f"unknown method {method!r}", "use lora, qlora, dora or full")
    # 16-bit activations only where the base computes in 16 bits: full fine-tuning trains fp32 weights everywhere
    sixteen_bit = on_gpu and method != "full"
    act_bytes = 2.0 if sixteen_bit else 4.0
    linear = facts.num_layers * facts.layer_linear_params
    if method == "qlora":  # k-bit preparation casts the embeddings (and norms) to fp32
        weights = linear * NF4_BYTES_PER_WEIGHT + facts.embedding_params * 4
    elif method == "full":  # fp32 master weights on every device (train/backend.py)
        weights = facts.parameter_count * 4
    else:
        weights = facts.parameter_count * act_bytes
    # fp32 gradient and two Adam moments per trainable weight, and the fp32 LoRA factors themselves
    trainable = (
        facts.parameter_count * 12 if method == "full" else lora_parameter_count(facts, rank, targets) * 16
    )
    tokens = micro_batch * seq_len
    per_layer = layer_activation_values(facts) * act_bytes
    if on_gpu and method != "full":  # peft casts each adapted module's 16-bit input to its fp32 factors
        per_layer += adapter_input_values(facts, targets) * 4
    if gradient_checkpointing:
        activations = tokens * (facts.num_layers * facts.hidden_size * act_bytes + per_layer)
    else:
        activations = tokens * facts.num_layers * per_layer
    if method == "dora":  # each module materialises W + s·BA (and its gradient) for the weight norm
        activations += 2 * linear * act_bytes
    # Three fp32 copies of one chunk's logits (measured 3.1 when all positions were one chunk) and, from a
    # 16-bit base, the 16-bit logits the head computes; per token the trained positions' hidden states and their gradient.
    logits = (
        min(tokens, chunk_tokens(facts.vocab_size)) * facts.vocab_size * (14 if sixteen_bit else 12)
        + tokens * facts.hidden_size * act_bytes * 2
    )
    if method == "full":  # a trained head: the loss's fp32 gradient accumulator and one chunk's product
        logits += 2 * facts.vocab_size * facts.hidden_size * 4
    slack = 0.0 if on_gpu or method == "full" else (CPU_HEAP_SLACK - 1) * (activations + logits)
    return MemoryEstimate(
        weights_mb=weights / MB,
        trainable_mb=trainable / MB,
        activations_mb=activations / MB,
        logits_mb=logits / MB,
        overhead_mb=GPU_OVERHEAD_MB if on_gpu else CPU_OVERHEAD_MB,
        allocator_mb=slack / MB,
    )


@dataclass(frozen=True)
class BatchPlan:
    micro_batch: int
    grad_accum: int
    gradient_checkpointing: bool
    estimate: MemoryEstimate
    reason: str

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.grad_accum


def plan_batch(
    facts: ModelFacts,
    budget_mb: float,
    *,
    target_batch: int = 8,
    seq_len: int = 512,
    method: str = "lora",
    rank: int = 16,
    targets=ALL_LINEAR,
    on_gpu: bool = True,
) -> BatchPlan:
    """The largest micro-batch (a power of two up to ``target_batch``) that fits ``budget_mb``; gradient
    accumulation makes up the rest of the effective batch. Gradient checkpointing is turned on only when
    even a micro-batch of one does not fit without it."""
    for checkpointing in (False, True):
        micro = 2 ** int(math.log2(max(1, target_batch)))
        while micro >= 1:
            estimate = estimate_memory(
                facts,
                method=method,
                rank=rank,
                targets=targets,
                seq_len=seq_len,
                micro_batch=micro,
                gradient_checkpointing=checkpointing,
                on_gpu=on_gpu,
            )
            if estimate.total_mb <= budget_mb:
                accum = math.ceil(target_batch / micro)
                why = f"micro-batch {micro} × {accum} accumulation fits {budget_mb / 1024:.1f} GB ({estimate.describe()})"
                if checkpointing:
                    why += "; gradient checkpointing on because memory is tight"
                return BatchPlan(micro, accum, checkpointing, estimate, why)
            micro //= 2
    smallest = estimate_memory(
        facts,
        method=method,
        rank=rank,
        targets=targets,
        seq_len=seq_len,
        micro_batch=1,
        gradient_checkpointing=True,
        on_gpu=on_gpu,
    )
    raise ConfigError(
        f"does not fit: one sequence of {seq_len} tokens needs ~{smallest.total_mb / 1024:.1f} GB, "
        f"the budget is {budget_mb / 1024:.1f} GB",
        "use QLoRA (--method qlora), a shorter --max-seq-len, or a smaller model",
    )


@dataclass(frozen=True)
class FitVerdict:
    """Whether a model trains on this machine: "yes", "tight" (a smaller micro-batch or gradient
    checkpointing than the target) or "no" (not even one sequence fits), with the peak predicted at the
    micro-batch the plan would pick here (one sequence, checkpointed, when nothing fits)."""

    verdict: str
    estimate: MemoryEstimate
    micro_batch: int
    checkpointing: bool

    def cell(self) -> str:
        """The peak and the batch it is for, e.g. ``6.0 GB b2+gc`` (b: rows per micro-batch)."""
        return (
            f"{self.estimate.total_mb / 1024:.1f} GB b{self.micro_batch}{'+gc' if self.checkpointing else ''}"
        )


FIT_LEGEND = "peak at the batch planned here (bN: N rows × {seq_len} tokens, +gc: checkpointing)"


def fit_verdict(
    facts: ModelFacts,
    available_mb: float,
    on_gpu: bool,
    method: str = "lora",
    seq_len: int = 512,
    target_batch: int = 8,
) -> FitVerdict:
    """The verdict for training ``facts`` within 90 % of ``available_mb`` (the planner's budget)."""
    try:
        plan = plan_batch(
            facts,
            0.9 * available_mb,
            target_batch=target_batch,
            seq_len=seq_len,
            method=method,
            on_gpu=on_gpu,
        )
    except ConfigError:
        smallest = estimate_memory(
            facts, method=method, seq_len=seq_len, micro_batch=1, gradient_checkpointing=True, on_gpu=on_gpu
        )
        return FitVerdict("no", smallest, 1, True)
    tight = plan.gradient_checkpointing or plan.micro_batch < target_batch
    return FitVerdict(
        "tight" if tight else "yes", plan.estimate, plan.micro_batch, plan.gradient_checkpointing
    )
