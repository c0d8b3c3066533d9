"""The Unsloth backend for real on the CPU (its fallback: FastLanguageModel over stock transformers + peft).

Unsloth pins older transformers/datasets than the main venv, so these tests run in `.venv-unsloth`
(`make test-unsloth`, part of `make test`); in the main venv they are skipped, and the tests at the end
check what a user without Unsloth sees instead."""

from __future__ import annotations

import importlib.util
import json

import pytest

from backprop_engine import Trainer
from backprop_engine.config import TrainConfig
from backprop_engine.errors import ConfigError
from backprop_engine.train.backend import TRANSFORMERS, UNSLOTH, check_backend

HAVE_UNSLOTH = importlib.util.find_spec("unsloth") is not None
needs_unsloth = pytest.mark.skipif(
    not HAVE_UNSLOTH, reason="unsloth is not importable here: `make test-unsloth` runs these in .venv-unsloth"
)
without_unsloth = pytest.mark.skipif(HAVE_UNSLOTH, reason="checks what a machine without Unsloth sees")
OPTIONS = dict(logging_steps=1, batch_size=4, grad_accum=2, save_steps=3)


def _events(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def unsloth_run(tmp_path_factory):
    """LoRA on `tiny` through Unsloth, chosen by backend="auto"."""
    events = []
    trainer = Trainer("tiny", on_event=events.append, **OPTIONS)
    result = trainer.train("sample", steps=12, output_dir=tmp_path_factory.mktemp("unsloth") / "run")
    return trainer, result, events


@needs_unsloth
def test_auto_picks_unsloth_and_says_why(unsloth_run):
    _, result, events = unsloth_run
    started = next(e for e in events if e.kind == "run_started")
    assert started.backend == UNSLOTH
    assert "unsloth is installed and supports lora: unsloth 2026.10.9" in started.backend_reason
    assert "CPU fallback" in started.backend_reason  # honest: no Unsloth kernels without a GPU
    recorded = next(e for e in _events(result.run_dir) if e["event"] == "run_started")
    assert (recorded["backend"], recorded["backend_reason"]) == (started.backend, started.backend_reason)


@needs_unsloth
def test_lora_through_unsloth_learns_and_saves_a_peft_adapter(unsloth_run):
    _, result, _ = unsloth_run
    assert result.steps == 12 and result.final_loss < result.first_loss - 0.5
    adapter = json.loads((result.adapter_path / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and sorted(adapter["target_modules"]) == sorted(TrainConfig().lora_targets)
    assert not adapter["use_dora"] and not adapter["use_rslora"]


@needs_unsloth
def test_the_unsloth_adapter_exports_to_gguf_and_chats(unsloth_run):
    trainer, _, _ = unsloth_run
    gguf = trainer.export("gguf", quantization="q8_0")  # merged with plain peft, verified in llama.cpp
    verification = json.loads(gguf.with_suffix(".report.json").read_text())["verification"]
    assert (
        verification["passed"] and verification["tokenization_matches"] == verification["tokenization_probes"]
    )
    assert trainer.chat("What colour is a carrot?", max_tokens=16).strip()


@needs_unsloth
def test_an_unsloth_run_resumes_exactly_from_its_checkpoint(tmp_path, unsloth_run):
    straight = unsloth_run[1]

    def stop_after_step_4(event):
        if event.kind == "step" and event.step == 4:
            interrupted.control.stop()

    interrupted = Trainer("tiny", on_event=stop_after_step_4, **OPTIONS)
    assert interrupted.train("sample", steps=12, output_dir=tmp_path / "run").stopped_early
    events = []
    resumed = Trainer.from_run(tmp_path / "run", on_event=events.append).resume()
    assert next(e for e in events if e.kind == "run_started").backend == UNSLOTH
    assert [e.step for e in events if e.kind == "step"][0] == 5
    assert resumed.steps == 12 and resumed.final_loss == pytest.approx(straight.final_loss, abs=1e-6)


@needs_unsloth
def test_qlora_through_unsloth_trains_a_4bit_base(tmp_path):
    events = []
    options = OPTIONS | {"grad_accum": 1}
    result = Trainer("tiny", method="qlora", on_event=events.append, **options).train(
        "sample", steps=12, output_dir=tmp_path / "run"
    )
    assert next(e for e in events if e.kind == "run_started").backend == UNSLOTH
    assert result.final_loss < result.first_loss - 0.5


@needs_unsloth
@pytest.mark.parametrize(
    "options", [{"method": "rslora"}, {"method": "full"}, {"gradient_checkpointing": True}], ids=str
)
def test_unsloth_on_cpu_trains_loss_for_loss_like_transformers(tmp_path, options):
    """Its CPU fallback is stock transformers + peft under Unsloth's loader: with our settings passed through
    (rsLoRA scaling, full fine-tuning in fp32, activation checkpointing), the steps match exactly."""
    losses = {}
    for backend in ("unsloth", "transformers"):
        events = []
        Trainer(
            "tiny", backend=backend, on_event=events.append, logging_steps=1, batch_size=4, **options
        ).train("sample", steps=3, output_dir=tmp_path / backend)
        assert next(e for e in events if e.kind == "run_started").backend.startswith(backend)
        losses[backend] = [e.loss for e in events if e.kind == "step"]
    assert losses["unsloth"] == pytest.approx(losses["transformers"], abs=1e-5)


@needs_unsloth
def test_dpo_through_unsloth_scores_pair_for_pair_like_transformers(tmp_path):
    """DPO's reference is the model with its adapter switched off (in every step here), which Unsloth's peft
    model does as stock peft's does: the losses and rewards match, and the margin grows."""
    from ..preference_data import write_pairs

    data, rewards = write_pairs(tmp_path / "pairs.jsonl", 16), {}
    for backend in ("unsloth", "transformers"):
        events = []
        Trainer(
            "tiny",
            backend=backend,
            objective="dpo",
            precompute_reference="off",
            on_event=events.append,
            logging_steps=1,
            batch_size=4,
            learning_rate=3e-3,
            compare_count=0,
        ).train(data, steps=3, output_dir=tmp_path / backend)
        assert next(e for e in events if e.kind == "run_started").backend.startswith(backend)
        scored = [e for e in events if e.kind == "rewards"]
        assert [e.split for e in scored] == ["train"] * 3 + ["eval"]  # the plan holds some pairs out
        rewards[backend] = [(e.loss, e.chosen, e.rejected) for e in scored]
    assert rewards["unsloth"] == pytest.approx(rewards["transformers"], abs=1e-5)
    assert rewards["unsloth"][-1][1] - rewards["unsloth"][-1][2] > 0.1


@needs_unsloth
def test_methods_unsloth_does_not_support_fall_back_with_the_reason(tmp_path):
    choice = check_backend(TrainConfig(method="dora"))
    assert choice.name == TRANSFORMERS and choice.reason.startswith("unsloth does not support dora")
    with pytest.raises(ConfigError, match="backend unsloth: unsloth does not support dora"):
        Trainer("tiny", method="dora", backend="unsloth").train(
            "sample", steps=2, output_dir=tmp_path / "run"
        )
    assert not (tmp_path / "run").exists()
    assert check_backend(TrainConfig(backend="transformers")).name == TRANSFORMERS


@needs_unsloth
def test_help_and_backend_transformers_never_import_unsloth():
    import subprocess
    import sys

    script = (
        "import sys; from backprop_engine.cli import main\n"
        "try: main(['--help'])\nexcept SystemExit: pass\n"
        "print('after --help:', 'unsloth' in sys.modules, 'torch' in sys.modules)\n"
        "from backprop_engine.config import TrainConfig; from backprop_engine.train.backend import check_backend\n"
        "check_backend(TrainConfig(backend='transformers')); print('after transformers:', 'unsloth' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "after --help: False False" in out and "after transformers: False" in out


@without_unsloth
def test_asking_for_unsloth_without_it_is_a_clear_error_before_any_run_dir(tmp_path):
    with pytest.raises(ConfigError) as error:
        Trainer("tiny", backend="unsloth").train("sample", steps=2, output_dir=tmp_path / "run")
    assert error.value.message == "backend unsloth: unsloth is not installed"
    assert "make unsloth-venv" in error.value.hint
    assert not (tmp_path / "run").exists()


@without_unsloth
def test_auto_without_unsloth_trains_with_transformers_and_says_why(tmp_path):
    events = []
    Trainer("tiny", on_event=events.append).train("sample", steps=1, output_dir=tmp_path / "run")
    started = next(e for e in events if e.kind == "run_started")
    assert started.backend == TRANSFORMERS
    assert started.backend_reason == "unsloth is not installed; HF transformers + peft trains instead"


@needs_unsloth
def test_the_command_line_imports_unsloth_first_and_keeps_its_banner_off_the_console(tmp_path):
    import subprocess
    import sys

    script = (
        "import sys; from backprop_engine.cli import main; from backprop_engine.train import backend; "
        f"code = main(['train', '--no-tui', '--steps', '2', '--output', {str(tmp_path / 'run')!r}]); "
        "print('imported after transformers:', backend._imported_late); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "backend: unsloth (unsloth is installed and supports lora" in done.stdout
    assert "imported after transformers: False" in done.stdout  # Unsloth asks to come first; it does
    assert (
        "Unsloth" not in done.stdout.replace("backend: unsloth", "")
        and "no GPU found" not in done.stdout + done.stderr
    )
