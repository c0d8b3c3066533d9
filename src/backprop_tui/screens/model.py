"""Model screen: preset table with a "fits this machine?" verdict, or any hub id / local folder."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label, Select, Static

from backprop_engine.config import METHODS as TRAINING_METHODS
from backprop_engine.config import option_of
from backprop_engine.errors import ModelError, render_error
from backprop_engine.hardware import HardwareReading
from backprop_engine.planner import FIT_LEGEND, fit_verdict
from backprop_engine.presets import PRESETS, check_model_name

from ..widgets.nav import NavBar

METHOD_TITLES = {
    "lora": "LoRA",
    "qlora": "QLoRA (4-bit)",
    "dora": "DoRA",
    "rslora": "rsLoRA",
    "full": "Full fine-tune",
}
AUTO = "auto"  # the Select's value for "leave it to the plan" (Session.method None)
METHODS = [("Auto (the plan's)", AUTO)] + [
    (METHOD_TITLES.get(method, method), method) for method in TRAINING_METHODS
]  # the engine's list, in its order


class ModelScreen(Screen):
    AUTO_FOCUS = "#presets"
    BINDINGS = [Binding("u", "use_preset", "Use preset", tooltip="or enter use the preset")]

    def compose(self) -> ComposeResult:
        yield NavBar()
        with Vertical(classes="body"):
            yield Static("probing hardware…", id="machine", classes="muted")
            yield DataTable(id="presets", cursor_type="row", zebra_stripes=True)
            yield Static(FIT_LEGEND.format(seq_len=512), id="fit-legend", classes="muted")
            with Horizontal(classes="form-row"):
                yield Label("Other model", classes="field-label")
                yield Input(placeholder="hub id (org/name) or local folder", id="custom-model", compact=True)
            yield Static("", id="model-error", classes="error")
            with Horizontal(classes="form-row"):
                yield Label("Method", classes="field-label")
                yield Select(
                    METHODS,
                    value=self.app.session.method or AUTO,
                    allow_blank=False,
                    id="method",
                    compact=True,
                )
                yield Label(option_of("lora_rank").label, classes="field-label")
                yield Input(
                    str(self.app.session.lora_rank or ""),
                    placeholder=AUTO,
                    id="rank",
                    type="integer",
                    compact=True,
                )
            yield Static("", id="model-choice", classes="choice")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#presets", DataTable)
        table.add_columns("preset", "params", "arch", "peak at batch", "fits?")
        self._show_choice()
        self.probe_hardware()

    @work(thread=True, exclusive=True, group="probe")
    def probe_hardware(self) -> None:
        reading = self.app.hardware_probe()
        self.app.call_from_thread(self._fill_presets, reading)

    def _fill_presets(self, hardware: HardwareReading) -> None:
        gpus = ", ".join(f"{g.name} {g.memory_total_mb / 1024:.0f} GB" for g in hardware.gpus) or "no GPU"
        self.query_one("#machine", Static).update(
            f"Machine: {hardware.cpu_cores} CPU cores, {hardware.ram_available_mb / 1024:.1f} of "
            f"{hardware.ram_total_mb / 1024:.1f} GB RAM free, {gpus}"
        )
        table = self.query_one("#presets", DataTable)
        table.clear()
        for preset in PRESETS.values():
            method = self.app.session.method if self.app.session.method in ("qlora", "full") else "lora"
            fit = fit_verdict(
                preset.facts, hardware.accelerator_memory_mb, on_gpu=bool(hardware.gpus), method=method
            )
            params = (
                f"{preset.params_billion * 1000:.1f}M"
                if preset.params_billion < 0.1
                else f"{preset.params_billion:.2f}B"
            )
            style = {"yes": "green", "tight": "yellow", "no": "red"}[fit.verdict]
            table.add_row(
                preset.name,
                params,
                preset.architecture,
                fit.cell(),
                f"[{style}]{fit.verdict}[/]",
                key=preset.name,
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self._use_model(str(event.row_key.value))

    def action_use_preset(self) -> None:
        table = self.query_one("#presets", DataTable)
        if table.row_count:
            self._use_model(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "custom-model":
            self._use_custom(event.value.strip())
        elif event.input.id == "rank":
            self._set_rank(event.value)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "rank":
            self._set_rank(event.value)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "method":
            self.app.session.method = None if event.value == AUTO else str(event.value)
            self._show_choice()
            self.probe_hardware()  # the memory column depends on the method

    def _use_custom(self, name: str) -> None:
        error = self.query_one("#model-error", Static)
        try:
            kind = check_model_name(name)
        except ModelError as exc:
            error.update(render_error(exc, prefix=""))
            return
        error.update("")
        self._use_model(name, note="downloaded from the hub when training starts" if kind == "hub" else "")

    def _use_model(self, name: str, note: str = "") -> None:
        self.app.session.model = name
        self._show_choice(note)
        self.notify(f"model: {name}", timeout=3)

    def _set_rank(self, value: str) -> None:
        error = self.query_one("#model-error", Static)
        try:
            self.app.session.lora_rank = option_of("lora_rank").parse(value) if value.strip() else None
        except ValueError as exc:
            error.update(str(exc))
            return
        error.update("")
        self._show_choice()

    def _show_choice(self, note: str = "") -> None:
        session = self.app.session
        method = {value: title for title, value in METHODS}[session.method or AUTO]
        line = f"Chosen: [b]{session.model}[/b] · {method} · rank {session.lora_rank or AUTO}"
        self.query_one("#model-choice", Static).update(line + (f" · {note}" if note else ""))
