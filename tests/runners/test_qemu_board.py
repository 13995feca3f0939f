"""The firmware on the emulated Cortex-M4 board (qemu-system-arm -M mps2-an386), driven through
its UART pty: an independent EEMBC client, bit-exactness on >= 200 inputs per student stand-in,
a reset in the middle of a command, deploy and the CLI."""

from __future__ import annotations

import json
import os
import select
import threading
import time

import numpy as np
import pytest

from edgekd.firmware.reference_models import random_int8_inputs
from edgekd.runners import protocol as proto
from tests.firmware.fixtures import arm_gcc, host_cc, model_dir, qemu, ref_model  # noqa: F401

TARGET = "qemu-mps2-an386"


@pytest.fixture(scope="session")
def firmware(ref_model, tmp_path_factory, arm_gcc, qemu):
    """firmware(name) -> FirmwareBuild, built once per session."""
    from edgekd.firmware.build import build_firmware

    root = tmp_path_factory.getbasetemp() / "fw-builds"
    return lambda name: build_firmware(ref_model(name), TARGET, root / name)


# ---------------------------------------------------------------- an independent client


class MiniEembcClient:
    """Written from the public EEMBC / MLPerf Tiny command list only: commands end with '%',
    replies are lines, each command ends with 'm-ready'. Nothing from edgekd."""

    def __init__(self, fd: int):
        self.fd = fd
        self.pending = b""

    def readline(self, timeout: float = 10.0) -> str:
        deadline = time.time() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.time()
            assert left > 0, f"no line within {timeout} s (have {self.pending!r})"
            if select.select([self.fd], [], [], left)[0]:
                self.pending += os.read(self.fd, 4096)
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode().strip()

    def cmd(self, text: str) -> list[str]:
        os.write(self.fd, (text + "%").encode())
        lines = []
        while (line := self.readline()) != "m-ready":
            lines.append(line)
        return lines


def test_independent_eembc_client_runs_an_inference(firmware, tmp_path):
    from edgekd.firmware.host import build_host_model
    from edgekd.runners.qemu import QemuBoard

    build = firmware("cnn_ops")
    host = build_host_model(build.model["source"], tmp_path / "host")
    x = random_int8_inputs((1, 12, 12, 3), 1, seed=5)[0]
    data = x.tobytes()
    board = QemuBoard(build.elf)
    fd = board.start_raw()
    try:
        c = MiniEembcClient(fd)
        boot = [c.readline() for _ in range(3)]
        assert boot[-2:] == ["m-init-done", "m-ready"]
        assert c.cmd("name") == ["m-name-dut-[edgekd]"]
        prof = c.cmd("profile")
        assert prof[0].startswith("m-profile-[") and prof[1] == f"m-model-[{build.model['model_id']}]"
        assert c.cmd(f"db load {len(data)}") == [f"m-[Expecting {len(data)} bytes]"]
        replies = []
        for i in range(0, len(data), 31):
            replies += c.cmd("db " + data[i:i + 31].hex())
        assert replies == ["m-load-done"]
        out = c.cmd("infer 1 0")
        assert out[:3] == ["m-warmup-start-0", "m-warmup-done", "m-infer-start-1"]
        assert out[3].startswith("m-lap-us-") and out[4].startswith("m-lap-us-") and out[5] == "m-infer-done"
        results = [int(v) for v in out[6][len("m-results-["):-1].split(",")]
        assert c.cmd("results") == [out[6]]
        assert c.cmd("bogus")[0].startswith("e-[Unknown command")
    finally:
        os.close(fd)
        board.stop()
    assert results == host.run(x[None]).reshape(-1).tolist()


# ---------------------------------------------------------------- bit-exact on the board


# >= 200 inputs per student stand-in, the bar of the issue (the bulk run boots qemu without
# -icount, which moves bytes several times faster; the timing run gets its own -icount boot)
@pytest.mark.parametrize("name, n", [("eye_snn", 200), ("skeleton_sgcn", 200), ("face_cnn", 200)])
def test_bit_exact_on_the_emulated_board(name, n, firmware, tmp_path):
    from edgekd.firmware.api import profile_mcu

    build = firmware(name)
    x = random_int8_inputs(tuple(build.model["inputs"][0]["shape"]), n, seed=23)
    labels = np.arange(n) % build.model["outputs"][0]["shape"][-1]
    res = profile_mcu(build.model["source"], TARGET, x, labels=labels, out_dir=build.out_dir,
                      timing_runs=5, progress=False)
    assert res["n_done"] == n and res["n_failed"] == 0, res["events"][:5]
    assert res["bit_exact"] and res["bit_exact_inputs"] == n and res["top1_agreement"] == 1.0
    assert 0.0 <= res["accuracy"] <= 1.0
    t = res["timing"]
    assert t["instructions_per_inference"] > 1e4
    # -icount makes runs repeatable; each SysTick reading at the window's two ends is quantized to
    # one tick, so two measurements of the same inference differ by at most two ticks.
    assert t["instructions_spread"] <= 2 * t["instruction_resolution"]
    mem = res["memory_on_board"]
    assert 0 < mem["stack_used"] < mem["stack_size"] and mem["arena"] == build.model["arena_bytes"]
    assert (build.out_dir / "profile.json").is_file() and (build.out_dir / "device_outputs.npy").is_file()


def test_hex_upload_and_reset_in_the_middle_of_a_command(firmware):
    """The plain EEMBC upload path, then a hardware reset (QMP system_reset) during a long infer:
    the host sees the reboot with the lines received so far, and the board serves again."""
    from edgekd.firmware.host import HostModel  # noqa: F401  (same C as the board)
    from edgekd.runners.qemu import QemuBoard

    build = firmware("eye_snn")
    x = random_int8_inputs((1, 4, 16, 16), 2, seed=9)
    with QemuBoard(build.elf) as board:
        client = board.client
        client.handshake()
        assert client.load(x[0].tobytes(), binary=False) == "db"
        first = client.infer(1, 0).results
        timer = threading.Timer(0.5, board.reset)
        timer.start()
        try:
            with pytest.raises(proto.BoardReset) as err:
                client.infer(5000, 0, expected_latency_s=0.01)
        finally:
            timer.cancel()
        assert "m-infer-start-5000" in err.value.lines
        assert client.resync(10.0)  # the rest of the boot banner, up to its m-ready
        assert client.handshake() == "edgekd"
        with pytest.raises(proto.BoardError, match="no input loaded"):
            client.infer(1, 0)  # the reset cleared the board's state; the host must reload
        assert client.load(x[0].tobytes()) == "dbc"
        assert client.infer(1, 0).results == first


def test_deploy_boots_checks_the_model_and_handshakes(ref_model, tmp_path, arm_gcc, qemu):
    from edgekd.firmware.api import deploy_mcu

    res = deploy_mcu(ref_model("cnn_ops"), TARGET, tmp_path / "fw")
    assert res["profile"]["model"] == res["build"]["model_id"]
    assert {"laps", "mem", "dbc"} <= set(res["caps"])
    assert res["memory_on_board"]["arena"] == res["build"]["arena_bytes"]
    assert res["connection"]["transport"] == "qemu"


def test_cli_firmware_run(ref_model, tmp_path, arm_gcc, qemu):
    from edgekd.cli import main

    x = random_int8_inputs((1, 12, 12, 3), 12, seed=2)
    np.save(tmp_path / "x.npy", x)
    rc = main(["firmware", "run", str(ref_model("cnn_ops")), "--target", TARGET, "--inputs", str(tmp_path / "x.npy"),
               "--out", str(tmp_path / "fw"), "--timing-runs", "3", "--json"])
    assert rc == 0
    import json

    res = json.loads((tmp_path / "fw" / "profile.json").read_text())
    assert res["n_done"] == 12 and res["bit_exact"]


def test_a_model_with_two_inputs_on_the_board(firmware):
    """Several inputs go up as one db upload, back to back in the model's input order."""
    from edgekd.firmware.api import profile_mcu

    build = firmware("two_streams")
    rng = np.random.default_rng(8)
    shape = (24, *build.model["inputs"][0]["shape"])
    x = {"joints": rng.normal(0, 1, shape).astype(np.float32), "bones": rng.normal(0, 1, shape).astype(np.float32)}
    res = profile_mcu(build.model["source"], TARGET, x, out_dir=build.out_dir, timing_runs=0, progress=False)
    assert res["n_done"] == 24 and res["bit_exact"] and res["bit_exact_inputs"] == 24, res["events"][:5]


def test_pipeline_firmware_stage_takes_a_multi_input_eval_set(ref_model, tmp_path, arm_gcc, qemu):
    """The pipeline's MCU stage reads an eval.npz of a model with several inputs (x_<name> arrays),
    as edgekd convert writes it for the skeleton student, and a rerun skips the stage."""
    import shutil

    from edgekd.artifacts import stage_dir
    from edgekd.convert.tflite2c import load_graph
    from edgekd.pipeline import Pipeline

    model = ref_model("two_streams")
    graph = load_graph(model)
    shape = graph.tensors[graph.inputs[0]].shape
    converted = tmp_path / "03-convert"
    rng = np.random.default_rng(3)
    with stage_dir(converted, "convert") as sd:
        shutil.copy(model, converted / "model.int8.tflite")
        np.savez(converted / "eval.npz", x_bones=rng.normal(0, 1, (30, *shape)).astype(np.float32),
                 x_joints=rng.normal(0, 1, (30, *shape)).astype(np.float32), y=np.arange(30) % 3,
                 input_names=np.array(["joints", "bones"]))
        sd.add_output("tflite-int8", converted / "model.int8.tflite")
        sd.add_output("eval", converted / "eval.npz")
    pipe = Pipeline("eye-mskd", [], tmp_path, [TARGET], log=lambda m: None)
    status, metrics = pipe.firmware(tmp_path / "05-firmware", converted, pipe.specs[0])
    assert status == "done", metrics
    saved = json.loads((tmp_path / "05-firmware" / "results.json").read_text())
    assert saved["raw"]["n_done"] == 20 and saved["raw"]["bit_exact_inputs"] == 20
    assert pipe.firmware(tmp_path / "05-firmware", converted, pipe.specs[0])[0] == "skipped"
