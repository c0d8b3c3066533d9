"""Where rows come from: local files of every common type, folders of them, ``save_to_disk`` datasets and
hub ids. JSONL, CSV, text, parquet, saved and hub datasets stream row by row, so previewing or validating
a 2 GB JSONL or a 2 GB JSON array keeps memory flat (a JSON *object* of rows is parsed whole).

A reader yields :class:`RawRow` (where it came from + the decoded value) or :class:`BadRow` (where + why);
turning rows into conversations is the job of :mod:`.formats`.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import DataError

BUILTIN_DATASETS = {"sample": "sample.jsonl"}
DATA_SUFFIXES = {".jsonl", ".json", ".csv", ".parquet", ".txt", ".md"}
TEXT_SUFFIXES = {".txt", ".md"}
TEXT_SPLITS = ("blank", "line", "none")  # documents end at blank lines, at every line, or with the file
ON_BAD_ROW = ("error", "skip")  # a bad row stops the run, or is skipped and counted
OVERLONG = ("truncate", "drop")  # rows longer than max_seq_len
TEXT_SNIFF_LINES = 2000
SENTENCE_ENDS = tuple(".!?\"')»”。！？…")
MAX_ROW_BYTES = 10 * 2**20  # one row beyond this is reported, never decoded (a runaway line, not a chat)
# The fields that identify each row format (the first match wins, in this order).
FORMAT_FIELDS = {
    "preference": (
        "chosen",
        "rejected",
    ),  # before the chat formats: preference rows also hold conversations/prompt
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
_HUB_ID = re.compile(
    r"^(?P<name>[A-Za-z0-9][\w.-]*/[\w.-]+)(?::(?P<config>[\w.-]+))?(?:@(?P<split>[\w.\[\]:%-]+))?$"
)


@dataclass
class RawRow:
    origin: str  # "file:line" or "file: row N"
    value: object
    source: str  # the file (or dataset) the row belongs to; formats are detected per source


@dataclass
class BadRow:
    origin: str
    reason: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.origin}: {self.reason}"


class RowProblem(Exception):
    """Why one row cannot be used; the pipeline turns it into a :class:`BadRow` with the row's origin."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason, self.hint = reason, hint


def type_name(value: object) -> str:
    """A JSON value's type in the words of the JSON spec, for messages about rows."""
    names = {str: "string", int: "number", float: "number", bool: "boolean", list: "list", dict: "object"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


@dataclass(frozen=True)
class HubId:
    name: str
    config: str | None = None
    split: str = "train"

    def __str__(self) -> str:
        return self.name + (f":{self.config}" if self.config else "") + f"@{self.split}"


Source = Path | HubId


def resolve_source(source: str | Path) -> Source:
    """A built-in dataset name, a local file or folder, or a hub id ``org/name[:config][@split]``."""
    text = str(source)
    if text in BUILTIN_DATASETS:
        return Path(str(resources.files("backprop_engine.resources").joinpath(BUILTIN_DATASETS[text])))
    path = Path(text).expanduser()
    if path.exists():
        return path
    match = _HUB_ID.match(text)
    if match and not text.startswith((".", "/", "~")) and path.suffix.lower() not in DATA_SUFFIXES:
        return HubId(match["name"], match["config"], match["split"] or "train")
    raise DataError(
        f"{path}: no such data file",
        f"pass a data file or folder, a hub id org/name[:config][@split], or a built-in dataset: {', '.join(BUILTIN_DATASETS)}",
    )


def data_files(source: Source) -> Sequence[Source]:
    """Expand a folder into its data files (sorted); a ``save_to_disk`` folder counts as one source."""
    if isinstance(source, HubId) or source.is_file() or is_saved_dataset(source):
        return [source]
    files = sorted(
        p
        for p in source.rglob("*")
        if p.is_file()
        and p.suffix.lower() in DATA_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(source).parts)
    )
    if not files:
        raise DataError(
            f"{source}: the directory has no data files",
            f"put {', '.join(sorted(DATA_SUFFIXES))} files in it",
        )
    return files


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()
    )


def read_rows(source: Source, text_split: str = "blank") -> Iterator[RawRow | BadRow]:
    """Stream the rows of one file, saved dataset or hub dataset (``text_split``: see :data:`TEXT_SPLITS`)."""
    if isinstance(source, HubId):
        yield from _read_hub(source)
    elif source.is_dir():
        yield from _read_saved(source)
    elif source.suffix.lower() in TEXT_SUFFIXES:
        yield from _read_text(source, text_split)
    else:
        reader = _READERS.get(source.suffix.lower())
        if reader is None:
            raise DataError(
                f"{source}: unknown data file type {source.suffix!r}",
                f"use one of {', '.join(sorted(DATA_SUFFIXES))}",
            )
        yield from reader(source)


def _lines(path: Path) -> Iterator[tuple[int, str | BadRow]]:
    """(line number, text) per line, decoded one at a time; undecodable or runaway lines become BadRow."""
    with path.open("rb") as handle:
        number = 0
        while True:
            raw = handle.readline(MAX_ROW_BYTES + 1)
            if not raw:
                return
            number += 1
            where = f"{path}:{number}"
            if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):
                size = len(raw) + _skip_rest_of_line(handle)
                yield (
                    number,
                    BadRow(
                        where,
                        f"line is {size / 2**20:.1f} MB, over the {MAX_ROW_BYTES // 2**20} MB limit",
                        "split the row; no single conversation should be this long",
                    ),
                )
                continue
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    number,
                    BadRow(
                        where,
                        f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                        "save the file as UTF-8",
                    ),
                )


def _skip_rest_of_line(handle) -> int:
    skipped = 0
    while chunk := handle.readline(2**20):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _read_jsonl(path: Path) -> Iterator[RawRow | BadRow]:
    for number, line in _lines(path):
        if isinstance(line, BadRow):
            yield line
        elif line.strip():
            try:
                yield RawRow(f"{path}:{number}", json.loads(line), str(path))
            except json.JSONDecodeError as exc:
                yield BadRow(
                    f"{path}:{number}",
                    f"not valid JSON ({exc.msg} at column {exc.colno})",
                    "each line must be one JSON object",
                )


def _read_json(path: Path) -> Iterator[RawRow | BadRow]:
    with path.open("rb") as handle:
        head = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        for line, value in JsonArrayReader(path).rows():
            yield RawRow(f"{path}:{line}", value, str(path))
        return
    # An object of rows ({"rows": [...]} or {"id": row}) is parsed whole; such files are small in practice.
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text", "save the file as UTF-8") from None
    if not text.strip():
        return
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}:{exc.lineno}: {_json_problem(text, exc)}",
            "the file must be one JSON array (or object) of rows",
        ) from None
    if isinstance(document, dict):
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) == 1 and len(document) == 1:
            document = lists[0]
        elif all(isinstance(value, dict) for value in document.values()):
            for key, value in document.items():
                yield RawRow(f"{path}: row {key!r}", value, str(path))
            return
        else:
            raise DataError(
                f"{path}: a JSON object that is not a collection of rows",
                'use [row, ...], {"rows": [row, ...]} or {"id": row, ...}',
            )
    if not isinstance(document, list):
        raise DataError(
            f"{path}: the JSON document is a {type(document).__name__}, not an array of rows",
            "use [row, ...]",
        )
    for index, value in enumerate(document):
        yield RawRow(f"{path}: row {index}", value, str(path))


class JsonArrayReader:
    """The elements of a top-level JSON array, one at a time, with the line each starts on.

    The file is read in chunks and each element is decoded with the standard library's ``raw_decode``, so
    memory holds one element (plus a chunk), never the whole document.
    """

    CHUNK = 2**20
    HINT = "the file must be one JSON array of rows: [row, row, ...]"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text, self.pos, self.line, self.eof = "", 0, 1, False  # self.line: the line of text[0]
        self._utf8 = codecs.getincrementaldecoder("utf-8-sig")()
        self._json = json.JSONDecoder()

    def rows(self) -> Iterator[tuple[int, object]]:
        with self.path.open("rb") as self._handle:
            self._expect("[")
            if self._peek() == "]":
                return
            while True:
                line = self.line + self.text.count("\n", 0, self.pos)
                yield line, self._value()
                self._forget_consumed()
                if self._peek() == "]":
                    return
                self._expect(",")
                if self._peek() == "]":
                    raise self._error("trailing comma before the closing bracket")

    def _value(self) -> object:
        while True:
            try:
                value, end = self._json.raw_decode(self.text, self.pos)
                if end < len(self.text) or self.eof:  # a number at the end of a chunk may go on in the next
                    self.pos = end
                    return value
            except json.JSONDecodeError as exc:
                if self.eof:
                    raise self._error(f"{exc.msg} at column {exc.colno}", exc.pos) from None
            if len(self.text) - self.pos > MAX_ROW_BYTES:
                raise self._error(f"a row over the {MAX_ROW_BYTES // 2**20} MB limit")
            self._read_more()

    def _peek(self) -> str:
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.text) or self.eof:
                return self.text[self.pos : self.pos + 1]
            self._read_more()

    def _expect(self, char: str) -> None:
        found = self._peek()
        if found != char:
            raise self._error(f"expected {char!r}, found {found or 'the end of the file'!r}")
        self.pos += 1

    def _read_more(self) -> None:
        chunk = self._handle.read(self.CHUNK)
        self.eof = not chunk
        try:
            self.text += self._utf8.decode(chunk, final=self.eof)
        except UnicodeDecodeError:
            line = self.line + self.text.count("\n")
            raise DataError(f"{self.path}:{line}: not UTF-8 text", "save the file as UTF-8") from None

    def _forget_consumed(self) -> None:
        self.line += self.text.count("\n", 0, self.pos)
        self.text, self.pos = self.text[self.pos :], 0

    def _error(self, problem: str, at: int | None = None) -> DataError:
        line = self.line + self.text.count("\n", 0, self.pos if at is None else at)
        return DataError(f"{self.path}:{line}: not valid JSON ({problem})", self.HINT)


def _json_problem(text: str, exc: json.JSONDecodeError) -> str:
    before = text[: exc.pos].rstrip()
    if before.endswith(",") and text[exc.pos : exc.pos + 1] in ("]", "}"):
        return "not valid JSON (trailing comma before the closing bracket)"
    return f"not valid JSON ({exc.msg} at column {exc.colno})"


def _read_csv(path: Path) -> Iterator[RawRow | BadRow]:
    problems: list[BadRow] = []

    def text_lines():
        for _, line in _lines(path):
            if isinstance(line, BadRow):
                problems.append(line)
                yield "\n"  # keeps csv's line count in step with the file
            else:
                yield line

    reader = csv.DictReader(text_lines())
    try:
        header = reader.fieldnames or []
        if header and not any(set(columns) <= set(header) for columns in FORMAT_FIELDS.values()):
            wanted = "; ".join("+".join(columns) for columns in FORMAT_FIELDS.values())
            raise DataError(
                f"{path}:1: the CSV has columns {', '.join(header)} but none of the needed ones",
                f"name the columns: {wanted}",
            )
        for row in reader:
            yield from _drain(problems)
            if None in row:
                cells = len(header) + len(row[None])
                yield BadRow(
                    f"{path}:{reader.line_num}",
                    f"row has {cells} cells, the header has {len(header)}",
                    "quote cells that contain commas",
                )
            else:
                yield RawRow(
                    f"{path}:{reader.line_num}",
                    {k: v for k, v in row.items() if v not in ("", None)},
                    str(path),
                )
    except csv.Error as exc:
        raise DataError(
            f"{path}:{reader.line_num}: not valid CSV ({exc})",
            "save the file as comma-separated values with a header row",
        ) from None
    yield from _drain(problems)


def _drain(problems: list[BadRow]) -> Iterator[BadRow]:
    while problems:
        yield problems.pop(0)


def choose_text_split(source: Source, requested: str = "auto") -> tuple[str, str] | None:
    """How a text file splits into documents, and why: ``requested``, or from its first lines (None: not text).

    Blank lines between text mean documents separated by blank lines. A file without any, whose lines mostly
    end a sentence (or are paragraph-long), holds one document per line; else it is one wrapped document.
    """
    if isinstance(source, HubId) or source.suffix.lower() not in TEXT_SUFFIXES:
        return None
    if requested != "auto":
        return requested, "set by --text-split"
    lines: list[str] = []
    blank_between = False
    for _, line in _lines(source):
        if isinstance(line, BadRow):
            continue
        text = line.strip()
        blank_between = blank_between or (not text and bool(lines))
        if text:
            if blank_between:
                return "blank", "documents separated by blank lines"
            lines.append(text)
        if len(lines) >= TEXT_SNIFF_LINES:
            break
    ending = sum(line.endswith(SENTENCE_ENDS) or len(line) > 200 for line in lines)
    if len(lines) >= 2 and ending >= len(lines) / 2:
        return "line", f"no blank lines, {ending} of {len(lines)} lines end a sentence: one document per line"
    return "blank", "no blank lines between documents: the file is one document"


def _read_text(path: Path, split: str = "blank") -> Iterator[RawRow | BadRow]:
    """Raw-text rows (continued pre-training): documents end at blank lines, at every line, or with the file."""
    paragraph: list[str] = []
    start = 0
    for number, line in _lines(path):
        if isinstance(line, BadRow):
            yield line
            continue
        if split == "line":
            if line.strip():
                yield RawRow(f"{path}:{number}", {"text": line.rstrip("\r\n")}, str(path))
        elif line.strip() or (split == "none" and paragraph):
            start = start or number
            paragraph.append(line)
        elif paragraph:
            yield RawRow(f"{path}:{start}", {"text": "".join(paragraph).strip("\n")}, str(path))
            paragraph, start = [], 0
    if paragraph:
        yield RawRow(f"{path}:{start}", {"text": "".join(paragraph).strip("\n")}, str(path))


def _read_parquet(path: Path) -> Iterator[RawRow | BadRow]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise DataError(
            f"{path}: not a readable parquet file ({exc})", "write it with pandas/pyarrow/datasets to_parquet"
        ) from None
    index = 0
    for batch in table.iter_batches(batch_size=1024):
        for value in batch.to_pylist():
            yield RawRow(f"{path}: row {index}", value, str(path))
            index += 1


def _read_saved(path: Path) -> Iterator[RawRow | BadRow]:
    from datasets import DatasetDict, load_from_disk

    dataset = load_from_disk(str(path))  # memory-mapped arrow: rows are read lazily
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise DataError(
                f"{path}: saved dataset has splits {', '.join(dataset)} but no 'train'",
                "point at one split's folder",
            )
        dataset = dataset["train"]
    for index, value in enumerate(dataset):
        yield RawRow(f"{path}: row {index}", value, str(path))


def _read_hub(hub: HubId) -> Iterator[RawRow | BadRow]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(hub.name, hub.config, split=hub.split, streaming=True)
    except Exception as exc:  # datasets raises many unrelated types for "cannot get it"
        raise DataError(
            f"{hub}: cannot load the dataset ({type(exc).__name__}: {exc})",
            "check the id, the split and your connection (HF_HUB_OFFLINE)",
        ) from None
    for index, value in enumerate(dataset):
        yield RawRow(f"{hub}: row {index}", value, str(hub))


_READERS = {
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}
