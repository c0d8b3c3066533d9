"""Model facts, the memory estimate and the batch planner."""

from __future__ import annotations

import json

import pytest

from backprop_engine.errors import ConfigError
from backprop_engine.modeling import load_base_model
from backprop_engine.planner import MB, estimate_memory, fit_verdict, lora_parameter_count, plan_batch
from backprop_engine.presets import ALL_LINEAR, PRESETS, ModelFacts
from backprop_engine.train.loss import chunk_tokens


def test_facts_count_the_real_tiny_models_parameters(tiny_models):
    for name, path in tiny_models.items():
        facts = ModelFacts.from_config(json.loads((path / "config.json").read_text()))
        assert facts == PRESETS[name].facts
        model = load_base_model(path)
        actual = sum(p.numel() for p in model.parameters())
        biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias"))
        assert facts.parameter_count == actual - biases  # qwen2's q/k/v biases are not counted


def test_lora_parameter_count_matches_peft(tiny_models):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        load_base_model(tiny_models["tiny"]), LoraConfig(r=8, target_modules=["q_proj", "down_proj"])
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora_parameter_count(PRESETS["tiny"].facts, 8, ["q_proj", "down_proj"]) == trainable


@pytest.mark.parametrize(
    ("name", "billions"),
    [("qwen2.5-0.5b", 0.49), ("qwen2.5-7b", 7.62), ("llama-3.2-1b", 1.24), ("mistral-7b", 7.25)],
)
def test_preset_parameter_counts_match_the_published_sizes(name, billions):
    assert PRESETS[name].params_billion == pytest.approx(billions, abs=0.01)


def _bytes_kept_for_backward(model, input_ids) -> int:
    """Bytes of the tensors autograd keeps from one forward pass for the backward pass (parameters excluded)."""
    import torch

    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        model(input_ids=input_ids, use_cache=False)
    return sum(kept.values())


@pytest.mark.parametrize(
    "intermediate", [384, 704]
)  # 3× and 5.5× the hidden size: tiny's and Qwen2.5-7B's MLPs
def test_activation_estimate_matches_what_autograd_keeps(intermediate):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=intermediate,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, target_modules=list(ALL_LINEAR)))
    kept = _bytes_kept_for_backward(model, torch.randint(0, 256, (2, 64)))
    estimate = estimate_memory(
        ModelFacts.from_config(config.to_dict()), rank=8, seq_len=64, micro_batch=2, on_gpu=False
    )
    assert estimate.activations_mb * MB == pytest.approx(kept, rel=0.08)


def test_qlora_weight_estimate_matches_the_loaded_nf4_model_on_cpu(tiny_models):
    model = load_base_model(
        tiny_models["tiny"], four_bit=True
    )  # nf4 linears; embeddings in the fp32 compute dtype
    loaded = sum(p.numel() * p.element_size() for p in model.parameters())
    estimate = estimate_memory(PRESETS["tiny"].facts, method="qlora", on_gpu=False)
    assert estimate.weights_mb * MB == pytest.approx(loaded, rel=0.1)


def test_estimate_parts_move_the_right_way():
    facts = PRESETS["qwen2.5-7b"].facts
    lora = estimate_memory(facts, method="lora")
    qlora = estimate_memory(facts, method="qlora")
    full = estimate_memory(facts, method="full")
    # nf4 linears; k-bit preparation casts the embeddings to fp32; full keeps fp32 master weights
    linear = facts.num_layers * facts.layer_linear_params
    assert qlora.weights_mb * MB == pytest.approx(linear * 4.5 / 8 + facts.embedding_params * 4)
    assert full.weights_mb * MB == pytest.approx(facts.parameter_count * 4)
    assert full.trainable_mb * MB == pytest.approx(facts.parameter_count * 12)
    head = (
        facts.vocab_size * facts.hidden_size * 4
    )  # a trained head: the chunked loss's accumulator + a chunk's
    # full fine-tuning computes in fp32 on a GPU too: its activations and logits are the CPU's
    cpu_lora = estimate_memory(facts, method="lora", on_gpu=False)
    assert (full.logits_mb - cpu_lora.logits_mb) * MB == pytest.approx(2 * head)
    cpu_full = estimate_memory(facts, method="full", on_gpu=False)
    assert full.activations_mb == cpu_full.activations_mb and full.logits_mb == cpu_full.logits_mb
    # on a GPU each adapted module keeps an fp32 copy of its 16-bit input for its fp32 factors
    copies = 8 * 512 * facts.num_layers * sum(facts.linear_shapes[t][0] for t in ALL_LINEAR) * 4
    assert (lora.activations_mb - cpu_lora.activations_mb / 2) * MB == pytest.approx(copies)
    # the CPU allocator's slack: adapters only
    assert cpu_lora.allocator_mb == pytest.approx(0.9 * (cpu_lora.activations_mb + cpu_lora.logits_mb))
    assert estimate_memory(facts, method="full", on_gpu=False).allocator_mb == 0 == lora.allocator_mb
    assert estimate_memory(facts, micro_batch=2).activations_mb == pytest.approx(lora.activations_mb / 4)
    checkpointed = estimate_memory(facts, gradient_checkpointing=True)
    assert checkpointed.activations_mb < lora.activations_mb / 5
    assert 14 < lora.weights_mb / 1024 < 15  # 7.6B bf16 weights
    dora = estimate_memory(
        facts, method="dora"
    )  # W + s·BA and its gradient per module: 2 × the linear weights
    linear_mb = linear * 2 / 2**20
    assert dora.activations_mb - lora.activations_mb == pytest.approx(2 * linear_mb)
    chunk = chunk_tokens(
        facts.vocab_size
    )  # three fp32 copies of one chunk's logits and the bf16 logits, and the hidden states and their gradient
    assert chunk < 8 * 512 and lora.logits_mb == pytest.approx(
        (chunk * facts.vocab_size * 14 + 8 * 512 * facts.hidden_size * 2 * 2) / 2**20
    )
    doubled = estimate_memory(
        facts, micro_batch=16
    ).logits_mb  # no longer batch × seq × vocab: only the hidden term grows
    assert doubled - lora.logits_mb == pytest.approx(8 * 512 * facts.hidden_size * 2 * 2 / 2**20)


def test_planner_halves_the_micro_batch_keeps_the_effective_batch_then_checkpoints():
    facts = PRESETS["qwen2.5-7b"].facts
    roomy = plan_batch(facts, 140 * 1024, target_batch=16, method="qlora")  # an H200
    assert (roomy.micro_batch, roomy.grad_accum, roomy.gradient_checkpointing) == (16, 1, False)
    tight = plan_batch(facts, 16 * 1024, target_batch=16, method="qlora")
    assert tight.micro_batch < 16 and tight.effective_batch == 16 and tight.estimate.total_mb <= 16 * 1024
    very_tight = plan_batch(facts, 10 * 1024, target_batch=16, method="qlora")
    assert very_tight.gradient_checkpointing and "checkpointing" in very_tight.reason


def test_planner_refuses_clearly_when_nothing_fits():
    with pytest.raises(ConfigError) as error:
        plan_batch(PRESETS["mistral-7b"].facts, 4 * 1024, method="lora")
    assert "does not fit" in error.value.message and "QLoRA" in error.value.hint


def test_fit_verdicts():
    facts = PRESETS["qwen2.5-7b"].facts
    roomy = fit_verdict(facts, 80 * 1024, on_gpu=True)
    assert (roomy.verdict, roomy.micro_batch, roomy.checkpointing) == ("yes", 8, False)
    tight = fit_verdict(facts, 24 * 1024, on_gpu=True, method="qlora")
    assert tight.verdict == "tight" and tight.estimate.total_mb <= 0.9 * 24 * 1024  # the batch it will train
    assert tight.cell() == f"{tight.estimate.total_mb / 1024:.1f} GB b{tight.micro_batch}" + (
        "+gc" if tight.checkpointing else ""
    )
    assert fit_verdict(facts, 8 * 1024, on_gpu=True).verdict == "no"


def test_presets_command_lists_every_preset_with_verdicts(capsys):
    from backprop_engine.cli import main

    assert main(["presets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("machine: ") and "bN: N rows × 512 tokens" in out[1]
    rows = {line.split()[0]: line for line in out[3:]}
    assert set(rows) == set(PRESETS)
    assert (
        rows["tiny"].count("yes") == 2
        and rows["tiny"].count("GB b8") == 2
        and "meta-llama/Llama-3.2-1B-Instruct" in rows["llama-3.2-1b"]
    )


def test_presets_piped_into_head_ends_quietly():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    backprop = Path(sys.executable).with_name("backprop")
    if not backprop.exists() or not shutil.which("head"):
        pytest.skip("needs the backprop console script and head")
    done = subprocess.run(
        f"'{backprop}' presets | head -1", shell=True, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.startswith("machine: ") and done.stderr == ""
