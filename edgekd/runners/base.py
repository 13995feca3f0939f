"""The Transport interface: move files to a device and run commands there, with typed time-outs.

A local session has the same interface as a remote one, so everything above this layer is
written once. Commands are argument lists, never strings built by concatenation.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Transport(abc.ABC):
    """One device connection. Subclasses raise DeviceError / TransportTimeout, never raw OSErrors."""

    name: str = "transport"

    @abc.abstractmethod
    def run(self, argv: Sequence[str], timeout_s: float, stdin: bytes | None = None) -> CommandResult:
        """Run argv on the device; raise TransportTimeout after timeout_s."""

    @abc.abstractmethod
    def put(self, local: Path, remote: str, timeout_s: float = 60.0) -> None:
        """Copy a local file to a path on the device (parent folders are created)."""

    @abc.abstractmethod
    def python(self) -> str:
        """The Python interpreter to use on the device."""

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release the connection (no-op for stateless transports)."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
