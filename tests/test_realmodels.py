"""Real pretrained weights end to end (tests/realweights.py): SmolLM2-135M-Instruct and Gemma-3-270M (a base
without a chat template) train a few steps, export, verify in llama.cpp and chat. Short sequences, few steps."""

from __future__ import annotations

import json

import gguf
import pytest

from backprop_engine import Trainer
from backprop_engine.data.tokenize import PLAIN_TEMPLATE
from backprop_engine.events import WarningEvent
from backprop_engine.export.chat import chat_reply, open_gguf
from backprop_engine.export.chat_format import CHECK_CONVERSATIONS, adds_bos
from backprop_engine.modeling import load_tokenizer

from .test_export_ollama import MORE_CONVERSATIONS, _go_render
from .test_progress import assert_well_formed, progress_of

pytestmark = pytest.mark.realweights
SHORT = dict(
    batch_size=2, max_seq_len=128, lora_rank=8, eval_split=0, compare_count=0
)  # held-out loss and base vs tuned: test_learning_realweights.py


def _fields(path, *keys: str) -> list:
    """Metadata values, from one read: GGUFReader parses every entry (Gemma's 262k tokens: ~23 CPU s)."""
    fields = gguf.GGUFReader(path).fields
    return [None if fields.get(key) is None else fields[key].contents() for key in keys]


def _modelfile(path) -> dict[str, list[str]]:
    text = path.with_suffix(".Modelfile").read_text()
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    return {"template": [template], "lines": text.splitlines()}


def test_smollm2_trains_exports_f16_q8_0_q4_k_m_verifies_and_chats(smollm2_dir, tmp_path, go):
    events = []
    trainer = Trainer(str(smollm2_dir), on_event=events.append, **SHORT)
    trainer.train("sample", steps=3, output_dir=tmp_path / "run")
    paths = trainer.export("gguf", quantization=["f16", "q8_0", "q4_k_m"])
    for path in paths:
        report = json.loads(path.with_suffix(".report.json").read_text())
        verification = report["verification"]
        assert verification["passed"], verification
        assert verification["tokenization_matches"] == verification["tokenization_probes"] == 5
    f16 = json.loads(paths[0].with_suffix(".report.json").read_text())["verification"]
    assert f16["max_logit_delta"] <= f16["logit_bound"]
    # Width 576: llama.cpp falls back for most q4_k_m tensors; one line says so, the report lists each.
    fallback_lines = [
        e.message for e in events if isinstance(e, WarningEvent) and e.message.startswith("q4_k_m:")
    ]
    assert (
        len(fallback_lines) == 1
        and "of 211 tensors used" in fallback_lines[0]
        and "rows of 576" in fallback_lines[0]
    )
    assert len(json.loads(paths[2].with_suffix(".report.json").read_text())["fallbacks"]) > 100
    # The Modelfile: the model's 8192-token context, and a TEMPLATE Go renders exactly like the chat template.
    modelfile = _modelfile(paths[1])
    assert (
        "PARAMETER num_ctx 8192" in modelfile["lines"] and "PARAMETER stop <|im_end|>" in modelfile["lines"]
    )
    tokenizer = load_tokenizer(trainer.run.merged)
    conversations = CHECK_CONVERSATIONS + MORE_CONVERSATIONS
    bos = tokenizer.bos_token if adds_bos(tokenizer) else ""
    for conversation, text in zip(
        conversations, _go_render(go, modelfile["template"][0], conversations, tmp_path)
    ):
        assert bos + text == tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )
    assert trainer.chat("What is the capital of France?", max_tokens=16).strip()
    # Every stage of the run and of its export reported its progress, each stream monotone up to its total.
    stages = progress_of(events)
    assert {
        "load",
        "probe",
        "merge",
        "save",
        "load#2",
        "convert",
        "quantize",
        "quantize#2",
        "verify#3",
    } <= set(stages)
    assert stages["load"][-1]["total"] > 200 and stages["convert"][-1]["total"] > 200 * 2**20
    for stream in stages.values():
        assert_well_formed(stream)


def test_gemma3_base_keeps_its_training_template_through_export_and_chat(gemma3_dir, tmp_path):
    """Gemma-3-270M has no chat template: it trains in the plain '### Role:' format, and everything after
    (checkpoint, adapter, merged model, GGUF, Modelfile, chat) uses that format."""
    trainer = Trainer(
        str(gemma3_dir), **(SHORT | {"max_seq_len": 64, "save_steps": 1})
    )  # its 262k-row head is slow
    trainer.train("sample", steps=2, output_dir=tmp_path / "run")
    run = trainer.run
    for folder in (run.adapter, next(run.checkpoints.glob("step-*"))):
        assert load_tokenizer(folder).chat_template == PLAIN_TEMPLATE, folder
    [path] = trainer.export("gguf", quantization=["q8_0"])
    assert load_tokenizer(run.merged).chat_template == PLAIN_TEMPLATE
    report = json.loads(path.with_suffix(".report.json").read_text())
    assert report["verification"]["passed"], report["verification"]
    assert _fields(path, "general.architecture", "tokenizer.chat_template") == ["gemma3", PLAIN_TEMPLATE]
    modelfile = _modelfile(path)
    assert "### Assistant:" in modelfile["template"][0] and "PARAMETER stop <eos>" in modelfile["lines"]
    assert "PARAMETER num_ctx 8192" in modelfile["lines"]
    llm = open_gguf(path, n_ctx=512)
    try:
        reply = chat_reply(llm, [{"role": "user", "content": "What colour is a carrot?"}], max_tokens=24)
    finally:
        llm.close()
    assert reply.strip() and "### User:" not in reply
