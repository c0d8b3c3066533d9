"""``backprop train`` under torchrun and accelerate launch: two CPU processes (gloo, DDP) with a batch of 4
each train like one process with a batch of 8, up to float summation noise.

Tolerance, measured on this machine (fp32, the same rows, 10 steps; bench/ddp_equivalence.py and
bench/RESULTS.md): one process with batch 8 against two with 4 each differs by at most 7.7e-7 in the
logged loss (1-2 float32 ulps at a loss of ~7), 1.2e-7 in the gradient norm and 1.1e-6 in any adapter
weight. One process with batch 4 × 2 accumulation (the same rows, summed in another order) differs from
batch 8 by the same 7.7e-7: float reduction noise. A real mistake is far larger: training on half the rows
(batch 4 alone) moves the loss by 7e-3 or more and the gradient norm by 7e-2 or more. TOLERANCE leaves
over 10× headroom above the noise (other CPUs and BLAS builds sum in other orders) and is still 700× below
the smallest mistake.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from backprop_engine.cli import main

STEPS = 6  # step events at 1, 5 and 6; a checkpoint at the midpoint, step 3
TRAIN = ["train", "--steps", str(STEPS), "--learning-rate", "1e-3", "--json"]
TOLERANCE = 1e-5
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The reference: one process, batch 8."""
    run = tmp_path_factory.mktemp("single") / "run"
    assert main([*TRAIN, "--batch-size", "8", "--output", str(run)]) == 0
    return run


def test_torchrun_two_processes_train_like_one(single, tmp_path, capsys):
    run = tmp_path / "run"
    command = [
        BIN / "torchrun",
        "--standalone",
        "--nproc_per_node",
        "2",
        BIN / "backprop",
        *TRAIN,
        "--batch-size",
        "4",
        "--output",
        run,
    ]
    _check_like_single(_launch(command), run, single)
    # One process would take 4 rows a step where two took 8: the run resumes only as it started.
    assert main(["train", "--resume", str(run)]) == 2
    assert "trained on 2 process(es), cannot resume on 1" in capsys.readouterr().err


def test_accelerate_launch_two_processes_train_like_one(single, tmp_path):
    # On a machine without GPUs, --multi_gpu is what makes accelerate start torch's launcher (it then runs
    # gloo); --cpu with several processes needs an MPI hostfile instead.
    run = tmp_path / "run"
    command = [
        BIN / "accelerate",
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "backprop_engine.cli",
        *TRAIN,
        "--batch-size",
        "4",
        "--output",
        run,
    ]
    _check_like_single(
        _launch(command, HF_HOME=str(tmp_path / "hf")), run, single
    )  # no accelerate config file


def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """The interrupt reaches rank 1 alone: rank 0, which writes, must stop at the same step and save there."""
    import psutil

    run = tmp_path / "run"
    command = [
        BIN / "torchrun",
        "--standalone",
        "--nproc_per_node",
        "2",
        BIN / "backprop",
        "train",
        "--steps",
        "400",
        "--batch-size",
        "4",
        "--output",
        run,
    ]
    launcher = subprocess.Popen(
        [str(part) for part in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    workers = []
    try:
        deadline = time.monotonic() + 240
        while '"event": "step"' not in (
            (run / "events.jsonl").read_text() if (run / "events.jsonl").exists() else ""
        ):
            assert launcher.poll() is None and time.monotonic() < deadline, "no step before the deadline"
            time.sleep(0.2)
        workers = psutil.Process(launcher.pid).children()
        next(p for p in workers if p.environ().get("RANK") == "1").send_signal(signal.SIGINT)
        launcher.communicate(
            timeout=120
        )  # ranks that disagreed would hang here; rank 1 exits 130 (torchrun: 1)
    finally:
        if launcher.poll() is None:
            for worker in workers:
                worker.kill()
            launcher.kill()

    events = _events(run)
    finished, ranks = events[-1], next(e for e in events if e["event"] == "ranks")
    assert finished["event"] == "finished" and finished["stopped_early"] and finished["steps"] < 400
    assert ranks["steps"] == [finished["steps"]] * 2, "both ranks stopped after the same step"
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [finished["steps"]]
    assert (run / "checkpoints" / f"step-{finished['steps']:06d}" / "trainer_state.json").is_file()
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


def _launch(command: list, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"PYTHONFAULTHANDLER": "1"} | env,  # a rank that aborts shows where it was
    )
    if result.returncode:
        print(result.stderr)  # in full: pytest shortens the assertion message
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _check_like_single(result: subprocess.CompletedProcess, run: Path, single: Path) -> None:
    assert result.stdout.splitlines().count(str(run)) == 1, "rank 0 alone prints the run directory"
    assert _files(run) == _files(single), "the same run directory as one process: no second copy of anything"
    events, reference = _events(run), _events(single)
    kinds = [e["event"] for e in events]
    assert kinds.count("run_started") == kinds.count("finished") == 1 and kinds[-1] == "finished"
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [STEPS // 2]
    assert "batch_size = 4" in (run / "config.toml").read_text()

    ranks = next(e for e in events if e["event"] == "ranks")
    assert ranks["backend"] == "gloo" and ranks["steps"] == [STEPS, STEPS], "both ranks took every step"
    assert min(ranks["tokens"]) > 0
    single_tokens = next(e for e in reference if e["event"] == "finished")["tokens"]
    assert sum(ranks["tokens"]) == events[-1]["tokens"] == single_tokens, "the ranks' rows are the batch of 8"

    steps, expected = _steps(events), _steps(reference)
    assert steps.keys() == expected.keys() == {1, 5, STEPS}
    for step, (loss, grad_norm) in expected.items():
        assert steps[step][0] == pytest.approx(loss, abs=TOLERANCE), f"loss at step {step}"
        assert steps[step][1] == pytest.approx(grad_norm, abs=TOLERANCE), f"gradient norm at step {step}"
    weights, reference_weights = (
        load_file(str(r / "adapter" / "adapter_model.safetensors")) for r in (run, single)
    )
    assert max((weights[k] - reference_weights[k]).abs().max().item() for k in reference_weights) < TOLERANCE


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def _steps(events: list[dict]) -> dict[int, tuple[float, float]]:
    return {e["step"]: (e["loss"], e["grad_norm"]) for e in events if e["event"] == "step"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_rank_without_rows_still_runs_a_pass_that_trains_nothing():
    """The epoch's last micro-batch may hold fewer rows than there are ranks; DDP needs a pass on every rank."""
    from backprop_engine.data.tokenize import IGNORE_INDEX, TokenizedExample
    from backprop_engine.train.distributed import Distributed
    from backprop_engine.train.loop import collate

    rows = [TokenizedExample(list(range(1, n)), [IGNORE_INDEX] * 2 + list(range(3, n))) for n in (6, 9, 12)]
    ranks = [Distributed(rank, world_size=2) for rank in (0, 1)]
    shares = [dist.shard(rows) for dist in ranks]
    assert sorted(map(id, shares[0] + shares[1])) == sorted(map(id, rows)), "the ranks' rows are the batch"
    build = lambda part: collate(part, pad_id=0, device="cpu", packed=False)  # noqa: E731
    lonely = ranks[1].local_batch(rows[:1], build)
    assert (
        lonely.input_ids.size(0) == 1
        and lonely.real_tokens == 0
        and bool((lonely.labels == IGNORE_INDEX).all())
    )
    assert ranks[0].local_batch(rows[:1], build).real_tokens == len(rows[0].input_ids)


def test_accelerate_fsdp_is_refused_with_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert main(["train", "--steps", "1"]) == 2
    assert "backprop does not shard the model" in capsys.readouterr().err
