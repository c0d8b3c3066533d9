"""Fixture models shaped like each preset family, built locally from our corpus (no hub).

- ``llama3``: byte-level BPE with Llama 3's split regex, ``<|begin_of_text|>`` added by the post-processor,
  the Llama 3 header/eot chat template, and Llama 3.1-style rope scaling (``rope_type: llama3``).
- ``mistral``: a SentencePiece-style vocabulary as in Mistral v0.3's tokenizer.json (``<unk>``/``<s>``/``</s>``,
  ``[INST]`` control tokens, 256 ``<0xNN>`` byte-fallback tokens, "▁" for spaces, merges ranked by piece
  score) and the ``[INST]`` template that folds the system prompt into the last user message.
- ``qwen2.5``: Qwen2's split regex, ChatML with Qwen2.5's default system turn, q/k/v biases, tied embeddings.
- ``gemma`` (template): ``<start_of_turn>``/``model`` turns with the system prompt folded into the first user
  message; ``gemma3`` is a Gemma 3 text model with that template (six layers, five of them sliding-window with a
  window of 16 so the probes cross it, two rope thetas, q/k norms, norm weights that are offsets from 1).
- ``qwen3``: Qwen2's tokenizer with a plain ChatML template, q/k norms and a head_dim (128) that is not
  hidden / heads.

Weights are random; hidden sizes are multiples of 256 so llama.cpp's k-quants apply.
"""

from __future__ import annotations

import json
from pathlib import Path

from backprop_engine.tiny import QWEN2_SPLIT_REGEX, corpus_text

LLAMA3_SPLIT_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
TEMPLATES = {
    "llama3": (
        "{{- bos_token }}{%- for message in messages %}"
        "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
        "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
    ),
    "mistral": (
        "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
        "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
        "{{- bos_token }}{%- for message in loop_messages %}"
        "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{- raise_exception('roles must alternate') }}{%- endif %}"
        "{%- if message['role'] == 'user' %}"
        "{%- if loop.last and system_message is defined %}{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
        "{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
        "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] | trim + eos_token }}{%- endif %}"
        "{%- endfor %}"
    ),
    "qwen2.5": (
        "{%- if messages[0]['role'] != 'system' %}"
        "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
        "{%- endif %}{%- for message in messages %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    ),
    "gemma": (
        "{{ bos_token }}{%- if messages[0]['role'] == 'system' %}"
        "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' %}{%- set loop_messages = messages[1:] %}"
        "{%- else %}{%- set first_user_prefix = '' %}{%- set loop_messages = messages %}{%- endif %}"
        "{%- for message in loop_messages %}{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
        "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}"
        "{%- endfor %}{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}"
    ),
    # A plain role/content template of no known family: the TEMPLATE is generated from it.
    "generic": (
        "{% for m in messages %}{{ '### ' + m['role'] | capitalize + ':\\n' + m['content'] + '\\n\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Assistant:\\n' }}{% endif %}"
    ),
    # Numbers the turns: no fixed per-role text, so it must be refused.
    "exotic": (
        "{% for m in messages %}{{ loop.index|string + '. ' + m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ (messages|length + 1)|string + '. assistant: ' }}{% endif %}"
    ),
}
SPECIALS = {
    "llama3": [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ],
    "qwen2.5": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "mistral": ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
    "gemma": ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
    "generic": ["<|endoftext|>"],
    "exotic": ["<|endoftext|>"],
}
QWEN_UNFLAGGED = ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|repo_name|>", "<|file_sep|>"]
ROLES = {  # bos, eos, pad
    "llama3": ("<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"),
    "qwen2.5": (None, "<|im_end|>", "<|endoftext|>"),
    "mistral": ("<s>", "</s>", "</s>"),
    "gemma": ("<bos>", "<end_of_turn>", "<pad>"),
    "generic": (None, "<|endoftext|>", "<|endoftext|>"),
    "exotic": (None, "<|endoftext|>", "<|endoftext|>"),
}
MODEL_FAMILIES = ["llama3", "mistral", "qwen2.5", "gemma3", "qwen3"]
TOKENIZER_OF = {"gemma3": "gemma", "qwen3": "qwen2.5"}  # the vocabulary and template a model family borrows
CHATML = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 256,
}


def build_tokenizer(family: str, vocab_size: int = 1024):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if family == "mistral":
        tokenizer = _sentencepiece_style(vocab_size)
    else:
        tokenizer = Tokenizer(models.BPE())
        regex = {"llama3": LLAMA3_SPLIT_REGEX, "qwen2.5": QWEN2_SPLIT_REGEX}.get(family)
        if regex:
            tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                ]
            )
        else:
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIALS[family],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            min_frequency=2,
            show_progress=False,
        )
        tokenizer.train_from_iterator(corpus_text().splitlines(), trainer=trainer)
    if (
        family == "qwen2.5"
    ):  # as in Qwen2.5's tokenizer.json: added, used as control tokens, not flagged special
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_UNFLAGGED])
    bos, eos, pad = ROLES[family]
    if family in ("llama3", "mistral", "gemma"):
        bos_id = tokenizer.token_to_id(bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    extra = {"unk_token": "<unk>"} if family == "mistral" else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        chat_template=TEMPLATES[family],
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
        **extra,
    )


def _sentencepiece_style(vocab_size: int):
    """BPE trained on "▁"-joined words, then laid out like a converted SentencePiece vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer_tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 256 - len(SPECIALS["mistral"]), min_frequency=2, show_progress=False
    )
    trainer_tok.train_from_iterator(corpus_text().splitlines(), trainer=trainer)
    learned = sorted(trainer_tok.get_vocab().items(), key=lambda item: item[1])
    pieces = SPECIALS["mistral"] + [f"<0x{b:02X}>" for b in range(256)] + [piece for piece, _ in learned]
    vocab = {piece: index for index, piece in enumerate(pieces)}
    # As transformers' SentencePiece converter does: every pair whose concatenation is a piece, ranked by that piece.
    merges = []
    for piece, index in vocab.items():
        if index < len(SPECIALS["mistral"]) + 256:
            continue
        pairs = [
            (piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab
        ]
        merges += [(index, vocab[a], vocab[b], a, b) for a, b in pairs]
    merges = [(a, b) for *_, a, b in sorted(merges)]
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS["mistral"]])
    return tokenizer


def build_model(family: str, out_dir: Path, seed: int = 0) -> Path:
    """A ~1M-parameter model of ``family`` with its tokenizer, saved like a hub folder."""
    import torch
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    tokenizer = build_tokenizer(TOKENIZER_OF.get(family, family))
    if family == "qwen3":
        tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(out_dir)
    config_path = Path(out_dir) / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2))

    bos, eos, pad = ROLES[TOKENIZER_OF.get(family, family)]
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.convert_tokens_to_ids(eos),
        pad_token_id=tokenizer.convert_tokens_to_ids(pad),
        bos_token_id=tokenizer.convert_tokens_to_ids(bos) if bos else None,
    )
    torch.manual_seed(seed)
    if family == "qwen2.5":
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True, rms_norm_eps=1e-6))
    elif family == "qwen3":
        model = Qwen3ForCausalLM(
            Qwen3Config(**common, head_dim=128, tie_word_embeddings=True, rms_norm_eps=1e-6)
        )
    elif family == "gemma3":
        config = Gemma3TextConfig(
            **(common | {"num_hidden_layers": 6}),
            head_dim=64,
            query_pre_attn_scalar=64,
            sliding_window=16,
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
            },
            tie_word_embeddings=True,
            rms_norm_eps=1e-6,
        )
        model = Gemma3ForCausalLM(config)
        with (
            torch.no_grad()
        ):  # Gemma's norms start at 0 (a scale of 1): give them something the +1 offset can break
            for name, parameter in model.named_parameters():
                if name.endswith("norm.weight"):
                    parameter.normal_(0.0, 0.1)
    elif family == "llama3":
        model = LlamaForCausalLM(LlamaConfig(**common, rms_norm_eps=1e-5, rope_parameters=dict(LLAMA3_ROPE)))
    else:
        model = LlamaForCausalLM(
            LlamaConfig(
                **common, rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 1e6}
            )
        )
    ends = sorted({tokenizer.convert_tokens_to_ids(eos), tokenizer.convert_tokens_to_ids(pad)})
    model.generation_config = GenerationConfig(eos_token_id=ends, pad_token_id=common["pad_token_id"])
    model.save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)
