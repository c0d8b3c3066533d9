"""Fine-tuning from a GGUF: a file path or a model of the local Ollama store (a fake store laid out in a temp
dir, as Ollama lays it out), dequantized once into a cached HF folder; bad files and names are one line each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from backprop_engine.cli import main
from backprop_engine.errors import ModelError
from backprop_engine.events import WarningEvent
from backprop_engine.export.gguf_writer import convert_hf_to_gguf
from backprop_engine.export.ollama import file_sha256
from backprop_engine.export.quantize import quantize_gguf
from backprop_engine.gguf_source import dequantized_folder, locate
from backprop_engine.presets import check_model_name, resolve_model
from backprop_engine.progress import reporting

TRAIN = ["--steps", "2", "--batch-size", "2", "--max-seq-len", "64", "--no-tui"]


@pytest.fixture(scope="module")
def tiny_gguf(tiny_models, tmp_path_factory) -> Path:
    """The tiny model as a Q8_0 GGUF, written by our converter and llama.cpp's quantizer."""
    folder = tmp_path_factory.mktemp("gguf")
    f16 = convert_hf_to_gguf(tiny_models["tiny"], folder / "tiny.f16.gguf", "f16")
    quantize_gguf(f16, folder / "tiny.q8_0.gguf", "q8_0")
    f16.unlink()
    return folder / "tiny.q8_0.gguf"


def ollama_store(root: Path, gguf_file: Path, name: str = "tinyllm", tag: str = "q8") -> Path:
    """Ollama's layout: manifests/registry.ollama.ai/library/NAME/TAG (an OCI manifest) → blobs/sha256-<hex>."""
    digest = "sha256:" + file_sha256(gguf_file)
    (root / "blobs").mkdir(parents=True)
    shutil.copy(gguf_file, root / "blobs" / digest.replace(":", "-"))
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True)
    layers = [
        {
            "mediaType": "application/vnd.ollama.image.model",
            "digest": digest,
            "size": gguf_file.stat().st_size,
        },
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64, "size": 10},
    ]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    return root


def test_a_gguf_is_dequantized_once_into_a_folder_that_tokenizes_like_the_original(
    tiny_models, tiny_gguf, tmp_path, monkeypatch
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = locate(str(tiny_gguf))
    assert (source.architecture, source.file_type) == ("llama", "Q8_0")
    events, parses = [], []
    parse = gguf.GGUFReader.__init__
    monkeypatch.setattr(gguf.GGUFReader, "__init__", lambda *a, **k: (parses.append(a[1]), parse(*a, **k)))
    with reporting(events.append):  # the header parse and the loader's own per-tensor loop report stages
        folder, reused = dequantized_folder(source, tmp_path)
    monkeypatch.undo()
    assert not reused and folder.name == file_sha256(tiny_gguf)[:24]
    assert len(parses) == 1, "transformers' three reads of the header (config, tokenizer, weights) share one"
    reader = gguf.GGUFReader(tiny_gguf)
    dequantized = [e for e in events if getattr(e, "stage", "") == "dequantize"]
    assert dequantized and dequantized[-1].done == dequantized[-1].total == len(reader.tensors)
    header = [e for e in events if getattr(e, "stage", "") == "metadata"]
    entries = sum(len(f.data) for f in reader.fields.values() if f.types[0] == gguf.GGUFValueType.ARRAY)
    assert header[-1].done == header[-1].total == entries  # every entry of the vocabulary, scores, merges
    assert dequantized_folder(source, tmp_path) == (folder, True)
    original, restored = (
        AutoTokenizer.from_pretrained(tiny_models["tiny"]),
        AutoTokenizer.from_pretrained(folder),
    )
    for text in ["Hello world! 12 + 30 = 42", "naïve café 😀 中文", "def f(x):\n    return x ** 2"]:
        assert restored(text)["input_ids"] == original(text)["input_ids"]
    assert restored.chat_template == original.chat_template
    dense = AutoModelForCausalLM.from_pretrained(folder)
    weight = dense.model.layers[0].mlp.down_proj.weight.detach().numpy()
    reference = (
        AutoModelForCausalLM.from_pretrained(tiny_models["tiny"])
        .model.layers[0]
        .mlp.down_proj.weight.detach()
        .numpy()
    )
    assert 0 < np.abs(weight - reference).max() < 2e-2, "Q8_0 rounding, nothing else"


def test_cli_trains_from_a_gguf_file_and_says_where_the_base_came_from(
    tiny_gguf, tmp_path, capsys, monkeypatch
):
    from backprop_engine.rundir import RunDir

    run = tmp_path / "run"
    monkeypatch.chdir(tiny_gguf.parent)
    assert main(["train", "--model", tiny_gguf.name, "--output", str(run), *TRAIN]) == 0
    out = capsys.readouterr().out
    assert "the base model comes from a Q8_0 GGUF" in out
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert RunDir.open(run).read_config().model == str(tiny_gguf), (
        "recorded so that export works from anywhere"
    )
    assert check_model_name(str(tiny_gguf)) == "gguf"


def test_cli_trains_from_the_ollama_store_and_exports(tiny_gguf, tmp_path, monkeypatch, capsys):
    store = ollama_store(tmp_path / "ollama-models", tiny_gguf)
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    events = []
    from backprop_engine import Trainer

    trainer = Trainer("ollama:tinyllm:q8", on_event=events.append, batch_size=2, max_seq_len=64)
    trainer.train("sample", steps=2, output_dir=tmp_path / "run")
    notices = [e.message for e in events if isinstance(e, WarningEvent) and "GGUF" in e.message]
    assert len(notices) == 1 and "ollama:tinyllm:q8" in notices[0]
    assert main(["export", str(tmp_path / "run"), "-q", "q8_0"]) == 0
    assert "verified tokenization 5/5 identical" in capsys.readouterr().err
    assert resolve_model("ollama:tinyllm:q8").path.name == file_sha256(tiny_gguf)[:24], (
        "keyed by the blob's digest"
    )


def _unknown_architecture(path: Path) -> Path:
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _truncated(tiny_gguf: Path, path: Path) -> Path:
    data = tiny_gguf.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda g, d: _unknown_architecture(d / "bert.gguf"),
            "GGUF architecture 'bert' is not supported for fine-tuning",
        ),
        (lambda g, d: _truncated(g, d / "half.gguf"), "truncated"),
        (lambda g, d: (d / "notes.gguf").write_text("hello") and d / "notes.gguf", "not a GGUF file"),
        (lambda g, d: d / "missing.gguf", "no such GGUF file"),
    ],
    ids=["unknown-architecture", "truncated", "not-gguf", "missing"],
)
def test_bad_gguf_files_are_one_line_and_write_nothing(tiny_gguf, tmp_path, capsys, make, expected):
    model = make(tiny_gguf, tmp_path)
    assert main(["train", "--model", str(model), "--output", str(tmp_path / "run"), *TRAIN]) == 2
    err = capsys.readouterr().err
    first, *rest = err.strip().splitlines()
    assert (
        first.startswith("error: ") and expected in first and all(line.startswith("hint: ") for line in rest)
    ), err
    assert not (tmp_path / "run").exists()


def test_missing_ollama_models_and_stores_are_one_line(tiny_gguf, tmp_path, monkeypatch, capsys):
    store = ollama_store(tmp_path / "store", tiny_gguf)
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    cases = {
        "ollama:llama9": "ollama:llama9: no such model in the Ollama store",
        "ollama:tinyllm:latest": "the store has: tinyllm:q8",
        "ollama:../etc": "invalid Ollama model name",
    }
    for model, expected in cases.items():
        assert main(["train", "--model", model, "--output", str(tmp_path / "run"), *TRAIN]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err
    next(store.glob("blobs/*")).unlink()
    with pytest.raises(ModelError, match=r"its weights sha256-.* are missing"):
        locate("ollama:tinyllm:q8")
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="no Ollama model store at"):
        locate("ollama:tinyllm")
    assert not (tmp_path / "run").exists()
