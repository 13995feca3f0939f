"""LocalTransport: this host, through subprocess, with the same interface as a remote device."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

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
            # a temporary name of its own: two targets on this host may put the same file at once
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            os.close(fd)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a plain copy would be 0644
            try:
                shutil.copyfile(local, tmp)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
