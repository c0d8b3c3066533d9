"""LoRA training on the real tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from backprop_engine.data import load_conversations, tokenize_conversation
from backprop_engine.data.tokenize import IGNORE_INDEX
from backprop_engine.modeling import load_adapted_model, load_tokenizer

from .conftest import ARCHITECTURES


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_twenty_steps_lower_the_loss(trained_run, name):
    result = trained_run(name).result
    assert result.steps == 20
    assert result.final_loss < result.first_loss - 1.0, (result.first_loss, result.final_loss)
    assert result.tokens > 0 and result.seconds > 0


def test_run_directory_layout_and_events(trained_run):
    run = trained_run("tiny").run
    assert (run.adapter / "adapter_model.safetensors").is_file()
    assert not list(run.path.rglob("*.bin")), "no pickles"
    assert (run.checkpoints / "step-000010" / "adapter_model.safetensors").is_file()
    assert run.read_config().steps == 20
    events = [json.loads(line) for line in run.events_path.read_text().splitlines()]
    kinds = [event["event"] for event in events if event["event"] != "progress"]  # stages report as they go
    assert kinds[:2] == ["run_planned", "run_started"] and kinds[-1] == "finished"
    steps = [event for event in events if event["event"] == "step"]
    assert steps[-1]["step"] == 20 and all(event["tokens_per_second"] > 0 for event in steps)


def test_saved_adapter_reloads_with_identical_logits(trained_run, tiny_models, tmp_path):
    trainer = trained_run("tiny")
    saved = trainer.save(tmp_path / "copy")
    tokenizer = load_tokenizer(tiny_models["tiny"])
    ids = torch.tensor([tokenizer("Arr, what be the weather?")["input_ids"]])
    with torch.no_grad():
        first = load_adapted_model(tiny_models["tiny"], trainer.run.adapter).eval()(ids).logits
        second = load_adapted_model(tiny_models["tiny"], saved).eval()(ids).logits
    assert torch.equal(first, second)


def test_only_assistant_turns_are_trained(tiny_models):
    tokenizer = load_tokenizer(tiny_models["tiny"])
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Arr, hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Yo ho!"},
    ]
    example = tokenize_conversation(tokenizer, messages, max_len=512)
    trained = [t if label != IGNORE_INDEX else None for t, label in zip(example.input_ids, example.labels)]
    spans, current = [], []
    for token in trained + [None]:
        if token is None and current:
            spans.append(tokenizer.decode(current))
            current = []
        elif token is not None:
            current.append(token)
    assert spans == ["Arr, hello!<|im_end|>\n", "Yo ho!<|im_end|>\n"]


def test_sample_dataset_is_large_and_consistent():
    conversations = load_conversations("sample")
    assert len(conversations) >= 300
    replies = [m["content"] for c in conversations for m in c if m["role"] == "assistant"]
    assert all(r.startswith("Arr, matey! ") and r.endswith(" Yo ho ho!") for r in replies)


def test_pause_resume_checkpoint_now_and_stop(tmp_path):
    import threading

    from backprop_engine import Trainer

    seen = []

    def on_event(event):
        seen.append(event.kind)
        if event.kind == "step" and event.step == 2:
            trainer.control.pause()
            threading.Timer(0.3, trainer.control.resume).start()
        if event.kind == "step" and event.step == 4:
            trainer.control.request_checkpoint()
            trainer.control.stop()

    trainer = Trainer("tiny", on_event=on_event, logging_steps=1)
    result = trainer.train("sample", steps=50, output_dir=tmp_path / "run")
    assert result.stopped_early and result.steps == 4
    assert seen.count("paused") == 1 and seen.count("resumed") == 1
    assert seen.index("paused") < seen.index("resumed")
    assert (tmp_path / "run" / "checkpoints" / "step-000004" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert seen[-1] == "finished"
