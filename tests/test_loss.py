"""The chunked loss (train/loss.py) equals the plain full-logits path: loss and every trained gradient, for LoRA
and full fine-tuning, on tiny models of several families, with many chunks and with a logit soft-cap."""

from __future__ import annotations

import pytest
import torch

from backprop_engine.data import DataSpec, load_chat_tokenizer, prepare_data
from backprop_engine.train import loss as loss_module
from backprop_engine.train.loop import collate

from .families import build_model


def batch_of(path, rows: int = 6):
    prepared = prepare_data(
        DataSpec(["sample"], shuffle=False), load_chat_tokenizer(path), 256, use_cache=False
    )
    return collate(prepared.train[:rows], 0, "cpu", packed=False)


def grads_after(loss_fn, model, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    )


@pytest.mark.parametrize("family", ["llama3", "qwen2.5", "gemma3"])
@pytest.mark.parametrize("method", ["lora", "full"])
def test_chunked_loss_and_gradients_equal_the_full_logits_path(tmp_path, monkeypatch, family, method):
    from transformers import AutoModelForCausalLM

    path = build_model(family, tmp_path / family)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = lora(model) if method == "lora" else model
    if method == "lora":  # a non-zero B, so the adapter's gradients are not all zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
    model.train()
    batch = batch_of(path)
    assert loss_module._hidden_source(model) is not None
    monkeypatch.setattr(loss_module, "CHUNK_BYTES", 4 * 1024 * 37)  # 37 tokens per chunk: many, one ragged
    plain_loss, plain = grads_after(loss_module.plain_summed_loss, model, batch)
    chunked_loss, chunked = grads_after(loss_module.summed_loss, model, batch)
    trained = int((batch.labels[:, 1:] != -100).sum())
    assert chunked_loss == pytest.approx(plain_loss, rel=1e-5) and trained > 37 * 2
    assert plain.keys() == chunked.keys() and plain
    for name in plain:
        scale = plain[name].abs().max().item() or 1.0
        assert (chunked[name] - plain[name]).abs().max().item() / scale < 1e-5, name


def test_a_soft_capped_head_matches_too(tmp_path):
    from transformers import AutoModelForCausalLM

    path = build_model("gemma3", tmp_path / "gemma3")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.config.final_logit_softcapping = 2.0  # Gemma 2's scheme: the plain path caps in the model's forward
    model.train()
    batch = batch_of(path)
    plain_loss, plain = grads_after(loss_module.plain_summed_loss, model, batch)
    chunked_loss, chunked = grads_after(loss_module.summed_loss, model, batch)
    uncapped = loss_module.plain_summed_loss(model, batch).item()
    assert chunked_loss == pytest.approx(plain_loss, rel=1e-5)
    assert (
        max((chunked[n] - plain[n]).abs().max().item() / (plain[n].abs().max().item() or 1) for n in plain)
        < 1e-5
    )
    model.config.final_logit_softcapping = None
    assert abs(loss_module.plain_summed_loss(model, batch).item() - uncapped) > 1e-3  # the cap mattered


def test_without_gradients_only_the_loss_is_computed(tmp_path):
    from transformers import AutoModelForCausalLM

    path = build_model("llama3", tmp_path / "llama3")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    batch = batch_of(path)
    with torch.no_grad():
        chunked = loss_module.summed_loss(model, batch)
        plain = loss_module.plain_summed_loss(model, batch)
    assert not chunked.requires_grad and chunked.item() == pytest.approx(plain.item(), rel=1e-5)
