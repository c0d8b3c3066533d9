"""The dataset pipeline: load → normalize → filter → render/mask → length policy → split, with a report.

Two entry points share every step:

- :func:`prepare_data` for training: all rows, tokenized once and cached by a fingerprint of
  (data, tokenizer, template, settings).
- :class:`DataPreview` for ``data inspect`` and the TUI: streams every row to count formats and bad rows,
  but tokenizes only a seeded reservoir sample, and keeps it so changing a filter only re-runs the filters.

Both take a :class:`DataSpec` and return a :class:`DataReport`.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace

from ..errors import ConfigError, DataError, PairsNeedObjective
from ..progress import tracked
from .filters import drop_exact_duplicates, drop_near_duplicates, shuffled, split_eval
from .formats import FORMATS, Example, FormatTracker
from .pairs import OBJECTIVES, PreferenceExample, tokenize_pair
from .sources import (
    ON_BAD_ROW,
    OVERLONG,
    TEXT_SPLITS,
    BadRow,
    RowProblem,
    choose_text_split,
    data_files,
    read_rows,
    resolve_source,
)
from .tokenize import (
    PER_TURN,
    PLAIN_TOOLS,
    REASONING_DROPPED,
    TemplateSupport,
    TokenizedExample,
    marked_spans,
    render_for_training,
    tokenize_rendered,
    tokenize_text,
)

MAX_REPORTED_BAD_ROWS = 200
NOTHING_KEPT = "nothing was kept (the data cache is written only once every row is tokenized)"
SEQ_LEN_MULTIPLE = 64
HISTOGRAM_BINS = 10


@dataclass
class DataSpec:
    """Which rows to use and how to shape them. Zero means "off" (or "from the data" for max_seq_len)."""

    sources: list[str]
    format: str = "auto"  # auto | preference | messages | sharegpt | alpaca | prompt_completion | text
    on_bad_row: str = "skip"  # error | skip
    min_tokens: int = 0
    max_tokens: int = 0
    dedupe: bool = True
    near_dedupe: float = 0.0  # estimated Jaccard similarity above which rows count as duplicates
    max_samples: int = 0
    shuffle: bool = True
    seed: int = 42
    eval_split: float = 0.0  # below 1: a fraction, 1 or more: a number of rows
    max_seq_len: int = 0
    overlong: str = "truncate"  # truncate | drop
    text_split: str = (
        "auto"  # .txt/.md documents: auto | blank (lines) | line (one per line) | none (the whole file)
    )
    chosen_only: bool = False  # preference pairs: train prompt + chosen as a chat
    objective: str = "sft"  # dpo | orpo: preference rows become tokenized pairs (data/pairs.py)

    def __post_init__(self) -> None:
        self.sources = [str(s) for s in ([self.sources] if isinstance(self.sources, str) else self.sources)]
        if not self.sources:
            raise ConfigError("no data given", "pass at least one data file, folder or hub id")
        choices = {
            "format": ("auto", *FORMATS),
            "on_bad_row": ON_BAD_ROW,
            "overlong": OVERLONG,
            "text_split": ("auto", *TEXT_SPLITS),
            "objective": OBJECTIVES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("min_tokens", "max_tokens", "max_samples", "max_seq_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {getattr(self, name)!r}")
        if not 0 <= self.near_dedupe < 1:
            raise ConfigError(
                f"near_dedupe must be in [0, 1), got {self.near_dedupe!r}", "e.g. 0.85; 0 turns it off"
            )
        if self.eval_split < 0 or (self.eval_split >= 1 and self.eval_split != int(self.eval_split)):
            raise ConfigError(
                f"eval_split must be a fraction below 1 or a whole number of rows, got {self.eval_split!r}"
            )

    @property
    def refuses_pairs(self) -> bool:
        """SFT without chosen-only cannot train a chosen/rejected pair."""
        return self.objective == "sft" and not self.chosen_only

    @classmethod
    def from_config(cls, config) -> DataSpec:
        """The data settings of a :class:`~backprop_engine.config.TrainConfig`."""
        names = {f.name for f in fields(cls)} - {"sources", "format"}
        return cls([config.data], format=config.data_format, **{n: getattr(config, n) for n in names})


@dataclass
class FilterStep:
    name: str
    removed: int


@dataclass
class LengthStats:
    count: int
    mean: float
    p50: int
    p95: int
    p99: int
    max: int
    histogram: list[tuple[int, int, int]]  # (from, to, rows), token lengths before truncation

    @classmethod
    def of(cls, lengths: list[int]) -> LengthStats | None:
        if not lengths:
            return None
        ordered = sorted(lengths)
        return cls(
            len(ordered),
            sum(ordered) / len(ordered),
            _percentile(ordered, 50),
            _percentile(ordered, 95),
            _percentile(ordered, 99),
            ordered[-1],
            _histogram(ordered),
        )


@dataclass
class Sample:
    origin: str
    format: str
    spans: list[tuple[str, bool]]  # (text, trained)


@dataclass(kw_only=True)
class DataReport:
    sources: list[str]
    rows_read: int = 0
    formats: dict[str, int] = field(default_factory=dict)
    bad_rows: list[BadRow] = field(default_factory=list)  # the first MAX_REPORTED_BAD_ROWS
    bad_row_count: int = 0
    filters: list[FilterStep] = field(default_factory=list)
    lengths: LengthStats | None = None
    max_seq_len: int = 0
    max_seq_len_from_data: bool = False
    truncated: int = 0
    trained_fraction: float = 0.0
    train_examples: int = 0
    eval_examples: int = 0
    sampled_rows: int = 0  # 0: statistics over every row; else over a seeded sample of this many rows
    samples: list[Sample] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cached: bool = False
    mask_schemes: dict[str, int] = field(
        default_factory=dict
    )  # conversations per scheme (tokenize.WHOLE / PER_TURN)
    text_split: dict[str, str] = field(
        default_factory=dict
    )  # text file → the rule its documents were read by, and why

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataReport:
        data = dict(data)
        data["bad_rows"] = [BadRow(**b) for b in data["bad_rows"]]
        data["filters"] = [FilterStep(**f) for f in data["filters"]]
        data["samples"] = [
            Sample(s["origin"], s["format"], [tuple(x) for x in s["spans"]]) for s in data["samples"]
        ]
        if data["lengths"]:
            data["lengths"] = LengthStats(
                **{**data["lengths"], "histogram": [tuple(h) for h in data["lengths"]["histogram"]]}
            )
        return cls(**data)


@dataclass
class PreparedData:
    train: list[TokenizedExample]
    eval: list[TokenizedExample]
    report: DataReport


def iter_rows(
    spec: DataSpec, keep_going: bool = False, report: DataReport | None = None
) -> Iterator[Example | BadRow]:
    """Every row of every source as an Example or a BadRow (streaming; empty files are bad rows).

    A file that cannot be read at all raises DataError, or with ``keep_going`` becomes one BadRow. The rule
    each text file was split into documents by goes into ``report.text_split``.
    """
    tracker = FormatTracker(spec.format)
    splits = report.text_split if report is not None else {}
    for source in spec.sources:
        try:
            paths = data_files(resolve_source(source))
        except DataError as error:
            if not keep_going:
                raise
            yield _file_problem(error)
            continue
        for path in paths:
            try:
                yield from _file_rows(path, tracker, spec.text_split, splits)
            except DataError as error:
                if not keep_going:
                    raise
                yield _file_problem(error)


def _file_problem(error: DataError) -> BadRow:
    """A file that cannot be read at all, as one bad row ("path: reason")."""
    origin, _, reason = error.message.partition(": ")
    return BadRow(origin, reason or "cannot be read", error.hint or "")


def _file_rows(
    path, tracker: FormatTracker, text_split: str, splits: dict[str, str]
) -> Iterator[Example | BadRow]:
    empty = True
    rule = choose_text_split(path, text_split)
    if rule:
        splits[str(path)] = f"{rule[0]}: {rule[1]}"
    for row in read_rows(path, rule[0] if rule else "blank"):
        empty = False
        yield row if isinstance(row, BadRow) else tracker.normalize(row)
    if empty:
        yield BadRow(
            str(path), "the file is empty", 'add rows, e.g. one JSON object per line: {"messages": [...]}'
        )


class _RowCollector:
    """Counts rows, formats and bad rows; raises at the first bad row when on_bad_row is 'error'."""

    def __init__(self, spec: DataSpec, report: DataReport) -> None:
        self.spec, self.report = spec, report

    def accept(self, row: Example | BadRow) -> bool:
        self.report.rows_read += 1
        if isinstance(row, BadRow):
            self.bad(row)
            return False
        self.report.formats[row.format] = self.report.formats.get(row.format, 0) + 1
        return True

    def bad(self, row: BadRow) -> None:
        if self.spec.on_bad_row == "error":
            raise DataError(str(row), row.hint or "run `backprop data check` to list every problem")
        self.report.bad_row_count += 1
        if len(self.report.bad_rows) < MAX_REPORTED_BAD_ROWS:
            self.report.bad_rows.append(row)


def check_data(spec: DataSpec) -> DataReport:
    """Validate every row without keeping any (for ``data check``): counts, formats and every problem."""
    spec = DataSpec(**{**asdict(spec), "on_bad_row": "skip"})
    report = DataReport(sources=spec.sources)
    collector = _RowCollector(spec, report)
    for row in iter_rows(spec, keep_going=True, report=report):
        collector.accept(row)
    return report


def load_examples(spec: DataSpec, report: DataReport) -> list[Example]:
    collector = _RowCollector(spec, report)
    examples = [
        row
        for row in tracked("read", iter_rows(spec, report=report), kept=NOTHING_KEPT)
        if collector.accept(row)
    ]
    _require_rows(examples, report)
    return examples


def _require_rows(examples: list, report: DataReport, after_filters: bool = False) -> None:
    if examples:
        return
    if report.bad_rows and not after_filters:
        first = report.bad_rows[0]
        more = f" ({report.bad_row_count - 1} more bad rows)" if report.bad_row_count > 1 else ""
        raise DataError(f"{first}{more}", first.hint or "run `backprop data check` to list every problem")
    removed = ", ".join(f"{step.name}: {step.removed}" for step in report.filters if step.removed)
    raise DataError(
        f"{', '.join(report.sources)}: no rows left after the filters ({removed})",
        "relax the filters (min/max tokens, max_seq_len, max samples)",
    )


def prepare_data(spec: DataSpec, tokenizer, model_context: int, use_cache: bool = True) -> PreparedData:
    """Every row, filtered, tokenized and masked, split into train and eval; cached on disk."""
    from . import cache

    key = cache.fingerprint(spec, tokenizer, model_context) if use_cache else None
    if key and (hit := cache.load(key)):
        hit.report.cached = True
        return hit
    report = DataReport(sources=spec.sources)
    examples = load_examples(spec, report)
    _refuse_pairs(examples, spec)
    tokenized = _tokenize(examples, tokenizer, _RowCollector(spec, report), pairs=spec.objective != "sft")
    train, evaluation = shape(tokenized, spec, model_context, report, tokenizer)
    prepared = PreparedData(
        [t for _, ts in train for t in ts], [t for _, ts in evaluation for t in ts], report
    )
    if key:
        cache.store(key, prepared)
    return prepared


def _refuse_pairs(examples: list[Example], spec: DataSpec) -> None:
    pairs = [e for e in examples if e.pair is not None]
    if pairs and spec.refuses_pairs:
        raise PairsNeedObjective(
            f"{pairs[0].origin}: preference pairs (chosen/rejected): use --objective dpo (or orpo) to train on both replies",
            f"{len(pairs)} of {len(examples)} rows are pairs; --chosen-only trains SFT on the chosen replies",
            pairs=len(pairs),
            rows=len(examples),
        )


Row = tuple[Example, list[TokenizedExample]]  # a row and its examples: one, one per trained turn, or one pair


def _tokenize(examples: list[Example], tokenizer, collector: _RowCollector, pairs: bool = False) -> list[Row]:
    """Render and mask every row (with ``pairs``, both sides of each preference row); counts the mask
    schemes and what had to change for the template."""
    support = TemplateSupport(tokenizer)
    schemes: Counter[str] = Counter()
    changes: Counter[str] = Counter()
    rows = []
    for example in tracked("tokenize", examples, kept=NOTHING_KEPT):
        if pairs:
            try:
                rows.append((example, [tokenize_pair(tokenizer, example, support)]))
            except RowProblem as problem:
                collector.bad(BadRow(example.origin, problem.reason, problem.hint))
            continue
        if example.text is not None:
            rows.append((example, [tokenize_text(tokenizer, example.text)]))
            continue
        try:
            messages, tools, changed = support.adapt(example)
            scheme, rendered = render_for_training(tokenizer, messages, tools)
        except RowProblem as problem:
            collector.bad(BadRow(example.origin, problem.reason, problem.hint))
            continue
        schemes[scheme] += 1
        changes.update(changed)
        rows.append((example, [tokenize_rendered(tokenizer, r) for r in rendered]))
    report = collector.report
    report.mask_schemes = dict(schemes)
    report.warnings += _template_warnings(changes, schemes, sum(len(ts) for e, ts in rows if e.text is None))
    return rows


def _template_warnings(changes: Counter, schemes: Counter, examples: int) -> list[str]:
    warnings = []
    if changes[PLAIN_TOOLS]:
        warnings.append(
            f"{changes[PLAIN_TOOLS]} rows have tool calls or tool schemas that the model's chat template cannot render: "
            "written in the plain form (<tool_call>/<tool_response> blocks, schemas in the system prompt; README, Data)"
        )
    if changes[REASONING_DROPPED]:
        warnings.append(
            f"{changes[REASONING_DROPPED]} rows have reasoning that the model's chat template does not render: "
            "dropped, the replies are trained without it"
        )
    if schemes[PER_TURN]:
        warnings.append(
            f"{schemes[PER_TURN]} conversations are trained {PER_TURN} ({examples} examples from {sum(schemes.values())} conversations): "
            "the chat template renders earlier turns differently as a conversation goes on (e.g. it moves the system prompt), "
            "so each reply is trained after its prompt as inference renders it"
        )
    return warnings


def shape(
    rows: list[Row], spec: DataSpec, model_context: int, report: DataReport, tokenizer=None, samples: int = 3
):
    """Filters, the length policy, shuffle, sample cap and the eval split, each counted in ``report``.

    Filters count rows; a per-turn row keeps its examples together (one side of the eval split).
    """
    report.filters = []
    _require_rows(rows, report)

    def step(name: str, kept: list) -> list:
        report.filters.append(FilterStep(name, len(current) - len(kept)))
        return kept

    current = rows
    if spec.dedupe:
        current = step("exact duplicates", _by_example(current, drop_exact_duplicates))
    if spec.near_dedupe:
        current = step(
            f"near duplicates (>= {spec.near_dedupe:g})",
            _by_example(current, lambda e: drop_near_duplicates(e, spec.near_dedupe, spec.seed)),
        )
    if spec.min_tokens:
        current = step(
            f"under {spec.min_tokens} tokens", [r for r in current if _longest(r) >= spec.min_tokens]
        )
    if spec.max_tokens:
        current = step(
            f"over {spec.max_tokens} tokens", [r for r in current if _longest(r) <= spec.max_tokens]
        )
    report.lengths = LengthStats.of([len(t) for _, ts in current for t in ts])
    report.max_seq_len, report.max_seq_len_from_data = choose_max_seq_len(spec, report.lengths, model_context)
    limit = report.max_seq_len
    if spec.overlong == "drop":
        current = step(
            f"over max_seq_len {limit}", [r for r in current if r[0].text is not None or _longest(r) <= limit]
        )
    report.truncated = sum(_longest(r) > limit for r in current if r[0].text is None)
    current = [piece for row in current for piece in _fit(row, limit)]
    trainable = [(e, [t for t in ts if t.trained_tokens > 0]) for e, ts in current]
    current = step("nothing left to train", [r for r in trainable if r[1]])
    if spec.shuffle:
        current = shuffled(current, spec.seed)
    if spec.max_samples:
        current = step(f"beyond max_samples {spec.max_samples}", current[: spec.max_samples])
    _require_rows(current, report, after_filters=True)
    train, evaluation = split_eval(current, spec.eval_split)
    report.train_examples, report.eval_examples = (
        sum(len(ts) for _, ts in train),
        sum(len(ts) for _, ts in evaluation),
    )
    examples = [(e, t) for e, ts in current for t in ts]
    tokens = sum(getattr(t, "total_tokens", len(t)) for _, t in examples)
    report.trained_fraction = sum(t.trained_tokens for _, t in examples) / tokens if tokens else 0.0
    if tokenizer is not None:
        report.samples = [sample for e, t in examples[:samples] for sample in _samples(tokenizer, e, t)]
    return train, evaluation


def _samples(tokenizer, example: Example, tokens) -> list[Sample]:
    if not isinstance(tokens, PreferenceExample):
        return [Sample(example.origin, example.format, marked_spans(tokenizer, tokens))]
    return [
        Sample(example.origin, f"preference {side}", marked_spans(tokenizer, getattr(tokens, side)))
        for side in ("chosen", "rejected")
    ]


def _longest(row: Row) -> int:
    return max(len(t) for t in row[1])


def _fit(row: Row, limit: int) -> list[Row]:
    """A conversation's examples are truncated to ``limit`` tokens; a raw-text document is cut into
    ``limit``-token pieces, each a row of its own."""
    example, [tokens, *_] = row
    if isinstance(tokens, PreferenceExample):
        return [(example, [tokens.truncated(limit)])]
    if example.text is None:
        return [(example, [TokenizedExample(t.input_ids[:limit], t.labels[:limit]) for t in row[1]])]
    starts = range(0, len(tokens), limit)
    return [
        (example, [TokenizedExample(tokens.input_ids[s : s + limit], tokens.labels[s : s + limit])])
        for s in starts
    ]


def _by_example(rows, keep):
    by_id = {id(row[0]): row for row in rows}
    return [by_id[id(example)] for example in keep([example for example, _ in rows])]


def choose_max_seq_len(spec: DataSpec, lengths: LengthStats | None, model_context: int) -> tuple[int, bool]:
    """The spec's value, or the data's p99 rounded up to a multiple of 64; capped by the model's context."""
    if spec.max_seq_len:
        return min(spec.max_seq_len, model_context), False
    p99 = lengths.p99 if lengths else SEQ_LEN_MULTIPLE
    return min(math.ceil(p99 / SEQ_LEN_MULTIPLE) * SEQ_LEN_MULTIPLE, model_context), True


class DataPreview:
    """Statistics and rendered samples for a UI that re-asks as the user changes filters.

    Rows are read and tokenized once per (sources, format); :meth:`report` then only re-runs the filters.
    Token statistics cover a seeded reservoir sample of ``sample_rows`` rows, so memory stays bounded on
    files of any size while formats and bad rows are counted over every row.
    """

    def __init__(self, tokenizer, model_context: int, sample_rows: int = 20_000, samples: int = 3) -> None:
        self.tokenizer, self.model_context = tokenizer, model_context
        self.sample_rows, self.samples = sample_rows, samples
        self._key: tuple | None = None
        self._base: DataReport | None = None
        self._rows: list[tuple[Example, TokenizedExample]] = []

    @classmethod
    def for_model(cls, model: str, samples: int = 3, warn=None) -> DataPreview:
        """A preview that renders rows with ``model``'s tokenizer and chat template, up to its context."""
        from ..modeling import model_context
        from ..presets import resolve_model
        from .tokenize import load_chat_tokenizer

        path = resolve_model(model).path
        tokenizer = load_chat_tokenizer(path, warn=warn)
        return cls(tokenizer, model_context(path, tokenizer), samples=samples)

    def report(self, spec: DataSpec) -> DataReport:
        key = (tuple(spec.sources), spec.format, spec.text_split, spec.seed, spec.objective == "sft")
        if key != self._key:
            self._load(spec)
            self._key = key
        report = replace(self._base, bad_rows=list(self._base.bad_rows), warnings=list(self._base.warnings))
        try:
            shape(self._rows, spec, self.model_context, report, self.tokenizer, self.samples)
        except DataError as error:  # e.g. every row filtered out: the UI shows it, the user changes a filter
            report.warnings.append(error.message)
        return report

    def _load(self, spec: DataSpec) -> None:
        base = DataReport(sources=spec.sources)
        collector = _RowCollector(DataSpec(spec.sources, format=spec.format), base)
        reservoir: list[Example] = []
        rng = random.Random(spec.seed)
        seen = 0
        for row in tracked("read", iter_rows(spec, report=base)):
            if not collector.accept(row):
                continue
            seen += 1
            if len(reservoir) < self.sample_rows:
                reservoir.append(row)
            elif (slot := rng.randrange(seen)) < self.sample_rows:
                reservoir[slot] = row
        base.sampled_rows = len(reservoir) if seen > len(reservoir) else 0
        self._rows = _tokenize(reservoir, self.tokenizer, collector, pairs=spec.objective != "sft")
        self._base = base


def _percentile(ordered: list[int], percent: int) -> int:
    return ordered[min(len(ordered) - 1, math.ceil(percent / 100 * len(ordered)) - 1)]


def _histogram(ordered: list[int]) -> list[tuple[int, int, int]]:
    width = max(1, math.ceil(ordered[-1] / HISTOGRAM_BINS))
    counts = Counter(min(length // width, HISTOGRAM_BINS - 1) for length in ordered)
    return [(b * width, (b + 1) * width, counts.get(b, 0)) for b in range(HISTOGRAM_BINS)]
