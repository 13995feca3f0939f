"""The Transport interface: move files to a device and run commands there, with typed time-outs.

A local session has the same interface as a remote one, so everything above this layer is
written once. Commands are argument lists, never strings built by concatenation. Both shipped
transports run a process on this host (the command itself, or the ssh client carrying it), so
running and streaming are implemented here once; a transport supplies the argv wrapping and
the translation of its own failures into typed errors.
"""

from __future__ import annotations

import abc
import queue
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgekd.errors import DeviceError, EdgekdError, TransportTimeout


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
    """One device connection. Methods raise DeviceError / TransportTimeout, never raw OSErrors."""

    name: str = "transport"

    @abc.abstractmethod
    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The local argv that runs `argv` on the device."""

    @abc.abstractmethod
    def put(self, local: Path, remote: str, timeout_s: float = 60.0) -> None:
        """Copy a local file to a path on the device (parent folders are created)."""

    @abc.abstractmethod
    def python(self) -> str:
        """The Python interpreter to use on the device."""

    def expand(self, path: str) -> str:
        """A device path with a leading ~ expanded (quoted arguments keep ~ literal)."""
        return path

    def failure(self, returncode: int, stderr: str) -> EdgekdError | None:
        """A typed error when the transport itself failed (not the command), else None."""
        return None

    def describe(self) -> str:
        return self.name

    def run(self, argv: Sequence[str], timeout_s: float, stdin: bytes | None = None) -> CommandResult:
        """Run argv on the device and wait; TransportTimeout after timeout_s."""
        argv = [str(a) for a in argv]
        try:
            proc = subprocess.run(self.wrap(argv), input=stdin, capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise TransportTimeout(
                f"{self.describe()}: command did not finish within {timeout_s:g} s: {argv[0]}",
                hint="the device may be slow or hung; raise the time-out or check it by hand",
            ) from None
        except FileNotFoundError as exc:
            raise DeviceError(f"{self.describe()}: '{exc.filename}' not found", hint="install it or fix the path") from None
        stderr = proc.stderr.decode(errors="replace")
        error = self.failure(proc.returncode, stderr)
        if error is not None:
            raise error
        return CommandResult(argv, proc.returncode, proc.stdout.decode(errors="replace"), stderr)

    def start(self, argv: Sequence[str]) -> StreamingProcess:
        """Start argv on the device with stdin held open; read its stdout line by line."""
        argv = [str(a) for a in argv]
        try:
            proc = subprocess.Popen(self.wrap(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except FileNotFoundError as exc:
            raise DeviceError(f"{self.describe()}: '{exc.filename}' not found", hint="install it or fix the path") from None
        return StreamingProcess(proc, self)

    def close(self) -> None:
        """Release the connection (no-op for stateless transports)."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_EOF = object()


class StreamingProcess:
    """A running device command. One reader thread per pipe; errors surface in the caller."""

    def __init__(self, proc: subprocess.Popen, transport: Transport):
        self.proc = proc
        self.transport = transport
        self._lines: queue.Queue = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode(errors="replace").rstrip("\n"))
        self._lines.put(_EOF)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._stderr.append(raw.decode(errors="replace"))

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def lines(self, idle_timeout_s: float) -> Iterator[str]:
        """stdout lines until the process ends; TransportTimeout when silent for idle_timeout_s."""
        while True:
            try:
                item = self._lines.get(timeout=idle_timeout_s)
            except queue.Empty:
                self.terminate()
                raise TransportTimeout(
                    f"{self.transport.describe()}: no output for {idle_timeout_s:g} s",
                    hint="the device may be hung or far slower than expected; raise the time-out",
                ) from None
            if item is _EOF:
                return
            yield item

    def wait(self, timeout_s: float = 30.0) -> int:
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.terminate()
            code = self.proc.wait()
        time.sleep(0.05)  # let the stderr reader drain
        error = self.transport.failure(code, self.stderr)
        if error is not None:
            raise error
        return code

    def terminate(self) -> None:
        """Close stdin (the agent exits on EOF), then stop the local process."""
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
