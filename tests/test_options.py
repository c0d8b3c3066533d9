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

    assert FIELDS == [
        ("steps", "Steps", int),
        ("learning_rate", "Learning rate", float),
        ("batch_size", "Batch size", int),
        ("max_seq_len", "Max seq len", int),
    ]
