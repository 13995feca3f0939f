"""LocalTransport: this host, through subprocess, with the same interface as a remote device."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from edgekd.errors import DeviceError, TransportTimeout
from edgekd.runners.base import CommandResult, Transport


class LocalTransport(Transport):
    name = "local"

    def __init__(self, workdir: str | Path | None = None, python: str | None = None):
        self.workdir = Path(workdir).expanduser() if workdir else None
        self._python = python or sys.executable

    def python(self) -> str:
        return self._python

    def run(self, argv: Sequence[str], timeout_s: float, stdin: bytes | None = None) -> CommandResult:
        argv = [str(a) for a in argv]
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise TransportTimeout(
                f"local command did not finish within {timeout_s:g} s: {argv[0]}",
                hint="raise the time-out or check that the command does not wait for input",
            ) from None
        except FileNotFoundError:
            raise DeviceError(f"'{argv[0]}' not found on this host", hint="install it or fix the path") from None
        return CommandResult(argv, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))

    def put(self, local: Path, remote: str, timeout_s: float = 60.0) -> None:
        dest = Path(remote).expanduser()
        dest.parent.mkdir(parents=True, exist_ok=True)
        if Path(local).resolve() != dest.resolve():
            shutil.copyfile(local, dest)
