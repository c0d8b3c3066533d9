"""Progress of every long stage (progress.py): throttled, monotone events that end at their total; the
console's two ways of showing them; cancelling a stage leaves no partial file."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import time
from pathlib import Path

import pytest

from backprop_engine.errors import Cancelled
from backprop_engine.events import ConsoleSink, Event, EventBus, Progress
from backprop_engine.progress import MIN_INTERVAL, STAGES, HubDownload, reporting, track, tracked

ROW = {
    "messages": [
        {"role": "user", "content": "What colour is a carrot?"},
        {"role": "assistant", "content": "Orange, matey."},
    ]
}


def progress_of(events) -> dict[str, list[dict]]:
    """stage → its progress events (as dicts), in order; a stage met again (the export loads a model twice)
    is listed again as ``stage#2``."""
    stages: dict[str, list[dict]] = {}
    for event in events:
        data = event.to_dict() if isinstance(event, Event) else event
        if data.get("event") != "progress":
            continue
        name, count = data["stage"], 1
        while name in stages and stages[name][-1]["done"] == stages[name][-1]["total"] > 0:
            count += 1
            name = f"{data['stage']}#{count}"
        stages.setdefault(name, []).append(data)
    return stages


def assert_well_formed(events: list[dict]) -> None:
    """Monotone counts, the last at its total, never more than one event per MIN_INTERVAL but the last."""
    done = [e["done"] for e in events]
    assert done == sorted(done), done
    assert events[-1]["done"] == events[-1]["total"] > 0
    times = [e["time"] for e in events[:-1]]  # stamped a moment after the throttle read its clock: slack
    assert all(b - a >= MIN_INTERVAL * 0.5 for a, b in itertools.pairwise(times)), times
    assert all(e["unit"] == STAGES[e["stage"]] for e in events)


def test_a_tracker_is_throttled_and_always_ends_at_its_total():
    events: list[Event] = []
    with reporting(events.append):
        started = time.monotonic()
        for _ in tracked("tokenize", range(50_000)):
            pass
        seconds = time.monotonic() - started
    stream = progress_of(events)["tokenize"]
    assert_well_formed(stream)
    assert len(stream) <= seconds / MIN_INTERVAL + 2
    assert stream[-1]["done"] == 50_000 and stream[-1]["rate"] > 0
    assert stream[0]["done"] == 0  # the stage shows as it begins, before its first unit is done


def test_without_a_reporter_tracking_emits_nothing_and_never_cancels():
    with track("convert", 10) as tracker:
        tracker.advance(10)
    assert tracker.done == 10


def test_reporting_leaves_the_import_of_transformers_to_the_engine():
    # Unsloth must be imported before transformers; a run reports from its first line (tests/unsloth checks
    # the order with Unsloth installed).
    import subprocess
    import sys

    script = (
        "import sys; from backprop_engine.progress import reporting\n"
        "with reporting(print): pass\n"
        "sys.exit('transformers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", script], timeout=120).returncode == 0


def test_a_stop_ends_the_stage_at_its_next_unit_and_says_what_was_kept():
    seen = []
    with reporting(lambda event: None, cancelled=lambda: len(seen) >= 3), pytest.raises(Cancelled) as stopped:
        for item in tracked("tokenize", range(10), kept="nothing was written"):
            seen.append(item)
    assert seen == [0, 1, 2]
    assert stopped.value.message == "stopped during tokenize at 3 of 10 rows: nothing was written"


def test_saving_a_checkpoint_is_never_cancelled_it_keeps_the_work():
    with reporting(lambda event: None, cancelled=lambda: True), track("checkpoint", 2) as saved:
        saved.advance(2)
    assert saved.done == 2


def test_console_prints_a_line_per_tenth_off_a_terminal_and_one_updating_line_on_one():
    events = [
        Progress(stage="convert", done=done, total=1000, unit="B", rate=500.0, eta_seconds=1.0, seconds=1.0)
        for done in range(0, 1001, 25)
    ]
    log = io.StringIO()
    sink = ConsoleSink(stream=log)
    for event in events:
        sink(event)
    lines = log.getvalue().splitlines()
    assert len(lines) == 11  # 0 %, 10 %, …, 90 %, then the finished line
    assert lines[-1].startswith("convert 1000 B/1000 B done in")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    sink = ConsoleSink(stream=screen)
    for event in events[:3]:
        sink(event)
    sink(Progress(stage="read", done=5, total=0, unit="rows", rate=5.0, eta_seconds=None, seconds=1.0))
    assert screen.getvalue().count("\n") == 0 and screen.getvalue().count("\r") == 4
    assert "read 5 rows  5 rows/s" in screen.getvalue()
    json_sink = ConsoleSink(stream=io.StringIO(), as_json=True)
    json_sink(events[1])
    assert json.loads(json_sink.stream.getvalue())["done"] == 25  # --json passes every event through


def test_hub_downloads_report_bytes_through_the_hubs_own_progress_helpers():
    """snapshot_download hands ``tqdm_class`` to these helpers (no network here: they are driven directly)."""
    from huggingface_hub.utils.tqdm import _create_progress_bar, hf_thread_map

    events: list[Event] = []
    download = HubDownload()
    with reporting(events.append):
        written = _create_progress_bar(
            cls=download.bar,
            log_level=30,
            desc="Reconstructing (incomplete total...)",
            total=0,
            initial=0,
            unit="B",
            unit_scale=True,
        )
        network = _create_progress_bar(
            cls=download.bar,
            log_level=30,
            desc="Downloading bytes",
            total=0,
            initial=0,
            unit="B",
            unit_scale=True,
        )

        def fetch(size: int) -> None:  # what each file's download does to the shared bars
            written.total += size
            for _ in range(size // 1000):
                written.update(1000)
                network.update(900)
                time.sleep(0.001)

        hf_thread_map(
            fetch, [40_000, 60_000], desc="Fetching 2 files", tqdm_class=download.bar, max_workers=2
        )
        download.finish()
    stream = progress_of(events)
    assert set(stream) == {
        "download"
    }  # one stage: the bytes written; network bytes and file counts stay silent
    assert_well_formed(stream["download"])
    assert stream["download"][-1]["done"] == 100_000


def test_a_run_and_its_export_report_every_stage_a_stop_ends_only_the_stage_it_meets(tmp_path):
    """The run is stopped in its closing answers: they end before the next reply (no comparison), the run keeps
    its adapter, and the export after it is not stopped."""
    from backprop_engine import Trainer
    from backprop_engine.events import Comparison, EvalMetrics, RunFinished

    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(
            json.dumps({"messages": [ROW["messages"][0] | {"content": f"Question {i}?"}, ROW["messages"][1]]})
            + "\n"
            for i in range(80)  # 4 held out: 3 prompts
        )
    )
    events: list[Event] = []
    trainer = Trainer("tiny", on_event=events.append, batch_size=4, max_seq_len=64)

    def stop_in_the_closing_answers(event: Event) -> None:
        closing = any(isinstance(e, EvalMetrics) and e.step == 4 for e in events)
        if closing and isinstance(event, Progress) and event.stage == "answer":
            trainer.control.stop()

    trainer.bus.add(stop_in_the_closing_answers)
    run = trainer.train(data, steps=4, output_dir=tmp_path / "run").run_dir
    stages = progress_of(events)
    assert {"read", "tokenize", "load", "probe", "evaluate", "answer", "checkpoint"} <= set(stages)
    closing = stages.pop(
        [name for name in stages if name.startswith("answer")][-1]
    )  # after the base's, samples
    assert closing[-1]["done"] < closing[-1]["total"]  # not one reply more than the stop found
    assert not any(isinstance(e, Comparison) for e in events)
    for stream in stages.values():
        assert_well_formed(stream)
    assert [e.steps for e in events if isinstance(e, RunFinished)] == [4]
    assert (run / "adapter" / "adapter_config.json").is_file()
    written = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in written]
    assert kinds.index("progress") < kinds.index("run_started")  # load and probe come before the first step

    events.clear()
    trainer.export("gguf", quantization="q4_0")
    stages = progress_of(events)
    assert {"load", "merge", "save", "load#2", "convert", "quantize", "verify"} <= set(
        stages
    )  # load#2: the reference
    for stream in stages.values():
        assert_well_formed(stream)


def test_cancel_while_tokenizing_leaves_no_run_and_no_cache(tmp_path):
    from backprop_engine import Trainer
    from backprop_engine.data.cache import cache_folder

    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(
            json.dumps({"messages": [ROW["messages"][0] | {"content": f"Row {i}?"}, ROW["messages"][1]]})
            + "\n"
            for i in range(200)
        )
    )
    output = tmp_path / "launched"
    output.mkdir()  # as the app's launch makes it: the run is held, and its channel served, from the start
    cached = set(cache_folder().glob("*.npz")) if cache_folder().is_dir() else set()
    trainer = Trainer("tiny")
    trainer.bus.add(
        lambda event: isinstance(event, Progress) and event.stage == "tokenize" and trainer.control.stop()
    )
    with pytest.raises(Cancelled, match=r"^stopped during tokenize at \d+ of 200 rows: nothing was kept"):
        trainer.train(data, steps=2, output_dir=output)
    assert list(output.iterdir()) == []
    assert (set(cache_folder().glob("*.npz")) if cache_folder().is_dir() else set()) == cached


def test_cancel_while_converting_leaves_no_partial_gguf(tmp_path):
    from backprop_engine.export.pipeline import ExportOptions, export, model_source

    stop = []
    bus = EventBus(
        [lambda event: isinstance(event, Progress) and event.stage == "convert" and stop.append(event)]
    )
    with reporting(bus.emit, cancelled=lambda: bool(stop)), pytest.raises(Cancelled) as stopped:
        export(model_source("tiny"), ExportOptions(("q4_0",), output=tmp_path / "out", verify=False), bus)
    assert stopped.value.message.startswith("stopped during convert at ")
    assert "no partial .tiny.f16.gguf was left" in stopped.value.message
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


def test_the_cli_says_what_a_stopped_export_kept(tmp_path, capsys, monkeypatch):
    """Ctrl+C during the export: the stage stops at its next unit; exit 130, no traceback, no partial file."""
    import signal

    from backprop_engine import cli

    def interrupt_at_first_tensor(event) -> None:
        if isinstance(event, Progress) and event.stage == "convert":
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(cli, "_terminal_stderr", lambda: io.StringIO())
    original = ConsoleSink.__call__
    monkeypatch.setattr(
        ConsoleSink, "__call__", lambda self, event: (interrupt_at_first_tensor(event), original(self, event))
    )
    code = cli.main(["export", "tiny", "-q", "f16", "--no-verify", "--output", str(tmp_path / "out")])
    assert code == 130
    err = capsys.readouterr().err
    assert err.startswith("stopped during convert at ") and "Traceback" not in err
    assert list(Path(tmp_path / "out").iterdir()) == []


def test_a_detached_export_stopped_by_the_app_says_what_it_kept(trained_run, tmp_path, monkeypatch, capsys):
    """The Export screen's x sends SIGTERM to the export process it started (detach.launch, which
    tests/test_tui_detach.py runs for real): here the process's own entry point runs in this one, and the
    signal comes at the first tensor of the convert stage, which ends at its next unit."""
    import shutil
    import signal

    from backprop_engine import detach

    run = tmp_path / "run"
    shutil.copytree(trained_run("tiny").run.path, run)
    shutil.rmtree(run / "export", ignore_errors=True)  # other tests' exports of the shared run
    spec = detach.LaunchSpec(
        action="export", run_dir=str(run), export={"quantization": "q4_0", "verify": False}
    )
    (run / spec.launch_file).write_text(json.dumps(dataclasses.asdict(spec)))
    original = ConsoleSink.__call__

    def terminate_at_the_first_tensor(self, event) -> None:
        if isinstance(event, Progress) and event.stage == "convert":
            signal.raise_signal(signal.SIGTERM)
        original(self, event)

    monkeypatch.setattr(ConsoleSink, "__call__", terminate_at_the_first_tensor)
    hangup = signal.getsignal(signal.SIGHUP)  # the export process ignores SIGHUP (an SSH drop)
    try:
        assert detach.main([str(run / spec.launch_file)]) == 2
    finally:
        signal.signal(signal.SIGHUP, hangup)
    written = [json.loads(line) for line in (run / detach.EXPORT_EVENTS).read_text().splitlines()]
    stopped = [e for e in written if e["event"] == "export_stopped"]
    assert stopped and stopped[0]["message"].startswith("stopped during convert at ")
    assert stopped[0]["message"] in capsys.readouterr().err  # the log's "error:" line the app shows
    assert sorted(p.name for p in (run / "export").iterdir()) == []  # no GGUF, no temporary file


def test_a_stop_ends_llama_cpps_quantize_mid_file_and_leaves_no_partial_gguf(
    tiny_models, tmp_path, monkeypatch
):
    """llama.cpp cannot be stopped: a file worth stopping is quantized in a child process, which a stop kills."""
    from backprop_engine.export import quantize
    from backprop_engine.export.gguf_writer import convert_hf_to_gguf

    f16 = convert_hf_to_gguf(tiny_models["tiny"], tmp_path / "tiny.f16.gguf", "f16")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(quantize, "IN_PROCESS_BELOW", 0)  # the tiny file as if it were large
    monkeypatch.setattr(quantize, "held_at", lambda stage: str(tmp_path / "never"))  # after its first tensor
    seen: list[Progress] = []
    stop = lambda: any(e.done for e in seen)  # noqa: E731
    with reporting(seen.append, cancelled=stop), pytest.raises(Cancelled) as stopped:
        quantize.quantize_gguf(f16, out / "tiny.q4_0.gguf", "q4_0")
    done, total = (int(n) for n in stopped.value.message.split(" at ")[1].split(" tensors")[0].split(" of "))
    assert 1 <= done < total == 21, stopped.value.message  # at the next tensor, not after the file
    assert stopped.value.message.endswith(
        ": no partial tiny.q4_0.gguf was left (it is written under a temporary name)"
    )
    assert list(out.iterdir()) == []


def test_a_stop_during_an_evaluation_ends_it_at_the_next_batch_the_checkpoint_is_still_saved(tmp_path):
    """Stopped in the held-out loss at step 2: no eval result, the step's checkpoint is written whole (it is
    never cancelled), then the run ends: no third step, no closing evaluation or answers."""
    from backprop_engine import Trainer
    from backprop_engine.events import CheckpointSaved, Comparison, EvalMetrics, RunFinished, StepMetrics

    events: list[Event] = []
    settings = {"eval_steps": 2, "save_steps": 2, "logging_steps": 1}
    trainer = Trainer("tiny", on_event=events.append, batch_size=4, max_seq_len=64, **settings)

    def stop_in_the_evaluation_at_step_2(event: Event) -> None:
        stepped = any(isinstance(e, StepMetrics) and e.step == 2 for e in events)
        if stepped and isinstance(event, Progress) and event.stage == "evaluate":
            trainer.control.stop()

    trainer.bus.add(stop_in_the_evaluation_at_step_2)
    run = trainer.train("sample", steps=4, output_dir=tmp_path / "run").run_dir
    since = events[next(i for i, e in enumerate(events) if isinstance(e, StepMetrics) and e.step == 2) :]
    scored = [e for e in since if isinstance(e, Progress) and e.stage == "evaluate"]
    assert scored[-1].done < scored[-1].total  # ended at the next batch of several
    assert not any(isinstance(e, (EvalMetrics, Comparison)) for e in since)
    assert [e.step for e in since if isinstance(e, CheckpointSaved)] == [2]
    assert not any(isinstance(e, StepMetrics) and e.step > 2 for e in events)
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert finished and finished[0].steps == 2 and finished[0].stopped_early
    assert (run / "checkpoints" / "step-000002").is_dir() and (
        run / "adapter" / "adapter_config.json"
    ).is_file()
