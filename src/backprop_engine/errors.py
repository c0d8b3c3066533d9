"""Errors a user can cause. The CLI prints them as one line plus a hint and exits 2."""

from __future__ import annotations


class BackpropError(Exception):
    """Base class for every error caused by user input (bad file, unknown name, ...)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class DataError(BackpropError):
    """A dataset cannot be read or contains an invalid row."""


class PairsNeedObjective(DataError):
    """Preference pairs (``pairs`` of ``rows`` rows) met SFT without chosen-only. The message names the CLI's
    flags; the app words the same choice with its own controls."""

    def __init__(self, message: str, hint: str | None = None, *, pairs: int = 0, rows: int = 0) -> None:
        super().__init__(message, hint)
        self.pairs = pairs
        self.rows = rows


class ModelError(BackpropError):
    """A model name or path cannot be resolved or loaded."""


class ConfigError(BackpropError):
    """An option value is invalid (unknown quantization, unwritable output dir, ...)."""


class ExportError(BackpropError):
    """Conversion, quantization or verification of an export failed."""


class TrainingError(BackpropError):
    """Training cannot go on (out of memory even at micro-batch 1, ...)."""


class Cancelled(BackpropError):
    """The user stopped a long stage (x in the app, Ctrl+C): it stopped at its next unit; the message says
    where, and what was kept (outputs are written atomically, so nothing half-written is left)."""


def render_error(error: BaseException, prefix: str = "error: ") -> str:
    """How every front end shows an error: ``error: …`` and, when there is one, ``hint: …`` below it (the app's
    screens pass ``prefix=""``: their error line says so already). Other exceptions show their text alone."""
    if not isinstance(error, BackpropError):
        return f"{prefix}{error}"
    return f"{prefix}{error.message}" + (f"\nhint: {error.hint}" if error.hint else "")
