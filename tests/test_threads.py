"""torch's thread count on the CPU (threads.py): the free cores at the start, followed while training."""

from __future__ import annotations

import subprocess
import sys

import pytest

from backprop_engine import threads
from backprop_engine.threads import CHECK_SECONDS, CpuReading, ThreadGuard, ThreadPlan, free_threads


def test_free_cores_decide_the_count_and_the_reason_says_why():
    assert free_threads(CpuReading(cores=2, busy_elsewhere=0.1)).threads == 2
    busy = free_threads(CpuReading(cores=2, busy_elsewhere=1.2))
    assert busy.threads == 1 and "other processes use 1.2 of the 2 cores" in busy.reason
    assert free_threads(CpuReading(cores=2, busy_elsewhere=2.0)).threads == 1  # never none
    assert free_threads(CpuReading(cores=16, busy_elsewhere=4.4)).threads == 12


def test_threads_asked_for_the_environment_and_ddp_ranks_fix_the_count(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "allowed_cores", lambda: [0, 1, 2, 3])
    assert threads.fixed_threads(3) == ThreadPlan(3, "set by you", adaptive=False)
    assert threads.fixed_threads(0, processes=2).threads == 2
    assert threads.fixed_threads(0) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.fixed_threads(0).reason == "OMP_NUM_THREADS=1 in the environment"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_guard_follows_the_free_cores_after_two_readings_that_agree():
    readings = iter([1.3, 1.2, 0.1, 1.5, 0.0, 0.0])
    clock, set_to = Clock(), []
    guard = ThreadGuard(
        ThreadPlan(2, "", adaptive=True), lambda: CpuReading(2, next(readings)), set_to.append, clock
    )
    assert guard.check() is None  # not due yet
    messages = []
    for _ in range(6):
        clock.now += CHECK_SECONDS
        messages.append(guard.check())
    assert messages[0] is None and messages[1].startswith("training threads 2 → 1: other processes use 1.2")
    assert messages[2:5] == [None, None, None]  # 0.1 then 1.5: a burst either way changes nothing
    assert messages[5] == "training threads 1 → 2: all 2 cores are free"
    assert set_to == [2, 1, 2]


def test_a_fixed_count_is_set_once_and_never_changed():
    set_to = []
    guard = ThreadGuard(ThreadPlan(1, "set by you", adaptive=False), None, set_to.append, Clock())
    assert guard.check() is None and set_to == [1]


@pytest.mark.skipif(len(threads.allowed_cores()) < 2, reason="needs two cores")
def test_a_busy_process_beside_the_run_takes_a_thread_away(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(threads.allowed_cores())
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        monkeypatch.setattr(threads, "SAMPLE_SECONDS", 1.0)
        plan = threads.plan_threads()
    finally:
        spinner.kill()
        spinner.wait()
    assert plan.adaptive and plan.threads <= cores - 1, plan
    assert "other processes use" in plan.reason


def test_a_cpu_run_trains_with_the_threads_asked_for_and_its_plan_says_so(tmp_path):
    import torch

    from backprop_engine import Trainer

    before = torch.get_num_threads()
    try:
        trainer = Trainer("tiny", threads=1, compare_count=0, eval_split=0)
        choice = next(c for c in trainer.plan("sample", steps=1).choices if c.name == "threads")
        assert (choice.value, choice.reason, choice.by_user) == (1, "set by you", True)
        torch.set_num_threads(2)
        trainer.train("sample", steps=1, output_dir=tmp_path / "run")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
