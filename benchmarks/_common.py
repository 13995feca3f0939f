"""Helpers shared by the benchmark scripts: environment description and atomic result writing."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(REPO))


def env_info() -> dict[str, Any]:
    """python/torch/numpy versions, CPU count and platform, without importing heavy packages."""
    from importlib import metadata

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpu_count": os.cpu_count()}
    for name in ("numpy", "torch", "tensorflow", "onnxruntime", "ai-edge-litert"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return info


def write_result(path: str | os.PathLike | None, figures: dict[str, float], config: dict[str, Any]) -> dict[str, Any]:
    """Write {"figures", "config", "env"} atomically to `path` (if given) and return it."""
    bad = [k for k, v in figures.items() if not isinstance(v, (int, float)) or isinstance(v, bool)]
    if bad:
        raise TypeError(f"figures must be plain numbers: {', '.join(bad)}")
    result = {"figures": figures, "config": config, "env": env_info()}
    if path is not None:
        from edgekd.artifacts import atomic_write_json

        atomic_write_json(path, result)
    return result
