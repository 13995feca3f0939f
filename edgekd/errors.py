"""Errors a user can act on.

Every error carries a message (what went wrong, with the numbers) and a hint (what to do).
The CLI prints both and exits with the class's code; a traceback is shown only with --debug.
Library code raises these instead of asserting on user input.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgekdError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(EdgekdError):
    """Conflicting or invalid command-line options."""

    exit_code = 2


class ConfigError(EdgekdError):
    """A recipe or target file that does not validate."""

    exit_code = 3


class NotFoundError(EdgekdError):
    """A named thing (target, recipe, run directory, file) that does not exist."""

    exit_code = 4


class DataError(EdgekdError):
    """A dataset that cannot be read or is unusable (empty, wrong layout)."""

    exit_code = 5


class ConversionError(EdgekdError):
    """A model that cannot be converted to the requested format."""

    exit_code = 6


class ParityError(ConversionError):
    """A converted model that differs from its source beyond the tolerance."""

    exit_code = 7


class DeviceError(EdgekdError):
    """A device that cannot be reached or that lacks what the run needs."""

    exit_code = 8


class TransportTimeout(DeviceError):
    """A transport operation that did not finish within its time-out."""

    exit_code = 9


class MissingDependencyError(EdgekdError):
    """An optional package or system tool the requested operation needs."""

    exit_code = 10


class ArtifactError(EdgekdError):
    """An artifact directory that is missing, incomplete or inconsistent."""

    exit_code = 11


class TrainingError(EdgekdError):
    """Training that cannot go on (a NaN loss, a checkpoint that does not fit the run)."""

    exit_code = 12


class MeasurementError(EdgekdError):
    """A measurement (energy, power) that cannot be reported honestly from the samples at hand."""

    exit_code = 13


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
