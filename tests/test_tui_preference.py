"""The app offers DPO/ORPO with the plan's reasons, and charts the reward margin and accuracy of a DPO run."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Checkbox, Input, Select

from backprop_engine.quantizations import DEFAULT_QUANTIZATION, QUANTIZATIONS
from backprop_tui.screens.export import ExportScreen
from backprop_tui.screens.train import TrainScreen
from backprop_tui.widgets.chart import LineChart
from backprop_tui.widgets.rewards import RewardPanel

from .preference_data import write_pairs
from .tui_helpers import make_app, text_of, wait_for, write_fixed_run, write_settings


async def test_train_form_offers_dpo_with_its_reasons_for_preference_data(tmp_path):
    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(100, 36)) as pilot:
        app.session.data = str(write_pairs(tmp_path / "pairs.jsonl", 16))
        await pilot.press("3")
        train = app.screen
        assert isinstance(train, TrainScreen)
        error = train.query_one("#train-error")
        await wait_for(
            pilot, lambda: "preference pairs" in text_of(error), what="the SFT plan refusing pairs"
        )
        assert text_of(error) == (  # the form's own controls and keys, not the CLI's flags
            "16 of 16 rows are preference pairs (chosen/rejected): set Objective (o) to DPO or ORPO to train on "
            "both replies, or tick chosen only on Data (2) for SFT on the chosen replies"
        )
        assert text_of(train.query_one("#reason-steps")) == "not planned: see below"
        await pilot.press("s")  # its process would refuse them as well: the hint stays, nothing starts
        assert train.launched is None and "set Objective (o)" in text_of(error)
        assert not train.query_one("#strength-row").display
        await pilot.press("o")
        assert train.focused is train.query_one("#field-objective", Select)
        train.query_one("#field-objective", Select).value = "dpo"
        await wait_for(
            pilot, lambda: train.plan is not None and "dpo_beta" in train.plan, what="the DPO plan"
        )
        assert text_of(error) == "" and train.query_one("#strength-row").display
        assert "DPO β" in text_of(train.query_one("#strength-label"))
        assert train.query_one("#field-strength", Input).value == "0.1"
        assert text_of(train.query_one("#reason-strength")).startswith("β = 0.1, the DPO paper's value")
        assert "relative to the base" in text_of(train.query_one("#reason-objective"))
        assert "× 0.1 for DPO" in text_of(train.query_one("#reason-learning_rate"))
        assert train._read_form()["objective"] == "dpo" and "dpo_beta" not in train._read_form()
        train.query_one("#field-strength", Input).value = "0.5"
        assert train._read_form()["dpo_beta"] == 0.5
        train.query_one("#field-objective", Select).value = "orpo"
        await wait_for(
            pilot, lambda: train.plan is not None and "orpo_lambda" in train.plan, what="the ORPO plan"
        )
        assert "ORPO λ" in text_of(train.query_one("#strength-label"))


async def test_dashboard_charts_reward_margin_and_accuracy(tmp_path):
    run = write_fixed_run(tmp_path / "runs", "dpo", steps=10)
    lines = (run / "events.jsonl").read_text().splitlines()
    rewards = [
        {
            "event": "rewards",
            "time": float(step),
            "step": step,
            "split": split,
            "loss": 0.69 - 0.02 * step,
            "chosen": 0.01 * step,
            "rejected": -0.01 * step,
            "margin": 0.02 * step,
            "accuracy": min(1.0, 0.5 + 0.05 * step),
            "pairs": 8,
        }
        for step in range(1, 11)
        for split in (["train", "eval"] if step % 5 == 0 else ["train"])
    ]
    (run / "events.jsonl").write_text(
        "\n".join(lines[:-1] + [json.dumps(r) for r in rewards] + lines[-1:]) + "\n"
    )
    app = make_app(write_settings(tmp_path / "home"), watch_run=run)
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.screen.query_one(RewardPanel)
        margin = app.screen.query_one("#margin-chart", LineChart)
        await wait_for(pilot, lambda: len(margin.series["train"]) == 10, what="reward events")
        assert panel.display and len(margin.series["eval"]) == 2
        accuracy = app.screen.query_one("#accuracy-chart", LineChart)
        assert accuracy.series["train"][-1] == (10, 1.0) and margin.series["eval"][-1] == (10, 0.2)
        assert "rewards at step 10: chosen +0.1000" in "\n".join(
            line.text for line in app.screen.query_one("#event-log").lines
        )


async def test_data_screen_shows_pairs_and_their_chosen_only_choice(tmp_path):
    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(80, 24)) as pilot:
        app.session.data = str(write_pairs(tmp_path / "pairs.jsonl", 16))
        await pilot.press("2")
        data = app.screen
        pairs = data.query_one("#data-pairs")
        await wait_for(pilot, lambda: pairs.display, what="the pairs")
        # Pairs are not dropped rows: they get lines of their own, with the count and what trains them.
        assert text_of(data.query_one("#data-filters")) == "nothing filtered out"
        assert text_of(data.query_one("#pairs-count")) == (
            "pairs 16 of 16 rows (chosen/rejected), shown with their chosen replies"
        )
        assert text_of(data.query_one("#pairs-trained")) == (
            "trained by DPO or ORPO (Objective on Train, 3) or by SFT with"
        )
        data.query_one("#filter-chosen_only", Checkbox).value = True
        await wait_for(
            pilot, lambda: app.session.data_options.get("chosen_only") is True, what="the chosen-only data"
        )
        await pilot.press("3")
        train = app.screen
        await wait_for(pilot, lambda: train.plan is not None, what="the SFT plan on the chosen replies")
        assert text_of(train.query_one("#train-error")) == "" and train._read_form()["chosen_only"] is True
        # DPO trains both replies: chosen-only is SFT's, and is not passed on.
        train.query_one("#field-objective", Select).value = "dpo"
        await wait_for(
            pilot, lambda: train.plan is not None and "dpo_beta" in train.plan, what="the DPO plan"
        )
        assert "chosen_only" not in train._read_form()


@pytest.mark.parametrize("objective", ["sft", "dpo"])
async def test_export_keys_start_from_the_default_quantization_for_any_run(tmp_path, objective):
    """The quantization list's cursor starts on the default: enter keeps it, ↓ enter takes the next one
    (it started on f32, the first: enter exported f32)."""
    run = write_fixed_run(tmp_path / "home" / "runs", objective)
    config = run / "config.toml"
    config.write_text(config.read_text() + f'objective = "{objective}"\n')
    app = make_app(write_settings(tmp_path / "home"))
    async with app.run_test(size=(80, 24)) as pilot:
        app.session.run_dir = run
        await pilot.press("4")
        export = app.screen
        assert isinstance(export, ExportScreen) and export.focused is export.query_one("#quantization")
        await pilot.press("enter")
        assert export._quantization() == DEFAULT_QUANTIZATION
        await pilot.press("down", "enter")
        following = list(QUANTIZATIONS)[list(QUANTIZATIONS).index(DEFAULT_QUANTIZATION) + 1]
        assert export._quantization() == following
