"""Forgetting benchmark: four synthetic tasks in sequence, SLAO against sequential LoRA and averaging.

The tiny model starts from random weights, so the bench first pre-trains it briefly (a rank-64 LoRA on all
four task formats with facts no task uses, merged into the base: ``continual_tasks.py``). On that base each
merge mode trains the same runs (same steps, learning rate and data per run) over the four tasks in order.
After every run the adapter in use (the merged one) is scored by greedy exact match on each task's held-out
rows (teacher-forced argmax over the answer and its end-of-turn token, which is what greedy decoding
produces). Reported per mode, over several seeds (mean ± std): the accuracy matrix R[run][task], accuracy
right after training each task, average final accuracy, and backward transfer BWT = mean_{j<N} (R[N][j] − R[j][j]).

The multi-runs go to ``--jobs`` worker processes with one torch thread each: on 2 cores that uses both, and
it stays fast when other processes share the cores (two-thread torch slows down badly when oversubscribed).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/continual.py [--seeds 3] [--steps 80] [--jobs 2] [--modes slao sequential average]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from continual_tasks import TASKS, write_pretraining, write_tasks

HELD_OUT_ROWS = 18  # of the 72 rows of each task
LEARNING_RATE = 3e-3  # the tiny model's default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=80, help="optimizer steps per run (per task)")
    parser.add_argument("--pretrain-steps", type=int, default=100)
    parser.add_argument("--modes", nargs="+", default=["slao", "sequential", "average"])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    args = parser.parse_args()
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench-continual-") as tmp,
        ProcessPoolExecutor(
            args.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread
        ) as pool,
    ):
        base = pool.submit(pretrain, Path(tmp), args.pretrain_steps).result()
        pretrained = time.perf_counter() - started
        paths = write_tasks(Path(tmp) / "tasks")
        jobs = {
            (mode, seed): pool.submit(run_once, base, paths, mode, seed, args, Path(tmp))
            for mode in args.modes
            for seed in range(args.seeds)
        }
        results = {mode: [jobs[mode, seed].result() for seed in range(args.seeds)] for mode in args.modes}
    report(results, args, pretrained, time.perf_counter() - started)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def pretrain(tmp: Path, steps: int) -> Path:
    """The tiny model with a rank-64 LoRA trained on every task format (other facts) merged in: the bench's base."""
    from backprop_engine import Trainer
    from backprop_engine.export.merge import merge_adapter
    from backprop_engine.presets import resolve_model

    run = Trainer("tiny", lora_rank=64, lora_alpha=128).train(
        write_pretraining(tmp / "pretrain"), steps=steps, output_dir=tmp / "pretrain-run"
    )
    return merge_adapter(resolve_model("tiny").path, run.adapter_path, tmp / "base")


def run_once(base: Path, paths: list[Path], mode: str, seed: int, args, tmp: Path) -> list[list[float]]:
    """The accuracy matrix R[run][task] of one multi-run."""
    from backprop_engine import Trainer

    trainer = Trainer(
        str(base), seed=seed, lora_rank=args.rank, lora_alpha=2 * args.rank, learning_rate=LEARNING_RATE
    )
    result = trainer.multi_run(
        datasets=paths,
        steps_per_run=args.steps,
        merge_mode=mode,
        eval_split=HELD_OUT_ROWS,
        output_dir=tmp / f"{mode}-{seed}",
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
        set_peft_model_state_dict(
            peft_model, load_file(str(result.path / "factors" / f"run-{index:02d}.merged.safetensors"))
        )
        matrix.append([exact_match(peft_model, task.eval, pad_id) for task in tasks])
    return matrix


def exact_match(model, examples, pad_id: int) -> float:
    import torch

    from backprop_engine.data.tokenize import IGNORE_INDEX
    from backprop_engine.train.loop import collate

    batch = collate(examples, pad_id, "cpu", packed=False)
    with torch.no_grad():
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).logits
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


def report(results: dict, args, pretrain_seconds: float, seconds: float) -> None:
    print(
        f"tiny pre-trained {args.pretrain_steps} steps ({pretrain_seconds:.0f} s), {len(TASKS)} tasks, {args.steps} steps per task, "
        f"LoRA rank {args.rank}, lr {LEARNING_RATE}, {args.seeds} seeds, {args.jobs} jobs, {seconds:.0f} s in all"
    )
    bwts = {}
    for mode, matrices in results.items():
        print(f"\n## {mode}: accuracy after run i (rows) on task j (columns), mean over seeds")
        print("run  " + "  ".join(f"{n:>10}" for n in TASKS))
        for i in range(len(TASKS)):
            cells = [statistics.mean(m[i][j] for m in matrices) for j in range(len(TASKS))]
            print(f"{i + 1:>3}  " + "  ".join(f"{c:>10.3f}" for c in cells))
        finals, bwt = zip(*(summary(m) for m in matrices))
        bwts[mode] = statistics.mean(bwt)
        learned = [statistics.mean(m[j][j] for j in range(len(TASKS))) for m in matrices]
        print(f"accuracy right after training each task {spread(learned)}")
        print(
            f"average final accuracy {spread(list(finals))}   BWT {spread(list(bwt))}   (per seed BWT: {', '.join(f'{b:+.3f}' for b in bwt)})"
        )
    if "slao" in bwts and "sequential" in bwts and bwts["sequential"] < 0:
        gain = 1 - bwts["slao"] / bwts["sequential"]
        print(
            f"\nSLAO forgets {gain:.0%} less than sequential (goal: ≥ 30 %): {'met' if gain >= 0.3 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
