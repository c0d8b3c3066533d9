"""Rows as real datasets write them (fixtures in tests/data_fixtures, written for these tests): tool-calling
ShareGPT, content parts with reasoning and loss weights, preference pairs, one document per line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from backprop_engine.cli import main
from backprop_engine.data import DataSpec, check_data, load_chat_tokenizer, prepare_data
from backprop_engine.errors import DataError

from .test_data_sources import examples_of, write_jsonl

FIXTURES = Path(__file__).parent / "data_fixtures"


def test_sharegpt_tool_calls_become_assistant_calls_and_tool_turns():
    first, second, third = examples_of(FIXTURES / "sharegpt_tools.jsonl")
    assert [m["role"] for m in first.messages] == ["user", "assistant", "tool", "assistant"]
    assert first.messages[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"port": "Tortuga"}}}
        ],
    }
    assert first.messages[2] == {
        "role": "tool",
        "content": '{"sky": "storm clouds", "rain_mm": 12}',
        "name": "get_weather",
    }
    assert [t["function"]["name"] for t in first.tools] == ["get_weather"] and first.tools[0][
        "type"
    ] == "function"
    # Text then a call from the assistant: one turn; arguments given as JSON text are parsed.
    assert second.messages[2]["content"] == "Let me squawk at the tide tables."
    assert second.messages[2]["tool_calls"][0]["function"] == {
        "name": "tide_table",
        "arguments": {"port": "Port Royal", "day": "tomorrow"},
    }
    assert [m["role"] for m in second.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert len(second.tools) == 2 and third.tools is None and not third.has_tool_calls


def test_content_parts_reasoning_and_loss_weights():
    first, second, third = examples_of(FIXTURES / "content_parts.jsonl")
    assert first.messages == [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "How many legs has a parrot?"},
        {
            "role": "assistant",
            "content": "Two legs, matey!",
            "reasoning_content": "Parrots be birds; birds have two legs.",
        },
    ]
    assert second.messages[0]["content"] == "What be the capital o' France?"
    assert second.messages[1] == {
        "role": "assistant",
        "content": "Paris be bad, I meant Lyon.",
        "loss_weight": 0,
    }
    assert second.messages[3] == {
        "role": "assistant",
        "content": "Aye, it be Paris.",
        "reasoning_content": "The capital of France is Paris.",
    }
    assert third.messages[1]["reasoning_content"] == "One, two, three."


def test_preference_rows_in_both_layouts_keep_prompt_chosen_and_rejected():
    pairs = examples_of(FIXTURES / "preference_prompt.jsonl") + examples_of(
        FIXTURES / "preference_conversations.jsonl"
    )
    assert {e.format for e in pairs} == {"preference"}
    first, explicit, implicit, sharegpt, history = pairs
    assert first.pair.prompt == [{"role": "user", "content": "Which flag do pirates fly?"}]
    assert (first.pair.chosen, first.pair.rejected) == (
        [{"role": "assistant", "content": "The Jolly Roger, matey!"}],
        [{"role": "assistant", "content": "A white flag of surrender."}],
    )
    assert [m["role"] for m in explicit.pair.prompt] == ["system", "user"]
    assert implicit.pair.prompt == [{"role": "user", "content": "Best drink aboard?"}]
    assert implicit.pair.rejected == [{"role": "assistant", "content": "Milk."}]
    assert sharegpt.pair.chosen == [{"role": "assistant", "content": "Blackbeard, the terror o' the seas!"}]
    assert [m["role"] for m in history.pair.prompt] == ["system", "user", "assistant", "user"]
    # The conversation a chosen-only run trains: prompt + chosen.
    assert history.messages == history.pair.prompt + history.pair.chosen


def test_one_document_per_line_is_recognised_and_the_rule_reported(tmp_path, capsys):
    lines = examples_of(FIXTURES / "documents_per_line.txt")
    assert (
        len(lines) == 4
        and lines[1].text.startswith("Captain Flint")
        and lines[1].origin.endswith("documents_per_line.txt:2")
    )
    [wrapped] = examples_of(FIXTURES / "wrapped_document.txt")
    assert wrapped.text.count("\n") == 3
    report = check_data(
        DataSpec([str(FIXTURES / "documents_per_line.txt"), str(FIXTURES / "wrapped_document.txt")])
    )
    assert list(report.text_split.values()) == [
        "line: no blank lines, 4 of 4 lines end a sentence: one document per line",
        "blank: no blank lines between documents: the file is one document",
    ]
    assert len(examples_of(FIXTURES / "documents_per_line.txt", text_split="none")) == 1
    assert len(examples_of(FIXTURES / "wrapped_document.txt", text_split="line")) == 4
    paragraphs = tmp_path / "p.txt"
    paragraphs.write_text("First doc.\nStill first.\n\nSecond doc.\n")
    assert [e.text for e in examples_of(paragraphs)] == ["First doc.\nStill first.", "Second doc."]
    assert main(["data", "check", str(FIXTURES / "documents_per_line.txt"), "--text-split", "none"]) == 0
    assert "documents split by none: set by --text-split" in capsys.readouterr().out


BAD_ROWS = {
    # name: (row, expected "reason" on the row's line)
    "call-json": (
        {
            "conversations": [
                {"from": "human", "value": "Hi"},
                {"from": "function_call", "value": '{"name": "get_weather", "arguments": {'},
            ]
        },
        "turn 1 (function_call) tool call is not valid JSON (Expecting property name enclosed in double quotes at column 39)",
    ),
    "arguments-json": (
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {
                    "role": "assistant",
                    "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{x"}}],
                },
            ]
        },
        "message 1 tool call 'f' has arguments that are not valid JSON (Expecting property name",
    ),
    "call-no-name": (
        {
            "conversations": [
                {"from": "human", "value": "Hi"},
                {"from": "function_call", "value": '{"arguments": {}}'},
            ]
        },
        "turn 1 (function_call) tool call has no function name",
    ),
    "part-type": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hi"}, {"type": "hologram", "text": "x"}],
                },
                {"role": "assistant", "content": "Arr"},
            ]
        },
        "message 0 'content' part 1 has unknown type 'hologram'",
    ),
    "image-part": (
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]},
                {"role": "assistant", "content": "Arr"},
            ]
        },
        "message 0 'content' part 0 has type 'image_url': backprop trains text-only models",
    ),
    "loss-weight": (
        {
            "messages": [
                {"role": "user", "content": "Hi", "loss_weight": 1},
                {"role": "assistant", "content": "Arr"},
            ]
        },
        "message 0 is a user turn with loss_weight 1",
    ),
    "all-untrained": (
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Arr", "loss_weight": 0},
            ]
        },
        "every assistant turn has loss_weight 0",
    ),
    "tools-json": (
        {
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Arr"}],
            "tools": "[{",
        },
        "'tools' is not valid JSON",
    ),
    "pair-no-prompt": ({"chosen": "Yes", "rejected": "No"}, "the preference pair has no prompt"),
}


@pytest.mark.parametrize("name", BAD_ROWS)
def test_bad_rows_name_the_file_row_and_turn(tmp_path, capsys, name):
    row, expected = BAD_ROWS[name]
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    assert main(["data", "check", str(path)]) == 2
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(path))]
    assert line.startswith(f"{path}:1: {expected}") and "(hint: " in line, line


def test_training_skips_bad_tool_rows_and_counts_them(tmp_path):
    from backprop_engine import Trainer

    good = [json.loads(line) for line in (FIXTURES / "sharegpt_tools.jsonl").read_text().splitlines()]
    bad = {
        "conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "function_call", "value": "get_weather(Tortuga)"},
        ]
    }
    path = write_jsonl(tmp_path / "tools.jsonl", good * 3 + [bad])
    events = []
    Trainer("tiny", on_event=events.append, batch_size=2).train(path, steps=1, output_dir=tmp_path / "run")
    [skipped] = [e for e in events if e.kind == "rows_skipped"]
    assert skipped.count == 1 and skipped.first[0].startswith(
        f"{path}:10: turn 1 (function_call) tool call is not valid JSON"
    )
    warnings = [e.message for e in events if e.kind == "warning"]
    assert any(
        w.startswith("6 rows have tool calls or tool schemas that the model's chat template cannot render")
        for w in warnings
    )


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return load_chat_tokenizer(tiny_models["tiny"])


def test_tool_rows_are_trained_in_the_plain_form_when_the_template_lacks_tools(tokenizer):
    prepared = prepare_data(
        DataSpec([str(FIXTURES / "sharegpt_tools.jsonl")], shuffle=False), tokenizer, 2048, use_cache=False
    )
    assert prepared.report.bad_row_count == 0 and len(prepared.train) == 3
    text = tokenizer.decode(prepared.train[0].input_ids)
    assert "# Tools\n" in text and '{"name": "get_weather", "description"' in text
    trained = tokenizer.decode(
        [t for t, label in zip(prepared.train[0].input_ids, prepared.train[0].labels) if label != -100]
    )
    assert trained == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"port": "Tortuga"}}\n</tool_call><|im_end|>\n'
        "Arr, a storm be brewin' over Tortuga: twelve millimetres o' rain.<|im_end|>\n"
    )
    assert "storm clouds" not in trained and prepared.report.mask_schemes == {"in one render": 3}


def test_reasoning_is_dropped_with_a_count_when_the_template_cannot_render_it(tokenizer):
    prepared = prepare_data(
        DataSpec([str(FIXTURES / "content_parts.jsonl")], shuffle=False, dedupe=False),
        tokenizer,
        2048,
        use_cache=False,
    )
    assert (
        "3 rows have reasoning that the model's chat template does not render: dropped"
        in prepared.report.warnings[0]
    )
    texts = [tokenizer.decode(e.input_ids) for e in prepared.train]
    assert not any("birds have two legs" in t for t in texts)
    second = prepared.train[1]
    trained = tokenizer.decode([t for t, label in zip(second.input_ids, second.labels) if label != -100])
    assert trained == "Aye, it be Paris.<|im_end|>\n", "the loss_weight 0 reply stays untrained"


def test_preference_data_is_refused_for_sft_unless_chosen_only(tmp_path, capsys, tokenizer):
    path = FIXTURES / "preference_prompt.jsonl"
    refusal = "preference pairs (chosen/rejected): use --objective dpo (or orpo) to train on both replies"
    with pytest.raises(DataError, match=re.escape(refusal)):
        prepare_data(DataSpec([str(path)]), tokenizer, 2048, use_cache=False)
    code = main(["train", "--data", str(path), "--steps", "1", "--output", str(tmp_path / "refused")])
    error = capsys.readouterr().err.splitlines()[0]
    assert code == 2 and error == f"error: {path}:1: {refusal}"
    assert not (tmp_path / "refused").exists()
    assert main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("3 rows read (preference 3); 0 bad")
        and "--objective dpo (or orpo)" in out
        and "--chosen-only" in out
    )
    assert "⟦The Jolly Roger, matey!<|im_end|>\n⟧" in out or "⟦Rum, says every pirate!<|im_end|>\n⟧" in out
    argv = [
        "train",
        "--data",
        str(path),
        "--chosen-only",
        "--steps",
        "1",
        "--output",
        str(tmp_path / "run"),
        "--json",
    ]
    assert main(argv) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [data] = [e for e in events if e["event"] == "data"]
    assert data["formats"] == {"preference": 3} and data["train_examples"] == 3


def test_inspect_shows_the_mask_scheme_and_the_per_turn_cost(tmp_path, capsys):
    from .families import build_tokenizer

    folder = tmp_path / "mistral"
    build_tokenizer("mistral").save_pretrained(folder)
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be a pirate."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Arr"},
                {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Yo ho"},
            ]
        },
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Arr"}]},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    from backprop_engine.data import DataPreview
    from backprop_engine.data.text import format_report

    report = DataPreview(load_chat_tokenizer(folder), 2048).report(DataSpec([str(path)]))
    assert (
        report.mask_schemes == {"as one example per reply": 1, "in one render": 1}
        and report.train_examples == 3
    )
    out = format_report(report)
    assert (
        "masks for this chat template: 1 conversations as one example per reply, 1 conversations in one render"
        in out
    )
    assert "1 conversations are trained as one example per reply (3 examples from 2 conversations)" in out
