"""Did it learn? Base vs fine-tune answers at the end of a run (the `comparison` event), a sample reply along
the way, and `backprop compare RUN` on demand (saved as the run's comparison.json) — on the real tiny model."""

from __future__ import annotations

import json

from backprop_engine.cli import main
from backprop_engine.compare import (
    end_of_reply_ids,
    prompts_from_examples,
    prompts_from_texts,
    saved_comparisons,
)
from backprop_engine.data import load_chat_tokenizer
from backprop_engine.data.tokenize import tokenize_conversation
from backprop_engine.events import Comparison


def recorded(run) -> list[dict]:
    return [json.loads(line) for line in run.events_path.read_text().splitlines()]


def test_every_run_ends_with_base_vs_fine_tune_on_held_out_rows(trained_run):
    events = recorded(trained_run("tiny").run)
    kinds = [e["event"] for e in events]
    comparison = next(e for e in events if e["event"] == "comparison")
    assert kinds.index("comparison") < kinds.index("finished")
    assert comparison["source"] == "held-out rows, never trained" and len(comparison["prompts"]) == 3
    assert comparison["base"] != comparison["tuned"]  # 20 steps changed the random-init model's answers
    assert all(comparison["references"])
    final_eval = [e for e in events if e["event"] == "eval"][-1]
    assert comparison["tuned_loss"] == final_eval["loss"] < comparison["base_loss"]
    samples = [e for e in events if e["event"] == "sample"]
    assert [s["step"] for s in samples] == [0, 5, 10, 15]  # the base, then 4 per run
    assert samples[0]["reply"] == comparison["base"][0] and {s["prompt"] for s in samples} == {
        comparison["prompts"][0]
    }


def test_compare_cli_typed_prompts_two_columns_and_the_event_log(trained_run, capsys):
    run = trained_run("tiny").run
    before = recorded(run)
    assert (
        main(
            ["compare", str(run.path), "--prompt", "Arr, what be the weather?", "--prompt", "Who goes there?"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("base vs fine-tune on 2 prompts (--prompt), greedy")
    assert "> Arr, what be the weather?" in out and " | " in out
    assert recorded(run) == before  # events.jsonl is the run's; it still ends with "finished"
    event = saved_comparisons(run.path)[-1]
    assert isinstance(event, Comparison) and event.base != event.tuned and event.base_loss is None
    assert event.prompts == ["Arr, what be the weather?", "Who goes there?"]


def test_compare_cli_on_held_out_rows_matches_the_run(trained_run, capsys):
    run = trained_run("tiny").run
    at_end = next(e for e in recorded(run) if e["event"] == "comparison")
    assert main(["compare", str(run.path), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (
        again["prompts"] == at_end["prompts"]
        and again["tuned"] == at_end["tuned"]
        and again["base"] == at_end["base"]
    )
    assert (
        abs(again["tuned_loss"] - at_end["tuned_loss"]) < 1e-4
        and abs(again["base_loss"] - at_end["base_loss"]) < 1e-4
    )


def test_compare_prompts_file_and_user_errors(trained_run, tmp_path, capsys):
    run = trained_run("tiny").run
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What colour is a carrot?\n\n  Hello there  \n")
    assert (
        main(["compare", str(run.path), "--compare-prompts", str(prompts), "--max-tokens", "8", "--json"])
        == 0
    )
    event = json.loads(capsys.readouterr().out)
    assert (
        event["prompts"] == ["What colour is a carrot?", "Hello there"] and event["source"] == "prompts.txt"
    )
    (tmp_path / "empty.txt").write_text("\n")
    assert main(["compare", str(run.path), "--compare-prompts", str(tmp_path / "empty.txt")]) == 2
    assert "no prompts in this file" in capsys.readouterr().err
    assert main(["compare", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_the_gguf_side_answers_like_the_adapter(trained_run, capsys):
    trainer = trained_run("tiny")
    gguf = trainer.export("gguf", quantization="f16", name="compare-f16")
    assert main(["compare", str(trainer.run.path), "--gguf", str(gguf), "--max-tokens", "12", "--json"]) == 0
    from_gguf = json.loads(capsys.readouterr().out)
    assert main(["compare", str(trainer.run.path), "--max-tokens", "12", "--json"]) == 0
    from_hf = json.loads(capsys.readouterr().out)
    assert from_gguf["tuned_label"] == gguf.name and from_gguf["tuned_loss"] is None
    assert from_gguf["tuned"] == from_hf["tuned"]  # the same prompt tokens, greedy, f16 vs fp32


def test_held_out_prompts_are_what_the_model_saw(tiny_models):
    tokenizer = load_chat_tokenizer(tiny_models["tiny"])
    messages = [
        {"role": "system", "content": "Talk like a pirate."},
        {"role": "user", "content": "Where be the gold?"},
        {"role": "assistant", "content": "Buried, matey."},
    ]
    example = tokenize_conversation(tokenizer, messages, max_len=512)
    (prompt,) = prompts_from_examples(tokenizer, [example], 3)
    assert prompt.text == "Where be the gold?" and prompt.reference == "Buried, matey."
    rendered = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(prompt.ids) == rendered
    (typed,) = prompts_from_texts(tokenizer, ["Where be the gold?"])
    assert typed.text == prompt.text and typed.reference == ""
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in end_of_reply_ids(tokenizer)


def test_a_bad_compare_prompts_file_is_refused_before_training(tmp_path, capsys):
    code = main(
        ["train", "--compare-prompts", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "run")]
    )
    assert code == 2 and "cannot read the comparison prompts" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_no_comparison_asked_scores_the_base_not_at_all(tmp_path):
    from backprop_engine import Trainer
    from backprop_engine.events import Progress

    events = []
    Trainer("tiny", compare_count=0, eval_split=8, on_event=events.append).train(
        "sample", steps=2, output_dir=tmp_path / "run"
    )
    scored = [
        e for e in events if isinstance(e, Progress) and e.stage == "evaluate" and e.done == e.total > 0
    ]
    assert len(scored) == 1 and not any(
        isinstance(e, Comparison) for e in events
    )  # the fine-tune's, at the end
