"""Serial transport to a microcontroller running the edgekd firmware (or any EEMBC/MLPerf Tiny DUT).

`SerialLink` owns the port: it opens it without resetting the board (DTR/RTS left low, HUPCL
cleared so closing does not drop DTR either), takes an exclusive lock, and reads on ONE thread
that turns bytes into lines; a failure on that thread (unplugged cable, I/O error) is queued
and raised to the caller on its next read. `TrafficLog` records every byte sent and every line
received when --debug is on. `DutClient` speaks the protocol (runners/protocol.py): banner
wait, handshake with retries, commands until m-ready, uploads, infer, results.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekd.errors import DeviceError, MissingDependencyError, TransportTimeout
from edgekd.runners import protocol as proto

log = logging.getLogger("edgekd.serial")

WIRING_HINT = ("check the baud rate (transport.baud in the target file), that this is the board's port, "
               "TX/RX wiring, that the board is powered and runs edgekd firmware; reset the board and retry")


def available_ports() -> list[str]:
    found = []
    for pattern in ("ttyACM*", "ttyUSB*", "ttyAMA*", "tty.usb*", "cu.usb*"):
        found += [str(p) for p in Path("/dev").glob(pattern)]
    by_id = Path("/dev/serial/by-id")
    if by_id.is_dir():
        found += [str(p) for p in by_id.iterdir()]
    return sorted(found)


class TrafficLog:
    """Every byte sent ('>') and line received ('<'), with a monotonic timestamp.

    Written to `path` when given; also sent to the 'edgekd.serial' logger at DEBUG level.
    `enabled()` says whether --debug (EDGEKD_DEBUG=1) asked for it.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else None
        self._fh = None
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")

    @staticmethod
    def enabled() -> bool:
        return os.environ.get("EDGEKD_DEBUG") == "1"

    def _write(self, mark: str, text: str) -> None:
        entry = f"{time.monotonic() - self._t0:10.4f} {mark} {text}"
        log.debug(entry)
        if self._fh:
            with self._lock:
                self._fh.write(entry + "\n")
                self._fh.flush()

    def sent(self, data: bytes) -> None:
        if data and all(32 <= b < 127 for b in data):
            text = data.decode("ascii")
            self._write(">", text if len(text) <= 200 else f"{text[:200]}... ({len(data)} bytes)")
        else:  # a binary upload: its size and checksum, not the bytes
            self._write(">", f"<{len(data)} bytes binary, crc32 {zlib.crc32(data) & 0xFFFFFFFF:08x}>")

    def received(self, line: str) -> None:
        self._write("<", line)

    def note(self, text: str) -> None:
        self._write("#", text)

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None


class SerialLink:
    """An open serial port with a reader thread that yields lines."""

    def __init__(self, port: str, baud: int = 115200, *, exclusive: bool = True,
                 traffic: TrafficLog | None = None, partial_flush_s: float = 0.5):
        self.port = port
        self.baud = baud
        self.exclusive = exclusive
        self.traffic = traffic
        self.partial_flush_s = partial_flush_s
        self._ser: Any = None
        self._lines: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()

    # ---------------------------------------------------------------- open / close

    def open(self) -> SerialLink:
        try:
            import serial  # pyserial
        except ImportError:
            raise MissingDependencyError("pyserial is not installed", hint="pip install pyserial") from None
        if not os.path.exists(self.port):
            ports = available_ports()
            raise DeviceError(
                f"serial port {self.port} does not exist",
                hint=f"plug the board in and check transport.port; ports found: {', '.join(ports) or 'none'}",
            )
        ser = serial.Serial()
        ser.port = self.port
        ser.baudrate = self.baud
        ser.timeout = 0.05
        ser.write_timeout = 10
        ser.dsrdtr = False
        ser.rtscts = False
        ser.xonxoff = False
        ser.exclusive = self.exclusive
        # Set before open so pyserial never raises them: boards that reset on DTR/RTS keep running.
        ser.dtr = False
        ser.rts = False
        try:
            ser.open()
        except (serial.SerialException, OSError) as exc:
            raise self._open_error(exc) from None
        _clear_hupcl(ser)
        self._ser = ser
        self._thread = threading.Thread(target=self._reader, name=f"serial-reader {self.port}", daemon=True)
        self._thread.start()
        if self.traffic:
            self.traffic.note(f"opened {self.port} at {self.baud} baud (DTR/RTS low, HUPCL off)")
        return self

    def _open_error(self, exc: Exception) -> DeviceError:
        text = str(exc)
        code = getattr(exc, "errno", None)
        if "exclusively lock" in text or code in (errno.EAGAIN, errno.EBUSY) or "Resource temporarily unavailable" in text:
            return DeviceError(
                f"serial port {self.port} is busy: another program holds it ({text})",
                hint="close serial monitors (screen, minicom, picocom, an IDE) or another edgekd run, then retry",
            )
        if code == errno.EACCES or "Permission denied" in text:
            return DeviceError(
                f"no permission to open {self.port} ({text})",
                hint="add your user to the 'dialout' group (sudo usermod -aG dialout $USER) and log in again",
            )
        return DeviceError(f"cannot open serial port {self.port}: {text}", hint=WIRING_HINT)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._ser is not None:
            with contextlib.suppress(Exception):
                self._ser.close()
        self._ser = None
        if self.traffic:
            self.traffic.note(f"closed {self.port}")

    def __enter__(self) -> SerialLink:
        return self if self._ser is not None else self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- reading (one thread)

    def _reader(self) -> None:
        buf = bytearray()
        last_data = time.monotonic()
        try:
            while not self._stop.is_set():
                chunk = self._ser.read(self._ser.in_waiting or 1)
                now = time.monotonic()
                if chunk:
                    buf += chunk
                    last_data = now
                    while True:
                        cut = buf.find(b"\n")
                        if cut < 0:
                            break
                        self._emit(bytes(buf[:cut]))
                        del buf[:cut + 1]
                elif buf and now - last_data > self.partial_flush_s:
                    self._emit(bytes(buf))  # a partial line: surface it rather than glue it to the next
                    buf.clear()
        except Exception as exc:  # noqa: BLE001 - every failure of this thread goes to the consumer
            if not self._stop.is_set():
                self._lines.put(("error", exc))
        finally:
            if buf and not self._stop.is_set():
                self._emit(bytes(buf))

    def _emit(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r").decode("ascii", errors="replace")
        if self.traffic:
            self.traffic.received(line)
        self._lines.put(("line", line))

    def read_line(self, timeout_s: float) -> str | None:
        """The next line, or None after timeout_s; raises DeviceError if the reader thread failed."""
        try:
            kind, value = self._lines.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None
        if kind == "error":
            self._lines.put((kind, value))  # keep failing for later reads too
            raise DeviceError(
                f"reading {self.port} failed: {value}",
                hint="the board was unplugged or reset, or the port was taken away; check the cable and retry",
            )
        return value

    def pending_lines(self) -> list[str]:
        """Drop and return the lines received so far (stale output before a new command)."""
        out = []
        while True:
            try:
                kind, value = self._lines.get_nowait()
            except queue.Empty:
                return out
            if kind == "error":
                self._lines.put((kind, value))
                return out
            out.append(value)

    # ---------------------------------------------------------------- writing

    def write(self, data: bytes) -> None:
        if self._ser is None:
            raise DeviceError(f"serial port {self.port} is not open")
        if self.traffic:
            self.traffic.sent(data)
        try:
            with self._write_lock:
                self._ser.write(data)
                self._ser.flush()
        except Exception as exc:  # noqa: BLE001
            raise DeviceError(f"writing to {self.port} failed: {exc}", hint=WIRING_HINT) from None


def _clear_hupcl(ser: Any) -> None:
    """Closing the port must not drop DTR (which resets many boards): clear HUPCL."""
    try:
        import termios

        fd = ser.fileno()
        attrs = termios.tcgetattr(fd)
        attrs[2] &= ~termios.HUPCL
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except Exception:  # noqa: BLE001 - not a tty (tests), or a platform without termios
        pass


class DutClient:
    """The host side of the protocol on top of a SerialLink."""

    def __init__(self, link: SerialLink, command_timeout_s: float = 5.0, byte_time_s: float | None = None):
        """byte_time_s: how long one byte of an upload may take (default: 10 bits at the baud
        rate); an emulated UART is not paced by its baud rate, see QemuBoard."""
        self.link = link
        self.command_timeout_s = command_timeout_s
        self.byte_time_s = byte_time_s if byte_time_s is not None else 10.0 / max(1, link.baud)
        self.noise: list[str] = []
        self._caps: set[str] | None = None

    @property
    def where(self) -> str:
        return f"{self.link.port} at {self.link.baud} baud"

    # ---------------------------------------------------------------- boot and handshake

    def wait_banner(self, timeout_s: float) -> bool:
        """Wait for the boot banner (m-init-done ... m-ready); False when it did not come."""
        deadline = time.monotonic() + timeout_s
        seen_init = False
        while True:
            line = self.link.read_line(deadline - time.monotonic())
            if line is None:
                return False
            if line.startswith(proto.INIT_DONE):
                seen_init = True
            elif line.strip() == proto.READY and seen_init:
                return True
            elif proto.classify(line) == "noise":
                self.noise.append(line)

    def resync(self, timeout_s: float = 10.0, quiet_s: float = 0.5) -> bool:
        """Back to a clean command state after a failed command or a reboot: let the board finish
        (a binary upload that lost bytes ends with its own time-out, leftover bytes become
        garbage commands), wait until the line is quiet, terminate any partial command with a
        lone '%', and drain its answer. True when the board answered m-ready to it."""
        deadline = time.monotonic() + timeout_s

        def drain_until_quiet() -> bool:
            saw_ready = False
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return saw_ready
                line = self.link.read_line(min(quiet_s, left))
                if line is None:
                    return saw_ready
                if line.strip() == proto.READY:
                    saw_ready = True
                else:
                    self.noise.append(line)

        drain_until_quiet()
        self.link.write(proto.TERMINATOR.encode())
        return drain_until_quiet()

    def handshake(self, retries: int = 3, timeout_s: float = 2.0) -> str:
        """`name%` until the board answers m-name-...; the DUT name. Retries, then a DeviceError."""
        last = ""
        for attempt in range(1, retries + 1):
            self.noise += self.link.pending_lines()
            try:
                reply = self.request("name", timeout_s=timeout_s, check=False)
            except TransportTimeout as exc:
                last = exc.message
                if self.link.traffic:
                    self.link.traffic.note(f"handshake attempt {attempt}/{retries}: no answer")
                continue
            except proto.BoardReset:
                last = "the board rebooted during the handshake"
                self.wait_banner(timeout_s)
                continue
            name = next((ln for ln in reply.lines if ln.startswith("m-name-")), None)
            if name:
                return proto.parse_bracket(name, name[: name.index("[")]) or name
            last = f"unexpected reply {reply.lines[:3]}"
        raise DeviceError(
            f"no answer from the board on {self.where} after {retries} tries "
            f"(sent 'name%', waited {timeout_s:g} s each; {last})",
            hint=WIRING_HINT,
        )

    # ---------------------------------------------------------------- commands

    def request(self, text: str, timeout_s: float | None = None, check: bool = True) -> proto.Reply:
        """Send one command and collect its lines up to m-ready."""
        timeout_s = self.command_timeout_s if timeout_s is None else timeout_s
        self.noise += self.link.pending_lines()
        self.link.write(proto.command(text))
        return self._collect(text, timeout_s, check)

    def _collect(self, text: str, timeout_s: float, check: bool) -> proto.Reply:
        reply = proto.Reply(text)
        deadline = time.monotonic() + timeout_s
        while True:
            line = self.link.read_line(deadline - time.monotonic())
            if line is None:
                got = f"; last line {reply.lines[-1]!r}" if reply.lines else "; nothing received"
                raise TransportTimeout(
                    f"'{text}%' got no m-ready from {self.where} within {timeout_s:.1f} s{got}",
                    hint="the board may be busy, hung or rebooting; " + WIRING_HINT,
                )
            stripped = line.strip()
            if stripped.startswith(proto.INIT_DONE):
                raise proto.BoardReset(
                    f"the board rebooted during '{text}' ({len(reply.lines)} lines received before)",
                    hint="a crash or brown-out on the board, or someone pressed reset; partial results are kept",
                    lines=reply.lines,
                )
            kind = proto.classify(stripped)
            if kind == "noise":
                reply.noise.append(line)
                self.noise.append(line)
                continue
            if stripped == proto.READY:
                break
            reply.lines.append(stripped)
            if kind == "e":
                reply.errors.append(proto.error_text(stripped))
        if check and reply.errors:
            raise proto.BoardError(
                f"the board rejected '{text}': {reply.errors[0]}",
                hint="a command the firmware does not know or a wrong size usually means the firmware was built "
                     "for another model; rebuild and flash it",
                lines=reply.lines,
            )
        return reply

    def caps(self) -> set[str]:
        """The edgekd extensions the firmware announces (empty for a plain EEMBC DUT)."""
        if self._caps is None:
            reply = self.request("edgekd-caps", check=False)
            text = reply.bracket("m-edgekd-caps-")
            self._caps = set(text.split(",")) if text else set()
        return self._caps

    def profile(self) -> dict[str, str]:
        reply = self.request("profile")
        return {"profile": reply.bracket("m-profile-") or "", "model": reply.bracket("m-model-") or ""}

    def kv(self, cmd: str, prefix: str) -> dict[str, int | str]:
        text = self.request(cmd).bracket(prefix)
        if text is None:
            raise proto.ProtocolError(f"'{cmd}%' gave no {prefix}[...] line")
        return proto.parse_kv(text)

    def load(self, data: bytes, binary: bool | None = None) -> str:
        """Upload one input: CRC-framed binary when the firmware has it (and binary is not False),
        else `db load N` and hex `db` lines of <= 31 bytes. Returns the method used."""
        use_binary = ("dbc" in self.caps()) if binary is None else binary
        if use_binary:
            self.noise += self.link.pending_lines()
            self.link.write(proto.command(f"edgekd-dbc {len(data)} {proto.crc32(data):08x}"))
            deadline = time.monotonic() + self.command_timeout_s
            while True:
                line = self.link.read_line(deadline - time.monotonic())
                if line is None:
                    raise TransportTimeout(f"no m-edgekd-dbc-ready from {self.where}", hint=WIRING_HINT)
                if line.strip() == "m-edgekd-dbc-ready":
                    break
                if line.startswith("e-"):
                    self._collect("edgekd-dbc", self.command_timeout_s, check=False)
                    raise proto.BoardError(f"the board rejected the binary upload: {proto.error_text(line)}")
                if line.startswith(proto.INIT_DONE):
                    raise proto.BoardReset("the board rebooted during the upload")
            self.link.write(data)
            reply = self._collect("edgekd-dbc", self.command_timeout_s + len(data) * self.byte_time_s, True)
            if reply.find(proto.LOAD_DONE) is None:
                raise proto.ProtocolError(f"binary upload of {len(data)} bytes ended without m-load-done")
            return "dbc"
        reply = self.request(f"db load {len(data)}")
        if reply.find("m-[Expecting") is None:
            raise proto.ProtocolError(f"'db load {len(data)}' was not acknowledged: {reply.lines[:2]}")
        done = False
        for text in proto.db_lines(data):
            reply = self.request(text)
            done = reply.find(proto.LOAD_DONE) is not None
        if not done:
            raise proto.ProtocolError(f"the board did not confirm the {len(data)}-byte upload with m-load-done")
        return "db"

    def set_laps(self, on: bool) -> None:
        self.request(f"edgekd-laps {'on' if on else 'off'}")

    def infer(self, n: int = 1, warmup: int = 0, expected_latency_s: float | None = None) -> proto.InferResult:
        """`infer N W`; the time-out grows with (N + W) x the expected latency of one inference."""
        timeout = proto.infer_timeout(n, warmup, expected_latency_s)
        t0 = time.monotonic()
        reply = self.request(f"infer {n} {warmup}", timeout_s=timeout)
        result = proto.parse_infer(reply, n, warmup)
        # wall time per inference as the host saw it: an emulated board's virtual clock can run
        # faster than real time, so time-outs use the larger of the two
        result.wall_s_per_inference = (time.monotonic() - t0) / max(1, n + warmup)
        return result

    def results(self) -> list[float]:
        reply = self.request("results")
        line = reply.find("m-results-")
        if line is None:
            raise proto.ProtocolError("'results%' gave no m-results line")
        return proto.parse_results(line)


@contextlib.contextmanager
def open_dut(port: str, baud: int = 115200, *, traffic_path: str | os.PathLike | None = None,
             banner_timeout_s: float = 0.0, handshake_retries: int = 3, handshake_timeout_s: float = 2.0,
             command_timeout_s: float = 5.0) -> Iterator[DutClient]:
    """Open the port (no reset), optionally wait for a boot banner, handshake; yields a DutClient."""
    traffic = TrafficLog(traffic_path) if (traffic_path or TrafficLog.enabled()) else None
    link = SerialLink(port, baud, traffic=traffic).open()
    try:
        client = DutClient(link, command_timeout_s=command_timeout_s)
        if banner_timeout_s > 0:
            client.wait_banner(banner_timeout_s)
        client.handshake(retries=handshake_retries, timeout_s=handshake_timeout_s)
        yield client
    finally:
        link.close()
        if traffic:
            traffic.close()
