"""Export benchmark: our HF→GGUF converter against llama.cpp's own ``convert_hf_to_gguf.py`` on the same models.

For each model, in this one script: export time and peak RSS of the f16 conversion (each converter in its own
subprocess) and of llama.cpp's q4_k_m quantization of each f16 file; whether every tensor of our f16 GGUF equals
llama.cpp's; and the perplexity of q4_k_m against f16 on held-out text (the last conversations of the sample
data, which the tiny run is not trained on).

llama.cpp's converter is fetched and run as tests/llamacpp_reference.py describes.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/export.py [--skip-large] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.families builds the family-shaped fixture models
HELD_OUT = 32  # conversations at the end of the sample data, kept out of training

OURS = """
import sys
from backprop_engine.export.gguf_writer import convert_hf_to_gguf
convert_hf_to_gguf(sys.argv[1], sys.argv[2], "f16")
"""
QUANTIZE = """
import sys
from backprop_engine.export.quantize import quantize_gguf
quantize_gguf(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "q4_k_m")
"""
# A LoRA run on real weights, in its own process so that its peak RSS is the training's.
TRAIN = """
import sys
from backprop_engine import Trainer
model, data, out, steps, batch, seq = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
Trainer(model, batch_size=batch, max_seq_len=seq, lora_rank=16).train(data, steps=steps, output_dir=out)
"""


def measured(args: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run a subprocess under GNU time; return (seconds, its peak RSS in MiB). (Measuring the child from here
    would count the torch-sized image it is forked from.)"""
    with tempfile.NamedTemporaryFile("r") as report:
        started = time.perf_counter()
        result = subprocess.run(
            ["/usr/bin/time", "-o", report.name, "-f", "%M", *args], env=env, capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{args[:3]} failed: {result.stderr[-2000:]}")
        return seconds, int(report.read().split()[-1]) / 1024


def compare_tensors(ours: Path, theirs: Path) -> str:
    from gguf import GGUFReader

    a = {t.name: t for t in GGUFReader(ours).tensors}
    b = {t.name: t for t in GGUFReader(theirs).tensors}
    if set(a) != set(b):
        return f"names differ: only ours {sorted(set(a) - set(b))[:3]}, only theirs {sorted(set(b) - set(a))[:3]}"
    same = [
        n
        for n in a
        if a[n].tensor_type == b[n].tensor_type and np.array_equal(np.array(a[n].data), np.array(b[n].data))
    ]
    worst = (
        max(
            (float(np.abs(np.array(a[n].data, np.float32) - np.array(b[n].data, np.float32)).max()), n)
            for n in a
            if n not in same
        )
        if len(same) < len(a)
        else None
    )
    return f"{len(same)}/{len(a)} tensors identical" + (
        f" (largest |diff| {worst[0]:.2e} in {worst[1]})" if worst else ""
    )


def perplexity(path: Path, texts: list[str]) -> float:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=1024, logits_all=True, verbose=False)
    try:
        total, count = 0.0, 0
        for text in texts:
            ids = llm.tokenize(text.encode(), add_bos=False, special=True)[:1024]
            llm.reset()
            llm.eval(ids)
            logits = np.array(llm.scores[: len(ids) - 1], dtype=np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            total -= log_probs[np.arange(len(ids) - 1), ids[1:]].sum()
            count += len(ids) - 1
    finally:
        llm.close()
    return float(np.exp(total / count))


def held_out_texts(model_dir: Path) -> list[str]:
    from backprop_engine.modeling import load_tokenizer

    rows = (ROOT / "src/backprop_engine/resources/sample.jsonl").read_text().splitlines()[-HELD_OUT:]
    tokenizer = load_tokenizer(model_dir)
    return [tokenizer.apply_chat_template(json.loads(r)["messages"], tokenize=False) for r in rows]


def trained_tiny(workdir: Path) -> Path:
    """tiny + 60 LoRA steps on the sample data minus the held-out conversations, merged."""
    from backprop_engine import Trainer
    from backprop_engine.export.pipeline import ensure_merged
    from backprop_engine.rundir import RunDir

    if (workdir / "tiny-run" / "config.toml").is_file():
        return ensure_merged(RunDir.open(workdir / "tiny-run"))
    rows = (ROOT / "src/backprop_engine/resources/sample.jsonl").read_text().splitlines()[:-HELD_OUT]
    data = workdir / "train.jsonl"
    data.write_text("\n".join(rows) + "\n")
    trainer = Trainer("tiny")
    trainer.train(str(data), steps=60, output_dir=workdir / "tiny-run")
    return ensure_merged(trainer.run)


def large_model(workdir: Path) -> Path:
    """A ~0.5B-parameter Llama (hidden 1024, 32 layers, ffn 4096) with random weights, saved in bf16."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from backprop_engine import resolve_model

    folder = workdir / "llama-0.5b"
    if (folder / "config.json").is_file():
        return folder
    tiny = resolve_model("tiny").path
    config = LlamaConfig(
        vocab_size=1536,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=32,
        num_attention_heads=16,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        eos_token_id=2,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder, max_shard_size="400MB")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (tiny / name).is_file():
            (folder / name).write_bytes((tiny / name).read_bytes())
    return folder


def bench_model(
    label: str,
    model_dir: Path,
    script: Path,
    workdir: Path,
    env: dict,
    with_perplexity: bool,
    extra_quantizations: tuple[str, ...] = (),
) -> None:
    from backprop_engine.export.gguf_writer import model_parameter_count

    out = workdir / "".join(c if c.isalnum() else "-" for c in label)
    out.mkdir(exist_ok=True)
    params = model_parameter_count(model_dir)
    ours_t, ours_rss = measured([sys.executable, "-c", OURS, str(model_dir), str(out / "ours.f16.gguf")], env)
    from tests.llamacpp_reference import THEIRS, pre_name

    theirs_t, theirs_rss = measured(
        [
            sys.executable,
            "-c",
            THEIRS,
            str(script),
            pre_name(model_dir),
            str(model_dir),
            str(out / "theirs.f16.gguf"),
        ],
        env,
    )
    q_ours_t, q_ours_rss = measured(
        [sys.executable, "-c", QUANTIZE, str(out / "ours.f16.gguf"), str(out / "ours.q4_k_m.gguf")], env
    )
    q_theirs_t, _ = measured(
        [sys.executable, "-c", QUANTIZE, str(out / "theirs.f16.gguf"), str(out / "theirs.q4_k_m.gguf")], env
    )
    print(
        f"\n## {label}: {params / 1e6:,.1f}M parameters, f16 GGUF {(out / 'ours.f16.gguf').stat().st_size / 2**20:,.1f} MiB"
    )
    print(
        f"f16 conversion   ours {ours_t:6.1f} s, peak RSS {ours_rss:7,.0f} MiB | llama.cpp {theirs_t:6.1f} s, "
        f"peak RSS {theirs_rss:7,.0f} MiB | time ratio {ours_t / theirs_t:.2f}, RSS ratio {ours_rss / theirs_rss:.2f}"
    )
    print(
        f"q4_k_m quantize  from ours {q_ours_t:6.1f} s (peak RSS {q_ours_rss:,.0f} MiB) | from theirs {q_theirs_t:6.1f} s"
    )
    for quantization in extra_quantizations:
        target = out / f"ours.{quantization}.gguf"
        q_t, q_rss = measured(
            [sys.executable, "-c", QUANTIZE, str(out / "ours.f16.gguf"), str(target), quantization], env
        )
        print(
            f"{quantization:<6} quantize  from ours {q_t:6.1f} s (peak RSS {q_rss:,.0f} MiB), {target.stat().st_size / 2**20:,.1f} MiB"
        )
    print(f"f16 tensors      {compare_tensors(out / 'ours.f16.gguf', out / 'theirs.f16.gguf')}")
    if with_perplexity:
        texts = held_out_texts(model_dir)
        f16, q4 = perplexity(out / "ours.f16.gguf", texts), perplexity(out / "ours.q4_k_m.gguf", texts)
        print(
            f"perplexity       held-out {len(texts)} conversations: f16 {f16:.3f}, q4_k_m {q4:.3f} (ratio {q4 / f16:.4f})"
        )


def bench_real_model(label: str, model_dir: Path, script: Path, workdir: Path, env: dict) -> None:
    """Train a few LoRA steps on real weights (the sample data minus the held-out chats), then export the merge."""
    from backprop_engine.export.pipeline import ensure_merged
    from backprop_engine.planner import estimate_memory
    from backprop_engine.presets import ModelFacts
    from backprop_engine.rundir import RunDir

    run = workdir / f"run-{label.split()[0]}"
    rows = (ROOT / "src/backprop_engine/resources/sample.jsonl").read_text().splitlines()[:-HELD_OUT]
    data = workdir / "train.jsonl"
    data.write_text("\n".join(rows) + "\n")
    steps, batch, seq = 6, 4, 256
    seconds, rss = measured(
        [sys.executable, "-c", TRAIN, str(model_dir), str(data), str(run), str(steps), str(batch), str(seq)],
        env,
    )
    report = json.loads(
        next(
            line for line in reversed((run / "events.jsonl").read_text().splitlines()) if '"finished"' in line
        )
    )
    tokens_per_s = report["tokens"] / report["seconds"]
    facts = ModelFacts.from_config(json.loads((model_dir / "config.json").read_text()))
    predicted = estimate_memory(
        facts, method="lora", rank=16, seq_len=seq, micro_batch=batch, on_gpu=False
    ).total_mb
    print(f"\n# {label}: LoRA r16, {steps} steps x {batch} rows x {seq} tokens (packed), fp32 on CPU")
    print(
        f"training         {tokens_per_s:,.1f} tokens/s ({report['tokens']:,} tokens in {report['seconds']:.1f} s; "
        f"process {seconds:.1f} s with loading) | peak RSS {rss:,.0f} MiB, planner predicted {predicted:,.0f} MiB "
        f"(measured/predicted {rss / predicted:.2f})"
    )
    bench_model(
        f"{label} merged after training",
        ensure_merged(RunDir.open(run)),
        script,
        workdir,
        env,
        with_perplexity=True,
        extra_quantizations=("q8_0",),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-large", action="store_true", help="skip the ~0.5B-parameter model")
    parser.add_argument(
        "--real",
        action="store_true",
        help="only SmolLM2-135M and Gemma-3-270M (real weights, tests/realweights.py)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep downloads and models here (default: a temporary folder)"
    )
    args = parser.parse_args()

    from tests.families import build_model
    from tests.llamacpp_reference import SDIST, fetch_reference_converter, reference_env

    from backprop_engine import resolve_model

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="backprop-bench-export-"))
    workdir.mkdir(parents=True, exist_ok=True)
    script = fetch_reference_converter(workdir)
    env = reference_env(workdir)
    print(f"workdir {workdir}; reference: {SDIST} convert_hf_to_gguf.py; {os.cpu_count()} CPUs")
    if args.real:
        from tests.realweights import gemma3_dir, smollm2_dir

        bench_real_model("SmolLM2-135M-Instruct (from Q4_1)", smollm2_dir(), script, workdir, env)
        bench_real_model("Gemma-3-270M (from Q4_K_M)", gemma3_dir(), script, workdir, env)
        return
    bench_model("tiny (trained 60 steps)", trained_tiny(workdir), script, workdir, env, with_perplexity=True)
    bench_model("tiny-qwen2", resolve_model("tiny-qwen2").path, script, workdir, env, with_perplexity=False)
    for family in ("llama3", "mistral"):
        folder = workdir / f"family-{family}"
        if not (folder / "config.json").is_file():
            build_model(family, folder)
        bench_model(f"{family} fixture", folder, script, workdir, env, with_perplexity=False)
    if not args.skip_large:
        bench_model(
            "llama 0.5B (random init, bf16 safetensors)",
            large_model(workdir),
            script,
            workdir,
            env,
            with_perplexity=True,
        )


if __name__ == "__main__":
    main()
