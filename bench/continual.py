"""Forgetting benchmark: four synthetic tasks in sequence, SLAO against sequential LoRA and averaging.

Each merge mode trains the same runs (tiny model, same steps, learning rate and data per run) over the tasks
of ``continual_tasks.py`` in order. After every run the adapter in use (the merged one) is scored by greedy
exact match on each task's held-out rows (teacher-forced argmax over the answer and its end-of-turn token,
which is what greedy decoding produces). Reported per mode, over several seeds (mean ± std): the accuracy
matrix R[run][task], average final accuracy, and backward transfer BWT = mean_{j<N} (R[N][j] − R[j][j]).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/continual.py [--seeds 3] [--steps 150] [--modes slao sequential average]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from continual_tasks import TASKS, write_tasks  # noqa: E402

HELD_OUT_ROWS = 18  # of the 72 rows of each task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per run (per task)")
    parser.add_argument("--modes", nargs="+", default=["slao", "sequential", "average"])
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-continual-") as tmp:
        paths = write_tasks(Path(tmp) / "tasks")
        results = {mode: [run_once(paths, mode, seed, args, Path(tmp)) for seed in range(args.seeds)] for mode in args.modes}
    report(results, args, time.perf_counter() - started)


def run_once(paths: list[Path], mode: str, seed: int, args, tmp: Path) -> list[list[float]]:
    """The accuracy matrix R[run][task] of one multi-run."""
    from backprop_engine import Trainer

    trainer = Trainer("tiny", seed=seed, lora_rank=args.rank, lora_alpha=2 * args.rank)
    result = trainer.multi_run(
        datasets=paths, steps_per_run=args.steps, merge_mode=mode, eval_split=HELD_OUT_ROWS, output_dir=tmp / f"{mode}-{seed}"
    )
    return accuracy_matrix(trainer, result, paths)


def accuracy_matrix(trainer, result, paths) -> list[list[float]]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from backprop_engine.continual import MultiRunPlan
    from backprop_engine.continual.driver import prepare_tasks
    from backprop_engine.data import load_chat_tokenizer
    from backprop_engine.modeling import load_adapted_model
    from backprop_engine.presets import resolve_model

    model = resolve_model(trainer.config.model)
    plan = MultiRunPlan([str(p) for p in paths], len(paths), 1, eval_split=HELD_OUT_ROWS)
    tasks, _ = prepare_tasks(trainer.config, plan, model)
    pad_id = load_chat_tokenizer(model.path).pad_token_id
    peft_model = load_adapted_model(model.path, result.run_dirs[0] / "adapter").eval()
    matrix = []
    for index in range(1, len(paths) + 1):
        set_peft_model_state_dict(peft_model, load_file(str(result.path / "factors" / f"run-{index:02d}.merged.safetensors")))
        matrix.append([exact_match(peft_model, task.eval, pad_id) for task in tasks])
    return matrix


def exact_match(model, examples, pad_id: int) -> float:
    import torch

    from backprop_engine.data.tokenize import IGNORE_INDEX
    from backprop_engine.train.loop import collate

    batch = collate(examples, pad_id, "cpu", packed=False)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
    labels = batch.labels[:, 1:]
    hits = (logits[:, :-1].argmax(-1) == labels) | (labels == IGNORE_INDEX)
    return hits.all(dim=1).float().mean().item()


def summary(matrix: list[list[float]]) -> tuple[float, float]:
    """(average final accuracy, backward transfer)."""
    last = len(matrix) - 1
    bwt = statistics.mean(matrix[last][j] - matrix[j][j] for j in range(last))
    return statistics.mean(matrix[last]), bwt


def spread(values: list[float]) -> str:
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.3f} ± {deviation:.3f}"


def report(results: dict, args, seconds: float) -> None:
    names = list(TASKS)
    print(f"tiny, {len(names)} tasks, {args.steps} steps per task, LoRA rank {args.rank}, {args.seeds} seeds, {seconds:.0f} s in all")
    bwts = {}
    for mode, matrices in results.items():
        print(f"\n## {mode}: accuracy after run i (rows) on task j (columns), mean over seeds")
        print("run  " + "  ".join(f"{n:>10}" for n in names))
        for i in range(len(names)):
            cells = [statistics.mean(m[i][j] for m in matrices) for j in range(len(names))]
            print(f"{i + 1:>3}  " + "  ".join(f"{c:>10.3f}" for c in cells))
        finals, bwt = zip(*(summary(m) for m in matrices))
        bwts[mode] = statistics.mean(bwt)
        print(f"average final accuracy {spread(list(finals))}   BWT {spread(list(bwt))}   (per seed BWT: {', '.join(f'{b:+.3f}' for b in bwt)})")
    if "slao" in bwts and "sequential" in bwts and bwts["sequential"] < 0:
        gain = 1 - bwts["slao"] / bwts["sequential"]
        print(f"\nSLAO forgets {gain:.0%} less than sequential (goal: ≥ 30 %): {'met' if gain >= 0.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
