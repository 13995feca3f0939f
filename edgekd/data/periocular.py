"""Real single-eye data from face datasets: periocular crops (one eye, or the upper band) of
aligned faces, repeated over T frames with a sub-pixel fixational jitter (eyes are never quite
still), and event frames made from those frames by the DVS model in `events.py` (the DSEE
recipe for pairing frames with synthetic events).

Static photographs carry no expression dynamics: the T frames differ only by the jitter, and the
events mostly trace edges. This set tests appearance cues on real eyes; the temporal cues of the
task come from the synthetic set or SEE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekd.data.api import Dataset
from edgekd.data.events import EventParams, event_frames
from edgekd.data.options import positive_int, resolve_options
from edgekd.errors import UsageError
from edgekd.tasks.eye import CLASSES as EYE_CLASSES
from edgekd.tasks.face import ALIASES

# Crop boxes as (centre x, centre y, half width, half height) in fractions of an aligned face;
# measured on the mean FER2013 face (eyes at about (0.33, 0.36) and (0.67, 0.36)). "eye" is the
# subject's right eye, on the image's left, as SEE records the right eye.
CROPS = {"eye": (0.33, 0.36, 0.21, 0.21), "band": (0.5, 0.36, 0.45, 0.22)}
FACE_TO_EYE = {"happy": "happiness", "sad": "sadness"}

PERIOCULAR_OPTIONS: dict[str, Any] = {
    "frames": 8,
    "size": 32,
    "crop": "eye",  # "eye" | "band"
    "jitter": 0.5,  # std of the per-frame fixational shift, in output pixels
    "events": True,
    "cache": True,
}


def load_periocular(source: str, path: str | None, seed: int = 0,
                    select: Callable[[Dataset], np.ndarray] | None = None, **options: Any) -> Dataset:
    """Eye crops of a face source; `select(faces)` picks the faces to crop (default: all)."""
    from edgekd.data.faces import load_face_source

    opts = resolve_options(options, PERIOCULAR_OPTIONS, f"{source} (periocular eye crops)")
    # FER2013 faces are 48x48; other datasets are decoded at 96x96 so the eye crop keeps detail.
    face_size = 48 if source == "fer2013" else 96
    faces = load_face_source(source, path, size=face_size, cache=opts.pop("cache"))
    if select is not None:
        faces = faces.subset(select(faces))
    return periocular_from_faces(faces, seed=seed, **opts)


def periocular_from_faces(faces: Dataset, seed: int = 0, frames: int = 8, size: int = 32, crop: str = "eye",
                          jitter: float = 0.5, events: bool = True, chunk: int = 2048) -> Dataset:
    """An `eye` Dataset (frames, events) from a `face` Dataset of aligned faces."""
    frames = positive_int({"frames": frames}, "frames", "periocular", minimum=1)
    size = positive_int({"size": size}, "size", "periocular", minimum=4)
    if crop not in CROPS:
        raise UsageError(f"periocular: unknown crop '{crop}'", hint=f"crops: {', '.join(CROPS)}")
    images = faces.x["image"][:, 0]  # (N, Hf, Wf)
    n = len(images)
    rng = np.random.default_rng(seed)
    shifts = rng.normal(0.0, jitter, (n, frames, 2)).astype(np.float32) if jitter > 0 else np.zeros((n, frames, 2), np.float32)
    shifts[:, 0] = 0.0
    out_frames = np.empty((n, frames, 1, size, size), dtype=np.float32)
    out_events = np.empty((n, frames, 2, size, size), dtype=np.float32) if events else None
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        out_frames[sl, :, 0] = _crop(images[sl], CROPS[crop], size, shifts[sl])
        if out_events is not None:
            params = EventParams(noise_rate=0.001)
            out_events[sl] = event_frames(out_frames[sl, :, 0], params=params, rng=rng)
    classes, label_map = _eye_classes(faces.classes)
    x = {"frames": out_frames}
    if out_events is not None:
        x["events"] = out_events
    meta = dict(faces.meta)
    meta["lighting"] = np.full(n, "unknown")
    return Dataset(
        task="eye", x=x, y=label_map[faces.y], classes=classes, meta=meta, skipped=list(faces.skipped),
        source=faces.source,
        notes=list(faces.notes) + [f"periocular '{crop}' crops of static faces, T={frames} jittered copies; "
                                   "events made from the frames (no real event camera)"],
    )


def _eye_classes(face_classes: list[str]) -> tuple[list[str], np.ndarray]:
    """Face class names in eye-task terms; the SEE order when the face classes are the seven basic ones."""
    names = [FACE_TO_EYE.get(ALIASES.get(c.lower(), c.lower()), ALIASES.get(c.lower(), c)) for c in face_classes]
    if sorted(names) == sorted(EYE_CLASSES):
        classes = list(EYE_CLASSES)
        return classes, np.array([classes.index(c) for c in names], dtype=np.int64)
    return names, np.arange(len(names), dtype=np.int64)


def _crop(images: np.ndarray, box: tuple[float, float, float, float], size: int, shifts: np.ndarray) -> np.ndarray:
    """Crops (B, T, size, size) of images (B, H, W) around `box`, each frame shifted by up to one
    output pixel: one bilinear crop with a 1-pixel margin, then a separable sub-pixel shift."""
    b, h, w = images.shape
    cx, cy, hw, hh = box
    m = size + 2
    step_x, step_y = 2 * hw * w / size, 2 * hh * h / size  # face pixels per output pixel
    xs = cx * w - 0.5 + (np.arange(m, dtype=np.float32) - (m - 1) / 2) * step_x
    ys = cy * h - 0.5 + (np.arange(m, dtype=np.float32) - (m - 1) / 2) * step_y
    xs, ys = np.clip(xs, 0, w - 1), np.clip(ys, 0, h - 1)
    x0, y0 = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (xs - x0)[None, None, :], (ys - y0)[None, :, None]
    rows = images[:, y0] * (1 - fy) + images[:, y1] * fy  # (B, m, W)
    padded = (rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx).astype(np.float32)  # (B, m, m)
    shifts = np.clip(shifts, -1.0, 1.0)
    out = np.empty((b, shifts.shape[1], size, size), dtype=np.float32)
    for t in range(shifts.shape[1]):
        dx = shifts[:, t, 0, None, None]
        dy = shifts[:, t, 1, None, None]
        col = padded[:, :, 1:-1] * (1 - np.abs(dx)) + np.where(dx > 0, padded[:, :, 2:], padded[:, :, :-2]) * np.abs(dx)
        out[:, t] = col[:, 1:-1] * (1 - np.abs(dy)) + np.where(dy > 0, col[:, 2:], col[:, :-2]) * np.abs(dy)
    return out
