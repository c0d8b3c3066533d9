"""Events and sinks: keyword-only construction, one context manager that attaches sinks and reports failure."""

from __future__ import annotations

import dataclasses
import json

import pytest

from backprop_engine.events import Event, EventBus, JsonlSink, RunFailed, StepMetrics, WarningEvent, attached


def test_every_event_is_built_by_keyword_and_read_back_from_its_dict():
    for kind, cls in Event.types.items():
        assert all(f.kw_only for f in dataclasses.fields(cls)), (
            f"{cls.__name__} ({kind}) takes positional fields"
        )
    with pytest.raises(TypeError):
        WarningEvent("positional")  # type: ignore[misc]
    event = StepMetrics(
        step=3,
        total_steps=9,
        loss=1.5,
        learning_rate=1e-4,
        grad_norm=0.5,
        tokens_per_second=900.0,
        eta_seconds=12.0,
        memory_mb=100.0,
    )
    assert Event.from_dict(json.loads(json.dumps(event.to_dict()))) == event


class Recording:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.closed = False

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.closed = True


def test_attached_sinks_hear_the_block_then_close_and_a_failure_is_reported_once(tmp_path):
    caller, log = Recording(), JsonlSink(tmp_path / "events.jsonl")
    bus = EventBus([caller])
    with pytest.raises(ValueError, match="boom"), attached(bus, log):
        bus.emit(WarningEvent(message="inside"))
        raise ValueError("boom")
    assert bus.sinks == [caller]  # detached again
    assert [type(e) for e in caller.events] == [WarningEvent, RunFailed] and caller.events[
        1
    ].error == "ValueError: boom"
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines] == ["warning", "failed"]


def test_attached_can_report_to_one_sink_or_not_at_all():
    caller, own, quiet = Recording(), Recording(), Recording()
    bus = EventBus([caller])
    with pytest.raises(KeyboardInterrupt), attached(bus, own, report_to=own):
        raise KeyboardInterrupt
    assert caller.events == [] and [e.kind for e in own.events] == ["failed"] and own.closed
    with pytest.raises(RuntimeError), attached(bus, quiet, report_failure=False):
        raise RuntimeError("x")
    assert quiet.events == [] and quiet.closed
    with attached(bus, quiet):  # no failure: nothing reported
        pass
    assert caller.events == []
