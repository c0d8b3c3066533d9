"""Every preset family (Llama 3.x, Mistral v0.3, Qwen2.5, Gemma 3, Qwen3) exports to every quantization with verification passing;
adapters, models and runs are all export sources; bad input is one clear line and leaves nothing behind."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from pathlib import Path

import gguf
import numpy as np
import pytest

from backprop_engine.cli import main
from backprop_engine.errors import ExportError
from backprop_engine.events import EventBus, WarningEvent
from backprop_engine.export import gguf_writer
from backprop_engine.export.pipeline import ExportOptions, export, model_source
from backprop_engine.export.verify import Reference, verify_gguf
from backprop_engine.quantizations import QUANTIZATIONS

from .families import MODEL_FAMILIES, build_model
from .ollama_server import FakeOllama

FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "q6_k": gguf.LlamaFileType.MOSTLY_Q6_K,
    "q5_k_m": gguf.LlamaFileType.MOSTLY_Q5_K_M,
    "q5_0": gguf.LlamaFileType.MOSTLY_Q5_0,
    "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M,
    "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    "q3_k_m": gguf.LlamaFileType.MOSTLY_Q3_K_M,
    "q2_k": gguf.LlamaFileType.MOSTLY_Q2_K,
}
VOCAB = {
    "llama3": ("gpt2", "llama-bpe"),
    "mistral": ("llama", None),
    "qwen2.5": ("gpt2", "qwen2"),
    "gemma3": ("gpt2", "gpt-2"),
    "qwen3": ("gpt2", "qwen2"),
}


@pytest.fixture(scope="module")
def family_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: build_model(family, root / family) for family in MODEL_FAMILIES}


def _field(reader: gguf.GGUFReader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_every_quantization_of_every_family_exports_and_verifies(family_models, tmp_path, family):
    options = ExportOptions(quantizations=tuple(QUANTIZATIONS), output=tmp_path, name=family)
    results = export(model_source(str(family_models[family])), options)
    assert [r.quantization for r in results] == list(QUANTIZATIONS)
    for result in results:
        assert result.verification.passed, result.verification.verdict()
        assert result.fallbacks == [], "rows of 256/512 take every k-quant for real"
        report = json.loads(result.report.read_text())
        assert report["verification"]["passed"] and report["gguf"] == result.path.name
        reader = gguf.GGUFReader(result.path)
        assert _field(reader, "general.file_type") == FILE_TYPES[result.quantization]
        model, pre = VOCAB[family]
        assert _field(reader, "tokenizer.ggml.model") == model and _field(reader, "tokenizer.ggml.pre") == pre
        if result.quantization in ("f32", "f16"):
            assert result.verification.max_logit_delta <= 2e-3
    assert not list(tmp_path.glob(".*")), "the f16 intermediate and temporary files are gone"
    print(family, " | ".join(f"{r.quantization} {r.verification.max_logit_delta:.1e}" for r in results))


def test_sentencepiece_vocabulary_has_scores_bytes_and_control_tokens(family_models, tmp_path):
    path = gguf_writer.convert_hf_to_gguf(family_models["mistral"], tmp_path / "m.gguf", "f16")
    reader = gguf.GGUFReader(path)
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    scores = _field(reader, "tokenizer.ggml.scores")
    kind = dict(zip(tokens, types))
    assert kind["<unk>"] == gguf.TokenType.UNKNOWN and kind["[INST]"] == gguf.TokenType.CONTROL
    assert kind["<0x0A>"] == gguf.TokenType.BYTE and sum(t == gguf.TokenType.BYTE for t in types) == 256
    assert _field(reader, "tokenizer.ggml.add_bos_token") is True
    assert _field(reader, "tokenizer.ggml.add_space_prefix") is True
    merged = [s for t, s in zip(tokens, scores) if t.startswith("▁") and len(t) > 2]
    assert merged and max(merged) < 0  # merge results are ranked


def test_llama3_rope_scaling_is_what_makes_the_logits_match(family_models, tmp_path, monkeypatch):
    model = family_models["llama3"]
    reference = Reference.from_hf(model)
    scaled = gguf_writer.convert_hf_to_gguf(model, tmp_path / "scaled.gguf", "f32")
    assert "rope_freqs.weight" in {t.name for t in gguf.GGUFReader(scaled).tensors}
    monkeypatch.setattr(gguf_writer, "llama3_rope_factors", lambda hp: None)
    unscaled = gguf_writer.convert_hf_to_gguf(model, tmp_path / "unscaled.gguf", "f32")
    good, bad = verify_gguf(scaled, reference, "f32"), verify_gguf(unscaled, reference, "f32")
    assert good.passed and good.max_logit_delta < 1e-3
    assert bad.max_logit_delta > 20 * good.max_logit_delta, (good.max_logit_delta, bad.max_logit_delta)


def test_sharded_safetensors_convert_to_the_same_tensors(family_models, tmp_path):
    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "sharded"
    shutil.copytree(family_models["qwen2.5"], sharded, ignore=shutil.ignore_patterns("*.safetensors"))
    AutoModelForCausalLM.from_pretrained(family_models["qwen2.5"]).save_pretrained(
        sharded, max_shard_size="300KB"
    )
    assert len(list(sharded.glob("*.safetensors"))) > 3
    one = gguf.GGUFReader(
        gguf_writer.convert_hf_to_gguf(family_models["qwen2.5"], tmp_path / "one.gguf", "f16")
    )
    many = gguf.GGUFReader(gguf_writer.convert_hf_to_gguf(sharded, tmp_path / "many.gguf", "f16"))
    tensors = {t.name: np.array(t.data) for t in one.tensors}
    assert {t.name for t in many.tensors} == set(tensors)
    for tensor in many.tensors:
        assert np.array_equal(np.array(tensor.data), tensors[tensor.name]), tensor.name


def test_quantization_fallbacks_name_each_tensor(family_models, tmp_path):
    """Rows of 64 cannot take k-quants: llama.cpp falls back, and the user is told which tensors and to what."""
    from transformers import LlamaConfig, LlamaForCausalLM

    narrow = tmp_path / "narrow"
    shutil.copytree(
        family_models["qwen2.5"], narrow, ignore=shutil.ignore_patterns("*.safetensors", "config.json")
    )
    # 1088 rows: the qwen2.5 fixture tokenizer has 1024 tokens plus five added ones
    config = LlamaConfig(
        vocab_size=1088,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        eos_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(narrow)
    events = []
    [result] = export(
        model_source(str(narrow)),
        ExportOptions(quantizations=("q4_k_m",), output=tmp_path / "out"),
        EventBus([events.append]),
    )
    assert "blk.0.attn_q.weight: q5_0 instead of q4_K (64 columns, not a multiple of 256)" in result.fallbacks
    assert len(result.fallbacks) == 8
    assert json.loads(result.report.read_text())["fallbacks"] == result.fallbacks
    assert (
        "blk.0.ffn_down.weight: q8_0 instead of q6_K (128 columns, not a multiple of 256)" in result.fallbacks
    )
    warnings = [e.message for e in events if isinstance(e, WarningEvent)]
    assert warnings == [
        "q4_k_m: 8 of 9 tensors used q5_0/q8_0: rows of 64, 128 are not a multiple of 256; quality is close to q5_0"
    ]


# Sources and the CLI ---------------------------------------------------------------------------------------


def test_adapter_folder_exports_and_chats(trained_run, tmp_path, capsys):
    adapter = trained_run("tiny").save(tmp_path / "pirate-adapter")
    assert main(["export", str(adapter), "-q", "q8_0", "-q", "f16"]) == 0
    out = capsys.readouterr()
    paths = [Path(line) for line in out.out.split()]
    assert paths == [
        adapter / "export" / "pirate-adapter.q8_0.gguf",
        adapter / "export" / "pirate-adapter.f16.gguf",
    ]
    assert "verified tokenization 5/5 identical" in out.err
    assert main(["chat", str(adapter), "--prompt", "What colour is a carrot?", "--max-tokens", "8"]) == 0
    assert capsys.readouterr().out.strip()


def test_model_folder_exports_without_verification(family_models, tmp_path, capsys):
    assert (
        main(
            ["export", str(family_models["qwen2.5"]), "-q", "q4_0", "--no-verify", "--output", str(tmp_path)]
        )
        == 0
    )
    report = json.loads((tmp_path / "qwen2.5.q4_0.report.json").read_text())
    assert report["verification"] is None
    assert "verified" not in capsys.readouterr().err


def test_num_ctx_is_the_models_context_capped_by_the_option_or_the_setting(
    family_models, tmp_path, monkeypatch, capsys
):
    """Ollama cuts every prompt to num_ctx: it comes from the model (2048 here), capped, never the training length."""
    from backprop_engine.settings import Settings, save_settings

    def num_ctx(*extra: str) -> str:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        assert (
            main(
                [
                    "export",
                    str(family_models["qwen2.5"]),
                    "-q",
                    "f16",
                    "--no-verify",
                    "--output",
                    str(out),
                    *extra,
                ]
            )
            == 0
        )
        return next(
            line for line in (out / "qwen2.5.f16.Modelfile").read_text().splitlines() if "num_ctx" in line
        )

    assert num_ctx() == "PARAMETER num_ctx 2048"
    assert num_ctx("--num-ctx", "512") == "PARAMETER num_ctx 512"
    path = save_settings(Settings(ollama_num_ctx=1024), tmp_path / "settings.toml")
    monkeypatch.setattr("backprop_engine.settings.settings_path", lambda: path)
    assert num_ctx() == "PARAMETER num_ctx 1024"
    assert (
        main(["export", str(family_models["qwen2.5"]), "--num-ctx", "12", "--output", str(tmp_path / "bad")])
        == 2
    )
    assert "num_ctx must be an integer of at least 256" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_registers_several_quantizations_with_ollama(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `ollama` executable: the HTTP API is used
    run = trained_run("tiny-qwen2").run
    system = 'Talk like a pirate.\nSay "arr" often.'
    with FakeOllama() as server:
        args = [
            "export",
            str(run.path),
            "-q",
            "q4_k_m",
            "-q",
            "q8_0",
            "--name",
            "parrot",
            "--output",
            str(tmp_path / "out"),
            "--ollama-name",
            "parrot",
            "--ollama-host",
            server.url,
            "--system",
            system,
        ]
        assert main(args) == 0
        assert sorted(server.models) == ["parrot:q4_k_m", "parrot:q8_0"]
        created = server.models["parrot:q8_0"]
        assert created["system"] == system and created["parameters"]["stop"] == [
            "<|im_end|>",
            "<|endoftext|>",
        ]
        assert created["parameters"]["num_ctx"] == 2048, "the model's own context (not the training length)"
    assert "PARAMETER num_ctx 2048\n" in (tmp_path / "out" / "parrot.q8_0.Modelfile").read_text()
    report = json.loads((tmp_path / "out" / "parrot.q8_0.report.json").read_text())
    assert report["ollama"] == {"model": "parrot:q8_0", "via": server.url}
    assert "registered parrot:q8_0" in capsys.readouterr().err


def test_lora_gguf_over_the_base_gguf_matches_the_merged_model(trained_run, tmp_path, capsys):
    run = trained_run("tiny").run
    out = tmp_path / "out"
    assert main(["export", str(run.path), "-q", "q8_0", "--lora-gguf", "--output", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out / "tiny.q8_0.gguf"), str(out / "tiny.lora.gguf")]
    report = json.loads((out / "tiny.lora.report.json").read_text())
    assert report["base_gguf"] == "tiny.base.f16.gguf"
    assert report["verification"]["passed"] and report["verification"]["max_logit_delta"] < 2e-3
    reader = gguf.GGUFReader(out / "tiny.lora.gguf")
    assert _field(reader, "general.type") == "adapter" and _field(reader, "adapter.type") == "lora"
    assert _field(reader, "adapter.lora.alpha") == run.read_config().lora_alpha
    modelfile = (out / "tiny.lora.Modelfile").read_text().splitlines()
    assert modelfile[:2] == ["FROM ./tiny.base.f16.gguf", "ADAPTER ./tiny.lora.gguf"]
    for target in (
        out,
        out / "tiny.lora.gguf",
    ):  # the newest export is the adapter: it is applied over the base
        assert main(["chat", str(target), "--prompt", "What colour is a carrot?", "--max-tokens", "8"]) == 0
        assert capsys.readouterr().out.strip()
    (out / "tiny.base.f16.gguf").unlink()
    assert main(["chat", str(out / "tiny.lora.gguf"), "--prompt", "Hi"]) == 2
    assert "needs its base model tiny.base.f16.gguf" in capsys.readouterr().err


def test_chat_on_a_file_llama_cpp_cannot_load_is_a_clear_error(tmp_path, capsys):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF not really")
    assert main(["chat", str(broken), "--prompt", "Hi"]) == 2
    assert "llama.cpp cannot load this GGUF" in capsys.readouterr().err


def test_lora_gguf_of_a_plain_model_is_refused(family_models, tmp_path, capsys):
    _assert_refused(
        capsys,
        ["export", str(family_models["qwen2.5"]), "--lora-gguf", "--output", str(tmp_path / "out")],
        "a LoRA GGUF needs a run or an adapter",
        tmp_path / "out",
    )


# Bad input: one clear line, exit 2, nothing written ----------------------------------------------------------

Bad = namedtuple("Bad", "args expected")


def _copy_model(source: Path, target: Path, **config_changes) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config.update(config_changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


def _assert_refused(capsys, args: list[str], expected: str, output: Path) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "Traceback" not in err
    assert not output.exists() or not any(output.iterdir()), sorted(output.iterdir())
    return err


def test_unsupported_architecture_is_named_with_the_supported_ones(family_models, tmp_path, capsys):
    model = _copy_model(family_models["qwen2.5"], tmp_path / "gpt2", architectures=["GPT2LMHeadModel"])
    err = _assert_refused(
        capsys,
        ["export", str(model), "--output", str(tmp_path / "out")],
        "architecture ['GPT2LMHeadModel'] cannot be converted",
        tmp_path / "out",
    )
    assert "hint: supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM" in err


def test_unsupported_rope_scaling_is_refused(family_models, tmp_path, capsys):
    rope = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6, "original_max_position_embeddings": 512}
    model = _copy_model(family_models["mistral"], tmp_path / "yarn", rope_parameters=rope)
    _assert_refused(
        capsys,
        ["export", str(model), "--output", str(tmp_path / "out"), "--no-verify"],
        "rope scaling 'yarn' is not supported",
        tmp_path / "out",
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--ollama-name", "My Pirate"], "invalid Ollama model name 'My Pirate'"),
        (["--ollama-name", "../pirate"], "invalid Ollama model name"),
        (["--name", "../../escape"], "invalid export name '../../escape'"),
        (["--ollama", "--system", 'a """ b'], 'SYSTEM prompt contains \'"""\''),
        (["-q", "q4_k_m", "-q", "q9"], "unknown quantization 'q9'"),
        (["-q", "q4_k_m", "-q", "q8_0", "--ollama-name", "pirate:v1"], "has a tag"),
    ],
)
def test_bad_export_options_write_nothing(trained_run, tmp_path, capsys, extra, expected):
    run = trained_run("tiny").run
    _assert_refused(
        capsys,
        ["export", str(run.path), "--output", str(tmp_path / "out"), *extra],
        expected,
        tmp_path / "out",
    )


def test_not_enough_disk_is_refused_before_writing(trained_run, tmp_path, capsys, monkeypatch):
    """A full disk cannot be made here without root tricks; the free-space reading is the one thing faked."""
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**5, 10**5))
    run = trained_run("tiny").run
    _assert_refused(
        capsys,
        ["export", str(run.path), "--output", str(tmp_path / "out")],
        "not enough disk space",
        tmp_path / "out",
    )


def test_a_run_without_adapter_is_refused(tmp_path, capsys):
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "config.toml").write_text('[train]\nmodel = "tiny"\n')
    _assert_refused(
        capsys,
        ["export", str(tmp_path / "run")],
        "the run has no trained adapter",
        tmp_path / "run" / "export",
    )


def test_ollama_with_an_exotic_template_is_refused_before_converting(family_models, tmp_path, capsys):
    from .families import TEMPLATES

    model = tmp_path / "exotic"
    shutil.copytree(family_models["qwen2.5"], model)
    (model / "chat_template.jinja").write_text(TEMPLATES["exotic"])
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    _assert_refused(
        capsys,
        ["export", str(model), "--ollama", "--output", str(tmp_path / "out")],
        "not a plain role/content template",
        tmp_path / "out",
    )


def test_export_error_type_for_api_users(family_models, tmp_path):
    with pytest.raises(ExportError):
        export(
            model_source(str(_copy_model(family_models["qwen2.5"], tmp_path / "m", architectures=["Nope"]))),
            ExportOptions(output=tmp_path / "out"),
        )


def test_adapter_over_a_4bit_base_is_merged_into_dequantized_weights(trained_run, tmp_path, capsys):
    """QLoRA on a pre-quantized (bitsandbytes nf4) checkpoint: the merge dequantizes first, then folds the adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from backprop_engine import resolve_model
    from backprop_engine.export.pipeline import ensure_merged

    trainer = trained_run("tiny")
    nf4 = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    base4 = tmp_path / "tiny-nf4"
    AutoModelForCausalLM.from_pretrained(
        resolve_model("tiny").path, quantization_config=nf4, device_map="cpu"
    ).save_pretrained(base4)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (resolve_model("tiny").path / name).is_file():
            shutil.copy(resolve_model("tiny").path / name, base4 / name)
    adapter = trainer.save(tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": str(base4)}))

    assert main(["export", str(adapter), "-q", "q8_0"]) == 0
    assert "verified" in capsys.readouterr().err
    merged = adapter / "export" / "merged"
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())
    ids = torch.tensor([[5, 17, 99, 310, 42]])
    with torch.no_grad():
        quantized = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base4, device_map="cpu"), adapter
        )(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
        unquantized_base = AutoModelForCausalLM.from_pretrained(ensure_merged(trainer.run))(ids).logits
    # bitsandbytes' CPU 4-bit matmul rounds differently from its own dequantized weights (~1e-2 here), but the
    # merge is far closer to the 4-bit model than the same adapter on the original, unquantized base is.
    delta, reference = (
        (quantized - plain).abs().max().item(),
        (quantized - unquantized_base).abs().max().item(),
    )
    assert delta < 3e-2 and delta < reference / 5, (delta, reference)


def test_large_models_are_verified_against_a_bfloat16_reference(family_models, tmp_path, monkeypatch):
    """Above 2B weights the HF reference runs in bfloat16 (memory), and the f16 bound widens to bf16's."""
    from backprop_engine.export import verify

    monkeypatch.setattr(verify, "FP32_REFERENCE_MAX_PARAMS", 1000)
    reference = Reference.from_hf(family_models["qwen2.5"])
    assert reference.precision == "bf16"
    path = gguf_writer.convert_hf_to_gguf(family_models["qwen2.5"], tmp_path / "q.gguf", "f16")
    result = verify_gguf(path, reference, "f16")
    assert result.passed and result.logit_bound == verify.LOGIT_BOUNDS["bf16"] * max(
        1.0, float(np.abs(reference.logits).max())
    )


# Against llama.cpp's own converter -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def llama_cpp_converter() -> Path:
    from .llamacpp_reference import SDIST, fetch_reference_converter
    from .realweights import weights_cache

    return fetch_reference_converter(weights_cache() / SDIST.replace("==", "-"))


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_f16_gguf_equals_llama_cpps_converter_tensor_for_tensor(
    family_models, llama_cpp_converter, tmp_path, family
):
    from .llamacpp_reference import convert_with_llama_cpp

    ours = gguf.GGUFReader(
        gguf_writer.convert_hf_to_gguf(family_models[family], tmp_path / "ours.gguf", "f16")
    )
    theirs = gguf.GGUFReader(
        convert_with_llama_cpp(llama_cpp_converter, family_models[family], tmp_path / "theirs.gguf")
    )
    a, b = {t.name: t for t in ours.tensors}, {t.name: t for t in theirs.tensors}
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].tensor_type == b[name].tensor_type, name
        assert np.array_equal(np.array(a[name].data), np.array(b[name].data)), name
    if (
        VOCAB[family][0] == "gpt2"
    ):  # the same vocabulary path in both converters: the same tokens and token types
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
            assert _field(ours, key) == _field(theirs, key), key


def test_added_tokens_used_as_control_tokens_are_written_as_control(family_models, tmp_path):
    """Qwen2.5's <|fim_*|>, <|repo_name|>, <|file_sep|> are not flagged special in tokenizer.json."""
    from .families import QWEN_UNFLAGGED

    reader = gguf.GGUFReader(
        gguf_writer.convert_hf_to_gguf(family_models["qwen2.5"], tmp_path / "q.gguf", "f16")
    )
    kind = dict(zip(_field(reader, "tokenizer.ggml.tokens"), _field(reader, "tokenizer.ggml.token_type")))
    assert {kind[t] for t in QWEN_UNFLAGGED} == {gguf.TokenType.CONTROL}
