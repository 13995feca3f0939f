"""Synthetic grayscale faces with seven expressions (FER2013 label order): a small built-in
stand-in for FER2013 so the `face` task runs without downloads.

A face (skin tone, face width, eye spacing, hair line, background per subject) is drawn with
brows, eyes, nose shadow and mouth whose shape follows the expression at a random intensity:
angry (brows down and in, narrowed eyes, pressed lips), disgust (nose wrinkle, raised upper lip,
narrowed eyes), fear (brows up and in, wide eyes, stretched open mouth), happy (smile, squint),
sad (inner brows up, mouth corners down), surprise (brows high, wide eyes, round open mouth),
neutral. Head shift, scale and roll, side lighting, blur and noise vary per image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.data.api import Dataset
from edgekd.data.options import positive_int, resolve_options
from edgekd.tasks.face import CLASSES

# Per class: brow_raise, brow_inner, eye_open, mouth_curve, mouth_open, mouth_width, nose_wrinkle
EXPRESSION = {
    "angry": (-0.6, -0.7, -0.4, -0.25, 0.0, 0.0, 0.2),
    "disgust": (-0.35, -0.2, -0.35, -0.35, 0.25, -0.1, 0.9),
    "fear": (0.6, 0.6, 0.6, -0.25, 0.45, 0.2, 0.0),
    "happy": (0.05, 0.0, -0.3, 0.9, 0.3, 0.25, 0.1),
    "sad": (0.0, 0.7, -0.2, -0.7, 0.0, -0.05, 0.0),
    "surprise": (0.9, 0.2, 0.7, 0.0, 0.9, -0.3, 0.0),
    "neutral": (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
}
DEFAULTS: dict[str, Any] = {"samples": 2100, "subjects": 60, "size": 48}


def load_synthetic_face(path: str | None = None, seed: int = 0, **options: Any) -> Dataset:
    where = "synthetic face data"
    opts = resolve_options(options, DEFAULTS, where)
    n = positive_int(opts, "samples", where)
    subjects = positive_int(opts, "subjects", where)
    size = positive_int(opts, "size", where, minimum=16)
    rng = np.random.default_rng(seed)
    subject = rng.permutation(np.arange(n) % subjects)
    label = np.empty(n, dtype=np.int64)
    for s in range(subjects):
        members = np.flatnonzero(subject == s)
        label[members] = rng.permutation(np.arange(len(members)) % len(CLASSES))
    images = np.empty((n, 1, size, size), dtype=np.float32)
    for start in range(0, n, 512):
        idx = np.arange(start, min(n, start + 512))
        images[idx, 0] = _render(rng, label[idx], subject[idx], size, seed)
    names = np.array([f"synface_{i:05d}_p{subject[i]:03d}_{CLASSES[label[i]]}" for i in range(n)])
    # Faces have no subject-disjoint protocol in FER2013 (the face task splits stratified by
    # class); "subject" is kept for users who want one.
    return Dataset(task="face", x={"image": images}, y=label, classes=list(CLASSES),
                   meta={"name": names, "subject": np.array([f"syn-p{s:03d}" for s in subject]),
                         "subset": np.full(n, "train")},
                   source="synthetic", notes=[f"synthetic faces: seed {seed}, {subjects} subjects, {size}x{size}"])


def _render(rng: np.random.Generator, label: np.ndarray, subject: np.ndarray, size: int, seed: int) -> np.ndarray:
    b = len(label)
    srng = np.random.default_rng([seed, 7])  # subject anatomy: the same for a subject in every chunk
    k = int(subject.max()) + 1
    anat = {name: srng.uniform(lo, hi, k)[subject][:, None, None] for name, (lo, hi) in {
        "skin": (0.35, 0.8), "bg": (0.05, 0.9), "face_w": (0.62, 0.78), "eye_dx": (0.3, 0.4), "eye_y": (-0.22, -0.1),
        "mouth_y": (0.38, 0.5), "hair": (0.05, 0.4), "hair_line": (-0.75, -0.5), "brow_dark": (0.3, 0.7)}.items()}
    expr = np.array([EXPRESSION[CLASSES[c]] for c in label], dtype=np.float32)
    expr = expr * rng.uniform(0.4, 1.1, (b, 1)).astype(np.float32) + rng.normal(0, 0.08, expr.shape).astype(np.float32)
    e = {name: expr[:, i, None, None] for i, name in enumerate(
        ("brow_raise", "brow_inner", "eye_open", "mouth_curve", "mouth_open", "mouth_width", "nose_wrinkle"))}
    coords = np.linspace(-1, 1, size, dtype=np.float32)
    gx, gy = coords[None, None, :], coords[None, :, None]  # y grows downwards
    roll = rng.normal(0, 0.12, (b, 1, 1)).astype(np.float32)
    scale = rng.uniform(0.85, 1.1, (b, 1, 1)).astype(np.float32)
    shift = rng.normal(0, 0.06, (b, 2, 1, 1)).astype(np.float32)
    x = (np.cos(roll) * gx + np.sin(roll) * gy) / scale - shift[:, 0]
    y = (-np.sin(roll) * gx + np.cos(roll) * gy) / scale - shift[:, 1]
    px = 2.0 / size

    def soft(d: np.ndarray) -> np.ndarray:  # inside where d > 0, one pixel of anti-aliasing
        return np.clip(d / px + 0.5, 0, 1)

    face = soft(1 - np.sqrt((x / anat["face_w"]) ** 2 + (y / 0.95) ** 2))
    img = anat["bg"] * (1 - face) + anat["skin"] * face * (1 - 0.25 * (y + 1) / 2)
    img = img * (1 - 0.7 * soft(anat["hair_line"] - y) * face) + anat["hair"] * soft(anat["hair_line"] - y) * face
    for side in (-1.0, 1.0):
        ex = x - side * anat["eye_dx"]
        ey = y - anat["eye_y"]
        opening = 0.075 * (1 + 0.6 * e["eye_open"])
        eye = soft(1 - np.sqrt((ex / 0.14) ** 2 + (ey / np.maximum(opening, 0.01)) ** 2))
        iris = soft(0.055 - np.sqrt(ex**2 + ey**2)) * eye
        img = img * (1 - eye) + (0.85 * eye * (1 - iris) + 0.12 * iris)
        # Brow: lowered/raised as a whole, its inner end (towards the nose) tilted by brow_inner.
        inner = np.clip(-side * ex / 0.16, -1, 1)
        brow_y = anat["eye_y"] - 0.17 - 0.09 * e["brow_raise"] - 0.07 * e["brow_inner"] * (inner + 1) / 2
        brow = soft(0.028 - np.abs(y - brow_y)) * soft(0.19 - np.abs(ex))
        img = img * (1 - anat["brow_dark"] * brow)
    nose = soft(0.03 - np.abs(x)) * soft(0.18 - np.abs(y - 0.12)) * 0.15
    wrinkle = np.clip(e["nose_wrinkle"], 0, None) * soft(0.02 - np.abs(y + 0.02 - 0.04 * np.cos(12 * x))) * soft(0.12 - np.abs(x)) * 0.4
    img = img * (1 - nose - wrinkle)
    mx = x / (0.22 * (1 + 0.4 * e["mouth_width"]))
    curve = anat["mouth_y"] - 0.12 * e["mouth_curve"] * mx**2
    half_open = 0.012 + 0.09 * np.clip(e["mouth_open"], 0, None)
    mouth = soft(1 - np.abs(mx)) * soft(half_open - np.abs(y - curve + 0.03 * e["mouth_curve"]))
    teeth = mouth * soft(0.3 - np.abs(e["mouth_curve"] - 0.9)) * 0.6
    img = img * (1 - 0.8 * mouth) + teeth
    light = 1 + rng.uniform(-0.35, 0.35, (b, 1, 1)).astype(np.float32) * gx
    img = img * light
    # A 3x3 blur (camera optics) and sensor noise.
    padded = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    img = sum(padded[:, i:i + size, j:j + size] for i in range(3) for j in range(3)) / 9
    img = img + rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)
