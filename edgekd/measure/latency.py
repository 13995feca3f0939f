"""Latency statistics from per-inference samples (milliseconds)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def latency_stats(samples_ms: Sequence[float], first_ms: float | None = None) -> dict[str, float | int | None]:
    """first, min, p50, p90, p99, max, mean, std and coefficient of variation of the timed runs."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        return {"count": 0, "first_ms": first_ms}
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return {
        "count": int(x.size),
        "first_ms": first_ms,
        "min_ms": float(x.min()),
        "p50_ms": float(np.percentile(x, 50)),
        "p90_ms": float(np.percentile(x, 90)),
        "p99_ms": float(np.percentile(x, 99)),
        "max_ms": float(x.max()),
        "mean_ms": mean,
        "std_ms": std,
        "cov": std / mean if mean > 0 else None,
    }
