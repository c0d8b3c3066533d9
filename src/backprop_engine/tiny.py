"""The built-in tiny chat models, built locally and deterministically so everything works offline.

``tiny`` is a Llama-architecture model (grouped-query attention, untied embeddings) and ``tiny-qwen2`` a
Qwen2 one (q/k/v biases, tied embeddings). Both carry a byte-level BPE tokenizer trained on the corpus we
ship and a ChatML chat template. Hidden and feed-forward sizes are multiples of 256 so llama.cpp's
k-quants apply for real. Weights are random (seeded): the models exist to exercise every code path, not
to be smart.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from .fsutil import atomic_dir

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# The pre-tokenizer split used by Qwen2 tokenizers; transformers installs it for every qwen2 folder, so the
# tokenizer of tiny-qwen2 is trained with it too.
QWEN2_SPLIT_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
BUILD_VERSION = 1  # bump when the recipe below changes, so cached builds are rebuilt


@dataclass(frozen=True)
class TinySpec:
    architecture: str  # "llama" or "qwen2"
    vocab_size: int = 1536
    hidden_size: int = 256
    intermediate_size: int = 768
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 2048
    seed: int = 0


TINY_SPECS = {
    "tiny": TinySpec("llama"),
    "tiny-qwen2": TinySpec("qwen2", seed=1),
}


def corpus_text() -> str:
    return resources.files("backprop_engine.resources").joinpath("corpus.txt").read_text(encoding="utf-8")


def build_key(spec: TinySpec) -> str:
    """Changes with the recipe, the corpus and backprop's version, so a stale cache is never used."""
    from . import __version__

    digest = hashlib.sha256()
    recipe = {"spec": asdict(spec), "recipe": BUILD_VERSION, "backprop": __version__}
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    digest.update(corpus_text().encode())
    return digest.hexdigest()[:16]


def ensure_tiny_model(name: str, cache_dir: Path, rebuild: bool = False) -> Path:
    """Return the folder of the built-in model ``name``, building it on first use (a few seconds)."""
    spec = TINY_SPECS[name]
    folder = Path(cache_dir) / "models" / f"{name}-{build_key(spec)}"
    if rebuild or not (folder / "model.safetensors").exists():
        with atomic_dir(folder) as tmp:
            build_tiny_model(spec, tmp)
    return folder


def build_tiny_model(spec: TinySpec, out_dir: Path) -> None:
    from .modeling import quiet_transformers

    quiet_transformers()
    tokenizer = train_tokenizer(spec)
    tokenizer.save_pretrained(out_dir)
    _set_tokenizer_class(out_dir, spec)
    model = _init_model(spec, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)


def train_tokenizer(spec: TinySpec):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    if spec.architecture == "qwen2":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_text().splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        model_max_length=spec.max_positions,
        clean_up_tokenization_spaces=False,
    )


def _set_tokenizer_class(out_dir: Path, spec: TinySpec) -> None:
    # Qwen2 folders name Qwen2Tokenizer like the real models; the llama one keeps the generic fast tokenizer
    # so that transformers does not swap in a SentencePiece-style Llama tokenizer.
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = (
        "Qwen2Tokenizer" if spec.architecture == "qwen2" else "PreTrainedTokenizerFast"
    )
    config["add_bos_token"] = False
    config_path.write_text(json.dumps(config, indent=2))


def _init_model(spec: TinySpec, tokenizer):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_positions,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(spec.seed)
    if spec.architecture == "qwen2":
        config = Qwen2Config(**common, tie_word_embeddings=True, rms_norm_eps=1e-6)
        model = Qwen2ForCausalLM(config)
    else:
        config = LlamaConfig(**common, tie_word_embeddings=False, rms_norm_eps=1e-5)
        model = LlamaForCausalLM(config)
    end_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    model.generation_config = GenerationConfig(eos_token_id=end_ids, pad_token_id=tokenizer.pad_token_id)
    return model.to(torch.float32)
