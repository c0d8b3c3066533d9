"""Rendering with the model's own chat template and assistant-only masks, on real fixture tokenizers."""

from __future__ import annotations

import pytest

from backprop_engine.data import DataReport, DataSpec, Example, load_chat_tokenizer
from backprop_engine.data.pipeline import _RowCollector, _tokenize
from backprop_engine.data.tokenize import IGNORE_INDEX, marked_spans, render, tokenize_example
from backprop_engine.tiny import corpus_text

from .fixtures_data import CONVERSATION, STYLES, build_tokenizer


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    corpus = corpus_text()
    folders = {style: build_tokenizer(style, root / style, corpus) for style in STYLES}
    warnings: list[str] = []
    loaded = {style: load_chat_tokenizer(folder, warn=warnings.append) for style, folder in folders.items()}
    loaded["warnings"] = warnings
    return loaded


def trained_texts(tokenizer, example) -> list[str]:
    return [text for text, trained in marked_spans(tokenizer, example) if trained]


@pytest.mark.parametrize("style", ["chatml", "llama3", "mistral", "gemma", "none"])
def test_exactly_the_assistant_turns_and_their_end_of_turn_are_trained(tokenizers, style):
    tokenizer = tokenizers[style]
    [example] = tokenize_example(tokenizer, Example("x", "messages", CONVERSATION))
    replies = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]
    assert trained_texts(tokenizer, example) == [STYLES[style][3].format(reply=r) for r in replies]
    # The masked and trained runs together are exactly the template's rendering: nothing lost or added.
    assert "".join(text for text, _ in marked_spans(tokenizer, example)) == render(tokenizer, CONVERSATION)
    assert example.labels == [
        t if label != IGNORE_INDEX else IGNORE_INDEX for t, label in zip(example.input_ids, example.labels)
    ]


def test_a_model_without_chat_template_gets_the_plain_format_with_a_warning(tokenizers):
    assert any("no chat template" in w and "plain '### Role:' format" in w for w in tokenizers["warnings"])
    assert (
        render(tokenizers["none"], CONVERSATION[:2], add_generation_prompt=True)
        == "### System:\nBe brief.\n\n### User:\nHi there\n\n### Assistant:\n"
    )


def test_raw_text_trains_every_token(tokenizers):
    tokenizer = tokenizers["llama3"]
    [example] = tokenize_example(tokenizer, Example("x", "text", text="Once upon a time"))
    assert example.labels == example.input_ids and example.input_ids[-1] == tokenizer.eos_token_id


TOOL_ROW = [
    {"role": "user", "content": "Weather in Oslo?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}],
    },
    {"role": "tool", "content": "rain", "name": "weather"},
    {"role": "assistant", "content": "It rains."},
]


def test_tool_calls_are_kept_when_the_template_renders_them_and_written_plainly_when_not(tokenizers):
    examples = [Example("t.jsonl:1", "messages", TOOL_ROW), Example("t.jsonl:2", "messages", CONVERSATION)]
    spec = DataSpec(["t.jsonl"])
    report = DataReport(sources=spec.sources)
    [(_, [tools])] = _tokenize(examples[:1], tokenizers["chatml-tools"], _RowCollector(spec, report))
    assert trained_texts(tokenizers["chatml-tools"], tools) == [
        '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call><|im_end|>\n',
        "It rains.<|im_end|>\n",
    ]
    assert report.warnings == []
    kept = _tokenize(examples, tokenizers["chatml"], _RowCollector(spec, report))
    assert [e.origin for e, _ in kept] == ["t.jsonl:1", "t.jsonl:2"] and report.bad_rows == []
    [plain] = kept[0][1]
    assert trained_texts(tokenizers["chatml"], plain) == [
        '<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n',
        "It rains.<|im_end|>\n",
    ]
    assert "<|im_start|>user\n<tool_response>\nrain\n</tool_response><|im_end|>" in tokenizers[
        "chatml"
    ].decode(plain.input_ids)
    assert report.warnings[0].startswith(
        "1 rows have tool calls or tool schemas that the model's chat template cannot render: written in the plain form"
    )


# In the style of some Mistral templates: the system text goes into the *last* user turn.
SYSTEM_IN_LAST_USER_TURN = (
    "{%- set system = messages[0]['content'] if messages[0]['role'] == 'system' else '' %}"
    "{%- set turns = messages[1:] if system else messages %}"
    "{%- set last_user = turns | selectattr('role', 'equalto', 'user') | list | last %}"
    "{%- for m in turns %}{%- if m['role'] == 'user' %}"
    "{{- '[INST] ' + (system + '\\n\\n' if m is sameas last_user and system else '') + m['content'] + ' [/INST]' }}"
    "{%- else %}{{- m['content'] + eos_token }}{%- endif %}{%- endfor %}"
)


def test_a_template_that_moves_earlier_turns_trains_each_reply_after_its_inference_prompt(
    tokenizers, monkeypatch
):
    tokenizer = tokenizers["mistral"]
    monkeypatch.setattr(tokenizer, "chat_template", SYSTEM_IN_LAST_USER_TURN)
    spec = DataSpec(["m.jsonl"])
    report = DataReport(sources=spec.sources)
    [(_, examples)] = _tokenize(
        [Example("m.jsonl:1", "messages", CONVERSATION)], tokenizer, _RowCollector(spec, report)
    )
    assert [marked_spans(tokenizer, e) for e in examples] == [
        [("[INST] Be brief.\n\nHi there [/INST]", False), ("Arr, hello!</s>", True)],
        [
            ("[INST] Hi there [/INST]Arr, hello!</s>[INST] Be brief.\n\nBye, señor [/INST]", False),
            ("Yo ho, adiós!</s>", True),
        ],
    ]
    assert report.mask_schemes == {"as one example per reply": 1}


def test_a_template_whose_replies_never_continue_their_prompt_is_refused_not_guessed(tokenizers, monkeypatch):
    tokenizer = tokenizers["chatml"]
    monkeypatch.setattr(
        tokenizer, "chat_template", "{{ messages | length }} turns\n" + tokenizer.chat_template
    )
    spec = DataSpec(["m.jsonl"])
    report = DataReport(sources=spec.sources)
    assert (
        _tokenize([Example("m.jsonl:1", "messages", CONVERSATION)], tokenizer, _RowCollector(spec, report))
        == []
    )
    assert (
        str(report.bad_rows[0])
        == "m.jsonl:1: the chat template does not render assistant turn 2 as a continuation of its prompt"
    )


def test_a_template_error_is_a_bad_row(tokenizers):
    spec = DataSpec(["m.jsonl"])
    report = DataReport(sources=spec.sources)
    twice = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    assert (
        _tokenize(
            [Example("m.jsonl:3", "messages", twice)], tokenizers["mistral"], _RowCollector(spec, report)
        )
        == []
    )
    assert str(report.bad_rows[0]).startswith(
        "m.jsonl:3: the model's chat template rejects this conversation (roles must alternate"
    )
