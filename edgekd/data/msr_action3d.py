"""MSR Action3D skeletons: `aAA_sSS_eEE_skeleton3D.txt`, 4 numbers a line (x y z confidence),
20 lines (Kinect v1 joints) a frame. Standard cross-subject protocol: odd subjects are the
training side, even subjects the test side."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.api import Dataset, SkippedItem
from edgekd.data.options import resolve_options
from edgekd.data.skeleton_common import WINDOW_OPTIONS, build_skeleton_dataset
from edgekd.errors import DataError, NotFoundError

CLASSES = [
    "high arm wave", "horizontal arm wave", "hammer", "hand catch", "forward punch", "high throw", "draw x",
    "draw tick", "draw circle", "hand clap", "two hand wave", "side boxing", "bend", "forward kick", "side kick",
    "jogging", "tennis swing", "tennis serve", "golf swing", "pick up and throw",
]
NAME = re.compile(r"^a(\d+)_s(\d+)_e(\d+)_skeleton3D\.txt$")
JOINTS = 20


def read_msr_file(path: Path) -> np.ndarray:
    """(F, 20, 1, 3) from one file; DataError naming the file if it cannot be parsed."""
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: not numeric text ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if values.size % (4 * JOINTS):
        lines = values.size / 4
        raise DataError(f"{path}: {values.size} numbers ({lines:g} lines) is not a whole number of 20-joint frames "
                        "of 4 numbers (x y z confidence): truncated?")
    return values.reshape(-1, JOINTS, 1, 4)[..., :3].astype(np.float32)


def load_msr_action3d(path: str | None, seed: int = 0, **options: Any) -> Dataset:
    opts = resolve_options(options, WINDOW_OPTIONS, "msr-action3d")
    root = Path(path or "")
    if not root.is_dir():
        raise NotFoundError(f"msr-action3d: no folder '{root}'", hint="point at the folder holding aAA_sSS_eEE_skeleton3D.txt files")
    skipped: list[SkippedItem] = []
    raw = []
    files = sorted(p for p in root.iterdir() if p.is_file())
    for p in files:
        m = NAME.match(p.name)
        if not m:
            if p.suffix == ".txt":
                skipped.append(SkippedItem(p.name, "name does not match aAA_sSS_eEE_skeleton3D.txt"))
            continue
        action, subject, execution = (int(g) for g in m.groups())
        if not 1 <= action <= len(CLASSES):
            skipped.append(SkippedItem(p.name, f"action {action} outside 1..{len(CLASSES)}"))
            continue
        try:
            seq = read_msr_file(p)
        except DataError as exc:
            skipped.append(SkippedItem(p.name, exc.message.split(": ", 1)[-1]))
            continue
        meta = {"subject": f"s{subject:02d}", "execution": execution, "subset": "train" if subject % 2 else "test"}
        raw.append((p.name.replace("_skeleton3D.txt", ""), seq, action - 1, meta))
    if not raw:
        raise DataError(f"msr-action3d: no aAA_sSS_eEE_skeleton3D.txt files in '{root}'"
                        + (f" ({len(skipped)} skipped)" if skipped else ""),
                        hint="point at the folder that holds the MSR Action3D skeleton text files")
    return build_skeleton_dataset(raw, CLASSES, "kinect20", opts, seed, "msr-action3d", skipped,
                                  notes=["cross-subject protocol: odd subjects = training side, even = test side"])
