"""Data sources and formats: every file type, every row format, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backprop_engine.cli import main
from backprop_engine.data import DataReport, DataSpec, load_conversations
from backprop_engine.data.pipeline import load_examples
from backprop_engine.data.sources import HubId, read_rows, resolve_source
from backprop_engine.errors import DataError

CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Arr!"}]


def examples_of(*sources, **settings):
    spec = DataSpec([str(s) for s in sources], on_bad_row="error", shuffle=False, dedupe=False, **settings)
    return load_examples(spec, DataReport(sources=spec.sources))


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


ROW_FORMATS = {
    "messages": {"messages": [{"role": "system", "content": "S"}, *CHAT]},
    "sharegpt": {
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Arr!"},
        ]
    },
    "alpaca": {"instruction": "Hi", "input": "", "output": "Arr!", "system": "S"},
    "prompt_completion": {
        "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}],
        "completion": "Arr!",
    },
}


@pytest.mark.parametrize("name", ROW_FORMATS)
def test_every_chat_format_becomes_the_same_conversation(tmp_path, name):
    [example] = examples_of(write_jsonl(tmp_path / "d.jsonl", [ROW_FORMATS[name]]))
    assert example.format == name
    assert example.messages == [{"role": "system", "content": "S"}, *CHAT]


def test_alpaca_input_and_prompt_completion_strings(tmp_path):
    rows = [{"instruction": "Translate", "input": "hola", "output": "hello"}]
    [alpaca] = examples_of(write_jsonl(tmp_path / "a.jsonl", rows))
    assert alpaca.messages == [
        {"role": "user", "content": "Translate\n\nhola"},
        {"role": "assistant", "content": "hello"},
    ]
    [completion] = examples_of(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi", "completion": "Arr!"}]))
    assert completion.messages == CHAT


def test_sharegpt_aliases_and_tool_messages(tmp_path):
    turns = [
        {"from": "user", "value": "a"},
        {"from": "chatgpt", "value": "b"},
        {"from": "human", "value": "c"},
        {"from": "model", "value": "d"},
    ]
    [example] = examples_of(write_jsonl(tmp_path / "s.jsonl", [{"conversations": turns}]))
    assert [m["role"] for m in example.messages] == ["user", "assistant", "user", "assistant"]
    call = {"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}
    tools = [
        {"role": "user", "content": "?"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "content": "rain", "name": "weather"},
        {"role": "assistant", "content": "Rain."},
    ]
    [example] = examples_of(write_jsonl(tmp_path / "t.jsonl", [{"messages": tools}]))
    assert example.has_tool_calls and example.messages[1]["tool_calls"] == [call]


def test_text_rows_and_documents_split_on_blank_lines(tmp_path):
    (tmp_path / "notes.md").write_text("# Title\nfirst para\n\n\nsecond\npara\n", encoding="utf-8")
    first, second = examples_of(tmp_path / "notes.md")
    assert (first.format, first.text, first.origin) == (
        "text",
        "# Title\nfirst para",
        f"{tmp_path / 'notes.md'}:1",
    )
    assert (second.text, second.origin) == ("second\npara", f"{tmp_path / 'notes.md'}:5")
    [row] = examples_of(write_jsonl(tmp_path / "t.jsonl", [{"text": "raw words"}]))
    assert row.text == "raw words" and row.messages == []


def test_json_array_object_csv_parquet_and_a_folder(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps([{"messages": CHAT}]), encoding="utf-8")
    (folder / "b.json").write_text(
        json.dumps({"rows": [{"prompt": "Hi", "completion": "Arr!"}]}), encoding="utf-8"
    )
    (folder / "c.json").write_text(json.dumps({"id-1": {"messages": CHAT}}), encoding="utf-8")
    (folder / "d.csv").write_text(
        'instruction,input,output\nHi,,Arr!\n"Say, hi",x,"Arr, hi!"\n', encoding="utf-8"
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"prompt": "Hi", "completion": "Arr!"}] * 3), folder / "e.parquet")
    (folder / ".hidden.jsonl").write_text("not json\n")
    (folder / "readme.rst").write_text("ignored: not a data suffix\n")
    examples = examples_of(folder)
    assert [e.format for e in examples] == ["messages", "prompt_completion", "messages"] + ["alpaca"] * 2 + [
        "prompt_completion"
    ] * 3
    assert examples[2].origin == f"{folder / 'c.json'}: row 'id-1'"
    assert examples[4].origin == f"{folder / 'd.csv'}:3"
    assert examples[4].messages[0]["content"] == "Say, hi\n\nx"
    assert examples[7].origin == f"{folder / 'e.parquet'}: row 2"


def test_saved_dataset_and_hub_loader_on_a_local_folder(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"messages": CHAT}, {"messages": CHAT + CHAT}]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    DatasetDict({"train": Dataset.from_list(rows[:1])}).save_to_disk(str(tmp_path / "saved-dict"))
    assert [len(e.messages) for e in examples_of(tmp_path / "saved")] == [2, 4]
    assert [len(e.messages) for e in examples_of(tmp_path / "saved-dict")] == [2]
    # Hub ids go through datasets.load_dataset (streaming); offline it is exercised on a local data folder.
    hub_folder = tmp_path / "hub"
    hub_folder.mkdir()
    write_jsonl(hub_folder / "train.jsonl", rows)
    values = [row.value for row in read_rows(HubId(str(hub_folder), None, "train"))]
    assert [len(v["messages"]) for v in values] == [2, 4]


def test_hub_ids_are_parsed_and_offline_failure_is_clear(tmp_path):
    assert resolve_source("org/name:cfg@test") == HubId("org/name", "cfg", "test")
    assert resolve_source("org/name") == HubId("org/name", None, "train")
    for missing in (str(tmp_path / "missing.jsonl"), "data/typo.jsonl"):
        with pytest.raises(DataError, match="no such data file"):
            resolve_source(missing)
    with pytest.raises(DataError, match="org/nothing-here@train: cannot load the dataset"):
        examples_of("org/nothing-here")


def test_load_conversations_keeps_its_api():
    conversations = load_conversations("sample")
    assert len(conversations) == 320 and conversations[0][-1]["role"] == "assistant"


BAD_INPUTS = {
    # name: (file name, bytes, expected "line: reason" fragment)
    "not-utf8": ("d.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', ":2: not UTF-8 text (byte 0xe9"),
    "invalid-json": ("d.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": \n', ":3: not valid JSON"),
    "trailing-comma": (
        "d.json",
        b'[\n {"text": "a"},\n {"text": "b"},\n]\n',
        ":4: not valid JSON (trailing comma",
    ),
    "missing-fields": ("d.jsonl", b'{"title": "x"}\n', ":1: row has no 'messages' field"),
    "content-number": (
        "d.jsonl",
        b'{"messages": [{"role": "user", "content": 5}]}\n',
        ":1: message 0 'content' is a number, expected a string",
    ),
    "content-object": (
        "d.jsonl",
        b'{"messages": [{"role": "user", "content": {"a": 1}}]}\n',
        ":1: message 0 'content' is an object, expected a string or a list of parts",
    ),
    "empty-conversation": ("d.jsonl", b'{"messages": []}\n', ":1: the conversation is empty"),
    "unknown-role": (
        "d.jsonl",
        b'{"messages": [{"role": "bot", "content": "x"}]}\n',
        ":1: message 0 has unknown role 'bot'",
    ),
    "no-assistant": (
        "d.jsonl",
        b'{"messages": [{"role": "user", "content": "x"}]}\n',
        ":1: the conversation has no assistant turn",
    ),
    "sharegpt-empty": (
        "d.jsonl",
        b'{"conversations": [], "system": "S"}\n',
        ":1: the conversation has no assistant turn",
    ),
    "sharegpt-unknown": (
        "d.jsonl",
        b'{"conversations": [{"from": "narrator", "value": "x"}]}\n',
        ":1: turn 0 has unknown speaker 'narrator'",
    ),
    "empty-file": ("d.jsonl", b"", ": the file is empty"),
    "csv-columns": (
        "d.csv",
        b"question,answer\nhi,yo\n",
        ":1: the CSV has columns question, answer but none of the needed ones",
    ),
    "mixed-formats": (
        "d.jsonl",
        b'{"text": "a"}\n{"prompt": "p", "completion": "c"}\n',
        ":2: mixed formats: this row is prompt_completion but the file's first row is text",
    ),
    "not-an-object": ("d.jsonl", b'["a", "b"]\n', ":1: row is a JSON list, not an object"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_data_check_reports_each_bad_input_on_one_line(tmp_path, capsys, name):
    file_name, content, expected = BAD_INPUTS[name]
    path = tmp_path / file_name
    path.write_bytes(content)
    before = sorted(tmp_path.rglob("*"))
    assert main(["data", "check", str(path)]) == 2
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith(str(path))]
    assert problems and expected in problems[0], out
    assert "(hint: " in problems[0]
    assert sorted(tmp_path.rglob("*")) == before, "nothing written"


def test_bom_is_accepted_and_good_files_pass(tmp_path, capsys):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"messages": CHAT}).encode() + b"\n")
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfprompt,completion\nHi,Arr!\n")
    assert main(["data", "check", str(path), str(csv_path), "sample"]) == 0
    assert capsys.readouterr().out.startswith("322 rows read (messages 321, prompt_completion 1); 0 bad")


def test_a_20_mb_line_is_reported_without_decoding_it(tmp_path, capsys):
    path = tmp_path / "big.jsonl"
    with path.open("wb") as handle:
        handle.write(json.dumps({"messages": CHAT}).encode() + b"\n")
        handle.write(b'{"text": "' + b"a" * (20 * 2**20) + b'"}\n')
        handle.write(json.dumps({"messages": CHAT}).encode() + b"\n")
    assert main(["data", "check", str(path)]) == 2
    out = capsys.readouterr().out
    assert out.startswith("3 rows read (messages 2); 1 bad")
    assert f"{path}:2: line is 20.0 MB, over the 10 MB limit" in out


def test_folder_without_data_files_and_many_bad_rows(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.rst").write_text("x")
    assert main(["data", "check", str(empty)]) == 2
    assert f"{empty}: the directory has no data files" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nope\n" * 500)
    assert main(["data", "check", str(bad), "--on-bad-row", "skip"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("500 rows read (no good rows); 500 bad") and "... and 300 more" in out
    assert main(["data", "check", str(bad), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["bad_row_count"] == 500


def test_training_on_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    data = tmp_path / "d.json"
    data.write_text('[{"text": "a"},]')
    code = main(["train", "--data", str(data), "--output", str(tmp_path / "run"), "--steps", "1"])
    assert code == 2
    error, hint = capsys.readouterr().err.strip().splitlines()
    assert error == f"error: {data}:1: not valid JSON (trailing comma before the closing bracket)"
    assert hint.startswith("hint: ") and not (tmp_path / "run").exists()


def test_a_json_array_streams_element_by_element(tmp_path, monkeypatch):
    from backprop_engine.data import sources

    rows = [
        {"messages": CHAT, "n": 12345678, "note": "señor ✓"},
        {"text": "x" * 50},
        {"prompt": "p", "completion": "c", "n": 1.5e3},
    ]
    path = tmp_path / "rows.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(rows, indent=1, ensure_ascii=False).encode())
    monkeypatch.setattr(sources.JsonArrayReader, "CHUNK", 7)  # every element and number straddles chunks
    parsed = list(sources.JsonArrayReader(path).rows())
    assert [value for _, value in parsed] == rows
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    assert [lines[line - 1].strip() for line, _ in parsed] == ["{"] * 3
    path.write_text('[\n{"text": "a"},\n{"text": "b"}\n')
    with pytest.raises(
        DataError, match=r"rows.json:4: not valid JSON \(expected ',', found 'the end of the file'\)"
    ):
        list(sources.JsonArrayReader(path).rows())
    monkeypatch.setattr(sources, "MAX_ROW_BYTES", 100)
    path.write_text('[{"text": "' + "a" * 500 + '"}]')
    with pytest.raises(DataError, match=r"rows.json:1: not valid JSON \(a row over the 0 MB limit\)"):
        list(sources.JsonArrayReader(path).rows())
