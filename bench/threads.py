"""Two training runs at once on the CPU: torch's default threads (one per core each) against the engine's
choice (threads.py: the cores the other processes leave free), and one run alone as the baseline.

Each contender is a real ``backprop train --no-tui`` process on the tiny model; tokens/s comes from its
events.jsonl (trained tokens / training seconds). Rounds alternate the order.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/threads.py [--steps 40] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BACKPROP = str(Path(sys.executable).with_name("backprop"))


def start(run: Path, steps: int, threads: int | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    command = [
        BACKPROP,
        "train",
        "--no-tui",
        "--steps",
        str(steps),
        "--eval-split",
        "0",
        "--output",
        str(run),
    ]
    command += ["--threads", str(threads)] if threads else []
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def tokens_per_second(run: Path) -> tuple[float, list[str]]:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    done = next(e for e in events if e["event"] == "finished")
    changes = [e["message"] for e in events if e["event"] == "warning" and "training threads" in e["message"]]
    return done["tokens"] / done["seconds"], changes


def contend(folder: Path, label: str, steps: int, threads: int | None, copies: int) -> list[float]:
    runs = [folder / f"{label}-{index}" for index in range(copies)]
    processes = [start(run, steps, threads) for run in runs]
    for process, run in zip(processes, runs):
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{run}: exit {process.returncode}\n{err[-2000:]}")
    rates = []
    for run in runs:
        rate, changes = tokens_per_second(run)
        rates.append(rate)
        for change in changes:
            print(f"  {label}: {change}")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    contenders = {
        "alone, auto": (None, 1),
        f"two runs, {cores} threads each (torch's default)": (cores, 2),
        "two runs, auto": (None, 2),
    }
    results: dict[str, list[float]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            order = list(contenders) if round_index % 2 == 0 else list(reversed(contenders))
            for name in order:
                threads, copies = contenders[name]
                folder = Path(tmp) / f"round{round_index}"
                folder.mkdir(exist_ok=True)
                label = (
                    name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "").replace("'", "")
                )
                results[name] += contend(folder, label, args.steps, threads, copies)
    baseline = statistics.median(results["alone, auto"])
    print(f"{'contender':<44}{'tokens/s per run':>18}{'vs alone':>10}{'sum of runs':>13}")
    for name, rates in results.items():
        copies = contenders[name][1]
        median = statistics.median(rates)
        print(f"{name:<44}{median:>18,.0f}{median / baseline:>10.2f}{median * copies:>13,.0f}")


if __name__ == "__main__":
    main()
