"""Write tiny datasets in the real on-disk formats, for the reader tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def face_image(rng: np.random.Generator, label: int, size: int = 48) -> np.ndarray:
    """A uint8 face-like image whose mean brightness encodes the label (so labels are checkable)."""
    img = rng.integers(0, 40, (size, size)).astype(np.int32) + 30 * label
    img[size // 3, :] = 255  # a bright line: not constant
    return np.clip(img, 0, 255).astype(np.uint8)


def write_jpg(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)
    return path


def write_fer_csv(path: Path, rows: list[tuple[int, np.ndarray, str]], extra_lines: list[str] = ()) -> Path:
    lines = ["emotion,pixels,Usage"]
    lines += [f"{label},{' '.join(map(str, img.ravel().tolist()))},{usage}" for label, img, usage in rows]
    lines += list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_fer_folder(root: Path, per_class: int, rng: np.random.Generator, classes=FER_CLASSES) -> Path:
    for label, name in enumerate(classes):
        for i in range(per_class):
            write_jpg(root / name / f"Training_{label}{i:04d}.jpg", face_image(rng, label))
    return root


def write_msr_file(root: Path, action: int, subject: int, execution: int, frames: np.ndarray) -> Path:
    """frames: (F, 20, 3) metres; confidence column 1."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"a{action:02d}_s{subject:02d}_e{execution:02d}_skeleton3D.txt"
    lines = [f"{x:.6f} {y:.6f} {z:.6f} 1.000000" for f in frames for x, y, z in f]
    path.write_text("\n".join(lines) + "\n")
    return path


def moving_skeleton(rng: np.random.Generator, frames: int, joints: int) -> np.ndarray:
    """(F, V, 3): a random pose drifting over time, about 2.5 m from the camera."""
    base = rng.normal(0, 0.3, (joints, 3)) + np.array([0, 0, 2.5])
    drift = np.cumsum(rng.normal(0, 0.01, (frames, joints, 3)), axis=0)
    return base[None] + drift


def write_ntu_skeleton(path: Path, bodies: list[np.ndarray], body_ids: list[str] | None = None) -> Path:
    """Real NTU .skeleton text: bodies are (F, 25, 3) arrays (NaN rows = body absent in that frame)."""
    frames = bodies[0].shape[0]
    ids = body_ids or [f"7205873004{i}0000{i}" for i in range(len(bodies))]
    out = [str(frames)]
    for f in range(frames):
        present = [b for b in range(len(bodies)) if not np.isnan(bodies[b][f]).any()]
        out.append(str(len(present)))
        for b in present:
            out.append(f"{ids[b]} 0 1 1 1 1 0 -0.2 0.1 2")
            out.append("25")
            for x, y, z in bodies[b][f]:
                out.append(f"{x:.7f} {y:.7f} {z:.7f} 280.1 190.2 1010.3 520.4 -0.21 0.04 0.97 -0.07 2")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\r\n".join(out) + "\r\n")
    return path


def write_see(root: Path, rng: np.random.Generator, subjects=("001", "002", "003"), emotions=("angry", "happiness", "surprise"),
              lightings=("normal", "overexposure", "low_light", "HDR"), frames: int = 10, test_subjects=("003",)) -> Path:
    split = {}
    for subj in subjects:
        for emo in emotions:
            for light in lightings:
                name = f"1_{subj}_man_24_Master_{light}_{emo}_45_take000"
                for kind in ("frame", "event"):
                    for i in range(frames):
                        if kind == "frame":
                            arr = rng.integers(0, 255, (40, 40), dtype=np.uint8)
                        else:
                            arr = np.zeros((40, 40, 3), np.uint8)
                            arr[4:12, 4:12, 0] = 255  # ON (red)
                            arr[24:32, 24:32, 2] = 255  # OFF (blue)
                        write_jpg(root / kind / emo / name / f"{i:05d}.jpg", arr)
                split[name] = {"subset": "testing" if subj in test_subjects else "training", "label": emo,
                               "segment": [1, frames - 2]}
    (root / "see_split.json").write_text(json.dumps(split))
    return root
