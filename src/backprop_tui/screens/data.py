"""Data screen: load a dataset, see its formats, counts and token lengths, change filters and watch the
counts follow, page through rows rendered with the model's template (trained vs masked tokens)."""

from __future__ import annotations

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Checkbox, Footer, Input, Label, Sparkline, Static
from textual.worker import Worker, WorkerState

from backprop_engine.config import option_of
from backprop_engine.data.pairs import PAIR_OBJECTIVES
from backprop_engine.defaults import held_out_rows
from backprop_engine.errors import BackpropError, render_error

from ..widgets.nav import NavBar
from ..widgets.path_suggester import PathSuggester
from ..widgets.progress import StageProgress
from ..widgets.token_view import MASKED_STYLE, TRAINED_STYLE, render_spans
from .modals import key_of

PREVIEW_SAMPLES = 50
# Filter fields (TrainConfig/DataSpec names), labelled and checked as the fields declare them
DEDUPE = option_of("dedupe")
CHOSEN_ONLY = option_of("chosen_only")  # SFT on the chosen replies of preference pairs
OBJECTIVE = option_of("objective")
FILTERS = [option_of(name) for name in ("min_tokens", "max_tokens", "max_samples", "eval_split")]
# What an empty filter field means: no filter, or (eval) the rows the plan holds out by itself
FILTER_UNSET = {"min_tokens": "off", "max_tokens": "off", "max_samples": "all", "eval_split": "auto"}


class DataScreen(Screen):
    AUTO_FOCUS = "#sample-scroll"  # not a text field: number keys must still switch screens
    BINDINGS = [
        Binding("n", "next_sample", "Next sample"),
        Binding("b", "previous_sample", "Prev sample", tooltip="previous sample"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.preview = None  # backprop_engine.data.DataPreview for the loaded source
        self.report = None
        self.index = 0
        self._refilter_timer = None
        self._requested: tuple | None = None  # (source, filters) of the newest request

    def compose(self) -> ComposeResult:
        yield NavBar()
        with Vertical(classes="body"):
            with Horizontal(classes="form-row"):
                yield Label("Dataset", classes="field-label")
                yield Input(
                    self.app.session.data,
                    id="data-path",
                    suggester=PathSuggester(),
                    placeholder="file, folder, hub id or 'sample'",
                    compact=True,
                )
            with Horizontal(id="filters"):
                for option in FILTERS:
                    yield Label(option.short)
                    yield Input(
                        placeholder=FILTER_UNSET[option.name],
                        id=f"filter-{option.name}",
                        classes="filter",
                        compact=True,
                    )
                yield Checkbox(DEDUPE.short, DEDUPE.default, id="filter-dedupe", compact=True)
            yield Static("", id="data-error", classes="error")
            yield StageProgress(id="data-progress")
            yield Static("", id="data-summary")
            yield Static("", id="data-filters", classes="muted")
            with Vertical(id="data-pairs"):
                yield Static("", id="pairs-count")
                with Horizontal(id="pairs-row"):
                    yield Static("", id="pairs-trained")
                    yield Checkbox(
                        CHOSEN_ONLY.short, CHOSEN_ONLY.default, id="filter-chosen_only", compact=True
                    )
            with Horizontal(id="histogram-row"):
                yield Sparkline([], id="length-histogram")
                yield Static("", id="histogram-axis", classes="muted")
            yield Static("", id="sample-title", classes="muted")
            with VerticalScroll(id="sample-scroll"):
                yield Static("", id="sample-view")
        yield Footer()

    def on_mount(self) -> None:
        self.load(self.app.session.data)

    # ----- loading and filtering (workers; the UI never waits)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "data-path":
            self.load(event.value.strip())
        else:
            self.refilter()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("filter-"):
            if self._refilter_timer is not None:
                self._refilter_timer.stop()
            self._refilter_timer = self.set_timer(0.4, self.refilter)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self.refilter()

    def load(self, source: str) -> None:
        self._request(source, reload=True)
        self.query_one("#data-summary", Static).update("[dim]reading and tokenizing…[/dim]")

    def refilter(self) -> None:
        if self.preview is not None and self._requested is not None:
            self._request(self._requested[0], reload=False)

    def _request(self, source: str, reload: bool) -> None:
        """Start a preview worker unless the same request is already the newest (a newer worker
        replaces an older one, so a repeated request must not cancel, e.g., a pending error)."""
        from backprop_engine.data import DataSpec

        try:
            filters = self._filter_values()
            spec = DataSpec([source], **filters)
        except (ValueError, BackpropError) as exc:
            self._show_error(exc)
            return
        request = (source, tuple(sorted(filters.items())))
        if not reload and request == self._requested:
            return
        self._requested = request
        self.preview_in_background(spec, self.app.session.model, reload=reload)

    def _requested_filters(self) -> dict:
        """The filters of the newest request: the preview shown is theirs (the fields may hold a typo since)."""
        return dict(self._requested[1]) if self._requested else {}

    def _filter_values(self) -> dict:
        """The filters the user set: a box left at its default or an empty field is left to the plan, as an
        omitted flag is (an empty eval field holds rows out automatically; 0 holds none)."""
        values: dict = {}
        for option in (DEDUPE, CHOSEN_ONLY):
            value = self.query_one(f"#filter-{option.name}", Checkbox).value
            if value != option.default:
                values[option.name] = value
        for option in FILTERS:
            raw = self.query_one(f"#filter-{option.name}", Input).value.strip()
            if raw:
                values[option.name] = option.parse(raw, title=option.short)
        return values

    @work(thread=True, exclusive=True, group="data", exit_on_error=False)
    def preview_in_background(self, spec, model: str, reload: bool):
        from backprop_engine.data import DataPreview
        from backprop_engine.progress import reporting

        bar = self.query_one(StageProgress)
        with reporting(lambda event: self.app.call_from_thread(bar.show, event)):  # reading, tokenizing
            preview = self.preview
            if reload or preview is None:
                preview = DataPreview.for_model(model, samples=PREVIEW_SAMPLES)
            return spec, preview, preview.report(spec)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "data":
            return
        if event.state in (WorkerState.SUCCESS, WorkerState.ERROR):
            self.query_one(StageProgress).hide()
        if event.state == WorkerState.SUCCESS:
            spec, self.preview, self.report = event.worker.result
            self.app.session.data = spec.sources[0]
            self.app.session.data_options = self._requested_filters()
            self.index = min(self.index, max(0, len(self.report.samples) - 1))
            self.query_one("#data-error", Static).update("")
            self._show_report()
        elif event.state == WorkerState.ERROR:
            self._show_error(event.worker.error)
            self.query_one("#data-summary", Static).update("")

    def _show_error(self, error: BaseException) -> None:
        self.query_one("#data-error", Static).update(render_error(error, prefix=""))

    # ----- showing the report

    def _show_report(self) -> None:
        report = self.report
        formats = ", ".join(f"{name} {count}" for name, count in report.formats.items()) or "—"
        train, held = report.train_examples, report.eval_examples
        auto = "eval_split" not in self._requested_filters() and not held
        if auto:  # what the plan will hold out, as train does (Train shows it too)
            held = held_out_rows(train)
            train -= held
        lines = [
            f"[b]{report.rows_read}[/b] rows ({formats}) · "
            + (f"[red]{report.bad_row_count} bad[/red] · " if report.bad_row_count else "")
            + f"train [b]{train}[/b] / eval {held}{' (auto)' if auto else ''} · {report.trained_fraction:.0%} of tokens trained"
        ]
        if report.lengths:
            lengths = report.lengths
            origin = "auto" if report.max_seq_len_from_data else "set"
            lines.append(
                f"tokens p50 {lengths.p50} · p95 {lengths.p95} · max {lengths.max} · "
                f"max_seq_len {report.max_seq_len} ({origin}) · {report.truncated} truncated"
            )
        if report.sampled_rows:
            lines.append(f"[dim]statistics over a sample of {report.sampled_rows:,} rows[/dim]")
        self.query_one("#data-summary", Static).update("\n".join(lines))
        self._show_pairs(report.formats.get("preference", 0), report.rows_read)
        removed = [f"{step.name} −{step.removed}" for step in report.filters if step.removed]
        notes = removed + [f"[yellow]{w}[/yellow]" for w in report.warnings]
        notes += [f"[red]{escape(str(bad))}[/red]" for bad in report.bad_rows[:2]]
        self.query_one("#data-filters", Static).update(
            "removed: " + " · ".join(notes) if notes else "nothing filtered out"
        )
        histogram = report.lengths.histogram if report.lengths else []
        self.query_one("#length-histogram", Sparkline).data = [rows for _, _, rows in histogram]
        axis = f"token lengths {histogram[0][0]}–{histogram[-1][1]}" if histogram else ""
        self.query_one("#histogram-axis", Static).update(axis)
        self._show_sample()

    def _show_pairs(self, pairs: int, rows: int) -> None:
        """Preference rows are pairs, not dropped rows: what trains them, and SFT's chosen-only next to it."""
        self.query_one("#data-pairs").display = pairs > 0
        self.query_one("#pairs-count", Static).update(
            f"pairs [b]{pairs}[/b] of {rows} rows (chosen/rejected), shown with their chosen replies"
        )
        train_key = key_of(self.app.BINDINGS, "switch_mode('train')")
        self.query_one("#pairs-trained", Static).update(
            f"trained by {' or '.join(name.upper() for name in PAIR_OBJECTIVES)} "
            f"({OBJECTIVE.label} on Train, {train_key}) or by SFT with"
        )

    def _show_sample(self) -> None:
        samples = self.report.samples if self.report else []
        if not samples:
            self.query_one("#sample-title", Static).update("")
            self.query_one("#sample-view", Static).update("")
            return
        sample = samples[self.index]
        self.query_one("#sample-title", Static).update(
            f"sample {self.index + 1}/{len(samples)} · {escape(sample.origin.rsplit('/', 1)[-1])} · "
            f"[{TRAINED_STYLE}]trained[/] · [{MASKED_STYLE}]masked[/] · n/b"
        )
        self.query_one("#sample-view", Static).update(render_spans(sample.spans))

    def action_next_sample(self) -> None:
        if self.report and self.report.samples:
            self.index = (self.index + 1) % len(self.report.samples)
            self._show_sample()

    def action_previous_sample(self) -> None:
        if self.report and self.report.samples:
            self.index = (self.index - 1) % len(self.report.samples)
            self._show_sample()
