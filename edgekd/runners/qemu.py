"""An emulated microcontroller: qemu-system-arm (e.g. -M mps2-an386) running the built firmware.

The board's UART is a pty that is handed to the serial runner, so the emulated board is driven
by exactly the code that drives a real one. QEMU starts paused (-S) and is controlled over QMP
on its stdin/stdout: we learn the pty's path (query-chardev), open it, and only then let the CPU
run, so the boot banner is never lost (QEMU drops UART output while nobody holds the pty open).
With -icount every instruction advances the virtual clock by 2^shift ns, so the board's SysTick
gives a repeatable instruction count per inference.

QEMU never outlives us: on Linux the child asks the kernel for SIGKILL when its parent dies
(prctl PR_SET_PDEATHSIG, so a SIGKILL/SIGTERM of edgekd takes qemu with it), and a board not
stopped by the time the interpreter exits (an uncaught KeyboardInterrupt, sys.exit) is stopped
by an atexit hook. PR_SET_PDEATHSIG follows the *thread* that started qemu: start and use a
board on one thread (as `with QemuBoard(...)` does).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.errors import DeviceError, MissingDependencyError, TransportTimeout
from edgekd.runners.serial import DutClient, SerialLink, TrafficLog

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# QEMU's CMSDK UART holds one received byte; each byte waits for a main-loop round trip, not for
# the baud rate. Measured 0.09-0.3 ms a byte without -icount and ~1 ms with -icount on a busy
# 2-core host; upload time-outs allow this much per byte.
UART_BYTE_TIME_S = 0.005


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child receive SIGKILL when its parent dies (Linux), else None.

    libc is resolved here, in the parent; the child only calls prctl and checks that the parent
    did not die between fork and prctl (then nobody would ever signal it)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    sig = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent is already gone
            os._exit(1)

    return preexec


class QemuBoard:
    """A running qemu-system-arm with the firmware; use as a context manager."""

    def __init__(self, elf: str | os.PathLike, machine: str = "mps2-an386", cpu: str = "cortex-m4",
                 binary: str = "qemu-system-arm", icount_shift: int | None = 0, boot_timeout_s: float = 20.0,
                 traffic_path: str | os.PathLike | None = None, command_timeout_s: float = 10.0):
        self.elf = Path(elf)
        self.machine = machine
        self.cpu = cpu
        self.binary = binary
        self.icount_shift = icount_shift
        self.boot_timeout_s = boot_timeout_s
        self.command_timeout_s = command_timeout_s
        self.traffic = TrafficLog(traffic_path) if (traffic_path or TrafficLog.enabled()) else None
        self.proc: subprocess.Popen | None = None
        self.pty: str | None = None
        self.link: SerialLink | None = None
        self.client: DutClient | None = None
        self.events: list[dict[str, Any]] = []
        self._stderr: list[str] = []
        self._qmp_lock = threading.Lock()

    # ---------------------------------------------------------------- lifecycle

    def argv(self) -> list[str]:
        exe = shutil.which(self.binary)
        if exe is None:
            raise MissingDependencyError(f"{self.binary} is not installed (it emulates the board)",
                                         hint="apt-get install qemu-system-arm (or scripts/install-system-deps.sh)")
        argv = [exe, "-M", self.machine, "-cpu", self.cpu, "-display", "none", "-monitor", "none",
                "-chardev", "pty,id=uart0", "-serial", "chardev:uart0", "-qmp", "stdio", "-S",
                "-kernel", str(self.elf)]
        if self.icount_shift is not None:
            argv += ["-icount", f"shift={self.icount_shift},align=off,sleep=on"]
        return argv

    def _launch(self) -> str:
        """Start qemu paused and learn the UART's pty; the CPU has not run yet."""
        if not self.elf.is_file():
            raise DeviceError(f"firmware image {self.elf} does not exist", hint="build it first: edgekd firmware build")
        argv = self.argv()
        if self.traffic:
            self.traffic.note("qemu: " + " ".join(argv))
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1, preexec_fn=_die_with_parent())
        atexit.register(self.stop)  # an interpreter exit that skipped stop() (sys.exit, Ctrl-C) ends qemu too
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        greeting = self._qmp_read(self.boot_timeout_s)
        if "QMP" not in greeting:
            raise DeviceError(f"qemu did not greet on QMP: {greeting}")
        self.qmp("qmp_capabilities")
        chardevs = self.qmp("query-chardev")
        ptys = [c["filename"][4:] for c in chardevs if c.get("label") == "uart0" and c.get("filename", "").startswith("pty:")]
        if not ptys:
            raise DeviceError(f"qemu gave the UART no pty: {chardevs}")
        self.pty = ptys[0]
        return self.pty

    def start(self) -> DutClient:
        """Boot the board and return a protocol client on its UART (after the boot banner)."""
        try:
            self._launch()
            # hand the pty to the serial runner before the CPU runs: nothing of the banner is lost
            self.link = SerialLink(self.pty, 115200, exclusive=False, traffic=self.traffic).open()  # type: ignore[arg-type]
            self.client = DutClient(self.link, command_timeout_s=self.command_timeout_s, byte_time_s=UART_BYTE_TIME_S)
            self.qmp("cont")
            if not self.client.wait_banner(self.boot_timeout_s):
                raise TransportTimeout(
                    f"the emulated board printed no boot banner within {self.boot_timeout_s:g} s",
                    hint=f"the firmware may crash at boot; run with --debug to log the UART; qemu said: {self.stderr_tail()}",
                )
            return self.client
        except BaseException:  # KeyboardInterrupt during boot included: no qemu is left behind
            self.stop()
            raise

    def start_raw(self) -> int:
        """Boot the board with its UART as a raw file descriptor (for clients other than ours)."""
        import tty

        try:
            self._launch()
            fd = os.open(self.pty, os.O_RDWR | os.O_NOCTTY)  # type: ignore[arg-type]
            tty.setraw(fd)
            self.qmp("cont")
            return fd
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.qmp("quit", timeout_s=2.0)
                except Exception:  # noqa: BLE001 - it is going away anyway
                    pass
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                try:
                    if stream:
                        stream.close()
                except Exception:  # noqa: BLE001
                    pass
            self.proc = None
            atexit.unregister(self.stop)
        if self.traffic:
            self.traffic.close()

    def __enter__(self) -> QemuBoard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- QMP

    def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip())
            del self._stderr[:-50]

    def stderr_tail(self) -> str:
        return " | ".join(self._stderr[-5:]) or "(nothing)"

    def _qmp_read(self, timeout_s: float) -> dict[str, Any]:
        """The next JSON object on qemu's stdout (it also prints plain notices there)."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            box: list[Any] = []

            def read() -> None:
                box.append(self.proc.stdout.readline())  # type: ignore[union-attr]

            t = threading.Thread(target=read, daemon=True)
            t.start()
            t.join(max(0.0, deadline - time.monotonic()))
            if not box:
                raise TransportTimeout(f"qemu's QMP did not answer within {timeout_s:g} s",
                                       hint=f"qemu said: {self.stderr_tail()}")
            if not box[0]:
                code = self.proc.poll()
                raise DeviceError(f"qemu exited (code {code}): {self.stderr_tail()}",
                                  hint="check the machine name and the firmware image")
            text = box[0].strip()
            if text.startswith("{"):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    pass
            self._stderr.append(text)  # e.g. "char device redirected to /dev/pts/3 (label uart0)"

    def qmp(self, execute: str, arguments: dict[str, Any] | None = None, timeout_s: float = 10.0) -> Any:
        """Run one QMP command and return its 'return' value (events on the way are kept)."""
        if self.proc is None or self.proc.stdin is None:
            raise DeviceError("qemu is not running")
        with self._qmp_lock:
            msg = {"execute": execute, **({"arguments": arguments} if arguments else {})}
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
            deadline = time.monotonic() + timeout_s
            while True:
                reply = self._qmp_read(max(0.1, deadline - time.monotonic()))
                if "event" in reply:
                    self.events.append(reply)
                    continue
                if "error" in reply:
                    raise DeviceError(f"qemu refused '{execute}': {reply['error'].get('desc')}")
                if "return" in reply:
                    return reply["return"]

    def reset(self) -> None:
        """A hardware reset of the emulated board (as pressing its reset button)."""
        self.qmp("system_reset")

    # ---------------------------------------------------------------- timing

    def instructions_per_tick(self, tick_hz: int) -> float:
        """With -icount shift=s each instruction is 2^s ns of virtual time; a tick is 1e9/tick_hz ns."""
        shift = self.icount_shift or 0
        return (1e9 / tick_hz) / (2 ** shift)
