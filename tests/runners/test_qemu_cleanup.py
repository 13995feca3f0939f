"""qemu-system-arm never outlives the edgekd process that started it: a real parent process boots
the emulated board, is then killed (SIGKILL, SIGTERM), interrupted (SIGINT) or exits without
stopping the board, and the qemu child must be gone. Real processes, no mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.firmware.fixtures import arm_gcc, model_dir, qemu, ref_model  # noqa: F401
from tests.helpers import default_sigint

REPO = Path(__file__).resolve().parents[2]

PARENT = r"""
import sys, time
from edgekd.runners.qemu import QemuBoard

board = QemuBoard(sys.argv[1])
board.start()                      # booted: the banner was read over the UART pty
print(board.proc.pid, flush=True)
if sys.argv[2] == "exit":
    sys.exit(0)                    # leaves without board.stop()
time.sleep(600)                    # killed or interrupted here
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone: it runs no more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


@pytest.fixture(scope="module")
def elf(ref_model, tmp_path_factory, arm_gcc, qemu):
    from edgekd.firmware.build import build_firmware

    return build_firmware(ref_model("cnn_ops"), "qemu-mps2-an386", tmp_path_factory.mktemp("fw") / "cnn_ops").elf


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux")
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT", "exit"])
def test_qemu_does_not_outlive_its_parent(how, elf):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(elf), how], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, preexec_fn=default_sigint)
    qemu_pid = None
    try:
        line = parent.stdout.readline()  # type: ignore[union-attr]
        assert line.strip().isdigit(), f"the parent did not boot the board: {line!r} {parent.stderr.read()[-2000:]}"  # type: ignore[union-attr]
        qemu_pid = int(line)
        assert "qemu-system-arm" in _cmdline(qemu_pid) and _alive(qemu_pid)
        if how != "exit":
            parent.send_signal(getattr(signal, how))
        parent.wait(timeout=60)
        deadline = time.monotonic() + 30  # a bound for a loaded machine, not a timing figure
        while _alive(qemu_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(qemu_pid), f"qemu (pid {qemu_pid}) is still running after the parent's {how}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if qemu_pid is not None and _alive(qemu_pid) and "qemu-system-arm" in _cmdline(qemu_pid):
            os.kill(qemu_pid, signal.SIGKILL)  # the qemu this test started, by its pid
