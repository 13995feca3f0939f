"""`edgekd data summary`: what a source holds: counts per class and split, shapes, skipped
inputs and why."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.data.api import Dataset, read_all, split_of_each


def summarize(task: str, source: str, path: str | None = None, seed: int = 0, validation_fraction: float = 0.2,
              split_seed: int = 0, **options: Any) -> dict[str, Any]:
    ds = read_all(task, source, path, seed=seed, **options)
    return describe(ds, path, validation_fraction, split_seed)


def describe(ds: Dataset, path: str | None = None, validation_fraction: float = 0.2, split_seed: int = 0) -> dict[str, Any]:
    splits = split_of_each(ds, validation_fraction, split_seed)
    split_names = [s for s in ("train", "validation", "test") if np.any(splits == s)]
    split_names += sorted(set(splits.tolist()) - set(split_names))
    counts = {
        split: {c: int(np.sum((ds.y == i) & (splits == split))) for i, c in enumerate(ds.classes)} for split in split_names
    }
    modalities = {}
    for name, arr in ds.x.items():
        finite = np.isfinite(arr)
        modalities[name] = {
            "shape": [int(s) for s in arr.shape],
            "dtype": str(arr.dtype),
            "min": float(arr[finite].min()) if finite.any() else None,
            "max": float(arr[finite].max()) if finite.any() else None,
        }
    groups = {}
    for key in ("subject", "lighting", "view"):
        if key in ds.meta:
            values, n = np.unique(ds.meta[key].astype(str), return_counts=True)
            groups[key] = {"distinct": int(len(values)),
                           "counts": {str(v): int(c) for v, c in zip(values, n)} if len(values) <= 12 else None}
    warnings = []
    image = ds.x.get("image")
    if image is not None and len(image):
        flat = image.reshape(len(image), -1)
        constant = np.flatnonzero(flat.max(axis=1) - flat.min(axis=1) < 1e-6)
        if len(constant):
            names = ", ".join(str(ds.meta["name"][i]) for i in constant[:5]) if "name" in ds.meta else ""
            warnings.append(f"{len(constant)} constant (blank) image(s) kept: {names}{' ...' if len(constant) > 5 else ''}")
    return {
        "task": ds.task,
        "source": ds.source,
        "path": path,
        "inputs": len(ds) + len(ds.skipped),
        "usable": len(ds),
        "skipped_count": len(ds.skipped),
        "classes": list(ds.classes),
        "num_classes": len(ds.classes),
        "counts": counts,
        "split_totals": {s: int(sum(c.values())) for s, c in counts.items()},
        "validation_fraction": validation_fraction,
        "split_seed": split_seed,
        "modalities": modalities,
        "layout": ds.layout,
        "groups": groups,
        "skipped": [s.to_dict() for s in ds.skipped],
        "warnings": warnings,
        "notes": list(ds.notes),
    }


def format_summary(info: dict[str, Any]) -> list[Any]:
    """Rich renderables for the terminal: a header, a class x split table, shapes, skipped items."""
    from rich.table import Table
    from rich.text import Text

    out: list[Any] = []
    head = (f"{info['task']} / {info['source']}" + (f"  {info['path']}" if info["path"] else "")
            + f"\n{info['inputs']} inputs, {info['usable']} usable, {info['skipped_count']} skipped; "
            f"{info['num_classes']} classes" + (f"; layout {info['layout']}" if info["layout"] else ""))
    out.append(Text(head))
    table = Table(show_header=True, header_style="bold", title="samples per class and split")
    table.add_column("class")
    splits = list(info["counts"])
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("all", justify="right")
    for c in info["classes"]:
        row = [info["counts"][s][c] for s in splits]
        table.add_row(c, *map(str, row), str(sum(row)))
    table.add_row("total", *[str(info["split_totals"][s]) for s in splits], str(info["usable"]), style="bold")
    out.append(table)
    shapes = Table(show_header=True, header_style="bold", title="arrays")
    for col in ("modality", "shape", "dtype", "min", "max"):
        shapes.add_column(col)
    for name, m in info["modalities"].items():
        fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
        shapes.add_row(name, "x".join(map(str, m["shape"])), m["dtype"], fmt(m["min"]), fmt(m["max"]))
    out.append(shapes)
    for key, g in info["groups"].items():
        detail = ", ".join(f"{k} {v}" for k, v in g["counts"].items()) if g["counts"] else ""
        out.append(Text(f"{key}: {g['distinct']} distinct" + (f" ({detail})" if detail else "")))
    if info["skipped"]:
        out.append(Text(f"skipped {info['skipped_count']}:", style="yellow"))
        for s in info["skipped"][:20]:
            out.append(Text(f"  {s['item']}: {s['reason']}"))
        if info["skipped_count"] > 20:
            out.append(Text(f"  ... {info['skipped_count'] - 20} more (use --json for all)"))
    for w in info["warnings"]:
        out.append(Text(f"warning: {w}", style="yellow"))
    for note in info["notes"]:
        out.append(Text(f"note: {note}", style="dim"))
    return out
