"""Options declared once: a TrainConfig field's label, help and flags drive the CLI parser and the app's form."""

from __future__ import annotations

from backprop_engine.cli import build_parser
from backprop_engine.config import TrainConfig, option_of


def test_the_cli_flags_come_from_the_fields():
    args = build_parser().parse_args(
        ["train", "--lr", "0.01", "--lora-rank", "4", "--eval-split", "0.2", "--steps", "7"]
    )
    assert (args.learning_rate, args.lora_rank, args.eval_split, args.steps) == (0.01, 4, 0.2, 7)
    assert (
        option_of("learning_rate").flags == ("--learning-rate", "--lr") and option_of("lora_rank").kind is int
    )
    train = next(
        a
        for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
        if a.dest == "eval_split"
    )
    assert train.help == option_of("eval_split").help and "held-out rows" in train.help
    assert TrainConfig().lora_rank == 16  # the declaration keeps the default


def test_the_train_form_shows_the_fields_labels():
    from backprop_tui.screens.train import FIELDS

    assert [(option.name, option.label, option.kind) for option in FIELDS] == [
        ("steps", "Steps", int),
        ("learning_rate", "Learning rate", float),
        ("batch_size", "Batch size", int),
        ("max_seq_len", "Max seq len", int),
    ]


# `backprop train`'s flags before the parser was built from the fields' declarations: flag → (dest, action).
TRAIN_FLAGS = {
    "--no-tui": ("no_tui", "true"),
    "--model": ("model", "store"),
    "--data": ("data", "store"),
    "--steps": ("steps", "store"),
    "--output": ("output", "store"),
    "--learning-rate": ("learning_rate", "store"),
    "--lr": ("learning_rate", "store"),
    "--method": ("method", "store"),
    "--dry-run": ("dry_run", "true"),
    "--backend": ("backend", "store"),
    "--precision": ("precision", "store"),
    "--lora-alpha": ("lora_alpha", "store"),
    "--warmup-steps": ("warmup_steps", "store"),
    "--lr-scheduler": ("lr_scheduler", "store"),
    "--save-total-limit": ("save_total_limit", "store"),
    "--early-stopping-patience": ("early_stopping_patience", "store"),
    "--trust-remote-code": ("trust_remote_code", "true"),
    "--allow-pickle": ("allow_pickle", "true"),
    "--gradient-checkpointing": ("gradient_checkpointing", "true"),
    "--gpu-temperature-warn": ("gpu_temperature_warn_c", "store"),
    "--max-gpu-temperature": ("max_gpu_temperature_c", "store"),
    "--gpu-temperature-emergency": ("gpu_temperature_emergency_c", "store"),
    "--gpu-memory-warn": ("gpu_memory_warn_pct", "store"),
    "--gpu-cool-timeout": ("gpu_cool_timeout_s", "store"),
    "--report-to": ("report_to", "store"),
    "--lora-rank": ("lora_rank", "store"),
    "--batch-size": ("batch_size", "store"),
    "--grad-accum": ("grad_accum", "store"),
    "--max-seq-len": ("max_seq_len", "store"),
    "--seed": ("seed", "store"),
    "--threads": ("threads", "store"),
    "--json": ("json", "true"),
    "--rebuild": ("rebuild", "true"),
    "--save-steps": ("save_steps", "store"),
    "--resume": ("resume", "store"),
    "--format": ("data_format", "store"),
    "--on-bad-row": ("on_bad_row", "store"),
    "--min-tokens": ("min_tokens", "store"),
    "--max-tokens": ("max_tokens", "store"),
    "--no-dedupe": ("dedupe", "false"),
    "--near-dedupe": ("near_dedupe", "store"),
    "--max-samples": ("max_samples", "store"),
    "--no-shuffle": ("shuffle", "false"),
    "--overlong": ("overlong", "store"),
    "--text-split": ("text_split", "store"),
    "--chosen-only": ("chosen_only", "true"),
    "--eval-split": ("eval_split", "store"),
    "--eval-steps": ("eval_steps", "store"),
    "--no-packing": ("packing", "false"),
    "--compare-prompts": ("compare_prompts", "store"),
    "--max-nonfinite-steps": ("max_nonfinite_steps", "store"),
    "--objective": ("objective", "store"),
    "--beta": ("dpo_beta", "store"),
    "--label-smoothing": ("dpo_label_smoothing", "store"),
    "--orpo-lambda": ("orpo_lambda", "store"),
    "--precompute-reference": ("precompute_reference", "store"),
}
TRAIN_CHOICES = {
    "method": {"lora", "qlora", "dora", "rslora", "full"},
    "backend": {"auto", "transformers", "unsloth"},
    "precision": {"fp32", "bf16", "fp16"},
    "lr_scheduler": {"cosine", "linear", "constant"},
    "on_bad_row": {"error", "skip"},
    "overlong": {"truncate", "drop"},
    "text_split": {"auto", "blank", "line", "none"},
    "objective": {"sft", "dpo", "orpo"},
    "precompute_reference": {"auto", "on", "off"},
}


def _train_actions() -> list:
    return build_parser()._subparsers._group_actions[0].choices["train"]._actions


def test_train_keeps_every_flag_it_had():
    kinds = {"_StoreAction": "store", "_StoreTrueAction": "true", "_StoreFalseAction": "false"}
    now = {
        flag: (action.dest, kinds.get(type(action).__name__))
        for action in _train_actions()
        for flag in action.option_strings
    }
    assert {flag: now.get(flag) for flag in TRAIN_FLAGS} == TRAIN_FLAGS
    choices = {action.dest: set(action.choices) for action in _train_actions() if action.choices}
    assert all(allowed <= choices[dest] for dest, allowed in TRAIN_CHOICES.items())


def test_every_field_is_declared_with_help_and_every_flag_reaches_the_parser():
    from dataclasses import fields

    from backprop_engine.options import options_of
    from backprop_engine.settings import Settings

    declared = options_of(TrainConfig)
    assert [name for name, option in declared.items() if not option.help] == []
    assert [name for name, option in options_of(Settings).items() if not option.help] == []
    flagged = {name for name, option in declared.items() if option.flags}
    assert flagged == {f.name for f in fields(TrainConfig)} - {"lora_targets"}  # a list of module names
    assert flagged <= {action.dest for action in _train_actions()}
    args = build_parser().parse_args(
        ["train", "--no-packing", "--trust-remote-code", "--weight-decay", "0.1"]
    )
    assert (args.packing, args.trust_remote_code, args.weight_decay, args.dedupe) == (False, True, 0.1, None)


def test_bounds_are_checked_where_they_are_declared(capsys):
    import pytest

    from backprop_engine.cli import main
    from backprop_engine.errors import ConfigError
    from backprop_engine.settings import Settings

    for bad, message in [
        ({"learning_rate": 1.5}, "learning_rate must be in (0, 1), got 1.5"),
        ({"lora_dropout": float("nan")}, "lora_dropout must be in [0, 1), got nan"),
        ({"loss_spike_factor": 1}, "loss_spike_factor must be above 1, got 1"),
        ({"dpo_label_smoothing": 0.5}, "dpo_label_smoothing must be in [0, 0.5), got 0.5"),
        ({"method": "lorax"}, "method must be one of lora, qlora, dora, rslora, full, got 'lorax'"),
        ({"seed": "7"}, "seed must be a whole number, got '7'"),
    ]:
        with pytest.raises(ConfigError) as error:
            TrainConfig(**bad)
        assert error.value.message == message
    assert main(["train", "--max-grad-norm", "0", "--output", "never"]) == 2
    assert "error: max_grad_norm must be positive, got 0.0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="checkpoint_minutes must be between 0 and 1440, got 2000"):
        Settings(checkpoint_minutes=2000).validate()
    # a form names the field by its label, with the same rule
    with pytest.raises(ValueError, match=r"^Steps must be a positive integer, got 0$"):
        option_of("steps").parse("0")
    with pytest.raises(ValueError, match=r"^eval: '1/3' is not a number$"):
        option_of("eval_split").parse("1/3", title="eval")


async def test_the_model_screen_checks_the_rank_as_the_field_declares_it(tmp_path):
    from textual.widgets import Input

    from .tui_helpers import make_app, text_of, write_settings

    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(100, 32)) as pilot:
        app.screen.query_one("#rank", Input).value = "2000"
        await pilot.pause()
        assert (
            text_of(app.screen.query_one("#model-error")) == "LoRA rank must be between 1 and 1024, got 2000"
        )
        app.screen.query_one("#rank", Input).value = "8"
        await pilot.pause()
        assert app.session.lora_rank == 8 and text_of(app.screen.query_one("#model-error")) == ""
