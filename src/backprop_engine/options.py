"""Options declared once: a config field's label, help, bounds, choices and CLI flags live in its dataclass
field's metadata (:func:`option`). The CLI parser, the app's forms, the settings file and validation read
them from there (:func:`options_of`), so no front end re-lists an option."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Bounds:
    """The values a number may take: ``low``/``high`` (None: unbounded), each included unless ``*_open``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below  # NaN holds no bound

    def describe(self, kind: type) -> str:
        """What the value must be, as the end of "NAME must be …"."""
        if self.high is None and not self.low_open and kind is int and self.low in (0, 1):
            return "a positive integer" if self.low == 1 else "a non-negative integer"
        if self.high is None:
            if self.low_open:
                return "positive" if self.low == 0 else f"above {self.low:g}"
            return f"at least {self.low:g}"
        if not (self.low_open or self.high_open):
            return f"between {self.low:g} and {self.high:g}"
        return (
            f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        )


POSITIVE_INT = Bounds(1)
NOT_NEGATIVE = Bounds(0)
POSITIVE = Bounds(0, low_open=True)


def option(
    default: Any = MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    label: str = "",
    short: str = "",
    help: str | None = None,
    flags: tuple[str, ...] | None = (),
    metavar: str | None = None,
    bounds: Bounds | None = None,
    choices: tuple[str, ...] = (),
    setting: str = "",
) -> Any:
    """A field as the front ends show it. ``label`` (default: from the name) titles it on the app's forms,
    ``short`` in a compact row; ``help``, ``flags`` (default ``--field-name``; ``--no-field-name`` for a bool
    that is on; None: no flag) and ``metavar`` make its CLI flag; ``bounds`` and ``choices`` are checked by
    :func:`problems` and offered by the CLI; ``setting``: the Settings field it overrides when non-zero."""
    metadata = {
        "label": label,
        "short": short,
        "help": help,
        "flags": flags,
        "metavar": metavar,
        "bounds": bounds,
        "choices": choices,
        "setting": setting,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Option:
    name: str
    kind: type  # the default's type: int, float, str, bool or list
    default: Any
    label: str
    short: str
    help: str | None
    flags: tuple[str, ...]  # empty: no CLI flag
    metavar: str | None
    bounds: Bounds | None
    choices: tuple[str, ...]
    setting: str

    def problem(self, value: Any) -> str | None:
        """Why ``value`` cannot be this option's value, as one line naming the option; None when it can."""
        if self.kind in (int, float) and (
            isinstance(value, bool)
            or not isinstance(value, int if self.kind is int else (int, float))
            or (self.bounds is not None and not self.bounds.holds(value))
        ):
            number = "a whole number" if self.kind is int else "a number"
            wanted = self.bounds.describe(self.kind) if self.bounds else number
            return f"{self.name} must be {wanted}, got {value!r}"
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}"
        return None

    def parse(self, raw: str, title: str | None = None) -> Any:
        """A form field's text as this option's value; ValueError (naming the field) when it is not one."""
        title = title or self.label
        try:
            value = self.kind(raw) if self.kind in (int, float) else raw
        except ValueError:
            number = "whole number" if self.kind is int else "number"
            raise ValueError(f"{title}: {raw!r} is not a {number}") from None
        problem = self.problem(value)
        if problem is not None:
            raise ValueError(f"{title}{problem.removeprefix(self.name)}")
        return value


def options_of(cls: type) -> dict[str, Option]:
    """Every field of dataclass ``cls`` as an :class:`Option`, in declaration order."""
    return {spec.name: _option(spec) for spec in fields(cls)}


def problems(instance: object) -> str | None:
    """Every field of ``instance`` whose value breaks its declared bounds or choices, in one line; None if none."""
    found = [
        declared.problem(getattr(instance, name)) for name, declared in options_of(type(instance)).items()
    ]
    return "; ".join(problem for problem in found if problem) or None


def _option(spec: Any) -> Option:
    meta = spec.metadata
    default = spec.default_factory() if spec.default is MISSING else spec.default
    kind = type(default)
    flags = meta.get("flags", ())
    if flags == ():
        dashed = spec.name.replace("_", "-")
        flags = (f"--no-{dashed}" if default is True else f"--{dashed}",)
    return Option(
        name=spec.name,
        kind=kind,
        default=default,
        label=meta.get("label") or spec.name.replace("_", " ").capitalize(),
        short=meta.get("short") or meta.get("label") or spec.name.replace("_", " "),
        help=meta.get("help"),
        flags=flags or (),
        metavar=meta.get("metavar"),
        bounds=meta.get("bounds"),
        choices=meta.get("choices", ()),
        setting=meta.get("setting", ""),
    )
