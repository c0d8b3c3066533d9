"""Fixture tokenizers for the data tests: real byte-level BPE tokenizers trained locally with ``tokenizers``,
each carrying a chat template in the style of a model family (written for these tests, not copied), plus
the exact text every template must train for a reference conversation.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{%- for m in messages %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3 = (
    "{{- bos_token }}"
    "{%- for m in messages %}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
# Mistral style: no system role of its own (it is folded into the first user turn), [INST] blocks, </s> after replies.
MISTRAL = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] + '\\n\\n' %}{%- set turns = messages[1:] %}"
    "{%- else %}{%- set system = '' %}{%- set turns = messages %}{%- endif %}"
    "{%- for m in turns %}"
    "{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{- raise_exception('roles must alternate user/assistant') }}{%- endif %}"
    "{%- if m['role'] == 'user' %}{{- '[INST] ' + (system if loop.first else '') + m['content'] + ' [/INST]' }}"
    "{%- else %}{{- m['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}"
)
# Gemma style: 'model' instead of 'assistant', system text prepended to the first user turn.
GEMMA = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set prefix = messages[0]['content'] + '\\n\\n' %}{%- set turns = messages[1:] %}"
    "{%- else %}{%- set prefix = '' %}{%- set turns = messages %}{%- endif %}"
    "{%- for m in turns %}"
    "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{- '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') + m['content'] | trim + '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
)
# ChatML with tool calls rendered as JSON inside <tool_call> tags and tool results as their own turns.
CHATML_TOOLS = (
    "{%- for m in messages %}"
    "{{- '<|im_start|>' + m['role'] + '\n' + (m['content'] or '') }}"
    "{%- for call in m.get('tool_calls', []) %}{{- '<tool_call>' + call['function'] | tojson + '</tool_call>' }}{%- endfor %}"
    "{{- '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
# Qwen3 style, written for these tests: ChatML; a reply after the last user turn shows its reasoning in
# <think> tags (the final reply always, with an empty block), earlier replies lose theirs; tool schemas in the
# system turn, tool calls in <tool_call> tags, results as user turns in <tool_response> tags.
QWEN3_THINKING = (
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for m in messages %}{%- if m['role'] == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- if tools %}{{- '<|im_start|>system\n' }}{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\n\n' }}{%- endif %}"
    "{{- '# Tools\n<tools>' }}{%- for t in tools %}{{- '\n' + t | tojson }}{%- endfor %}{{- '\n</tools><|im_end|>\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m['role'] == 'user' %}{{- '<|im_start|>user\n' + m['content'] + '<|im_end|>\n' }}"
    "{%- elif m['role'] == 'assistant' %}{{- '<|im_start|>assistant\n' }}"
    "{%- if loop.index0 > ns.last_user and (loop.last or m.get('reasoning_content')) %}"
    "{{- '<think>\n' + (m.get('reasoning_content') or '') + '\n</think>\n\n' }}{%- endif %}"
    "{{- m['content'] }}"
    "{%- for call in m.get('tool_calls', []) %}{{- '\n<tool_call>\n' + call['function'] | tojson + '\n</tool_call>' }}{%- endfor %}"
    "{{- '<|im_end|>\n' }}"
    "{%- elif m['role'] == 'tool' %}{{- '<|im_start|>user\n<tool_response>\n' + m['content'] + '\n</tool_response><|im_end|>\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

STYLES = {
    # style: (template, bos, eos, what each assistant turn trains: reply + end of turn)
    "chatml": (CHATML, None, "<|im_end|>", "{reply}<|im_end|>\n"),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", "{reply}<|eot_id|>"),
    "mistral": (MISTRAL, "<s>", "</s>", "{reply}</s>"),
    "gemma": (GEMMA, "<bos>", "<end_of_turn>", "{reply}<end_of_turn>\n"),
    "chatml-tools": (CHATML_TOOLS, None, "<|im_end|>", "{reply}<|im_end|>\n"),
    "none": (None, None, "<|endoftext|>", "{reply}<|endoftext|>\n\n"),
}
SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<s>",
    "</s>",
    "<bos>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<pad>",
]

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Arr, hello!"},
    {"role": "user", "content": "Bye, señor"},
    {"role": "assistant", "content": "Yo ho, adiós!"},
]


def build_tokenizer(style: str, folder: Path, corpus: str) -> Path:
    """Train a small byte-level BPE on ``corpus`` and save it with ``style``'s template into ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    template, bos, eos, _ = STYLES[style]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(corpus.splitlines(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=bos,
        eos_token=eos,
        pad_token="<pad>",
        chat_template=template,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.save_pretrained(folder)
    return folder
