"""What the skeleton readers share: raw sequences (F, V, M, 3) to a Dataset of fixed windows."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgekd.data.api import Dataset, SkippedItem
from edgekd.data.graphs import degenerate_reason, get_layout, normalise_sequence, resample_sequence, to_nctvm
from edgekd.errors import UsageError

log = logging.getLogger("edgekd.data")

WINDOW_OPTIONS: dict[str, Any] = {
    "frames": 32,  # T of the output window
    "persons": 1,  # M
    "window": "center",  # "center" (evaluation) | "random" (training crop-resize, uses the seed) | "full"
    "normalise": True,  # centre on the layout's centre joint, scale by torso length
}


def build_skeleton_dataset(
    raw: list[tuple[str, np.ndarray, int, dict[str, Any]]],
    classes: list[str],
    layout: str,
    options: dict[str, Any],
    seed: int,
    source: str,
    skipped: list[SkippedItem],
    notes: list[str] | None = None,
) -> Dataset:
    """raw: (name, sequence (F, V, M, 3), label, per-sample meta). Degenerate sequences (all zero,
    NaN, motionless) are skipped with a warning and listed in `skipped`."""
    if options["window"] not in ("center", "random", "full"):
        raise UsageError(f"{source}: unknown window '{options['window']}'", hint="use center, random or full")
    lay = get_layout(layout)
    rng = np.random.default_rng(seed)
    windows, labels, metas = [], [], []
    for name, seq, label, meta in raw:
        reason = degenerate_reason(seq)
        if reason is not None:
            log.warning("%s: skipping %s: %s", source, name, reason)
            skipped.append(SkippedItem(name, f"degenerate sequence: {reason}"))
            continue
        if options["normalise"]:
            seq = normalise_sequence(seq, lay)
        windows.append(resample_sequence(seq, int(options["frames"]), options["window"], rng))
        labels.append(label)
        metas.append({"name": name, "frames": seq.shape[0], **meta})
    keys = list(metas[0]) if metas else ["name"]
    return Dataset(
        task="skeleton",
        x={"joints": to_nctvm(windows, int(options["persons"]))},
        y=np.asarray(labels, dtype=np.int64),
        classes=list(classes),
        meta={k: np.asarray([m[k] for m in metas]) for k in keys},
        layout=lay.name,
        skipped=skipped,
        source=source,
        notes=list(notes or []),
    )
