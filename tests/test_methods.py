"""Training methods (QLoRA, DoRA, rsLoRA), gradient checkpointing, the out-of-memory back-off — on the
real tiny model; only the CUDA OOM is faked (the thermal pause is in test_safety.py)."""

from __future__ import annotations

import json

import pytest
import torch

from backprop_engine import Trainer
from backprop_engine.errors import TrainingError
from backprop_engine.train import loop


def train(tmp_path, steps=8, **overrides):
    events = []
    trainer = Trainer("tiny", on_event=events.append, logging_steps=1, **overrides)
    result = trainer.train("sample", steps=steps, output_dir=tmp_path / "run")
    return result, events


@pytest.mark.parametrize("method", ["qlora", "dora", "rslora"])
def test_each_method_trains_and_saves_its_adapter(tmp_path, method):
    result, _ = train(tmp_path, steps=12, method=method)
    assert result.final_loss < result.first_loss - 0.5
    adapter = json.loads((result.adapter_path / "adapter_config.json").read_text())
    assert adapter["use_dora"] is (method == "dora") and adapter["use_rslora"] is (method == "rslora")


def test_a_cpu_qlora_base_lets_go_of_its_memory_mapped_checkpoint(tiny_models):
    # Its unquantized tensors were views of the file, which kept every page quantizing read resident.
    import gc
    from pathlib import Path

    from backprop_engine.modeling import load_base_model

    checkpoint = str((tiny_models["tiny"] / "model.safetensors").resolve())
    model = load_base_model(tiny_models["tiny"], four_bit=True)
    gc.collect()
    assert checkpoint not in Path("/proc/self/maps").read_text()
    assert model.get_input_embeddings().weight.is_floating_point()
    from safetensors.torch import load_file

    on_disk = load_file(checkpoint)
    kept = {n: p for n, p in model.named_parameters() if p.is_floating_point() and n in on_disk}
    # embeddings, head, 2 × 2 layer norms, final norm: copies, with the values on disk
    assert len(kept) == 7 and all(torch.equal(p, on_disk[n]) for n, p in kept.items())


def _mapped_view(tmp_path, values):
    """``values`` saved as safetensors and read back as transformers reads them: a view of the mapped file."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    save_file({"w": values}, tmp_path / "w.safetensors")
    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as file:
        return file.get_slice("w")[...]


def _resident_mb(tensor) -> float:
    """RSS of the mapping that holds ``tensor`` (/proc/self/smaps)."""
    from pathlib import Path

    address, inside = tensor.data_ptr(), False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            low, high = (int(x, 16) for x in fields[0].split("-"))
            inside = low <= address < high
        elif inside and fields[0] == "Rss:":
            return int(fields[1]) / 1024
    raise AssertionError("the tensor is not in a mapping")


def test_copying_a_mapped_checkpoint_tensor_hands_its_pages_back_as_it_goes(tmp_path, monkeypatch):
    from backprop_engine import modeling

    values = torch.randn(4 * 2**20)  # 16 MB
    view = _mapped_view(tmp_path, values)
    assert view.sum() == values.sum() and _resident_mb(view) > 15  # every page read
    monkeypatch.setattr(modeling, "COPY_CHUNK_BYTES", 2**20)
    released, release = [], modeling._release_pages
    monkeypatch.setattr(modeling, "_release_pages", lambda *span: released.append(span) or release(*span))
    copy = modeling._own_copy(view, modeling._checkpoint_mappings())
    assert torch.equal(copy, values) and copy.data_ptr() != view.data_ptr()
    assert len(released) == 16 and _resident_mb(view) < 1
    assert torch.equal(view, values)  # a page handed back is read again from the file


def test_a_mapping_written_to_is_copied_without_handing_pages_back_and_owned_memory_is_kept(tmp_path):
    from backprop_engine import modeling

    view = _mapped_view(tmp_path, torch.zeros(2**20))
    mapping = [m for m in modeling._checkpoint_mappings() if m[0] <= view.data_ptr() < m[1]]
    assert [clean for *_, clean in mapping] == [True]
    view[0] = 1.0  # a private page of this process now: handing it back would lose the write
    mapping = [m for m in modeling._checkpoint_mappings() if m[0] <= view.data_ptr() < m[1]]
    assert [clean for *_, clean in mapping] == [False]
    copy = modeling._own_copy(view, mapping)
    assert copy[0] == 1.0 and copy.data_ptr() != view.data_ptr() and view[0] == 1.0
    owned = torch.ones(8)  # what the loader converted (a 16-bit file) is already the process's own
    assert modeling._own_copy(owned, modeling._checkpoint_mappings()) is owned


def test_qlora_base_is_4bit_and_its_gradients_match_a_dequantized_twin(tiny_models):
    import bitsandbytes.functional as bnb

    from backprop_engine.config import TrainConfig
    from backprop_engine.modeling import load_base_model
    from backprop_engine.train.backend import lora_model

    torch.manual_seed(0)
    quantized = lora_model(load_base_model(tiny_models["tiny"], four_bit=True), TrainConfig(method="qlora"))
    twin = lora_model(load_base_model(tiny_models["tiny"]), TrainConfig())
    twin_modules = dict(twin.named_modules())
    quantized_params = dict(quantized.named_parameters())
    four_bit = [
        (n, m)
        for n, m in quantized.named_modules()
        if n.endswith("base_layer") and type(m.weight).__name__ == "Params4bit"
    ]
    assert len(four_bit) == 14  # 7 linear modules × 2 layers hold nf4 weights
    with torch.no_grad():
        for name, module in four_bit:
            twin_modules[name].weight.copy_(
                bnb.dequantize_4bit(module.weight.data, module.weight.quant_state)
            )
        for name, param in twin.named_parameters():
            if "lora_" in name:
                param.normal_(std=0.02)
                quantized_params[name].copy_(param)
    ids = torch.tensor([[5, 17, 99, 300, 42, 7, 8, 9, 250, 11]])
    for model in (quantized, twin):
        model(input_ids=ids, labels=ids).loss.backward()
    for name, param in twin.named_parameters():
        if param.grad is not None:
            reference = param.grad.abs().max()
            assert (quantized_params[name].grad - param.grad).abs().max() <= 0.05 * reference, name


def test_gradient_checkpointing_gives_the_same_losses(tmp_path):
    plain, _ = train(tmp_path / "a", steps=4)
    checkpointed, _ = train(tmp_path / "b", steps=4, gradient_checkpointing=True)
    assert checkpointed.final_loss == pytest.approx(plain.final_loss, abs=1e-5)


def _oom_above(rows: int, monkeypatch):
    real = loop.summed_loss
    calls = []

    def summed_loss(model, batch):
        calls.append(batch.input_ids.size(0))
        if batch.input_ids.size(0) > rows:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(model, batch)

    monkeypatch.setattr(loop, "summed_loss", summed_loss)
    return calls


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_effective_batch(tmp_path, monkeypatch):
    reference, _ = train(tmp_path / "a", steps=6, batch_size=8, packing=False)
    calls = _oom_above(2, monkeypatch)
    result, events = train(tmp_path / "b", steps=6, batch_size=8, packing=False)
    warnings = [e.message for e in events if e.kind == "warning" and "out of memory" in e.message]
    assert warnings == [
        "out of memory at micro-batch 8: retrying with micro-batch 4 × 2 accumulation (same effective batch)",
        "out of memory at micro-batch 4: retrying with micro-batch 2 × 4 accumulation (same effective batch)",
    ]
    assert max(calls[-4:]) == 2  # later steps run at the smaller micro-batch directly
    assert result.steps == 6 and result.final_loss == pytest.approx(reference.final_loss, abs=1e-4)


def test_out_of_memory_at_one_row_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from backprop_engine.cli import main

    _oom_above(0, monkeypatch)
    with pytest.raises(TrainingError, match="out of memory even with one row per micro-batch"):
        train(tmp_path / "api", steps=2, batch_size=2)
    assert main(["train", "--steps", "2", "--batch-size", "2", "--output", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err
    assert "error: out of memory even with one row per micro-batch" in err and "hint: " in err


def test_cli_method_flags_reach_the_run_config(tmp_path):
    from backprop_engine.cli import main

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--method",
                "dora",
                "--gradient-checkpointing",
                "--max-gpu-temperature",
                "80",
                "--steps",
                "2",
                "--output",
                str(run),
            ]
        )
        == 0
    )
    config = (run / "config.toml").read_text()
    assert (
        'method = "dora"' in config
        and "gradient_checkpointing = true" in config
        and "max_gpu_temperature_c = 80" in config
    )
