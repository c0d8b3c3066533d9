"""The next-token loss without the logits wall.

The plain path asks the model for every position's logits (batch × seq × vocab floats, kept in several copies
for the backward pass: 262,144 per token on Gemma 3) and then masks most of them away. Here the model returns
its last hidden states (it computes logits for one position only), and the output layer is applied to the
trained positions alone, a chunk at a time; each chunk's gradient is computed as soon as its loss is, so only
one chunk of logits ever exists. Same loss and gradients as the plain path (tests/test_loss.py).
"""

from __future__ import annotations

import functools
import inspect

from ..data.tokenize import IGNORE_INDEX

CHUNK_BYTES = 64 << 20  # fp32 logits per chunk: 64 tokens of Gemma 3's vocabulary, 341 of SmolLM2's


def summed_loss(model, batch):
    """Sum of the token losses over the batch's labels (next-token prediction)."""
    source = _hidden_source(model)
    if source is None:
        return plain_summed_loss(model, batch)
    decoder, head, softcap = source
    hidden = _last_hidden(model, decoder, batch)[:, :-1]
    targets = batch.labels[:, 1:]
    trained = targets != IGNORE_INDEX
    return linear_cross_entropy(hidden[trained], head, targets[trained], softcap)


def plain_summed_loss(model, batch):
    return _plain_token_losses(model, batch, "sum")


def row_summed_losses(model, batch):
    """Per row: the sum of its token losses and how many tokens it trains (preference objectives score each
    sequence on its own), with the same memory saving as :func:`summed_loss`."""
    import torch

    targets = batch.labels[:, 1:]
    trained = targets != IGNORE_INDEX
    source = _hidden_source(model)
    if source is None:
        return _plain_token_losses(model, batch, "none").view(targets.shape).sum(-1), trained.sum(-1)
    decoder, head, softcap = source
    hidden = _last_hidden(model, decoder, batch)[:, :-1]
    sums = [
        linear_cross_entropy(h[mask], head, t[mask], softcap) for h, t, mask in zip(hidden, targets, trained)
    ]
    return torch.stack(sums), trained.sum(-1)


def _forward(model, batch, **extra):
    return model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        **extra,
    )


def _plain_token_losses(model, batch, reduction: str):
    """Every position's logits from the model, then the cross-entropy on the trained ones."""
    import torch

    logits = _forward(model, batch).logits[:, :-1]
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        batch.labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )


def linear_cross_entropy(hidden, head, targets, softcap: float | None = None):
    """Summed cross-entropy of ``head(hidden)`` against ``targets`` ([N, H] hidden states, N targets)."""
    import torch

    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or head.weight.requires_grad)
    chunk = chunk_tokens(head.weight.shape[0])
    return _function().apply(hidden, head.weight, head.bias, targets, softcap, chunk, needs_grad)


def chunk_tokens(vocab_size: int) -> int:
    """Positions whose logits are computed at once."""
    return max(1, CHUNK_BYTES // (4 * vocab_size))


def _hidden_source(model):
    """(decoder, output layer, logit soft-cap) when the model can return hidden states without full logits."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # peft
    forward = getattr(type(base), "forward", None)
    if (
        forward is None
        or not getattr(forward, "__module__", "").startswith(
            "transformers."
        )  # e.g. Unsloth's patched forwards
        or "logits_to_keep" not in inspect.signature(forward).parameters
        or not hasattr(base, "get_decoder")
    ):
        return None
    head = base.get_output_embeddings()
    if head is None or not hasattr(head, "weight") or head.weight.dim() != 2:
        return None
    return base.get_decoder(), head, getattr(base.config, "final_logit_softcapping", None)


def _last_hidden(model, decoder, batch):
    """The decoder's output for every position; the model itself (through any DDP or peft wrapper, so their hooks
    run) computes logits for the last position only."""
    captured = []
    hook = decoder.register_forward_hook(lambda module, args, output: captured.append(output[0]))
    try:
        _forward(model, batch, logits_to_keep=1)
    finally:
        hook.remove()
    if not captured:  # a forward that bypasses its decoder module: say so rather than train on nothing
        raise RuntimeError(
            "the model's forward did not run its decoder module; the chunked loss cannot be used"
        )
    return captured[-1]


def _chunk_logits(hidden, weight, bias, softcap):
    import torch

    z = torch.nn.functional.linear(hidden, weight, bias).float()
    if not softcap:
        return z, None
    capped = torch.tanh(z / softcap)
    return capped * softcap, capped


@functools.cache
def _function():
    """Built on first use: torch is not imported by ``backprop --help``."""
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, softcap, chunk, needs_grad):
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_hidden = torch.empty_like(hidden) if needs_grad and hidden.requires_grad else None
            grad_weight = (
                torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
                if needs_grad and weight.requires_grad
                else None
            )
            grad_bias = (
                torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
                if needs_grad and bias is not None and bias.requires_grad
                else None
            )
            for start in range(0, hidden.shape[0], chunk):
                h, t = hidden[start : start + chunk], targets[start : start + chunk]
                logits, capped = _chunk_logits(h, weight, bias, softcap)
                log_z = torch.logsumexp(logits, dim=-1)
                total += (log_z - logits.gather(1, t[:, None])[:, 0]).sum()
                if not needs_grad:
                    continue
                grad = torch.softmax(logits, dim=-1)  # d(loss)/d(logits) = softmax - one-hot
                grad[torch.arange(len(t), device=t.device), t] -= 1
                if capped is not None:
                    grad *= 1 - capped * capped
                grad = grad.to(hidden.dtype)
                if grad_hidden is not None:
                    grad_hidden[start : start + chunk] = grad @ weight
                if grad_weight is not None:
                    grad_weight += (grad.T @ h).float()
                if grad_bias is not None:
                    grad_bias += grad.float().sum(0)
            ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight, grad_bias) if g is not None))
            ctx.present = (grad_hidden is not None, grad_weight is not None, grad_bias is not None)
            ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
            return total

        @staticmethod
        def backward(ctx, grad_output):
            saved = iter(ctx.saved_tensors)
            grads = [
                (next(saved) * grad_output).to(dtype) if present else None
                for present, dtype in zip(ctx.present, ctx.dtypes)
            ]
            return grads[0], grads[1], grads[2], None, None, None, None

    return LinearCrossEntropy
