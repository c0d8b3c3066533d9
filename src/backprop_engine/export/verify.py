"""Verification of every export: the GGUF loads in llama.cpp, tokenizes like the HF tokenizer, gives the same
next-token logits (bounded for f32/f16/bf16, reported for quantized types) and generates a reply."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..progress import track

PROBES = [
    "Hello world! Arr, matey: 12 + 30 = 42.\n  Yo ho ho!",
    "  leading spaces,\ttabs\nand new lines\n\n",
    "naïve café — ünïcödé 😀 and 中文",
    "What colour is a carrot? It's orange, isn't it?",
    "def area(r):\n    return 3.14159 * r ** 2  # {'k': [1, 2]}\n",
]
PROBE_CONVERSATION = [{"role": "user", "content": "What colour is a carrot?"}]
# max |Δlogit| allowed, relative to max(1, max |logit|), for types that keep (nearly) full precision.
LOGIT_BOUNDS = {"f32": 1e-3, "f16": 1e-2, "bf16": 3e-2}
# Above this many weights the reference runs in bfloat16 (half the memory of float32; a 7B model needs ~14 GB)
# and the bounds of f32/f16 files widen to bf16's.
FP32_REFERENCE_MAX_PARAMS = 2_000_000_000


@dataclass
class Reference:
    """What the HF model says, computed once per export and compared with every GGUF."""

    probe_ids: list[list[int]]
    prompt_ids: list[int]
    logits: np.ndarray
    precision: str = "f32"

    @classmethod
    def from_hf(cls, hf_dir: Path) -> Reference:
        import torch

        from ..modeling import load_base_model, load_tokenizer
        from .gguf_writer import model_parameter_count

        tokenizer = load_tokenizer(hf_dir)
        probe_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROBES]
        prompt = (  # a base model exported untrained may have no chat template
            tokenizer.apply_chat_template(PROBE_CONVERSATION, tokenize=False, add_generation_prompt=True)
            if tokenizer.chat_template
            else PROBE_CONVERSATION[0]["content"]
        )
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        precision = "f32" if model_parameter_count(hf_dir) <= FP32_REFERENCE_MAX_PARAMS else "bf16"
        model = load_base_model(hf_dir, dtype=torch.float32 if precision == "f32" else torch.bfloat16).eval()
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids])).logits[0, -1].float().numpy()
        return cls(probe_ids, prompt_ids, logits, precision)


@dataclass(kw_only=True)
class Verification:
    quantization: str
    tokenization_matches: int
    tokenization_probes: int
    max_logit_delta: float
    logit_bound: float | None
    same_top_token: bool
    reply: str
    seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def verdict(self) -> str:
        bound = f" (bound {self.logit_bound:.1e})" if self.logit_bound is not None else ""
        head = "verified" if self.passed else "VERIFICATION FAILED: " + "; ".join(self.problems) + " —"
        return (
            f"{head} tokenization {self.tokenization_matches}/{self.tokenization_probes} identical, "
            f"max |Δlogit| {self.max_logit_delta:.1e}{bound}, top token {'same' if self.same_top_token else 'differs'}, "
            f"reply {self.reply[:40]!r} ({self.seconds:.1f} s)"
        )

    def to_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}


def verify_gguf(
    path: Path, reference: Reference, quantization: str, lora: Path | None = None
) -> Verification:
    """Check ``path`` (with LoRA adapter GGUF ``lora`` applied, if given) against the HF ``reference``."""
    from .chat import chat_reply, open_gguf

    started = time.perf_counter()
    checks = track(
        "verify", 4, kept=f"{path.name} is kept, unverified (verify it again with `backprop export`)"
    )
    llm = open_gguf(path, n_ctx=max(256, len(reference.prompt_ids) + 64), logits_all=True, lora=lora)
    try:
        checks.advance()  # loaded in llama.cpp
        matches = sum(
            llm.tokenize(probe.encode(), add_bos=False, special=True) == expected
            for probe, expected in zip(PROBES, reference.probe_ids)
        )
        checks.advance()
        llm.reset()
        llm.eval(reference.prompt_ids)
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        checks.advance()
        reply = chat_reply(llm, PROBE_CONVERSATION, max_tokens=8)
        checks.advance()
    finally:
        llm.close()
    checks.finish()
    delta = float(np.abs(logits - reference.logits).max())
    scale = max(1.0, float(np.abs(reference.logits).max()))
    bound = None
    if quantization in LOGIT_BOUNDS:
        bound = max(LOGIT_BOUNDS[quantization], LOGIT_BOUNDS[reference.precision]) * scale
    problems = []
    if matches != len(PROBES):
        problems.append(
            f"llama.cpp tokenizes {len(PROBES) - matches} of {len(PROBES)} probe texts differently"
        )
    if bound is not None and not delta <= bound:
        problems.append(f"logits differ by {delta:.2e} > {bound:.2e}")
    return Verification(
        quantization=quantization,
        tokenization_matches=matches,
        tokenization_probes=len(PROBES),
        max_logit_delta=delta,
        logit_bound=bound,
        same_top_token=int(logits.argmax()) == int(reference.logits.argmax()),
        reply=reply,
        seconds=time.perf_counter() - started,
        problems=problems,
    )
