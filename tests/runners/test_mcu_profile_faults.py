"""profile_mcu over a serial target whose board is a pty peer that misbehaves half-way: a reboot
mid-run, an e-[...] reply, an unplugged cable. Partial results are kept and the faults reported."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgekd.errors import DeviceError
from edgekd.firmware.reference_models import random_int8_inputs
from tests.firmware.fixtures import arm_gcc, model_dir, ref_model  # noqa: F401
from tests.runners.test_serial_pty import FakeBoard


class FirmwareLikeBoard(FakeBoard):
    """Answers like the edgekd firmware for one model (its id and output size), with faults on
    chosen inferences: 'reboot' at infer #3, 'error' at infer #2 (once), 'unplug' at infer #4."""

    def __init__(self, behaviour: str, model_id: str, n_out: int):
        super().__init__("normal")
        self.fault = behaviour
        self.model_id = model_id
        self.n_out = n_out
        self.faulted = False

    def results_line(self) -> str:
        vals = [(sum(self.buffer) + k) % 50 - 25 for k in range(self.n_out)]
        return "m-results-[" + ",".join(map(str, vals)) + "]"

    def dispatch(self, cmd: str) -> None:
        parts = cmd.split()
        if parts and parts[0] == "profile":
            self.commands.append(cmd)
            self.line("m-profile-[fake]")
            self.line(f"m-model-[{self.model_id}]")
            self.line("m-ready")
            return
        if parts and parts[0] == "infer":
            n_infer = self.infers + 1
            if self.fault == "reboot" and n_infer == 3 and not self.faulted:
                self.faulted = True
                self.infers += 1
                self.commands.append(cmd)
                self.line("m-warmup-start-0")
                self.send("\r\nm-timestamp-mode-performance\r\nm-init-done\r\nm-ready\r\n")
                return
            if self.fault == "error" and n_infer == 2 and not self.faulted:
                self.faulted = True
                self.infers += 1
                self.commands.append(cmd)
                self.line("e-[infer: input buffer corrupted]")
                self.line("m-ready")
                return
            if self.fault == "unplug" and n_infer == 4:
                self.stop_flag.set()  # the cable is pulled: the pty goes away under the host
                for fd in (self.master, self.slave):
                    os.close(fd)
                self.master = self.slave = -1
                return
        super().dispatch(cmd)


def _serial_target(tmp_path: Path, port: str) -> Path:
    folder = tmp_path / "targets"
    folder.mkdir()
    (folder / "fake-mcu.toml").write_text(f"""
name = "fake-mcu"
description = "a pty peer speaking the protocol"
kind = "mcu"
[transport]
type = "serial"
port = "{port}"
baud = 115200
timeout_s = 2.0
[runtime]
engine = "firmware"
formats = ["c-int8"]
[limits]
flash_kb = 4096
ram_kb = 4096
[flash]
command = ["true"]
cflags = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"]
board = "mps2-an386"
""")
    return folder


def _run(behaviour: str, ref_model, tmp_path, n: int = 8):  # noqa: F811
    from edgekd.firmware.api import profile_mcu
    from edgekd.firmware.build import build_firmware

    model = ref_model("cnn_ops")
    probe = build_firmware(model, "qemu-mps2-an386", tmp_path / "probe")  # the model id the board reports
    board = FirmwareLikeBoard(behaviour, probe.model["model_id"], 5)
    board.start()
    try:
        targets = _serial_target(tmp_path, board.path)
        x = random_int8_inputs((1, 12, 12, 3), n, seed=4)
        res = profile_mcu(model, "fake-mcu", x, out_dir=tmp_path / "run", targets_dir=[targets], flash=False,
                          timing_runs=0, progress=False, binary_upload=False)
    finally:
        board.close()
    return res, board


def test_reboot_mid_run_is_retried_and_reported(ref_model, tmp_path, arm_gcc):
    res, board = _run("reboot", ref_model, tmp_path)
    assert res["n_done"] == 8 and res["n_failed"] == 0
    assert any("rebooted" in e for e in res["events"])
    assert board.commands.count("name") >= 2  # a fresh handshake after the reboot
    saved = json.loads((tmp_path / "run" / "profile.json").read_text())
    assert saved["n_done"] == 8 and (tmp_path / "run" / "device_outputs.npy").is_file()


def test_error_reply_is_retried_and_reported(ref_model, tmp_path, arm_gcc):
    res, _ = _run("error", ref_model, tmp_path)
    assert res["n_done"] == 8
    assert any("input buffer corrupted" in e for e in res["events"])


def test_unplugged_board_keeps_partial_results(ref_model, tmp_path, arm_gcc):
    res, _ = _run("unplug", ref_model, tmp_path)
    assert res["interrupted"] and 0 < res["n_done"] < 8
    assert res["n_done"] == 3  # the three inputs before the cable was pulled
    out = np.load(tmp_path / "run" / "device_outputs.npy")
    assert out.shape == (8, 1, 5) and np.any(out[:3] != 0)


def test_missing_port_fails_clearly(ref_model, tmp_path, arm_gcc):
    from edgekd.firmware.api import profile_mcu

    targets = _serial_target(tmp_path, "/dev/ttyEDGEKD-missing")
    with pytest.raises(DeviceError, match="does not exist"):
        profile_mcu(ref_model("cnn_ops"), "fake-mcu", random_int8_inputs((1, 12, 12, 3), 2), out_dir=tmp_path / "run",
                    targets_dir=[targets], flash=False, progress=False)
