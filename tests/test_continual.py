"""Multi-run continual training (SLAO): the formulas on real peft adapters, the driver end to end on the
tiny model, the merged adapter as what export uses, resume after SIGKILL, and bad input."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backprop_engine import ConfigError, DataError, Trainer
from backprop_engine.cli import main
from backprop_engine.continual import initial_state, lambda_schedule, merge_state, orthonormal_rows
from backprop_engine.hardware import GpuReading
from backprop_engine.runs import summarize_run

FACTS = {"red": "apple", "blue": "sky", "green": "grass", "white": "snow", "black": "night", "gold": "sun"}


def write_task(path: Path, question: str, answer: str) -> Path:
    rows = [
        {
            "messages": [
                {"role": "user", "content": question.format(k=k, n=n)},
                {"role": "assistant", "content": answer.format(v=v)},
            ]
        }
        for k, v in FACTS.items()
        for n in range(4)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("tasks")
    return [
        write_task(folder / "colours.jsonl", "Which thing is {k}? (try {n})", "It is {v}."),
        write_task(folder / "reverse.jsonl", "{n}: name the colour of the {k} one", "<<{v}>>"),
    ]


# The formulas, against numpy ------------------------------------------------------------------------------


def peft_states(tiny_models, count: int) -> list[dict]:
    """``count`` random "fine-tuned" adapters, read from a real peft model on the tiny base."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_models["tiny"]),
        LoraConfig(r=4, target_modules=["q_proj", "down_proj"]),
    )
    generator = torch.Generator().manual_seed(0)
    states = []
    for _ in range(count):
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator))
        states.append({k: v.clone() for k, v in get_peft_model_state_dict(model).items()})
    return states


def numpy_orthonormal_rows(a: np.ndarray) -> np.ndarray:
    q, r = np.linalg.qr(a.T)
    return (q * np.where(np.diag(r) < 0, -1.0, 1.0)).T


def test_slao_init_is_the_sign_fixed_qr_of_the_previous_fine_tuned_a(tiny_models):
    previous = peft_states(tiny_models, 1)[0]
    start = initial_state(previous, "slao")
    a_names = [n for n in previous if ".lora_A." in n]
    b_names = [n for n in previous if ".lora_B." in n]
    assert a_names and b_names and len(a_names) + len(b_names) == len(previous)
    for name in a_names:
        a = previous[name].double().numpy()
        expected = numpy_orthonormal_rows(a)
        np.testing.assert_allclose(start[name].double().numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(expected @ expected.T, np.eye(a.shape[0]), atol=1e-6)  # orthonormal rows
        r = expected @ a.T  # A = Rᵀ Qᵀ: the same row space, and diag(R) ≥ 0
        np.testing.assert_allclose(r.T @ expected, a, atol=1e-4)
        assert (np.diag(r) >= 0).all()
    for name in b_names:
        assert torch.equal(start[name], previous[name])  # the previous FINE-TUNED B
    assert all(torch.equal(initial_state(previous, "sequential")[n], previous[n]) for n in previous)


def test_slao_merge_matches_an_independent_computation(tiny_models):
    fine_tuned = peft_states(tiny_models, 4)
    merged = None
    b_merge = None
    for i, ft in enumerate(fine_tuned, start=1):
        merged = merge_state(merged, ft, i, "slao", lambda_schedule("inv_sqrt"))
        ft_np = {n: t.double().numpy() for n, t in ft.items()}
        b_merge = (
            {n: ft_np[n] for n in ft_np if ".lora_B." in n}
            if i == 1
            else {n: b + (ft_np[n] - b) / math.sqrt(i) for n, b in b_merge.items()}
        )
        for name, tensor in merged.items():
            expected = ft_np[name] if ".lora_A." in name else b_merge[name]
            np.testing.assert_allclose(tensor.double().numpy(), expected, atol=1e-5)


def test_average_and_sequential_merges(tiny_models):
    fine_tuned = peft_states(tiny_models, 3)
    merged = sequential = None
    for i, ft in enumerate(fine_tuned, start=1):
        merged = merge_state(merged, ft, i, "average", lambda_schedule("inv_sqrt"))
        sequential = merge_state(sequential, ft, i, "sequential", lambda_schedule("inv_sqrt"))
    for name in merged:
        mean = np.mean([ft[name].double().numpy() for ft in fine_tuned], axis=0)
        np.testing.assert_allclose(merged[name].double().numpy(), mean, atol=1e-5)
        assert torch.equal(sequential[name], fine_tuned[-1][name])


def test_lambda_schedules():
    assert lambda_schedule("inv_sqrt")(4) == 0.5
    assert lambda_schedule("inv")(4) == 0.25
    assert lambda_schedule("0.3")(7) == 0.3
    for bad in ("sqrt", "0", "1.5", ""):
        with pytest.raises(ConfigError, match="λ schedule"):
            lambda_schedule(bad)


def test_orthonormal_rows_keeps_dtype_and_is_unique():
    a = torch.randn(4, 32, dtype=torch.float32)
    q = orthonormal_rows(a)
    assert q.dtype == torch.float32 and q.shape == a.shape
    assert torch.allclose(
        orthonormal_rows(q), q, atol=1e-5
    )  # already orthonormal with diag R = 1: a fixed point


# The driver on the tiny model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slao_run(tasks, tmp_path_factory):
    events = []
    # Run 2 trains at a negligible learning rate (lr_decay), so its fine-tuned factors are its starting ones.
    trainer = Trainer("tiny", on_event=events.append, batch_size=4)
    result = trainer.multi_run(
        datasets=tasks,
        steps_per_run=4,
        lr_decay=1e-9,
        eval_split=6,
        output_dir=tmp_path_factory.mktemp("multi") / "slao",
    )
    return trainer, result, events


def test_multi_run_layout_progress_and_events(slao_run):
    trainer, result, events = slao_run
    assert result.completed_runs == 2 and not result.stopped_early
    assert len(result.matrix) == 2 and all(
        len(row) == 2 and all(math.isfinite(x) for x in row) for row in result.matrix
    )
    for index in (1, 2):
        assert (result.path / "runs" / f"run-{index:02d}" / "adapter" / "adapter_model.safetensors").is_file()
        assert (result.path / "factors" / f"run-{index:02d}.ft.safetensors").is_file()
        assert (result.path / "factors" / f"run-{index:02d}.merged.safetensors").is_file()
        assert '"step"' in (result.path / "runs" / f"run-{index:02d}" / "events.jsonl").read_text()
    assert not list(result.path.rglob("*.bin")) and not list(result.path.rglob("*.pt")), "no pickles"
    progress = (result.path / "multirun.toml").read_text()
    assert "completed_runs = 2" in progress and 'merge_mode = "slao"' in progress
    kinds = [e.kind for e in events]
    assert (
        kinds.count("multirun_run") == 2
        and kinds.count("continual_eval") == 2
        and kinds[-1] == "multirun_finished"
    )
    last_eval = [e for e in events if e.kind == "continual_eval"][-1]
    assert last_eval.matrix == result.matrix and [Path(t).name for t in last_eval.tasks] == [
        "colours.jsonl",
        "reverse.jsonl",
    ]
    progress_events = [e for e in events if e.kind == "multirun_run"]
    assert [(e.run, e.total_runs) for e in progress_events] == [(1, 2), (2, 2)]
    assert progress_events[1].learning_rate == pytest.approx(trainer.config.learning_rate * 1e-9)
    assert summarize_run(result.path).status == "finished"  # the Runs screen lists it as done
    recorded = [json.loads(line)["event"] for line in (result.path / "events.jsonl").read_text().splitlines()]
    assert recorded.count("continual_eval") == 2 and recorded.count("step") >= 4


def test_run_two_starts_from_slao_init_and_the_merge_is_exact(slao_run):
    _, result, _ = slao_run
    factors = {
        (i, kind): load_file(str(result.path / "factors" / f"run-{i:02d}.{kind}.safetensors"))
        for i in (1, 2)
        for kind in ("ft", "merged")
    }
    ft1, ft2, merged2 = factors[1, "ft"], factors[2, "ft"], factors[2, "merged"]
    assert factors[1, "merged"].keys() == ft1.keys()
    for name, a1 in ft1.items():
        if ".lora_A." in name:
            np.testing.assert_allclose(
                ft2[name].numpy(), numpy_orthonormal_rows(a1.double().numpy()), atol=1e-4
            )
            assert torch.equal(merged2[name], ft2[name])
        else:
            np.testing.assert_allclose(ft2[name].numpy(), ft1[name].numpy(), atol=1e-4)
            expected = ft1[name].numpy() + (ft2[name].numpy() - ft1[name].numpy()) / math.sqrt(2)
            np.testing.assert_allclose(merged2[name].numpy(), expected, atol=1e-6)


def test_export_uses_the_merged_adapter(slao_run, tiny_models):
    from backprop_engine.export.pipeline import ensure_merged, resolve_source

    trainer, result, _ = slao_run
    merged = load_file(str(result.path / "factors" / "run-02.merged.safetensors"))
    exported = load_file(str(result.path / "adapter" / "adapter_model.safetensors"))
    assert exported.keys() == merged.keys() and all(torch.equal(exported[k], merged[k]) for k in merged)
    assert resolve_source(result.path).base_and_adapter()[1] == result.path / "adapter"
    assert trainer.run.path == result.path
    # The merged HF model export converts is base + scaling · B_merge A_merge.
    folder = ensure_merged(trainer.run)
    weights = load_file(str(folder / "model.safetensors"))
    base = load_file(str(tiny_models["tiny"] / "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj.weight"
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    scaling = trainer.config.lora_alpha / trainer.config.lora_rank
    expected = base[name] + scaling * merged[f"{prefix}.lora_B.weight"] @ merged[f"{prefix}.lora_A.weight"]
    torch.testing.assert_close(weights[name].float(), expected.float(), atol=1e-5, rtol=1e-4)


def test_one_dataset_in_chunks(tasks, tmp_path):
    result = Trainer("tiny", batch_size=4).multi_run(
        tasks[0],
        num_runs=2,
        steps_per_run=2,
        samples_per_run=8,
        merge_mode="sequential",
        output_dir=tmp_path / "chunks",
    )
    assert result.completed_runs == 2 and len(result.matrix) == 1 and len(result.matrix[0]) == 2
    ft2 = load_file(str(result.path / "factors" / "run-02.ft.safetensors"))
    exported = load_file(str(result.path / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(exported[k], ft2[k]) for k in ft2)  # sequential: the last fine-tuned adapter


# Resume after SIGKILL ---------------------------------------------------------------------------------------

RESUMABLE = """
import sys
from backprop_engine import Trainer
Trainer("tiny", batch_size=4, save_steps=5, logging_steps=1).multi_run(datasets=sys.argv[2:], steps_per_run=30, eval_split=6, output_dir=sys.argv[1])
"""


def test_resume_after_sigkill_continues_the_interrupted_run_from_its_checkpoint(tasks, tmp_path):
    sequence = [str(t) for t in tasks]
    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-c", RESUMABLE, str(out), *sequence], stderr=subprocess.DEVNULL
    )
    second_checkpoint = out / "runs" / "run-02" / "checkpoints" / "step-000010" / "trainer_state.json"
    deadline = time.monotonic() + 240
    while not second_checkpoint.is_file():
        assert process.poll() is None and time.monotonic() < deadline, (
            "the multi-run ended before it could be killed"
        )
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert "completed_runs = 1" in (out / "multirun.toml").read_text()
    first_run = (out / "factors" / "run-01.ft.safetensors").read_bytes()
    steps_before_kill = (out / "runs" / "run-02" / "events.jsonl").read_text().count('"event": "step"')

    events = []
    result = Trainer("tiny", on_event=events.append, batch_size=4, save_steps=5, logging_steps=1).multi_run(
        datasets=sequence, steps_per_run=30, eval_split=6, output_dir=out
    )
    assert result.completed_runs == 2 and len(result.matrix[0]) == 2
    assert [e.run for e in events if e.kind == "multirun_run"] == [2]  # run 1 is not trained again
    resumed_at = next(e.step for e in events if e.kind == "resumed")
    assert 10 <= resumed_at < 30, "run 2 continues from a checkpoint it saved before the kill"
    assert [e.step for e in events if e.kind == "step"][0] == resumed_at + 1
    assert events[-1].kind == "multirun_finished"
    assert (out / "factors" / "run-01.ft.safetensors").read_bytes() == first_run
    run_two = (out / "runs" / "run-02" / "events.jsonl").read_text()
    assert run_two.count('"event": "step"') > steps_before_kill, (
        "the run's own event log keeps the first attempt"
    )

    fresh = Trainer("tiny", batch_size=4, save_steps=5, logging_steps=1).multi_run(
        datasets=sequence, steps_per_run=30, eval_split=6, output_dir=tmp_path / "fresh"
    )
    resumed, uninterrupted = (
        load_file(str(r.path / "adapter" / "adapter_model.safetensors")) for r in (result, fresh)
    )
    assert resumed.keys() == uninterrupted.keys()
    assert max((resumed[k] - uninterrupted[k]).abs().max().item() for k in resumed) < 1e-6
    np.testing.assert_allclose(result.matrix, fresh.matrix, atol=1e-6)


# Bad input --------------------------------------------------------------------------------------------------


def test_bad_input_gives_clear_errors_and_writes_nothing(tasks, tmp_path):
    out = tmp_path / "never"
    trainer = Trainer("tiny")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    one_row = tmp_path / "one.jsonl"
    one_row.write_text(tasks[0].read_text().splitlines()[0] + "\n")
    cases = [
        (dict(dataset=tasks[0], num_runs=0), ConfigError, "num_runs must be a positive integer"),
        (dict(datasets=[]), ConfigError, "no tasks given"),
        (dict(dataset=tasks[0], datasets=tasks), ConfigError, "either dataset"),
        (dict(datasets=tasks, num_runs=3), ConfigError, "2 tasks but num_runs=3"),
        (dict(datasets=tasks, merge_mode="mean"), ConfigError, "unknown merge mode"),
        (dict(datasets=tasks, lambda_schedule="cosine"), ConfigError, "unknown λ schedule"),
        (dict(datasets=tasks, lr_decay=0), ConfigError, "lr_decay"),
        (dict(datasets=[tasks[0], empty]), DataError, "empty.jsonl"),
        (dict(datasets=[tasks[0], one_row]), DataError, "one.jsonl"),
        (dict(dataset=tasks[0], num_runs=2, samples_per_run=100), DataError, "cannot fill 2 runs"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message) as caught:
            trainer.multi_run(steps_per_run=1, output_dir=out, **kwargs)
        assert caught.value.hint, kwargs
    with pytest.raises(ConfigError, match="merges LoRA adapters"):
        Trainer("tiny", method="full").multi_run(datasets=tasks, steps_per_run=1, output_dir=out)
    assert not out.exists()


def test_an_early_stopped_run_counts_as_finished(tasks, tmp_path):
    events = []
    trainer = Trainer(
        "tiny",
        batch_size=4,
        eval_split=6,
        eval_steps=1,
        early_stopping_patience=1,
        early_stopping_min_delta=100.0,
        on_event=events.append,
    )
    result = trainer.multi_run(datasets=tasks, steps_per_run=4, eval_split=6, output_dir=tmp_path / "early")
    assert sum("early stopping" in getattr(e, "message", "") for e in events) == 2
    assert result.completed_runs == 2 and not result.stopped_early


def test_a_failed_multi_run_says_so_in_its_event_log(tasks, tmp_path):
    def fail_at_first_step(event):
        if event.kind == "step":
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Trainer("tiny", batch_size=4, on_event=fail_at_first_step).multi_run(
            datasets=tasks, steps_per_run=2, eval_split=6, output_dir=tmp_path / "failed"
        )
    last = json.loads((tmp_path / "failed" / "events.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "failed" and "boom" in last["error"]


def test_resuming_with_other_settings_is_refused(slao_run, tasks):
    _, result, _ = slao_run
    with pytest.raises(ConfigError, match=r"other settings.*steps_per_run"):
        Trainer("tiny", batch_size=4).multi_run(
            datasets=tasks, steps_per_run=5, lr_decay=1e-9, eval_split=6, output_dir=result.path
        )


def test_cli_multi_run_and_its_errors(tasks, tmp_path, capsys):
    assert main(["multi-run", "--data", str(tasks[0]), "--runs", "0", "--output", str(tmp_path / "x")]) == 2
    assert "num_runs must be a positive integer" in capsys.readouterr().err
    out = tmp_path / "cli"
    code = main(
        [
            "multi-run",
            "--data",
            str(tasks[0]),
            "--data",
            str(tasks[1]),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--merge-mode",
            "average",
            "--eval-split",
            "6",
            "--save-steps",
            "1",
            "--output",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert (
        code == 0
        and "run 2/2" in printed
        and "held-out loss after run 2/2" in printed
        and str(out) in printed
    )
    assert 'merge_mode = "average"' in (out / "multirun.toml").read_text()
    assert (out / "runs" / "run-02" / "checkpoints" / "step-000001" / "trainer_state.json").is_file()


def test_dora_magnitudes_follow_the_b_rule(tasks, tmp_path):
    result = Trainer("tiny", batch_size=4, method="dora").multi_run(
        datasets=tasks, steps_per_run=2, eval_split=6, output_dir=tmp_path / "dora"
    )
    ft1, ft2, merged = (
        load_file(str(result.path / "factors" / f"{name}.safetensors"))
        for name in ("run-01.ft", "run-02.ft", "run-02.merged")
    )
    magnitudes = [name for name in merged if "magnitude" in name]
    assert magnitudes, "a DoRA adapter carries magnitude vectors"
    for name in magnitudes:
        expected = ft1[name] + (ft2[name] - ft1[name]) / math.sqrt(2)
        torch.testing.assert_close(merged[name], expected)
    exported = load_file(str(result.path / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(exported[k], merged[k]) for k in merged)


def test_a_hot_gpu_between_runs_waits(tasks, tmp_path, monkeypatch):
    from backprop_engine import hardware
    from backprop_engine.train import safety

    readings = iter([90.0, 60.0])  # the check before run 1: critical, then cool; every later reading: no GPU

    def fake_gpus():
        temperature = next(readings, None)
        return [GpuReading(0, "fake", 80_000, 1_000, temperature, 50.0, 200.0)] if temperature else []

    monkeypatch.setattr(hardware, "read_gpus", fake_gpus)
    monkeypatch.setattr(safety.time, "sleep", lambda seconds: None)
    events = []
    Trainer("tiny", batch_size=4, on_event=events.append).multi_run(
        datasets=tasks[:1], steps_per_run=1, eval_split=6, output_dir=tmp_path / "hot"
    )
    assert [(e.level, e.action) for e in events if e.kind == "gpu_safety"] == [
        ("critical", "pause"),
        ("normal", "resume"),
    ]
    assert [e.kind for e in events].index("multirun_run") > [e.kind for e in events].index("gpu_safety")
