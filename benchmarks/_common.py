"""Helpers shared by the benchmark scripts: environment description and atomic result writing."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

# Wall time of the whole script (imports included), written with every result: the --quick budget
# (3 minutes on 2 cores) is checked against it, beside the load average it ran under.
STARTED = time.monotonic()
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
    env = env_info()
    env["wall_s"] = round(time.monotonic() - STARTED, 1)
    if hasattr(os, "getloadavg"):
        env["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    result = {"figures": figures, "config": config, "env": env}
    if path is not None:
        from edgekd.artifacts import atomic_write_json

        atomic_write_json(path, result)
    return result
