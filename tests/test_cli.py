"""The command line: end to end through subprocesses, bad input, and a light ``--help``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backprop_engine.cli import main

BACKPROP = str(Path(sys.executable).with_name("backprop"))


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([BACKPROP, *args], capture_output=True, text=True, input=stdin, timeout=600)


@pytest.mark.parametrize("entry", ["backprop_tui.launch", "backprop_engine.cli"])
def test_help_does_not_import_torch(entry):
    code = (
        "import sys, contextlib, io\n"
        f"from {entry} import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "assert 'train' in out.getvalue()\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'llama_cpp', 'textual') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_console_script_is_the_apps_launcher():
    from backprop_engine.tomlcompat import tomllib

    scripts = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"][
        "scripts"
    ]
    assert scripts == {"backprop": "backprop_tui.launch:main", "backpropagate": "backprop_tui.launch:main"}


def test_app_commands_need_the_launcher(capsys):
    assert main(["watch", "runs/x"]) == 2  # the engine alone: one clear line, no app
    assert "opens the terminal app" in capsys.readouterr().err


def test_no_arguments_prints_help():
    result = run_cli()
    assert result.returncode == 0 and "usage: backprop" in result.stdout


def test_train_export_chat_end_to_end(tmp_path):
    run_dir = tmp_path / "pirate"
    train = run_cli(
        "train", "--no-tui", "--model", "tiny", "--data", "sample", "--steps", "30", "--output", str(run_dir)
    )
    assert train.returncode == 0, train.stderr
    lines = train.stdout.strip().splitlines()
    assert lines[-1] == str(run_dir)
    assert sum(line.startswith("step ") for line in lines) >= 6  # step 1, every 5 steps, and the last

    export = run_cli("export", str(run_dir), "--quantization", "q4_k_m")
    assert export.returncode == 0, export.stderr
    gguf = Path(export.stdout.strip())
    assert gguf == run_dir / "export" / "pirate.q4_k_m.gguf" and gguf.is_file()

    chat = run_cli("chat", str(run_dir), "--prompt", "What colour is a carrot?", "--max-tokens", "24")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.startswith("Arr"), chat.stdout  # 30 steps are enough to pick up the pirate style

    piped = run_cli("chat", str(gguf), "--max-tokens", "8", stdin="Hello\nWhat is 2 plus 2?\n")
    assert piped.returncode == 0 and len(piped.stdout.strip().splitlines()) >= 1


def test_demo_prints_every_artefact(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path / "demo"), "--steps", "10"]) == 0
    out = capsys.readouterr().out
    for label in ("run directory", "adapter", "events", "gguf (q4_k_m)", "model"):
        assert f"\n{label}" in out
    assert (tmp_path / "demo" / "export" / "demo.q4_k_m.gguf").is_file()


def _bad_data(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such data file"),
        ("", "the file is empty"),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{oops\n',
            ":2: not valid JSON",
        ),
        ('{"title": "hello"}\n', ":1: row has no 'messages' field"),
    ],
    ids=["missing", "empty", "not-json", "no-messages"],
)
def test_bad_data_is_one_clear_line(tmp_path, capsys, content, expected):
    data = tmp_path / "data.jsonl" if content is None else _bad_data(tmp_path, "data.jsonl", content)
    output = tmp_path / "run"
    code = main(
        ["train", "--data", str(data), "--output", str(output), "--steps", "2", "--on-bad-row", "error"]
    )
    assert code == 2
    err = capsys.readouterr().err
    error_line, hint_line = err.strip().splitlines()
    assert error_line.startswith(f"error: {data}") and expected in error_line
    assert hint_line.startswith("hint: ")
    assert not output.exists(), "nothing is created for a run that could not start"


def test_bad_data_through_a_subprocess_has_no_traceback(tmp_path):
    data = _bad_data(tmp_path, "data.jsonl", "not json\n")
    result = run_cli("train", "--data", str(data), "--output", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: {data}:1: not valid JSON" in result.stderr


@pytest.mark.parametrize("model", ["no-such-preset", "./no/such/folder"])
def test_unknown_model(tmp_path, capsys, model):
    assert main(["train", "--model", model, "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "error: unknown model" in err and "hint: presets: tiny" in err
    assert not (tmp_path / "run").exists()


def test_output_dir_not_writable(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    assert main(["train", "--steps", "2", "--output", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert f"error: output directory {blocker / 'run'} is not writable" in err
    assert blocker.read_text() == "I am a file"


def test_existing_run_is_not_overwritten(trained_run, capsys):
    run = trained_run("tiny").run
    before = run.config_path.read_bytes()
    assert main(["train", "--steps", "2", "--output", str(run.path)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert run.config_path.read_bytes() == before


def test_unknown_quantization(trained_run, capsys):
    run = trained_run("tiny").run
    before = sorted(run.path.rglob("*"))
    assert main(["export", str(run.path), "--quantization", "q9_z"]) == 2
    err = capsys.readouterr().err
    assert "error: unknown quantization 'q9_z'" in err and "hint: choose one of: f32, f16" in err
    assert sorted(run.path.rglob("*")) == before


def test_export_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    assert f"error: {tmp_path}: not a run directory" in capsys.readouterr().err
