"""SEE (single-eye event-based emotion): `event/<emotion>/<seq>/00000.jpg...` and
`frame/<emotion>/<seq>/...` with the same sequence names, and a JSON split file
`{seq: {"subset": "training"|"testing", "label": ..., "segment": [start, end]}}`.

Sequence names carry the metadata, e.g. `1_001_man_24_Master_normal_angry_45_take000`:
field 6 = lighting, field 7 = emotion (1-based, '_'-separated). The subject is taken from field
2 (`001`, followed by that person's gender, age and education); option `subject_field` changes it.

Each sequence's frames inside its segment are sampled at T evenly spaced positions; the event
frames between two sampled positions are averaged into that step's bin, split into ON and OFF:
colour event images use red = ON and blue = OFF; grey ones either a neutral-grey background
(brighter = ON, darker = OFF) or, on a black background, magnitude only (all in ON). The
encoding is detected per sequence unless `event_encoding` names one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.api import Dataset, SkippedItem
from edgekd.data.images import IMAGE_SUFFIXES, progress
from edgekd.data.options import positive_int, resolve_options
from edgekd.errors import DataError, NotFoundError, UsageError
from edgekd.tasks.eye import CLASSES

SEE_OPTIONS: dict[str, Any] = {
    "frames": 8,
    "size": 32,
    "split_file": None,  # default: the only *.json in the SEE folder
    "events": True,
    "event_encoding": "auto",  # auto | red-blue | gray-neutral | gray-magnitude
    "subject_field": 2,
}
ENCODINGS = ("auto", "red-blue", "gray-neutral", "gray-magnitude")
EMOTION_ALIASES = {"happy": "happiness", "sad": "sadness", "anger": "angry", "surprised": "surprise",
                   "disgusted": "disgust", "fearful": "fear"}


def lighting_of(field: str) -> str:
    f = field.lower()
    if "over" in f:
        return "overexposed"
    if "low" in f or "dark" in f:
        return "low-light"
    if "hdr" in f:
        return "hdr"
    if "normal" in f:
        return "normal"
    return f


def label_of(value: Any) -> int | None:
    if isinstance(value, (int, np.integer)) and 0 <= int(value) < len(CLASSES):
        return int(value)
    name = str(value).strip().lower()
    if name.isdigit() and int(name) < len(CLASSES):
        return int(name)
    name = EMOTION_ALIASES.get(name, name)
    return CLASSES.index(name) if name in CLASSES else None


def load_see(path: str | None, seed: int = 0, **options: Any) -> Dataset:
    opts = resolve_options(options, SEE_OPTIONS, "see")
    frames = positive_int(opts, "frames", "see")
    size = positive_int(opts, "size", "see", minimum=4)
    if opts["event_encoding"] not in ENCODINGS:
        raise UsageError(f"see: unknown event_encoding '{opts['event_encoding']}'", hint=f"use one of {', '.join(ENCODINGS)}")
    root = Path(path or "")
    if not (root / "frame").is_dir():
        raise NotFoundError(f"see: no 'frame' folder in '{root}'",
                            hint="point at the SEE folder holding event/<emotion>/<seq>/ and frame/<emotion>/<seq>/")
    split = _read_split(root, opts["split_file"])
    seq_dirs = {d.name: d for emo in sorted((root / "frame").iterdir()) if emo.is_dir()
                for d in sorted(emo.iterdir()) if d.is_dir()}
    skipped = [SkippedItem(name, "no frame folder for this sequence of the split file") for name in split if name not in seq_dirs]
    skipped += [SkippedItem(name, "not in the split file") for name in seq_dirs if name not in split]
    names = [n for n in seq_dirs if n in split]
    x_frames, x_events, labels, meta = [], [], [], {"name": [], "subject": [], "lighting": [], "subset": []}
    for name in progress(names, len(names), "reading SEE sequences"):
        entry = split[name]
        fields = name.split("_")
        label = label_of(entry.get("label", fields[6] if len(fields) > 6 else None))
        if label is None:
            skipped.append(SkippedItem(name, f"unknown emotion label '{entry.get('label')}'"))
            continue
        if len(fields) < 7:
            skipped.append(SkippedItem(name, "name has fewer than 7 '_'-separated fields (lighting is field 6)"))
            continue
        frame_dir = seq_dirs[name]
        event_dir = root / "event" / frame_dir.parent.name / name
        try:
            f_arr, e_arr = _read_sequence(frame_dir, event_dir if opts["events"] else None, entry.get("segment"),
                                          frames, size, opts["event_encoding"])
        except DataError as exc:
            skipped.append(SkippedItem(name, exc.message))
            continue
        x_frames.append(f_arr)
        if e_arr is not None:
            x_events.append(e_arr)
        labels.append(label)
        subj = int(opts["subject_field"]) - 1
        meta["name"].append(name)
        meta["subject"].append(fields[subj] if 0 <= subj < len(fields) else name)
        meta["lighting"].append(lighting_of(fields[5]))
        meta["subset"].append("test" if str(entry.get("subset", "training")).lower().startswith("test") else "train")
    x = {"frames": np.stack(x_frames) if x_frames else np.zeros((0, frames, 1, size, size), np.float32)}
    if opts["events"]:
        x["events"] = np.stack(x_events) if x_events else np.zeros((0, frames, 2, size, size), np.float32)
    return Dataset(task="eye", x=x, y=np.asarray(labels, dtype=np.int64), classes=list(CLASSES),
                   meta={k: np.asarray(v, dtype=str) for k, v in meta.items()}, skipped=skipped, source="see",
                   notes=["see: JSON 'training' = training side, 'testing' = test split; subject = name field "
                          f"{opts['subject_field']}"])


def _read_split(root: Path, split_file: str | None) -> dict[str, dict[str, Any]]:
    if split_file is None:
        found = sorted(root.glob("*.json"))
        if len(found) != 1:
            raise DataError(f"see: {'no' if not found else len(found)} JSON split file(s) in '{root}'",
                            hint="pass the split file with --option split_file=PATH")
        path = found[0]
    else:
        path = Path(split_file)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFoundError(f"see: no split file '{path}'") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DataError(f"{path}: expected {{sequence: {{subset, label, segment}}}}")
    return data


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def _decode(path: Path, size: int, mode: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            img = im.convert(mode)
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.float32) / 255.0
    except Exception as exc:  # corrupt image: the sequence is skipped with this reason
        raise DataError(f"unreadable image {path.name}: {type(exc).__name__}: {exc}") from None


def _read_sequence(frame_dir: Path, event_dir: Path | None, segment: Any, frames: int, size: int, encoding: str
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    frame_files = _images(frame_dir)
    if not frame_files:
        raise DataError("no frame images")
    lo, hi = 0, len(frame_files) - 1
    if isinstance(segment, (list, tuple)) and len(segment) == 2:
        lo, hi = max(0, int(segment[0])), min(len(frame_files) - 1, int(segment[1]))
        if hi < lo:
            raise DataError(f"segment {segment} is empty for {len(frame_files)} frames")
    edges = np.linspace(lo, hi + 1, frames + 1)
    picks = np.minimum(np.floor((edges[:-1] + edges[1:]) / 2).astype(int), hi)
    f_arr = np.stack([_decode(frame_files[i], size, "L") for i in picks])[:, None]
    if event_dir is None:
        return f_arr, None
    event_files = _images(event_dir)
    if not event_files:
        raise DataError(f"no event images in {event_dir.parent.parent.name}/{event_dir.parent.name}/{event_dir.name}")
    e_arr = np.zeros((frames, 2, size, size), dtype=np.float32)
    for t in range(frames):
        a, b = int(np.floor(edges[t])), max(int(np.floor(edges[t + 1])), int(np.floor(edges[t])) + 1)
        members = [event_files[i] for i in range(a, min(b, len(event_files)))]
        if members:
            e_arr[t] = np.mean([_event_planes(_decode(p, size, "RGB"), encoding) for p in members], axis=0)
    return f_arr, e_arr


def _event_planes(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """(2, H, W) ON/OFF planes in [0, 1] from one event image (H, W, 3)."""
    if encoding == "auto":
        colour = np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 0.02 or np.abs(rgb[..., 0] - rgb[..., 1]).mean() > 0.02
        if colour:
            encoding = "red-blue"
        else:
            encoding = "gray-neutral" if np.median(rgb[..., 1]) > 0.25 else "gray-magnitude"
    if encoding == "red-blue":
        return np.stack([np.clip(rgb[..., 0] - rgb[..., 2], 0, 1), np.clip(rgb[..., 2] - rgb[..., 0], 0, 1)])
    gray = rgb.mean(axis=-1)
    if encoding == "gray-neutral":
        background = np.median(gray)
        return np.stack([np.clip((gray - background) / max(1 - background, 1e-3), 0, 1),
                         np.clip((background - gray) / max(background, 1e-3), 0, 1)])
    return np.stack([gray, np.zeros_like(gray)])
