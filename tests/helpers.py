"""Helpers for tests: run the CLI in-process or as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m edgekd ARGS` as a user would, capturing output."""
    full_env = dict(os.environ)
    full_env.pop("EDGEKD_DEBUG", None)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "edgekd", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO,
    )
