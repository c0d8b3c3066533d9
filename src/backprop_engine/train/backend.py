"""Which library builds the model that trains: its weights loaded, the method (LoRA, QLoRA, DoRA, rsLoRA or
full fine-tuning) applied, and the reason for the choice, which the run reports.

Two backends: HF transformers + peft (always there), and Unsloth's ``FastLanguageModel`` when it is installed
and supports the method. Unsloth pins older transformers/datasets than ours, so it lives in its own venv
(``make unsloth-venv``); ``backend="auto"`` picks it there and says why it did or did not.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainConfig
from ..errors import ConfigError
from ..modeling import load_base_model, pick_dtype, quiet_transformers

TRANSFORMERS = "transformers+peft"
UNSLOTH = "unsloth"
UNSLOTH_HINT = '`make unsloth-venv` builds .venv-unsloth with Unsloth (README: Backends); backend="auto" or "transformers" trains without it'
# Unsloth's own options cover these; DoRA it only hands through to peft, without its kernels.
UNSLOTH_METHODS = ("lora", "qlora", "rslora", "full")


@dataclass
class TrainableModel:
    model: object  # a peft model, or the whole model for full fine-tuning
    backend: str
    reason: str

    @property
    def is_full(self) -> bool:
        return not hasattr(self.model, "peft_config")


@dataclass(frozen=True)
class BackendChoice:
    name: str  # TRANSFORMERS or UNSLOTH
    reason: str


def check_method_available(config: TrainConfig) -> BackendChoice:
    """What the method and backend need, checked before a run directory exists; returns the backend choice."""
    import importlib.util

    if config.method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            "QLoRA needs bitsandbytes, which is not installed",
            "pip install 'backprop[qlora]' (bitsandbytes), or train with --method lora",
        )
    return check_backend(config)


def check_backend(config: TrainConfig) -> BackendChoice:
    """The backend that will train ``config`` and why; a ConfigError when ``backend="unsloth"`` cannot be had.

    Choosing Unsloth imports it, so calling this before anything loads transformers gives Unsloth the import
    order it asks for (it patches transformers on GPUs; its CPU fallback runs stock transformers + peft).
    """
    if config.backend == "transformers":
        return BackendChoice(TRANSFORMERS, "backend=transformers was asked for")
    problem = _unsloth_problem(config)
    if problem is None:
        return BackendChoice(UNSLOTH, _unsloth_reason(config))
    if config.backend == UNSLOTH:
        raise ConfigError(f"backend unsloth: {problem}", UNSLOTH_HINT)
    return BackendChoice(TRANSFORMERS, f"{problem}; HF transformers + peft trains instead")


def build_trainable_model(config: TrainConfig, path: Path, device: str) -> TrainableModel:
    choice = check_backend(config)
    if choice.name == UNSLOTH:
        return TrainableModel(_unsloth_model(config, path, device), UNSLOTH, choice.reason)
    base = load_base_model(
        path,
        device,
        _weight_dtype(config, device),
        trust_remote_code=config.trust_remote_code,
        four_bit=config.method == "qlora",
    )
    if config.method == "full":
        return TrainableModel(
            _full_model(base, config), TRANSFORMERS, f"{choice.reason}; full fine-tuning: every weight trains"
        )
    return TrainableModel(lora_model(base, config), TRANSFORMERS, choice.reason)


def _weight_dtype(config: TrainConfig, device: str):
    import torch

    if config.precision != "auto":
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[config.precision]
    # Full fine-tuning keeps fp32 master weights: AdamW updates on 16-bit weights round away small steps.
    return torch.float32 if config.method == "full" else pick_dtype(device)


def _full_model(base, config: TrainConfig):
    if config.gradient_checkpointing:
        _checkpoint_activations(base)
    for parameter in base.parameters():
        parameter.requires_grad_(True)
    return base


def _checkpoint_activations(model) -> None:
    # transformers 5.24 renamed gradient_checkpointing_enable (now deprecated); 5.17, Unsloth's pin, has only that.
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def lora_model(base, config: TrainConfig):
    """LoRA (or DoRA / rsLoRA) on the configured modules; a 4-bit base is prepared for k-bit training."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    if config.gradient_checkpointing:
        _checkpoint_activations(base)
        base.enable_input_require_grads()  # frozen embeddings: the checkpointed blocks still need a grad path
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        task_type="CAUSAL_LM",
        use_dora=config.method == "dora",
        use_rslora=config.method == "rslora",
    )
    return get_peft_model(base, lora)


# --- Unsloth -------------------------------------------------------------------------------------------


def _unsloth_problem(config: TrainConfig) -> str | None:
    """Why Unsloth cannot train ``config`` here, or None when it can (it is then imported)."""
    import importlib.util

    if config.method not in UNSLOTH_METHODS:
        return f"unsloth does not support {config.method} (it passes it to peft's own forward, without its kernels)"
    if importlib.util.find_spec("unsloth") is None:
        return "unsloth is not installed"
    try:
        unsloth = _import_unsloth()
    except Exception as exc:  # a broken install (e.g. a torchvision built for another torch) is not usable
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        return f"unsloth is installed but does not import ({type(exc).__name__}: {first_line})"
    if config.method == "qlora" and _on_cpu(unsloth):
        from unsloth_zoo.cpu import cpu_bnb_4bit_supported

        if not cpu_bnb_4bit_supported():
            return "unsloth's CPU backend cannot run bitsandbytes 4-bit on this machine"
    return None


def _unsloth_reason(config: TrainConfig) -> str:
    unsloth = _import_unsloth()
    asked = "backend=unsloth was asked for" if config.backend == UNSLOTH else "unsloth is installed"
    if _on_cpu(
        unsloth
    ):  # its CPU backend patches nothing at import, so the import order does not matter there
        where = "its CPU fallback (stock transformers + peft; the fused kernels need a GPU)"
    elif _imported_late:
        where = "FastLanguageModel, imported after transformers: its import-time patches are missing"
    else:
        where = "FastLanguageModel with its GPU kernels"
    return f"{asked} and supports {config.method}: unsloth {unsloth.__version__}, {where}"


def _on_cpu(unsloth) -> bool:
    return getattr(unsloth, "DEVICE_TYPE", "cuda") == "cpu"


_imported_late = False  # unsloth asks to be imported before transformers: was it?


def _import_unsloth():
    """``import unsloth`` with its banner and import-time warnings kept off our console (the run's events
    report the backend); its usage statistics (a README download from the hub) are switched off."""
    global _imported_late
    if "unsloth" in sys.modules:
        return sys.modules["unsloth"]
    _imported_late = "transformers" in sys.modules
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    with _quiet():
        import unsloth
    return unsloth


@contextlib.contextmanager
def _quiet():
    loggers = [
        logging.getLogger(name) for name in ("torch.utils._pytree", "bitsandbytes", "unsloth", "unsloth_zoo")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _unsloth_model(config: TrainConfig, path: Path, device: str):
    """The base through ``FastLanguageModel.from_pretrained`` and LoRA through its ``get_peft_model``, with our
    settings; the result is a plain peft model (or the whole model for full fine-tuning) that the loop,
    checkpoints and export drive as they drive the transformers backend's."""
    fast = _import_unsloth().FastLanguageModel
    quiet_transformers()
    from transformers import AutoConfig

    context = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None) or 2048
    with _quiet():
        model, _ = fast.from_pretrained(
            model_name=str(path),
            max_seq_length=context,  # the model's own: Unsloth never rescales RoPE for us
            dtype=_weight_dtype(config, device),
            load_in_4bit=config.method == "qlora",
            full_finetuning=config.method == "full",
            use_gradient_checkpointing=config.gradient_checkpointing,
            trust_remote_code=config.trust_remote_code,
            use_safetensors=True,
        )
        if config.method == "qlora" and not any(type(m).__name__ == "Linear4bit" for m in model.modules()):
            # Unsloth's CPU loader quietly loads 16-bit weights when bitsandbytes refuses a layer.
            raise ConfigError(
                f"{path}: unsloth could not load this model in 4-bit",
                'backend="transformers" trains QLoRA without it',
            )
        if config.method == "full":
            return model
        return fast.get_peft_model(
            model,
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_targets),
            bias="none",
            use_rslora=config.method == "rslora",
            use_gradient_checkpointing=config.gradient_checkpointing,
            random_state=config.seed,
        )
