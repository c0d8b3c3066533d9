"""Data pipeline benchmark: packing vs padding, validation/tokenization speed, tool-calling rows vs plain
chats, the token cost of per-reply examples, and memory while inspecting a big JSONL. Every figure is
printed next to its baseline measured in the same run.

    .venv/bin/python bench/data_pipeline.py [--rows 100000] [--inspect-gb 1.0] [--steps 20] [--parts tools,per-turn]
    .venv/bin/python bench/data_pipeline.py --parts versus --baseline-src OLD_CHECKOUT/src   # another version's pipeline
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backprop_engine.data import DataSpec, cache, check_data, load_chat_tokenizer, prepare_data
from backprop_engine.data.formats import Example
from backprop_engine.data.tokenize import TemplateSupport, render, render_for_training, tokenize_rendered
from backprop_engine.events import EventBus
from backprop_engine.presets import resolve_model
from backprop_engine.train.backend import lora_model
from backprop_engine.train.loop import MicroBatching, _batch_stream, _train_step, batch_efficiency

WORDS = [
    "arr",
    "matey",
    "ship",
    "sail",
    "wind",
    "sea",
    "captain",
    "parrot",
    "treasure",
    "map",
    "island",
    "rum",
    "deck",
    "anchor",
    "storm",
    "gold",
]


def synthetic_chat(rng: random.Random, reply_words: int) -> dict:
    question = " ".join(rng.choices(WORDS, k=rng.randint(4, 12))) + "?"
    reply = " ".join(rng.choices(WORDS, k=reply_words)) + "."
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]}


def write_rows(path: Path, rows: int, skewed: bool, seed: int = 0, min_bytes: int = 0) -> Path:
    """``rows`` rows, or as many as it takes to reach ``min_bytes``."""
    rng = random.Random(seed)
    written = count = 0
    with path.open("w", encoding="utf-8") as out:
        while count < rows or written < min_bytes:
            # Skewed: most replies short, one in ten very long (chat data with a few long documents).
            words = rng.choice([300, 400]) if skewed and rng.random() < 0.1 else rng.randint(5, 30)
            written += out.write(json.dumps(synthetic_chat(rng, words)) + "\n")
            count += 1
    return path


def synthetic_tool_chat(rng: random.Random) -> dict:
    """A ShareGPT row with a tools field and a function_call / observation round trip (two replies)."""
    port = rng.choice(WORDS)
    tool = {
        "name": "get_weather",
        "description": "weather at a port",
        "parameters": {"type": "object", "properties": {"port": {"type": "string"}}},
    }
    call = json.dumps({"name": "get_weather", "arguments": {"port": port}})
    return {
        "conversations": [
            {"from": "human", "value": " ".join(rng.choices(WORDS, k=rng.randint(4, 12))) + "?"},
            {"from": "function_call", "value": call},
            {
                "from": "observation",
                "value": json.dumps({"sky": rng.choice(WORDS), "wind": rng.randint(1, 40)}),
            },
            {"from": "gpt", "value": " ".join(rng.choices(WORDS, k=rng.randint(5, 30))) + "."},
        ],
        "tools": json.dumps([tool]),
    }


def tools_vs_plain(rows: int, tokenizer, folder: Path) -> None:
    """`data check` and prepare rows/s on tool-calling ShareGPT rows against plain two-turn chats."""
    rng = random.Random(0)
    plain = write_rows(folder / "plain.jsonl", rows, skewed=False)
    tools = folder / "tools.jsonl"
    with tools.open("w", encoding="utf-8") as out:
        out.writelines(json.dumps(synthetic_tool_chat(rng)) + "\n" for _ in range(rows))
    rates = {}
    for label, path in (("plain chats", plain), ("tool-calling", tools)):
        started = time.perf_counter()
        report = check_data(DataSpec([str(path)]))
        check_seconds = time.perf_counter() - started
        started = time.perf_counter()
        prepared = prepare_data(DataSpec([str(path)]), tokenizer, 2048, use_cache=False)
        prepare_seconds = time.perf_counter() - started
        assert report.rows_read == rows and report.bad_row_count == 0
        rates[label] = (
            rows / check_seconds,
            rows / prepare_seconds,
            path.stat().st_size / 2**20,
            prepared.report.warnings,
        )
    print(
        f"[{rows:,} rows each; the tiny model's ChatML template has no tool support: tool rows go through the plain form]"
    )
    for label, (check, prepare, size, _) in rates.items():
        print(
            f"  {label:<13} {size:5.0f} MB   data check {check:9,.0f} rows/s   prepare {prepare:7,.0f} rows/s"
        )
    (check_p, prepare_p, _, _), (check_t, prepare_t, _, warnings) = (
        rates["plain chats"],
        rates["tool-calling"],
    )
    print(
        f"  tool-calling / plain   data check {check_t / check_p:.2f}x   prepare {prepare_t / prepare_p:.2f}x"
    )
    print(f"  warning: {warnings[0]}")


VERSUS_CHILD = """
import sys, time
from backprop_engine.data import DataSpec, check_data, load_chat_tokenizer, prepare_data
from backprop_engine.presets import resolve_model
tokenizer = load_chat_tokenizer(resolve_model("tiny").path)
started = time.perf_counter(); check_data(DataSpec([sys.argv[1]])); checked = time.perf_counter() - started
started = time.perf_counter(); prepare_data(DataSpec([sys.argv[1]]), tokenizer, 2048, use_cache=False)
print(checked, time.perf_counter() - started)
"""


def versus(rows: int, baseline_src: str, folder: Path) -> None:
    """`data check` and prepare on plain chats with another checkout's pipeline (e.g. before a change) and this
    one, in alternating subprocess runs over 10 chunks so load from neighbours falls on both alike."""
    import os

    chunks = [write_rows(folder / f"chunk{i}.jsonl", rows // 10, skewed=False, seed=i) for i in range(10)]
    sources = {"baseline": baseline_src, "this": str(Path(__file__).resolve().parents[1] / "src")}
    seconds = {label: [0.0, 0.0] for label in sources}
    for chunk in chunks:
        for label, src in sources.items():
            env = dict(os.environ, PYTHONPATH=src)
            out = subprocess.run(
                [sys.executable, "-c", VERSUS_CHILD, str(chunk)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            for index, value in enumerate(map(float, out.stdout.split())):
                seconds[label][index] += value
    print(f"[{rows:,} plain chats in 10 chunks, baseline pipeline from {baseline_src}]")
    for label, (checked, prepared) in seconds.items():
        print(
            f"  {label:<8}  data check {rows / checked:9,.0f} rows/s   prepare {rows / prepared:7,.0f} rows/s"
        )
    (check_old, prepare_old), (check_new, prepare_new) = seconds["baseline"], seconds["this"]
    print(
        f"  this / baseline   data check {check_old / check_new:.2f}x   prepare {prepare_old / prepare_new:.2f}x"
    )


def per_turn_cost(rows: int) -> None:
    """Tokens of one example per reply (Mistral: the system prompt moves to the last user turn) against one
    render of each whole conversation; the same rows without a system prompt are one render each."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.families import build_tokenizer

    tokenizer = build_tokenizer("mistral")
    support = TemplateSupport(tokenizer)
    rng = random.Random(0)
    totals = {
        "system": [0, 0, 0, 0],
        "no system": [0, 0, 0, 0],
    }  # examples, tokens, trained tokens, full-render tokens
    for _ in range(rows):
        turns = []
        for _ in range(rng.randint(2, 6)):
            turns.append(
                {"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(4, 12))) + "?"}
            )
            turns.append(
                {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(5, 30))) + "."}
            )
        system = {"role": "system", "content": "You are a pirate. " + " ".join(rng.choices(WORDS, k=20))}
        for label, messages in (("system", [system, *turns]), ("no system", turns)):
            adapted, tools, _ = support.adapt(Example("bench", "messages", messages))
            _, rendered = render_for_training(tokenizer, adapted, tools)
            examples = [tokenize_rendered(tokenizer, r) for r in rendered]
            total = totals[label]
            total[0] += len(examples)
            total[1] += sum(len(e) for e in examples)
            total[2] += sum(e.trained_tokens for e in examples)
            total[3] += len(tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"])
    print(f"[{rows:,} multi-turn conversations (2-6 replies), Mistral-style template of tests/families.py]")
    for label, (examples, tokens, trained, full) in totals.items():
        print(
            f"  {label:<9}  {examples:6,} examples  {tokens:10,} tokens ({tokens / full:.2f}x one full render: {full:,})  "
            f"{trained:9,} trained ({trained / tokens:.1%} of tokens)"
        )


def packing_vs_padding(name: str, data: str, model_path: Path, tokenizer, steps: int) -> None:
    """Training throughput in real (non-pad) tokens/s. The two set-ups take turns step by step, so load from
    neighbours on the shared cores falls on both alike."""
    import torch

    from backprop_engine.config import TrainConfig
    from backprop_engine.modeling import load_base_model

    prepared = prepare_data(DataSpec([data]), tokenizer, 2048, use_cache=False)
    examples, seq_len = prepared.train, prepared.report.max_seq_len
    config = TrainConfig(batch_size=8, learning_rate=1e-3)
    setups = {}
    for label, pack_len in (("padding", 0), ("packing", seq_len)):
        torch.manual_seed(0)
        model = lora_model(load_base_model(model_path), config)
        model.train()
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate
        )
        batches = _batch_stream(examples, config, tokenizer.pad_token_id, "cpu", pack_len)
        _train_step(model, optimizer, batches, config, MicroBatching(), EventBus())  # warm-up
        setups[label] = (
            model,
            optimizer,
            batches,
            batch_efficiency(examples, config.batch_size, config.seed, pack_len),
        )
    tokens = dict.fromkeys(setups, 0)
    seconds = dict.fromkeys(setups, 0.0)
    for _ in range(steps):
        for label, (model, optimizer, batches, _) in setups.items():
            started = time.perf_counter()
            tokens[label] += _train_step(model, optimizer, batches, config, MicroBatching(), EventBus())[2]
            seconds[label] += time.perf_counter() - started
    rate = {label: tokens[label] / seconds[label] for label in setups}
    pad_eff, pack_eff = setups["padding"][3], setups["packing"][3]
    print(
        f"[{name}] {len(examples)} rows, max_seq_len {seq_len}, batch 8 rows, {steps} alternating steps each"
    )
    print(
        f"  non-pad fraction   padding {pad_eff:.3f}   packing {pack_eff:.3f}   ratio {pack_eff / pad_eff:.2f}x"
    )
    print(
        f"  real tokens/s      padding {rate['padding']:,.0f}   packing {rate['packing']:,.0f}   ratio {rate['packing'] / rate['padding']:.2f}x"
    )


def validate_and_tokenize(rows: int, tokenizer, folder: Path) -> None:
    path = write_rows(folder / "rows.jsonl", rows, skewed=False)
    started = time.perf_counter()
    with path.open(encoding="utf-8") as lines:
        parsed = sum(1 for line in lines if json.loads(line))
    json_seconds = time.perf_counter() - started
    started = time.perf_counter()
    report = check_data(DataSpec([str(path)]))
    check_seconds = time.perf_counter() - started
    started = time.perf_counter()
    prepared = prepare_data(DataSpec([str(path)]), tokenizer, 2048)
    tokenize_seconds = time.perf_counter() - started
    started = time.perf_counter()
    cached = prepare_data(DataSpec([str(path)]), tokenizer, 2048)
    cached_seconds = time.perf_counter() - started
    assert parsed == rows == report.rows_read and cached.report.cached
    print(f"[{rows:,} rows, {path.stat().st_size / 2**20:.0f} MB JSONL]")
    print(f"  baseline json.loads per line        {json_seconds:6.2f} s")
    print(
        f"  data check (validate)               {check_seconds:6.2f} s  "
        f"({check_seconds / json_seconds:.2f}x baseline, {rows / check_seconds:,.0f} rows/s)"
    )
    print(
        f"  prepare (render+mask+filters)       {tokenize_seconds:6.2f} s  ({rows / tokenize_seconds:,.0f} rows/s, {len(prepared.train):,} kept)"
    )
    print(
        f"  prepare again (fingerprint cache)   {cached_seconds:6.2f} s  ({tokenize_seconds / cached_seconds:.1f}x faster)"
    )


INSPECT_CHILD = """
import sys
from pathlib import Path
from backprop_engine.data import DataPreview, DataSpec, load_chat_tokenizer
from backprop_engine.presets import resolve_model

def status(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
    return int(line.split()[1]) / 1024

tokenizer = load_chat_tokenizer(resolve_model("tiny").path)
Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) from here
baseline = status("VmRSS")
if sys.argv[1] == "inspect":
    report = DataPreview(tokenizer, 2048).report(DataSpec([sys.argv[2]]))
    assert report.sampled_rows == 20000, report.sampled_rows
else:  # the naive way: the whole file in memory as a list of lines
    lines = Path(sys.argv[2]).read_text(encoding="utf-8").splitlines()
print(baseline, status("VmHWM"))
"""


def inspect_memory(gigabytes: float, folder: Path) -> None:
    path = write_rows(folder / "big.jsonl", 0, skewed=True, seed=1, min_bytes=int(gigabytes * 2**30))
    size = path.stat().st_size / 2**20

    def measure(mode: str) -> tuple[float, float, float]:
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", INSPECT_CHILD, mode, str(path)], capture_output=True, text=True, check=True
        )
        baseline, peak = map(float, out.stdout.split())
        return baseline, peak, time.perf_counter() - started

    base, peak, seconds = measure("inspect")
    naive_base, naive_peak, _ = measure("readlines")
    print(f"[inspect a {size:,.0f} MB JSONL, {size * 2**20 / 2**30:.2f} GB]")
    print(f"  RSS after imports + tokenizer (baseline)   {base:,.0f} MB")
    print(
        f"  peak RSS during `data inspect`             {peak:,.0f} MB (+{peak - base:,.0f} MB over baseline, {seconds:.0f} s)"
    )
    print(
        f"  peak RSS reading the file into a list      {naive_peak:,.0f} MB (+{naive_peak - naive_base:,.0f} MB) for comparison"
    )
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--inspect-gb", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--parts",
        default="packing,speed,tools,per-turn,inspect",
        help="comma-separated parts to run (and: versus)",
    )
    parser.add_argument(
        "--baseline-src", help="for --parts versus: the src/ folder of the pipeline to compare with"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    model_path = resolve_model("tiny").path
    tokenizer = load_chat_tokenizer(model_path)
    with tempfile.TemporaryDirectory(prefix="backprop-bench-data-") as tmp:
        folder = Path(tmp)
        cache.cache_folder = lambda: folder / "cache"  # keep the user's cache free of bench data
        if "packing" in parts:
            packing_vs_padding("sample", "sample", model_path, tokenizer, args.steps)
            skewed = write_rows(folder / "skewed.jsonl", 2000, skewed=True)
            packing_vs_padding("length-skewed synthetic", str(skewed), model_path, tokenizer, args.steps)
        if "speed" in parts:
            validate_and_tokenize(args.rows, tokenizer, folder)
        if "tools" in parts:
            tools_vs_plain(args.rows, tokenizer, folder)
        if "versus" in parts:
            versus(args.rows, args.baseline_src, folder)
        if "per-turn" in parts:
            per_turn_cost(min(args.rows, 2000))
        if "inspect" in parts:
            inspect_memory(args.inspect_gb, folder)


if __name__ == "__main__":
    main()
