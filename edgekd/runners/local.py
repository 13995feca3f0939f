"""LocalTransport: this host, through subprocess, with the same interface as a remote device."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from edgekd.artifacts import atomic_write_bytes
from edgekd.runners.base import Transport


class LocalTransport(Transport):
    name = "local"

    def __init__(self, workdir: str | Path | None = None, python: str | None = None):
        self.workdir = str(workdir) if workdir else None
        self._python = python or sys.executable

    def python(self) -> str:
        return self._python

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return [str(a) for a in argv]

    def expand(self, path: str) -> str:
        return str(Path(path).expanduser())

    def put(self, local: Path, remote: str, timeout_s: float = 60.0) -> None:
        dest = Path(self.expand(remote))
        dest.parent.mkdir(parents=True, exist_ok=True)
        if Path(local).resolve() != dest.resolve():
            # a temporary file of its own (two targets on this host may put the same file at once)
            atomic_write_bytes(dest, Path(local).read_bytes())
