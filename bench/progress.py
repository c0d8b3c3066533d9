"""Progress events (issue 18): what they cost, and how long each stage takes on real weights.

1. Overhead. The same training with progress reporting on (the Trainer's default) and off (every tracker
   finds no reporter: ``progress.current`` answers None), alternating on/off in this one process so a busy
   machine slows both alike. Reported: the training loop's tokens/s (RunFinished: tokens / loop seconds) and
   the wall time of the whole run, and, apart, tokenizing the same rows with and without a reporter
   (``prepare_data(..., use_cache=False)``: every row advances a tracker). Ratios are on/off.
2. Stages. One short run (a few steps, seq 64) and one q4_k_m export of SmolLM2-135M-Instruct and
   Gemma-3-270M (tests/realweights.py), with the seconds of every stage from its final progress event, and
   the dequantization of each GGUF into a fresh folder (``--dequantize``: now against before the header was
   parsed once, and the share of the wait inside a reported stage).
3. Quantize (``--quantize``): SmolLM2's q4_k_m in this process against the child process a stop can kill.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/progress.py [--repeats 3] [--real]
        [--no-overhead] [--dequantize] [--quantize]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.realweights finds the real weights


@contextmanager
def progress_off():
    """Every tracker finds no reporter: no event, no cancel check, the library hooks fall through."""
    from backprop_engine import progress

    saved = progress.current
    progress.current = lambda: None
    try:
        yield
    finally:
        progress.current = saved


def train_once(model: str, steps: int, workdir: Path, on: bool, **overrides) -> dict:
    from backprop_engine import Trainer
    from backprop_engine.events import Progress, RunFinished

    events = []
    started = time.perf_counter()
    with progress_off() if not on else nullcontext():
        Trainer(model, on_event=events.append, **overrides).train(
            "sample", steps=steps, output_dir=workdir / f"run-{time.time_ns()}"
        )
    wall = time.perf_counter() - started
    finished = next(e for e in events if isinstance(e, RunFinished))
    return {
        "tokens_per_second": finished.tokens / finished.seconds,
        "wall": wall,
        "progress_events": sum(isinstance(e, Progress) for e in events),
    }


def tokenize_once(model_path: Path, rows: Path, on: bool) -> float:
    from backprop_engine.data import DataSpec, load_chat_tokenizer, prepare_data
    from backprop_engine.progress import reporting

    tokenizer = load_chat_tokenizer(model_path)
    started = time.perf_counter()
    with reporting(lambda event: None) if on else nullcontext():
        prepare_data(DataSpec([str(rows)]), tokenizer, 2048, use_cache=False)
    return time.perf_counter() - started


def overhead(label: str, model: str, steps: int, repeats: int, workdir: Path, **overrides) -> None:
    results = {True: [], False: []}
    for _ in range(repeats):
        for on in (True, False):
            results[on].append(train_once(model, steps, workdir, on, **overrides))
    on_tps = statistics.median(r["tokens_per_second"] for r in results[True])
    off_tps = statistics.median(r["tokens_per_second"] for r in results[False])
    on_wall = statistics.median(r["wall"] for r in results[True])
    off_wall = statistics.median(r["wall"] for r in results[False])
    events = results[True][0]["progress_events"]
    print(
        f"{label}: tokens/s on {on_tps:,.0f} / off {off_tps:,.0f} = {on_tps / off_tps:.3f}; "
        f"run wall on {on_wall:.1f} s / off {off_wall:.1f} s = {on_wall / off_wall:.3f}; {events} progress events per run "
        f"(median of {repeats}, {steps} steps)",
        flush=True,
    )


def tokenize_overhead(model_path: Path, repeats: int, workdir: Path) -> None:
    from importlib import resources

    sample = resources.files("backprop_engine.resources").joinpath("sample.jsonl").read_text()
    rows = workdir / "rows.jsonl"
    rows.write_text(sample * 10)  # 3,200 rows
    times = {True: [], False: []}
    for _ in range(repeats):
        for on in (True, False):
            times[on].append(tokenize_once(model_path, rows, on))
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"tokenize 3,200 rows (tiny's tokenizer): on {on:.2f} s / off {off:.2f} s = {on / off:.3f} (median of {repeats})",
        flush=True,
    )


def stages(label: str, model: Path, workdir: Path, steps: int = 2) -> None:
    from backprop_engine import Trainer
    from backprop_engine.events import Progress

    events = []
    trainer = Trainer(str(model), on_event=events.append, batch_size=2, max_seq_len=64, lora_rank=8)
    started = time.perf_counter()
    trainer.train("sample", steps=steps, output_dir=workdir / f"{label}-run")
    trained = time.perf_counter() - started
    started = time.perf_counter()
    trainer.export("gguf", quantization="q4_k_m")
    exported = time.perf_counter() - started
    finished = [e for e in events if isinstance(e, Progress) and e.finished]
    counts: dict[str, int] = {}
    parts = []
    for event in finished:
        counts[event.stage] = counts.get(event.stage, 0) + 1
        name = event.stage + (f"#{counts[event.stage]}" if counts[event.stage] > 1 else "")
        parts.append(f"{name} {event.seconds:.1f} s ({event.total:,} {event.unit})")
    print(f"{label}: run {trained:.0f} s + export {exported:.0f} s; stages: " + ", ".join(parts), flush=True)
    rates = [e for e in events if isinstance(e, Progress)]
    print(f"  {len(rates)} progress events in {trained + exported:.0f} s", flush=True)


def dequantize(label: str, gguf: Path, workdir: Path) -> None:
    """Now (one header parse from a plain view, reported as the metadata stage) against before (transformers'
    three parses through gguf's memmap reader, gguf_source._read_once switched off), in this one process
    after the imports; the share of the wall time inside a reported stage, from each stage's final event."""
    from contextlib import nullcontext

    from backprop_engine import gguf_source
    from backprop_engine.events import Progress
    from backprop_engine.modeling import quiet_transformers
    from backprop_engine.progress import reporting

    quiet_transformers()
    import transformers  # noqa: F401 - imported before the clock starts, as a run has it by then

    source = gguf_source.inspect_gguf(gguf)
    results = {}
    for how in ("now", "before"):
        events: list = []
        saved = gguf_source._read_once
        if how == "before":
            gguf_source._read_once = lambda path: nullcontext()
        started, cpu = time.perf_counter(), time.process_time()
        try:
            with reporting(events.append):
                gguf_source.dequantized_folder(source, cache_root=workdir / f"{label}-{how}")
        finally:
            gguf_source._read_once = saved
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        done = [e for e in events if isinstance(e, Progress) and e.finished]
        covered = sum(e.seconds for e in done)
        results[how] = wall
        print(
            f"{label} dequantize, {how}: {wall:.1f} s wall, {cpu:.1f} s CPU, {covered / wall:.0%} inside a stage; "
            + ", ".join(f"{e.stage} {e.seconds:.1f} s ({e.total:,} {e.unit})" for e in done),
            flush=True,
        )
    print(f"{label} dequantize now / before: {results['now'] / results['before']:.3f} (wall)", flush=True)


def quantize_child(label: str, model: Path, workdir: Path, repeats: int) -> None:
    """q4_k_m from the same f16 GGUF in this process and in the stoppable child process, alternating."""
    from backprop_engine.export import quantize
    from backprop_engine.export.gguf_writer import convert_hf_to_gguf

    f16 = convert_hf_to_gguf(model, workdir / f"{label}.f16.gguf", "f16")
    times: dict[str, list[float]] = {"in process": [], "child": []}
    saved = quantize.IN_PROCESS_BELOW
    for _ in range(repeats):
        for how in times:
            quantize.IN_PROCESS_BELOW = 2**62 if how == "in process" else 0
            started = time.perf_counter()
            quantize.quantize_gguf(f16, workdir / f"{label}.{len(times[how])}.q4_k_m.gguf", "q4_k_m")
            times[how].append(time.perf_counter() - started)
    quantize.IN_PROCESS_BELOW = saved
    inside, child = statistics.median(times["in process"]), statistics.median(times["child"])
    print(
        f"{label} quantize q4_k_m ({f16.stat().st_size / 2**20:.0f} MB f16): in process {inside:.2f} s / "
        f"child process {child:.2f} s = {child / inside:.3f} (median of {repeats})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="tiny's steps per run (overhead)")
    parser.add_argument(
        "--real",
        action="store_true",
        help="SmolLM2's overhead too, and the stage times of SmolLM2 and Gemma-3-270M",
    )
    parser.add_argument(
        "--no-overhead", action="store_true", help="only the stage times (with --real) and dequantization"
    )
    parser.add_argument(
        "--dequantize", action="store_true", help="time each GGUF's dequantization into a fresh folder"
    )
    parser.add_argument(
        "--quantize", action="store_true", help="SmolLM2's q4_k_m in this process vs the stoppable child"
    )
    parser.add_argument("--no-gemma", action="store_true", help="--real without Gemma-3-270M's stage times")
    args = parser.parse_args()
    from backprop_engine.presets import resolve_model

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if not args.no_overhead:
            tokenize_overhead(resolve_model("tiny").path, args.repeats, workdir)
            overhead("tiny", "tiny", args.steps, args.repeats, workdir)
        if args.real or args.dequantize or args.quantize:
            from tests.realweights import gemma3_dir, gemma3_gguf, smollm2_dir, smollm2_gguf
        if args.real:
            if not args.no_overhead:
                overhead(
                    "SmolLM2-135M",
                    str(smollm2_dir()),
                    3,
                    2,
                    workdir,
                    batch_size=2,
                    max_seq_len=64,
                    lora_rank=8,
                )
            stages("SmolLM2-135M", smollm2_dir(), workdir)
            if not args.no_gemma:
                stages("Gemma-3-270M", gemma3_dir(), workdir)
        if args.dequantize:
            dequantize("SmolLM2-135M", smollm2_gguf(), workdir)
            dequantize("Gemma-3-270M", gemma3_gguf(), workdir)
        if args.quantize:
            quantize_child("SmolLM2-135M", smollm2_dir(), workdir, args.repeats)
    print(json.dumps({"machine": "2 shared cores, no GPU (other agents at work: noisy)"}))


if __name__ == "__main__":
    main()
