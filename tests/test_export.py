"""Merge, our HF→GGUF converter and llama.cpp quantization, checked against HF transformers."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch

from backprop_engine.export import convert_hf_to_gguf, quantize_gguf
from backprop_engine.export.chat import open_gguf
from backprop_engine.modeling import load_adapted_model, load_base_model, load_tokenizer

from .conftest import ARCHITECTURES

PROBES = [
    "Hello world! Arr, matey: 12 + 30 = 42.",
    "  leading spaces,\ttabs\nand new lines\n\n",
    "naïve café — ünïcödé 😀 and 中文",
    "<|im_start|>user\nWhat is 2 plus 2?<|im_end|>\n<|im_start|>assistant\n",
]
PROMPT = "<|im_start|>user\nWhat colour is a carrot?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def f16_gguf(merged_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {
        name: convert_hf_to_gguf(merged_model(name), folder / f"{name}.f16.gguf", "f16")
        for name in ARCHITECTURES
    }


def test_merged_equals_base_plus_adapter(trained_run, tiny_models, merged_model):
    trainer = trained_run("tiny")
    tokenizer = load_tokenizer(tiny_models["tiny"])
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        adapted = load_adapted_model(tiny_models["tiny"], trainer.run.adapter).eval()(ids).logits
        merged = load_base_model(merged_model("tiny")).eval()(ids).logits
    assert (adapted - merged).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_f16_gguf_tokenizes_like_hf(f16_gguf, merged_model, name):
    tokenizer = load_tokenizer(merged_model(name))
    llm = open_gguf(f16_gguf[name], n_ctx=256)
    try:
        for probe in PROBES:
            expected = tokenizer(probe, add_special_tokens=False)["input_ids"]
            assert llm.tokenize(probe.encode(), add_bos=False, special=True) == expected, probe
    finally:
        llm.close()


def _hf_greedy(model, ids: list[int], steps: int) -> tuple[np.ndarray, list[int]]:
    out = list(ids)
    with torch.no_grad():
        first = model(torch.tensor([out])).logits[0, -1].numpy()
        for _ in range(steps):
            out.append(int(model(torch.tensor([out])).logits[0, -1].argmax()))
    return first, out[len(ids) :]


def _llama_greedy(llm, ids: list[int], steps: int) -> tuple[np.ndarray, list[int]]:
    llm.reset()
    llm.eval(ids)
    first = np.array(llm.scores[llm.n_tokens - 1])
    generated = []
    for _ in range(steps):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        generated.append(token)
        llm.eval([token])
    return first, generated


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_f16_gguf_matches_hf_logits_and_greedy_output(f16_gguf, merged_model, name):
    tokenizer = load_tokenizer(merged_model(name))
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    hf_logits, hf_tokens = _hf_greedy(load_base_model(merged_model(name)).eval(), ids, 16)
    llm = open_gguf(f16_gguf[name], n_ctx=256, logits_all=True)
    try:
        gguf_logits, gguf_tokens = _llama_greedy(llm, ids, 16)
    finally:
        llm.close()
    max_delta = np.abs(hf_logits - gguf_logits).max()
    print(f"{name}: f16 GGUF vs HF max |delta logit| = {max_delta:.2e}")
    assert max_delta <= 1e-3
    assert gguf_tokens == hf_tokens


@pytest.mark.parametrize("quantization", ["q8_0", "q4_k_m"])
def test_quantized_gguf_loads_with_requested_type_and_generates(f16_gguf, tmp_path, quantization):
    path = tmp_path / f"tiny.{quantization}.gguf"
    fallbacks = quantize_gguf(f16_gguf["tiny"], path, quantization)
    assert fallbacks == [], "hidden 256 / ffn 768 rows must take real k-quants"
    assert path.stat().st_size < f16_gguf["tiny"].stat().st_size
    reader = gguf.GGUFReader(path)
    file_type = reader.fields["general.file_type"].contents()
    expected = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M}[
        quantization
    ]
    assert file_type == expected
    kinds = {tensor.tensor_type for tensor in reader.tensors}
    wanted = gguf.GGMLQuantizationType.Q8_0 if quantization == "q8_0" else gguf.GGMLQuantizationType.Q4_K
    assert wanted in kinds
    llm = open_gguf(path, n_ctx=256)
    try:
        text = llm.create_completion(PROMPT, max_tokens=8, temperature=0.0)["choices"][0]["text"]
    finally:
        llm.close()
    assert text.strip()


def test_trainer_export_writes_named_gguf_into_the_run(trained_run):
    trainer = trained_run("tiny-qwen2")
    path = trainer.export("gguf", quantization="q8_0", name="pirate")
    assert path == trainer.run.export / "pirate.q8_0.gguf"
    names = sorted(p.name for p in trainer.run.export.iterdir())
    assert names == ["pirate.q8_0.Modelfile", "pirate.q8_0.gguf", "pirate.q8_0.report.json"]
    report = json.loads((trainer.run.export / "pirate.q8_0.report.json").read_text())
    assert report["verification"]["passed"] and report["verification"]["tokenization_matches"] == 5
    assert "PARAMETER stop <|im_end|>" in (trainer.run.export / "pirate.q8_0.Modelfile").read_text()
    assert isinstance(trainer.chat("What colour is a carrot?", max_tokens=8), str)
