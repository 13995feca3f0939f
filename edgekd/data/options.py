"""Reader options: defaults filled in, unknown keys rejected with a did-you-mean."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgekd.errors import UsageError, did_you_mean


def resolve_options(given: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`defaults` updated by `given`; a key not in `defaults` is a UsageError naming the valid ones."""
    unknown = [k for k in given if k not in defaults]
    if unknown:
        key = unknown[0]
        raise UsageError(
            f"{where}: unknown option '{key}'{did_you_mean(key, defaults)}",
            hint=f"options for {where}: {', '.join(sorted(defaults)) or '(none)'}",
        )
    resolved = dict(defaults)
    resolved.update(given)
    return resolved


def positive_int(options: Mapping[str, Any], key: str, where: str, minimum: int = 1) -> int:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < minimum:
        raise UsageError(f"{where}: option '{key}' must be an integer >= {minimum}, got {value!r}")
    return int(value)
