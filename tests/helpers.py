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


def default_sigint() -> None:
    """preexec_fn for a child that a test interrupts with SIGINT: a shell's background job (nohup
    cmd &, CI wrappers) starts with SIGINT ignored, which the child would inherit and Python would
    then never raise KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
