"""The serial runner against boards simulated on a pty (os.openpty): the real pyserial port, the
real reader thread, and scripted faults (silence, garbage, partial lines, e-[...] replies,
reboots mid-command, a busy or missing port, an unplugged cable)."""

from __future__ import annotations

import os
import select
import termios
import threading
import time
import tty

import pytest

from edgekd.errors import DeviceError, TransportTimeout
from edgekd.runners import protocol as proto
from edgekd.runners.serial import DutClient, SerialLink, TrafficLog, open_dut

INPUT_BYTES = 40


class FakeBoard(threading.Thread):
    """An EEMBC-style DUT on the master side of a pty. `behaviour` scripts its faults."""

    def __init__(self, behaviour: str = "normal", infer_seconds: float = 0.0):
        super().__init__(daemon=True)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo before the client configures the port
        self.path = os.ttyname(self.slave)
        self.behaviour = behaviour
        self.infer_seconds = infer_seconds
        self.commands: list[str] = []
        self.buffer = bytearray()
        self.expect = 0
        self.stop_flag = threading.Event()
        self.infers = 0
        self.results_requests = 0

    def send(self, text: str) -> None:
        if not self.stop_flag.is_set():
            os.write(self.master, text.encode())

    def line(self, text: str) -> None:
        self.send(text + "\r\n")

    def run(self) -> None:
        cmd = b""
        while not self.stop_flag.is_set():
            try:
                if not select.select([self.master], [], [], 0.05)[0]:
                    continue
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            for b in chunk:
                if b == ord("%"):
                    self.dispatch(cmd.decode())
                    cmd = b""
                else:
                    cmd += bytes([b])

    def results_line(self) -> str:
        s = sum(self.buffer) % 100
        return f"m-results-[{s},{len(self.buffer)},-3]"

    def dispatch(self, cmd: str) -> None:
        self.commands.append(cmd)
        if self.behaviour == "silent":
            return
        if self.behaviour == "garbled":
            self.send("\x00\xff\xfe#@!garbage\r\n")
        parts = cmd.split()
        name = parts[0] if parts else ""
        if name == "name":
            self.line("m-name-dut-[fakeboard]")
        elif name == "profile":
            self.line("m-profile-[fake 1.0]")
            self.line("m-model-[fake-model]")
        elif name == "db" and parts[1] == "load":
            self.expect = int(parts[2])
            self.buffer = bytearray()
            self.line(f"m-[Expecting {self.expect} bytes]")
        elif name == "db":
            self.buffer += bytes.fromhex(parts[1])
            if len(self.buffer) >= self.expect:
                self.line("m-load-done")
        elif name == "infer":
            self.infers += 1
            n, w = int(parts[1]), int(parts[2])
            if self.behaviour == "error":
                self.line("e-[infer: model crashed]")
            elif self.behaviour == "reboot" and self.infers == 1:
                self.line(f"m-warmup-start-{w}")
                self.send("m-infer-st")  # cut in the middle of a line by the reset
                time.sleep(0.05)
                self.send("\r\nm-timestamp-mode-performance\r\nm-init-done\r\nm-ready\r\n")
                return
            else:
                self.line(f"m-warmup-start-{w}")
                self.line("m-warmup-done")
                self.line(f"m-infer-start-{n}")
                self.line("m-lap-us-1000")
                time.sleep(self.infer_seconds)
                self.line(f"m-lap-us-{1000 + 250 * n}")
                self.line("m-infer-done")
                if self.behaviour == "garbled" and self.infers == 1:
                    self.send("m-results-[1,2")  # truncated: the host must not take it for a result
                    time.sleep(0.8)
                    self.send("\r\n")
                else:
                    self.line(self.results_line())
        elif name == "results":
            self.results_requests += 1
            self.line(self.results_line())
        else:
            self.line(f"e-[Unknown command: {name}]")
        self.line("m-ready")

    def close(self) -> None:
        self.stop_flag.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=2)  # a read blocked on the master would keep it open
        for fd in (self.master, self.slave):
            if fd < 0:
                continue
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def board(request):
    behaviour = getattr(request, "param", "normal")
    b = FakeBoard(behaviour)
    b.start()
    yield b
    b.close()


def _client(board: FakeBoard, **kw) -> tuple[SerialLink, DutClient]:
    link = SerialLink(board.path, 115200).open()
    return link, DutClient(link, **kw)


def test_full_exchange_with_hex_upload_in_31_byte_lines(board):
    payload = bytes(range(INPUT_BYTES))
    with open_dut(board.path, 115200) as client:
        assert client.profile() == {"profile": "fake 1.0", "model": "fake-model"}
        assert client.load(payload) == "db"  # no edgekd-caps: the plain EEMBC upload
        res = client.infer(3, 1)
    assert res.results == [sum(payload) % 100, INPUT_BYTES, -3]
    assert res.total_us == 750 and res.mean_us == 250
    hex_lines = [c for c in board.commands if c.startswith("db ") and not c.startswith("db load")]
    assert board.commands[0] == "name" and f"db load {INPUT_BYTES}" in board.commands
    assert all(len(c) - 3 <= 62 for c in hex_lines) and len(hex_lines) == 2
    assert bytes(board.buffer) == payload


def test_db_lines_chunking():
    data = bytes(range(256)) * 3
    lines = proto.db_lines(data)
    assert all(len(bytes.fromhex(x[3:])) <= 31 for x in lines)
    assert b"".join(bytes.fromhex(x[3:]) for x in lines) == data
    assert all(len(proto.command(x)) <= proto.CMD_BUFFER + 1 for x in lines)
    with pytest.raises(ValueError):
        proto.db_lines(data, per_line=32)


@pytest.mark.parametrize("board", ["silent"], indirect=True)
def test_silent_board_is_retried_then_explained(board):
    link, client = _client(board)
    try:
        with pytest.raises(DeviceError) as err:
            client.handshake(retries=3, timeout_s=0.3)
    finally:
        link.close()
    msg = err.value.message
    assert board.path in msg and "115200 baud" in msg and "3 tries" in msg
    assert "baud rate" in err.value.hint and "TX/RX" in err.value.hint
    assert board.commands == ["name", "name", "name"]


@pytest.mark.parametrize("board", ["garbled"], indirect=True)
def test_garbage_and_partial_lines_are_survived(board):
    link, client = _client(board)
    try:
        assert client.handshake() == "fakeboard"
        client.load(bytes(INPUT_BYTES), binary=False)
        with pytest.raises(proto.ProtocolError):
            client.infer(1, 0)  # the truncated results line is flushed on its own, then rejected
        assert client.results() == [0, INPUT_BYTES, -3]  # asking again gives the results
    finally:
        link.close()
    assert any("garbage" in n for n in client.noise)
    assert board.results_requests == 1


@pytest.mark.parametrize("board", ["error"], indirect=True)
def test_board_error_reply_is_surfaced_with_a_hint(board):
    link, client = _client(board)
    try:
        client.handshake()
        with pytest.raises(proto.BoardError) as err:
            client.infer(1, 0)
    finally:
        link.close()
    assert "model crashed" in err.value.message and err.value.hint
    assert err.value.lines == ["e-[infer: model crashed]"]


@pytest.mark.parametrize("board", ["reboot"], indirect=True)
def test_reboot_mid_command_is_detected_and_the_run_goes_on(board):
    link, client = _client(board)
    try:
        client.handshake()
        client.load(bytes(range(INPUT_BYTES)), binary=False)
        with pytest.raises(proto.BoardReset) as err:
            client.infer(5, 1)
        assert err.value.lines[:2] == ["m-warmup-start-1", "m-infer-st"]  # what came before the reboot is kept
        assert client.handshake() == "fakeboard"
        client.load(bytes(range(INPUT_BYTES)), binary=False)
        assert client.infer(5, 1).results[1] == INPUT_BYTES
    finally:
        link.close()


def test_infer_time_out_scales_with_n_and_the_expected_latency():
    assert proto.infer_timeout(100, 10, 0.01) > proto.infer_timeout(1, 0, 0.01)
    assert proto.infer_timeout(1000, 0, 0.02, base_s=5, margin=3) == pytest.approx(5 + 60)
    board = FakeBoard(infer_seconds=1.0)
    board.start()
    link, client = _client(board, command_timeout_s=0.3)
    try:
        client.handshake()
        client.load(bytes(INPUT_BYTES), binary=False)
        with pytest.raises(TransportTimeout, match="'infer 4 0%' got no m-ready"):
            client.request("infer 4 0", timeout_s=0.3)  # a fixed short time-out is too short
        time.sleep(1.2)
        client.link.pending_lines()
        res = client.infer(4, 0, expected_latency_s=0.25)  # the scaled one is not
        assert res.n == 4
    finally:
        link.close()
        board.close()


def test_missing_port_lists_the_ports():
    with pytest.raises(DeviceError) as err:
        SerialLink("/dev/ttyEDGEKD-nope", 115200).open()
    assert "does not exist" in err.value.message and "ports found" in err.value.hint


def test_busy_port_is_a_clear_error(board):
    first = SerialLink(board.path, 115200).open()
    try:
        with pytest.raises(DeviceError) as err:
            SerialLink(board.path, 115200).open()
    finally:
        first.close()
    assert "busy" in err.value.message and "another program" in err.value.message


def test_open_does_not_reset_the_board(board):
    """DTR/RTS stay low (pyserial is told before open) and HUPCL is cleared, so closing the
    port does not drop DTR either; the board saw nothing on open."""
    link = SerialLink(board.path, 115200).open()
    try:
        assert link._ser.dtr is False and link._ser.rts is False
        assert termios.tcgetattr(link._ser.fileno())[2] & termios.HUPCL == 0
    finally:
        link.close()
    assert board.commands == []


def test_reader_thread_failure_surfaces_to_the_caller(board):
    link, client = _client(board)
    try:
        client.handshake()
        board.close()  # the cable is pulled: the pty's other side goes away
        with pytest.raises(DeviceError) as err:
            for _ in range(50):
                if link.read_line(0.1) is None:
                    continue
        assert "failed" in err.value.message and "unplugged" in err.value.hint
        with pytest.raises(DeviceError):  # and it keeps failing, it does not hang
            link.read_line(0.1)
    finally:
        link.close()


def test_debug_traffic_log_records_everything(board, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("EDGEKD_DEBUG", "1")
    log_path = tmp_path / "traffic.log"
    with caplog.at_level("DEBUG", logger="edgekd.serial"):
        with open_dut(board.path, 115200, traffic_path=log_path) as client:
            client.load(bytes(INPUT_BYTES), binary=False)
    text = log_path.read_text()
    assert "> name%" in text and "< m-name-dut-[fakeboard]" in text and "> db load 40%" in text
    assert any("m-load-done" in r.getMessage() for r in caplog.records)
    assert TrafficLog.enabled()
