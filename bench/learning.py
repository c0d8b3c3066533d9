"""Does the default plan teach? SmolLM2-135M-Instruct (real weights, dequantized from the registry's GGUF)
trained with every default on our identity set (tests/identity_data.py), and on a larger chat set (the
built-in sample, 320 pirate chats) with a periodic held-out eval to see whether the plan over-trains.

Reports, per dataset: the plan (steps, examples per step, learning rate), the held-out loss (final, and its
minimum over the run), the fraction of never-trained identity phrasings answered with the taught name by the
base and by the fine-tune, and the minutes it took. Run: `python bench/learning.py [identity ROWS]
[identity-old ROWS] [sample]` (identity-old: the same rows under the plan before issue 14, the baseline).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.identity_data import HELD_OUT, knows_identity, write_identity
from tests.realweights import smollm2_dir


def run(model: Path, data: str, out: Path, **overrides) -> dict:
    from backprop_engine import Trainer
    from backprop_engine.compare import compare_run

    events = []
    started = time.perf_counter()
    trainer = Trainer(str(model), on_event=events.append, **overrides)
    result = trainer.train(data, output_dir=out)
    minutes = (time.perf_counter() - started) / 60
    planned = {c["name"]: c["value"] for c in next(e for e in events if e.kind == "run_planned").choices}
    evals = [e.loss for e in events if e.kind == "eval"]
    end = next(e for e in events if e.kind == "comparison")
    report = {
        "data": data,
        "steps": planned["steps"],
        "examples_per_step": planned["effective_batch"],
        "learning_rate": planned["learning_rate"],
        "held_out_rows": planned["eval_split"],
        "held_out_loss_base": end.base_loss,
        "held_out_loss_final": result.eval_loss,
        "held_out_loss_min": min(evals) if evals else None,
        "train_loss": [result.first_loss, result.final_loss],
        "minutes_train": round(minutes, 2),
    }
    if "identity" in Path(data).name:
        asked = compare_run(out, prompts=HELD_OUT)
        report["held_out_phrasings_base"] = sum(map(knows_identity, asked.base)) / len(HELD_OUT)
        report["held_out_phrasings_tuned"] = sum(map(knows_identity, asked.tuned)) / len(HELD_OUT)
        report["example"] = {"prompt": asked.prompts[0], "base": asked.base[0], "tuned": asked.tuned[0]}
    return report


def old_plan(model: Path, data: str) -> dict:
    """The plan before issue 14 for the same data: 8 packed rows per step, 3 epochs, at least 10 steps; no rows
    held out (the identity check asks never-trained phrasings anyway)."""
    import math

    from backprop_engine.config import TrainConfig
    from backprop_engine.data.packing import packed_groups
    from backprop_engine.presets import resolve_model
    from backprop_engine.train.loop import prepare_dataset

    prepared = prepare_dataset(TrainConfig(model=str(model), data=data), resolve_model(str(model)))
    rows = len(packed_groups([len(e) for e in prepared.train], prepared.report.max_seq_len))
    return {"steps": max(10, math.ceil(3 * rows / 8)), "batch_size": 8, "grad_accum": 1, "eval_split": 0}


def main(argv: list[str]) -> None:
    model = smollm2_dir()
    root = Path(tempfile.mkdtemp(prefix="bench-learning-"))
    todo = argv or ["identity", "16", "sample"]
    reports = []
    while todo:
        name = todo.pop(0)
        if name in ("identity", "identity-old"):  # -old: the same data under the plan before issue 14
            rows = int(todo.pop(0))
            data = write_identity(root / f"identity-{rows}.jsonl", rows)
            overrides = old_plan(model, str(data)) if name == "identity-old" else {}
            reports.append(run(model, str(data), root / f"{name}-{rows}", **overrides) | {"plan": name})
        elif name == "sample":  # eval every 10 steps: where the held-out minimum falls
            reports.append(run(model, "sample", root / "sample", eval_steps=10))
        print(json.dumps(reports[-1]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
