"""NTU RGB+D skeletons: raw `.skeleton` text files (a folder of `SsssCcccPpppRrrrAaaa.skeleton`)
or CTR-GCN-style `.npz` (x_train/x_test (N, 300, 150), one-hot y_train/y_test).

Raw format: line 1 = frame count; per frame the body count; per body one line of 10 numbers
(body id, clipped edges, hand confidences/states, restricted, lean x/y, tracking state), the
joint count (25), then one line of 12 numbers per joint (x y z, depth x y, colour x y,
orientation w x y z, tracking state). At most `persons` bodies are kept: those that move most.

Official sides: X-Sub trains on the performers in SEEDS.md, X-View on cameras 2 and 3; the npz
keeps its own train/test arrays (and has no subjects, so validation is stratified by class).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.api import Dataset, SkippedItem
from edgekd.data.options import resolve_options
from edgekd.data.skeleton_common import WINDOW_OPTIONS, build_skeleton_dataset
from edgekd.errors import DataError, NotFoundError, UsageError
from edgekd.tasks.skeleton import NTU_XSUB_TRAIN, NTU_XVIEW_TRAIN

NTU60_CLASSES = [
    "drink water", "eat meal", "brush teeth", "brush hair", "drop", "pick up", "throw", "sit down", "stand up",
    "clapping", "reading", "writing", "tear up paper", "put on jacket", "take off jacket", "put on a shoe",
    "take off a shoe", "put on glasses", "take off glasses", "put on a hat", "take off a hat", "cheer up",
    "hand waving", "kicking something", "reach into pocket", "hopping", "jump up", "phone call", "play with phone",
    "type on a keyboard", "point to something", "taking a selfie", "check time", "rub two hands", "nod head/bow",
    "shake head", "wipe face", "salute", "put palms together", "cross hands in front", "sneeze/cough", "staggering",
    "falling down", "headache", "chest pain", "back pain", "neck pain", "nausea/vomiting", "fan self",
    "punch/slap", "kicking", "pushing", "pat on back", "point finger", "hugging", "giving object",
    "touch pocket", "shaking hands", "walking towards", "walking apart",
]
NAME = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})\.skeleton$")
JOINTS = 25
NTU_OPTIONS: dict[str, Any] = {**WINDOW_OPTIONS, "persons": 2, "benchmark": "xsub"}


def ntu_classes(num_classes: int) -> list[str]:
    """Names of NTU-60 actions; NTU-120's extra 60 are numbered (A061..A120)."""
    return NTU60_CLASSES[:num_classes] + [f"A{i:03d}" for i in range(61, num_classes + 1)]


class _Lines:
    """Line reader that knows where it is, for errors that name the file and line."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read ({exc})") from None
        self.pos = 0

    def numbers(self, count: int, what: str) -> list[float]:
        if self.pos >= len(self.lines):
            raise DataError(f"{self.path}:{self.pos + 1}: file ends where {what} was expected (truncated file)",
                            hint="re-extract or re-download this file; a .skeleton file must hold every frame it announces")
        line = self.lines[self.pos]
        self.pos += 1
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise DataError(f"{self.path}:{self.pos}: expected {what}, got '{line.strip()[:60]}'") from None
        if len(values) < count:
            raise DataError(f"{self.path}:{self.pos}: expected {count} numbers ({what}), got {len(values)} (truncated file?)")
        return values


def read_skeleton_file(path: Path) -> tuple[np.ndarray, int]:
    """(F, 25, B, 3) for every body id seen in the file, and the number of frames.
    DataError with file and line on a truncated or malformed file."""
    lines = _Lines(path)
    frames = int(lines.numbers(1, "the frame count")[0])
    bodies: dict[str, np.ndarray] = {}
    for f in range(frames):
        count = int(lines.numbers(1, f"the body count of frame {f + 1}")[0])
        for _ in range(count):
            lines.numbers(10, f"the body line of frame {f + 1}")
            body_id = lines.lines[lines.pos - 1].split()[0]  # as text: ids exceed float precision
            joints = int(lines.numbers(1, f"the joint count of frame {f + 1}")[0])
            if joints != JOINTS:
                raise DataError(f"{path}:{lines.pos}: {joints} joints in frame {f + 1}; NTU files have 25")
            xyz = np.array([lines.numbers(12, f"joint {j + 1} of frame {f + 1}")[:3] for j in range(joints)], np.float32)
            if body_id not in bodies:
                bodies[body_id] = np.zeros((frames, JOINTS, 3), dtype=np.float32)
            bodies[body_id][f] = xyz
    if not bodies:
        return np.zeros((frames, JOINTS, 0, 3), dtype=np.float32), frames
    return np.stack(list(bodies.values()), axis=2), frames


def select_bodies(seq: np.ndarray, persons: int) -> np.ndarray:
    """Keep the `persons` bodies with the largest motion (sum of per-coordinate variance over
    the frames where each body is tracked), in that order."""
    if seq.shape[2] <= persons:
        return seq
    energy = []
    for b in range(seq.shape[2]):
        present = np.abs(seq[:, :, b]).sum(axis=(1, 2)) > 0
        energy.append(seq[present, :, b].reshape(int(present.sum()), -1).var(axis=0).sum() if present.sum() > 1 else 0.0)
    order = np.argsort(energy)[::-1][:persons]
    return seq[:, :, np.sort(order)]


def load_ntu(path: str | None, seed: int = 0, **options: Any) -> Dataset:
    opts = resolve_options(options, NTU_OPTIONS, "ntu")
    benchmark = opts.pop("benchmark")
    if benchmark not in ("xsub", "xview"):
        raise UsageError(f"ntu: unknown benchmark '{benchmark}'", hint="use xsub (cross-subject) or xview (cross-view)")
    root = Path(path or "")
    if root.is_file() and root.suffix == ".npz":
        return load_ntu_npz(root, opts, seed)
    if not root.is_dir():
        raise NotFoundError(f"ntu: no folder or .npz file '{root}'",
                            hint="point at the folder of .skeleton files or at a CTR-GCN .npz")
    skipped: list[SkippedItem] = []
    raw = []
    max_action = 0
    for p in sorted(root.iterdir()):
        if not p.is_file() or p.suffix != ".skeleton":
            continue
        m = NAME.match(p.name)
        if not m:
            skipped.append(SkippedItem(p.name, "name does not match SsssCcccPpppRrrrAaaa.skeleton"))
            continue
        setup, camera, performer, _, action = (int(g) for g in m.groups())
        seq, _ = read_skeleton_file(p)  # truncated/malformed: DataError with file and line
        if seq.shape[2] == 0:
            skipped.append(SkippedItem(p.stem, "no body in any frame"))
            continue
        seq = select_bodies(seq, int(opts["persons"]))
        train = performer in NTU_XSUB_TRAIN if benchmark == "xsub" else camera in NTU_XVIEW_TRAIN
        meta = {"subject": f"P{performer:03d}", "view": f"C{camera:03d}", "setup": setup,
                "subset": "train" if train else "test"}
        raw.append((p.stem, seq, action - 1, meta))
        max_action = max(max_action, action)
    if not raw:
        raise DataError(f"ntu: no usable .skeleton files in '{root}'" + (f" ({len(skipped)} skipped)" if skipped else ""),
                        hint="point at the folder that holds NTU RGB+D nturgb+d_skeletons/*.skeleton")
    classes = ntu_classes(120 if max_action > 60 else 60)
    return build_skeleton_dataset(raw, classes, "ntu25", opts, seed, "ntu", skipped,
                                  notes=[f"ntu raw skeletons, {benchmark}: official training side = train, other = test"])


def load_ntu_npz(path: Path, opts: dict[str, Any], seed: int) -> Dataset:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})") from None
    with z:
        keys = set(z.files)
        if not {"x_train", "y_train"} <= keys:
            raise DataError(f"{path}: CTR-GCN .npz needs x_train and y_train (found {', '.join(sorted(keys))})",
                            hint="arrays x_train (N, 300, 150) and one-hot y_train, optionally x_test/y_test")
        raw = []
        num_classes = 0
        for side in ("train", "test"):
            if f"x_{side}" not in keys:
                continue
            x, y = z[f"x_{side}"], z[f"y_{side}"]
            if x.ndim != 3 or x.shape[2] % (3 * JOINTS):
                raise DataError(f"{path}: x_{side} has shape {x.shape}; expected (N, frames, 150) = 2 persons x 25 joints x 3")
            m = x.shape[2] // (3 * JOINTS)
            labels = y.argmax(axis=1) if y.ndim == 2 else y.astype(np.int64)
            num_classes = max(num_classes, y.shape[1] if y.ndim == 2 else int(labels.max()) + 1)
            seqs = x.reshape(len(x), x.shape[1], m, JOINTS, 3).transpose(0, 1, 3, 2, 4)  # (N, F, V, M, 3)
            for i in range(len(x)):
                raw.append((f"{side}_{i:06d}", seqs[i], int(labels[i]), {"subset": side}))
    classes = ntu_classes(120 if num_classes > 60 else 60) if num_classes in (60, 120) else [f"A{i + 1:03d}" for i in range(num_classes)]
    return build_skeleton_dataset(raw, classes, "ntu25", opts, seed, "ntu", [],
                                  notes=["ntu npz: no subject ids, so validation is stratified by class, not by subject"])
