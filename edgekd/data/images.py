"""Reading folders of images: decode to grayscale arrays with Pillow, report what cannot be read,
and cache decoded arrays under the user's cache directory (never in the repository).

The cache key is the sha256 of the folder path, every file's relative path, size and mtime, and
the output size, so any change to the folder makes a new entry. Entries are written atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from edgekd.data.api import SkippedItem

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp", ".gif"}
CACHE_VERSION = 1
T = TypeVar("T")


def cache_dir() -> Path:
    """$EDGEKD_CACHE_DIR, else $XDG_CACHE_HOME/edgekd, else ~/.cache/edgekd."""
    env = os.environ.get("EDGEKD_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "edgekd"


def progress(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """A rich progress bar on an interactive terminal; a plain loop otherwise."""
    if total < 2000 or not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import track

    yield from track(items, total=total, description=description, transient=True)


def decode_gray(path: Path, size: int | None) -> np.ndarray:
    """(H, W) uint8 grayscale; resized to size x size when size is given. Raises OSError/ValueError."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        gray = im.convert("L")
        if size is not None and gray.size != (size, size):
            gray = gray.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(gray, dtype=np.uint8)


def decode_many(paths: list[Path], size: int | None, names: list[str], description: str
                ) -> tuple[list[np.ndarray], np.ndarray, list[SkippedItem]]:
    """Decode each path; (arrays, ok mask, skipped). A file that fails is skipped with the reason."""
    arrays: list[np.ndarray] = []
    ok = np.zeros(len(paths), dtype=bool)
    skipped: list[SkippedItem] = []
    for i, path in enumerate(progress(paths, len(paths), description)):
        try:
            img = decode_gray(path, size)
        except Exception as exc:  # Pillow raises many types for corrupt files; each is reported
            skipped.append(SkippedItem(names[i], f"unreadable image: {type(exc).__name__}: {exc}"))
            continue
        if img.size == 0:
            skipped.append(SkippedItem(names[i], "image has no pixels"))
            continue
        if size is None and arrays and img.shape != arrays[0].shape:
            skipped.append(SkippedItem(names[i], f"size {img.shape[1]}x{img.shape[0]} differs from the first image's "
                                                 f"{arrays[0].shape[1]}x{arrays[0].shape[0]} (pass the size option)"))
            continue
        arrays.append(img)
        ok[i] = True
    return arrays, ok, skipped


def list_images(folder: Path) -> tuple[list[Path], list[SkippedItem]]:
    """Image files under `folder` (recursive, sorted); other visible files are reported as skipped."""
    images, skipped = [], []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        else:
            skipped.append(SkippedItem(p.relative_to(folder).as_posix(), f"not an image file ('{p.suffix or 'no suffix'}')"))
    return images, skipped


def cached_decode(root: Path, files: list[Path], size: int | None, use_cache: bool, description: str,
                  decode: Callable[[list[Path], int | None, list[str], str],
                                   tuple[list[np.ndarray], np.ndarray, list[SkippedItem]]] = decode_many,
                  ) -> tuple[np.ndarray, np.ndarray, list[SkippedItem]]:
    """(images (K, H, W) uint8, ok mask over files, skipped) for `files` under `root`, from the cache
    when an entry for exactly these files exists."""
    names = [f.relative_to(root).as_posix() for f in files]
    key = None
    if use_cache:
        digest = hashlib.sha256(f"v{CACHE_VERSION}|{root.resolve()}|{size}".encode())
        for f, name in zip(files, names):
            st = f.stat()
            digest.update(f"|{name}|{st.st_size}|{st.st_mtime_ns}".encode())
        key = digest.hexdigest()
        entry = cache_dir() / "images" / f"{key}.npz"
        if entry.is_file():
            try:
                with np.load(entry, allow_pickle=False) as z:
                    skipped = [SkippedItem(**s) for s in json.loads(str(z["skipped"]))]
                    return z["images"], z["ok"], skipped
            except Exception:  # a damaged cache entry is rebuilt, never trusted
                pass
    arrays, ok, skipped = decode(files, size, names, description)
    images = np.stack(arrays) if arrays else np.zeros((0, size or 0, size or 0), dtype=np.uint8)
    if key is not None:
        _write_cache(cache_dir() / "images" / f"{key}.npz", images, ok, skipped)
    return images, ok, skipped


def _write_cache(path: Path, images: np.ndarray, ok: np.ndarray, skipped: list[SkippedItem]) -> None:
    from edgekd.artifacts import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez(buffer, images=images, ok=ok, skipped=np.array(json.dumps([s.to_dict() for s in skipped])))
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError:  # a read-only or full cache directory only costs speed
        pass
