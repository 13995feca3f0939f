"""Face expression readers: FER2013 (the canonical CSV and the image-folder layout), generic image
folders (any class folders, e.g. CK+) and RAF-DB basic. All give x["image"] (N, 1, H, W) in [0, 1].

FER2013 and RAF-DB labels are mapped onto the FER2013 label order (edgekd.tasks.face.CLASSES);
a generic image folder keeps its own class names (sorted folder names).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.api import Dataset, SkippedItem
from edgekd.data.images import cached_decode, list_images, progress
from edgekd.data.options import resolve_options
from edgekd.errors import DataError, NotFoundError, UsageError
from edgekd.tasks.face import ALIASES, CLASSES

FACE_OPTIONS: dict[str, Any] = {
    "size": 48,  # output H = W; FER2013 is 48x48 already
    "cache": True,  # cache decoded image folders under ~/.cache/edgekd
}
FER_CSV_OPTIONS: dict[str, Any] = {**FACE_OPTIONS, "test_usage": "PrivateTest"}
FER_USAGE = {"Training": "train", "PublicTest": "public-test", "PrivateTest": "private-test"}
# RAF-DB basic labels 1..7.
RAFDB_LABELS = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}
TRAIN_TEST_DIRS = {"train": "train", "training": "train", "test": "test", "testing": "test", "val": "test",
                   "validation": "test", "publictest": "test", "privatetest": "test"}


def load_face_source(source: str, path: str | None, **options: Any) -> Dataset:
    root = Path(path or "")
    if source == "fer2013":
        if root.is_file():
            return load_fer2013_csv(root, **options)
        return load_image_folder(root, canonical=True, source="fer2013", **options)
    if source == "imagefolder":
        return load_image_folder(root, canonical=False, source="imagefolder", **options)
    if source == "rafdb":
        return load_rafdb(root, **options)
    raise UsageError(f"'{source}' is not a face source", hint="face sources: fer2013, imagefolder, rafdb")


def _faces_dataset(images: np.ndarray, size: int, labels: np.ndarray, classes: list[str], names: list[str],
                   subsets: list[str], skipped: list[SkippedItem], source: str, notes: list[str]) -> Dataset:
    x = images.astype(np.float32)[:, None] / np.float32(255.0) if len(images) else np.zeros((0, 1, size, size), np.float32)
    return Dataset(task="face", x={"image": x}, y=np.asarray(labels, dtype=np.int64), classes=classes,
                   meta={"name": np.asarray(names, dtype=str), "subset": np.asarray(subsets, dtype=str)},
                   skipped=skipped, source=source, notes=notes)


def _check_classes(counts: dict[str, int], where: str) -> None:
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise DataError(
            f"{where}: class{'es' if len(empty) > 1 else ''} {', '.join(empty)} ha{'ve' if len(empty) > 1 else 's'} no usable images",
            hint="every class needs images; remove the empty class folder or add its images",
        )


# ---------------------------------------------------------------- FER2013 csv


def load_fer2013_csv(path: Path, **options: Any) -> Dataset:
    opts = resolve_options(options, FER_CSV_OPTIONS, "fer2013 csv")
    size = int(opts["size"])
    test_usage = opts["test_usage"]
    if test_usage not in ("PrivateTest", "PublicTest"):
        raise UsageError(f"fer2013: test_usage must be PrivateTest or PublicTest, got '{test_usage}'")
    images, labels, names, subsets, skipped = [], [], [], [], []
    try:
        fh = open(path, newline="")
    except OSError as exc:
        raise NotFoundError(f"fer2013: cannot open '{path}' ({exc.strerror})") from None
    with fh:
        reader = csv.DictReader(fh)
        missing = {"emotion", "pixels"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: not a FER2013 csv: missing column(s) {', '.join(sorted(missing))} "
                            f"(header: {', '.join(reader.fieldnames or ['(empty)'])})",
                            hint="expected the header 'emotion,pixels,Usage'")
        for row in progress(reader, 35887, "reading fer2013.csv"):
            line = reader.line_num
            item = f"row {line - 1} (line {line})"
            try:
                label = int(row["emotion"])
            except (TypeError, ValueError):
                skipped.append(SkippedItem(item, f"emotion '{row['emotion']}' is not an integer"))
                continue
            if not 0 <= label < len(CLASSES):
                skipped.append(SkippedItem(item, f"emotion {label} outside 0..6"))
                continue
            pix = np.fromstring(row["pixels"] or "", dtype=np.float64, sep=" ")  # noqa: NPY - fast text parse
            side = int(round(np.sqrt(pix.size)))
            if pix.size == 0 or side * side != pix.size or pix.size != 2304:
                skipped.append(SkippedItem(item, f"{pix.size} pixel values, expected 2304 (48x48)"))
                continue
            if pix.min() < 0 or pix.max() > 255:
                skipped.append(SkippedItem(item, "pixel values outside 0..255"))
                continue
            usage = (row.get("Usage") or "Training").strip()
            if usage not in FER_USAGE:
                skipped.append(SkippedItem(item, f"unknown Usage '{usage}' (Training, PublicTest, PrivateTest)"))
                continue
            subset = FER_USAGE[usage]
            if usage == test_usage:
                subset = "test"
            img = pix.reshape(48, 48).astype(np.uint8)
            if size != 48:
                from PIL import Image

                img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
            images.append(img)
            labels.append(label)
            names.append(f"fer2013_{line - 1:05d}")
            subsets.append(subset)
    if not images:
        raise DataError(f"{path}: no usable rows ({len(skipped)} skipped)", hint="check that this is fer2013.csv")
    counts = {c: int(np.sum(np.asarray(labels) == i)) for i, c in enumerate(CLASSES)}
    _check_classes(counts, str(path))
    return _faces_dataset(np.stack(images), size, np.asarray(labels), list(CLASSES), names, subsets, skipped, "fer2013",
                          [f"fer2013 csv: Training = training side, {test_usage} = test split"])


# ---------------------------------------------------------------- image folders


def load_image_folder(root: Path, canonical: bool, source: str, **options: Any) -> Dataset:
    """`root/<class>/*.jpg`, or `root/train|test/<class>/*.jpg`. canonical=True maps class folder
    names onto the FER2013 classes (aliases allowed); else the sorted folder names are the classes."""
    opts = resolve_options(options, FACE_OPTIONS, source)
    size = int(opts["size"])
    if not root.is_dir():
        raise NotFoundError(f"{source}: no folder '{root}'", hint="point at the folder holding one sub-folder per class")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    sides = {d: TRAIN_TEST_DIRS[d.name.lower()] for d in subdirs if d.name.lower() in TRAIN_TEST_DIRS}
    if sides and len(sides) == len(subdirs):
        side_dirs = list(sides.items())
    else:
        side_dirs = [(root, "train")]
    class_dirs: list[tuple[Path, str, str]] = []  # (folder, class folder name, subset)
    for side_root, subset in side_dirs:
        for d in sorted(x for x in side_root.iterdir() if x.is_dir() and not x.name.startswith(".")):
            class_dirs.append((d, d.name, subset))
    if not class_dirs:
        raise DataError(f"{source}: '{root}' has no class folders",
                        hint="expected root/<class>/<image> (e.g. train/angry/0001.jpg)")
    if canonical:
        unknown = sorted({name for _, name, _ in class_dirs if name.lower() not in ALIASES})
        if unknown:
            raise DataError(f"{source}: class folder(s) {', '.join(unknown)} are not FER2013 classes",
                            hint=f"expected {', '.join(CLASSES)}; use source 'imagefolder' for other class sets")
        classes = list(CLASSES)
        class_of = {name: classes.index(ALIASES[name.lower()]) for _, name, _ in class_dirs}
    else:
        classes = sorted({name for _, name, _ in class_dirs})
        class_of = {name: classes.index(name) for name in classes}
    files, labels, subsets, skipped = [], [], [], []
    for d, name, subset in class_dirs:
        imgs, other = list_images(d)
        skipped += [SkippedItem(f"{d.relative_to(root).as_posix()}/{s.item}", s.reason) for s in other]
        files += imgs
        labels += [class_of[name]] * len(imgs)
        subsets += [subset] * len(imgs)
    images, ok, bad = cached_decode(root, files, size, bool(opts["cache"]), f"decoding {source} images")
    skipped += bad
    labels_ok = np.asarray(labels, dtype=np.int64)[ok]
    counts = {c: int(np.sum(labels_ok == i)) for i, c in enumerate(classes)}
    if len(labels_ok):
        _check_classes(counts, f"{source} at '{root}'")
    names = [f.relative_to(root).as_posix() for f, good in zip(files, ok) if good]
    return _faces_dataset(images, size, labels_ok, classes, names, list(np.asarray(subsets)[ok]) if len(subsets) else [],
                          skipped, source, [f"{source}: image folders at {root}"])


# ---------------------------------------------------------------- RAF-DB basic


def load_rafdb(root: Path, **options: Any) -> Dataset:
    """RAF-DB basic: EmoLabel/list_patition_label.txt ("train_00001.jpg 5" per line) and
    Image/aligned/<stem>_aligned.jpg (or Image/original/<name>)."""
    opts = resolve_options(options, FACE_OPTIONS, "rafdb")
    size = int(opts["size"])
    if not root.is_dir():
        raise NotFoundError(f"rafdb: no folder '{root}'", hint="point at RAF-DB's 'basic' folder")
    label_file = None
    for name in ("list_patition_label.txt", "list_partition_label.txt"):  # the release misspells it
        found = sorted(root.rglob(name))
        if found:
            label_file = found[0]
            break
    if label_file is None:
        raise DataError(f"rafdb: no EmoLabel/list_patition_label.txt under '{root}'",
                        hint="point at RAF-DB's 'basic' folder (EmoLabel/ and Image/ inside)")
    candidates = [root / "Image" / "aligned", root / "aligned", root / "Image" / "original", root / "original", root / "Image", root]
    files, labels, subsets, names, skipped = [], [], [], [], []
    for lineno, line in enumerate(label_file.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        item = f"{label_file.name}:{lineno}"
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in RAFDB_LABELS:
            skipped.append(SkippedItem(item, f"expected '<image> <label 1..7>', got '{line.strip()}'"))
            continue
        image_name, label = parts[0], int(parts[1])
        stem = Path(image_name).stem
        path = next((p for d in candidates for p in (d / f"{stem}_aligned.jpg", d / image_name) if p.is_file()), None)
        if path is None:
            skipped.append(SkippedItem(image_name, "image file not found (looked in Image/aligned and Image/original)"))
            continue
        files.append(path)
        labels.append(CLASSES.index(RAFDB_LABELS[label]))
        subsets.append("test" if image_name.startswith("test") else "train")
        names.append(image_name)
    images, ok, bad = cached_decode(root, files, size, bool(opts["cache"]), "decoding RAF-DB images")
    skipped += bad
    labels_ok = np.asarray(labels, dtype=np.int64)[ok]
    if len(labels_ok):
        _check_classes({c: int(np.sum(labels_ok == i)) for i, c in enumerate(CLASSES)}, f"rafdb at '{root}'")
    return _faces_dataset(images, size, labels_ok, list(CLASSES), [n for n, g in zip(names, ok) if g],
                          [s for s, g in zip(subsets, ok) if g], skipped, "rafdb",
                          ["rafdb basic: train_* = training side, test_* = test split; labels mapped to FER2013 order"])
