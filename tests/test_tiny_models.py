"""The built-in tiny models: deterministic, cached, and shaped as the issue asks."""

from __future__ import annotations

import json

from backprop_engine import resolve_model
from backprop_engine.tiny import TINY_SPECS, build_tiny_model


def test_build_is_deterministic(tmp_path):
    for run in ("a", "b"):
        build_tiny_model(TINY_SPECS["tiny"], tmp_path / run)
    for name in ("model.safetensors", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_cached_build_is_reused_and_rebuild_replaces_it(tiny_models):
    path = tiny_models["tiny"]
    marker = path / "marker"
    marker.write_text("x")
    assert resolve_model("tiny").path == path and marker.exists()
    assert resolve_model("tiny", rebuild=True).path == path
    assert not marker.exists()


def test_llama_shape(tiny_models):
    config = json.loads((tiny_models["tiny"] / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] == 256 and config["intermediate_size"] % 256 == 0
    assert config["num_key_value_heads"] < config["num_attention_heads"]
    assert not config["tie_word_embeddings"]


def test_qwen2_shape(tiny_models):
    from safetensors import safe_open

    folder = tiny_models["tiny-qwen2"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["tie_word_embeddings"]
    with safe_open(folder / "model.safetensors", framework="pt") as weights:
        names = set(weights.keys())
    assert "model.layers.0.self_attn.q_proj.bias" in names
    assert "lm_head.weight" not in names


def test_tokenizer_chat_template_and_end_of_turn(tiny_models):
    from backprop_engine.modeling import load_tokenizer

    for path in tiny_models.values():
        tokenizer = load_tokenizer(path)
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
        )
        assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        assert tokenizer.eos_token == "<|im_end|>"
        assert len(tokenizer("<|im_end|>", add_special_tokens=False)["input_ids"]) == 1


def test_cli_rebuild_replaces_the_cached_model(tiny_models, capsys):
    from backprop_engine.cli import _rebuild_if_asked

    marker = tiny_models["tiny-qwen2"] / "marker"
    marker.write_text("x")
    _rebuild_if_asked("tiny-qwen2", rebuild=True)
    assert not marker.exists() and (tiny_models["tiny-qwen2"] / "model.safetensors").is_file()


def test_shipped_sample_data_is_what_the_generator_makes():
    import json
    import random
    import runpy
    from importlib import resources
    from pathlib import Path

    tool = runpy.run_path(str(Path(__file__).parents[1] / "tools" / "make_sample_data.py"), run_name="tool")
    rng = random.Random(tool["SEED"])
    conversations = tool["build_conversations"](rng)
    corpus = tool["build_corpus"](rng, conversations)
    shipped = resources.files("backprop_engine.resources")
    rows = "".join(json.dumps(row, ensure_ascii=True) + "\n" for row in conversations)
    assert rows == shipped.joinpath("sample.jsonl").read_text(encoding="ascii")
    assert corpus == shipped.joinpath("corpus.txt").read_text(encoding="ascii")
