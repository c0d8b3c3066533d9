"""Masks on every template family of tests/families.py and a Qwen3-style thinking template: no character of
user, system or tool text is ever trained, every reply and its end of turn is, and the context before each
trained reply is exactly what the template renders at inference."""

from __future__ import annotations

import pytest

from backprop_engine.data import Example
from backprop_engine.data.tokenize import (
    IGNORE_INDEX,
    PER_TURN,
    WHOLE,
    TemplateSupport,
    render,
    render_for_training,
    tokenize_rendered,
)

from .families import TEMPLATES, build_tokenizer
from .fixtures_data import QWEN3_THINKING

END_OF_TURN = {
    "llama3": "<|eot_id|>",
    "mistral": "</s>",
    "qwen2.5": "<|im_end|>",
    "gemma": "<end_of_turn>",
    "generic": "\n\n",
    "exotic": "\n",
    "qwen3": "<|im_end|>",
}
FAMILIES = [*TEMPLATES, "qwen3"]
CALL = {"type": "function", "function": {"name": "find_treasure", "arguments": {"island": "Skull Rock"}}}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "find_treasure",
            "description": "Where gold lies",
            "parameters": {"type": "object"},
        },
    }
]
CONVERSATIONS = {
    "system, two turns": [
        {"role": "system", "content": "You are the ship's quartermaster."},
        {"role": "user", "content": "How much rum is left below deck?"},
        {"role": "assistant", "content": "Three barrels, cap'n."},
        {"role": "user", "content": "And the powder kegs?"},
        {"role": "assistant", "content": "Dry and counted, twelve of them."},
    ],
    "three turns": [
        {"role": "user", "content": "Ahoy there sailor"},
        {"role": "assistant", "content": "Ahoy, matey!"},
        {"role": "user", "content": "Where are we bound?"},
        {"role": "assistant", "content": "For the Spanish Main."},
        {"role": "user", "content": "How long a voyage?"},
        {"role": "assistant", "content": "Forty days with fair wind."},
    ],
    "untrained first reply": [
        {"role": "system", "content": "Answer in one line."},
        {"role": "user", "content": "Which way is north?"},
        {"role": "assistant", "content": "Follow the gulls south.", "loss_weight": 0},
        {"role": "user", "content": "That sounds wrong."},
        {"role": "assistant", "content": "North is where the compass points."},
    ],
    "tool call": [
        {"role": "system", "content": "You can look things up."},
        {"role": "user", "content": "Where is the gold buried?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "under the crooked palm", "name": "find_treasure"},
        {"role": "assistant", "content": "Dig beneath the crooked palm."},
    ],
    "reasoning": [
        {"role": "user", "content": "What is seven times six?"},
        {
            "role": "assistant",
            "content": "Forty-two, arr.",
            "reasoning_content": "Seven sixes make forty-two.",
        },
        {"role": "user", "content": "Plus one?"},
        {"role": "assistant", "content": "Forty-three.", "reasoning_content": "One more than forty-two."},
    ],
}


@pytest.fixture(scope="module")
def family_tokenizers():
    tokenizers = {family: build_tokenizer(family) for family in TEMPLATES}
    tokenizers["qwen3"] = build_tokenizer("qwen2.5")
    tokenizers["qwen3"].chat_template = QWEN3_THINKING
    return tokenizers


def rendered_for(tokenizer, messages, tools=None):
    support = TemplateSupport(tokenizer)
    adapted, tools, _ = support.adapt(Example("x", "messages", messages, tools=tools))
    scheme, rendered = render_for_training(tokenizer, adapted, tools)
    return adapted, tools, scheme, rendered


def trained_runs(tokenizer, rendered) -> list[list[int]]:
    """The runs of consecutive trained token ids of the tokenized example."""
    example = tokenize_rendered(tokenizer, rendered)
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(example.input_ids, example.labels):
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return runs


def occurrences(text: str, needle: str) -> list[range]:
    found, start = [], text.find(needle)
    while needle and start >= 0:
        found.append(range(start, start + len(needle)))
        start = text.find(needle, start + 1)
    return found


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", CONVERSATIONS)
def test_masks_train_replies_only_and_each_after_its_inference_prompt(family_tokenizers, family, name):
    tokenizer, messages = family_tokenizers[family], CONVERSATIONS[name]
    adapted, tools, scheme, rendered = rendered_for(tokenizer, messages)
    trained_turns = [i for i, m in enumerate(adapted) if m["role"] == "assistant" and m.get("loss_weight", 1)]
    spans = [(r, span) for r in rendered for span in r.spans]
    assert len(spans) == len(trained_turns)
    for index, (example, (start, end)) in zip(trained_turns, spans):
        # The context of each trained reply is what the template renders at inference, system prompt included.
        assert example.text[:start] == render(
            tokenizer, adapted[:index], add_generation_prompt=True, tools=tools
        )
        reply = example.text[start:end]
        content = adapted[index]["content"].strip()
        assert content in reply and END_OF_TURN[family] in reply[reply.index(content) + len(content) :]
    for example in rendered:
        # The trained tokens are exactly the spans' tokens; no character outside a span is trained.
        spans = [example.text[start:end] for start, end in example.spans]
        assert trained_runs(tokenizer, example) == [
            tokenizer(s, add_special_tokens=False)["input_ids"] for s in spans
        ]
        chars = {c for start, end in example.spans for c in range(start, end)}
        for message in messages:
            if message["role"] != "assistant" or not message.get("loss_weight", 1):
                for where in occurrences(example.text, message["content"]):
                    assert not chars & set(where), f"{message['role']} text trained: {message['content']!r}"
    if family == "mistral" and name == "system, two turns":
        assert scheme == PER_TURN and all(messages[0]["content"] in r.text[: r.spans[0][0]] for r in rendered)


def test_the_prefix_stable_families_render_once_and_the_others_per_reply(family_tokenizers):
    schemes = {
        family: rendered_for(family_tokenizers[family], CONVERSATIONS["system, two turns"])[2]
        for family in FAMILIES
    }
    assert schemes == {
        "llama3": WHOLE,
        "mistral": PER_TURN,
        "qwen2.5": WHOLE,
        "gemma": WHOLE,
        "generic": WHOLE,
        "exotic": WHOLE,
        "qwen3": PER_TURN,
    }
    # Without a system prompt Mistral's template is prefix-stable: one render.
    assert rendered_for(family_tokenizers["mistral"], CONVERSATIONS["three turns"])[2] == WHOLE


def test_mistral_trains_the_reply_with_the_system_prompt_in_its_context(family_tokenizers):
    tokenizer = family_tokenizers["mistral"]
    messages = [
        {"role": "system", "content": "Answer as a pirate."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    _, _, scheme, [example] = rendered_for(tokenizer, messages)
    [(start, end)] = example.spans
    assert scheme == PER_TURN
    assert example.text[:start] == "<s>[INST] Answer as a pirate.\n\nWhat is the capital of France?[/INST]"
    assert example.text[start:end] == " Paris.</s>"


def test_qwen3_trains_each_reply_with_its_own_reasoning(family_tokenizers):
    tokenizer = family_tokenizers["qwen3"]
    _, _, scheme, rendered = rendered_for(tokenizer, CONVERSATIONS["reasoning"])
    trained = [r.text[s:e] for r in rendered for s, e in r.spans]
    assert scheme == PER_TURN and trained == [
        "<think>\nSeven sixes make forty-two.\n</think>\n\nForty-two, arr.<|im_end|>\n",
        "<think>\nOne more than forty-two.\n</think>\n\nForty-three.<|im_end|>\n",
    ]
    # As at inference, the earlier reply appears in the second prompt without its reasoning.
    assert "Seven sixes" not in rendered[1].text


def test_tools_render_natively_where_the_template_can_and_plainly_where_not(family_tokenizers):
    messages = CONVERSATIONS["tool call"]
    native, tools, _, rendered = rendered_for(family_tokenizers["qwen3"], messages, TOOLS)
    assert tools == TOOLS and native[2]["tool_calls"] == [CALL]
    assert '<tools>\n{"type": "function", "function": {"name": "find_treasure"' in rendered[0].text
    [first, *_] = [r.text[s:e] for r in rendered for s, e in r.spans]
    assert (
        first
        == '<think>\n\n</think>\n\n\n<tool_call>\n{"name": "find_treasure", "arguments": {"island": "Skull Rock"}}\n</tool_call><|im_end|>\n'
    )
    plain, tools, _, rendered = rendered_for(family_tokenizers["llama3"], messages, TOOLS)
    assert tools is None and [m["role"] for m in plain] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert plain[0]["content"].startswith("You can look things up.\n\n# Tools\n")
    assert (
        plain[2]["content"]
        == '<tool_call>\n{"name": "find_treasure", "arguments": {"island": "Skull Rock"}}\n</tool_call>'
    )
    assert plain[3]["content"] == "<tool_response>\nunder the crooked palm\n</tool_response>"


def test_a_mistral_model_trains_on_per_reply_examples_end_to_end(tmp_path):
    import json

    from backprop_engine import Trainer

    from .families import build_model

    model = build_model("mistral", tmp_path / "mistral")
    rows = [{"messages": CONVERSATIONS["system, two turns"]}, {"messages": CONVERSATIONS["three turns"]}]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    events = []
    result = Trainer(str(model), on_event=events.append, batch_size=2).train(
        data, steps=2, output_dir=tmp_path / "run"
    )
    [prepared] = [e for e in events if e.kind == "data"]
    assert result.steps == 2 and prepared.train_examples == 3, (
        "two replies of the system row + one render of the other"
    )
    assert any(
        "1 conversations are trained as one example per reply (3 examples from 2 conversations)" in e.message
        for e in events
        if e.kind == "warning"
    )
