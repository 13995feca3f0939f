"""ST X-NUCLEO-LPM01A (PowerShield) over its ASCII serial protocol, as MLPerf Tiny's energy runner
uses it: the host takes control (`htc`), sets voltage, sampling rate and output, `start`s an
acquisition and reads `ascii_dec` current samples ("6409-07" = 6409e-7 A). The device under test
marks its own inference window on the board's D7 timestamp line, which the shield reports in the
stream as `event N ris|fal` lines: those are the markers energy is attributed between.
"""

from __future__ import annotations

import queue
import re
import threading
import time

from edgekd.errors import DeviceError, MissingDependencyError, TransportTimeout
from edgekd.measure.power.base import PowerMeter, PowerTrace

PROMPT = "PowerShield > "
SAMPLE = re.compile(r"(\d{4})([+-])(\d{2})")
EVENT = re.compile(r"event (\d+) (ris|fal)")
FREQS = (100000, 50000, 20000, 10000, 5000, 2000, 1000, 500, 200, 100, 50, 20, 10, 5, 2, 1)


def decode_ascii_dec(token: str) -> float:
    """'6409-07' -> 6409e-7 (amperes)."""
    m = SAMPLE.fullmatch(token)
    if not m:
        raise ValueError(f"not an ascii_dec value: {token!r}")
    mantissa, sign, exponent = m.groups()
    return int(mantissa) * 10.0 ** (int(exponent) if sign == "+" else -int(exponent))


def _freq_arg(hz: int) -> str:
    return f"{hz // 1000}k" if hz >= 1000 and hz % 1000 == 0 else str(hz)


class Lpm01aMeter(PowerMeter):
    name = "lpm01a"

    def __init__(self, port: str, voltage_v: float = 3.3, rate_hz: int = 1000, baud: int = 3686400,
                 timeout_s: float = 5.0, serial_port=None):
        if rate_hz not in FREQS or rate_hz > 10000:
            raise DeviceError(f"LPM01A sampling rate {rate_hz} Hz is not available in ascii_dec",
                              hint=f"choose one of {', '.join(str(f) for f in FREQS if f <= 10000)}")
        if not 1.8 <= voltage_v <= 3.3:
            raise DeviceError(f"LPM01A supply {voltage_v} V is outside 1.8..3.3 V")
        self.port, self.voltage, self.rate, self.timeout = port, voltage_v, rate_hz, timeout_s
        if serial_port is None:
            try:
                import serial
            except ImportError:
                raise MissingDependencyError("pyserial is not installed", hint="pip install pyserial") from None
            try:
                serial_port = serial.Serial(port, baud, timeout=0.1)
            except (OSError, ValueError) as exc:
                raise DeviceError(f"cannot open the LPM01A on {port}: {exc}",
                                  hint="check the USB cable and that no other program (STM32CubeMonitor-Power) holds the port") from None
        self.ser = serial_port
        self._messages: queue.Queue[str] = queue.Queue()
        self._samples: list[float] = []
        self._markers: list[tuple[int, str, int]] = []  # (sample index, edge, event number)
        self._reader_error: Exception | None = None
        self._running = True
        self._thread = threading.Thread(target=self._read_loop, daemon=True)
        self._thread.start()
        self.command("htc")
        self.command("pwr off")
        self.command(f"volt {int(round(voltage_v * 1000))}m")
        self.command(f"freq {_freq_arg(rate_hz)}")
        self.command("acqtime 0")
        self.command("output current")
        self.command("format ascii_dec")
        self.command("trigsrc sw")
        self.command("eventsrc d7 fal")

    # ------------------------------------------------------------ wire

    def _read_loop(self) -> None:
        buffer = b""
        try:
            while self._running:
                chunk = self.ser.read(4096)
                if not chunk:
                    continue
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    self._handle(raw.decode(errors="replace").strip())
        except Exception as exc:  # surfaced by the next command()/stop()
            self._reader_error = exc

    def _handle(self, line: str) -> None:
        text = line.replace(PROMPT, "").strip()
        if not text:
            return
        tokens = text.split()
        if tokens and all(SAMPLE.fullmatch(tok) for tok in tokens):
            self._samples.extend(decode_ascii_dec(tok) for tok in tokens)
            return
        m = EVENT.fullmatch(text)
        if m:
            self._markers.append((len(self._samples), m.group(2), int(m.group(1))))
            return
        self._messages.put(text)

    def _expect(self, predicate, what: str, timeout: float | None = None) -> str:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            if self._reader_error:
                raise DeviceError(f"LPM01A on {self.port}: read failed: {self._reader_error}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportTimeout(f"LPM01A on {self.port}: no {what} within {timeout or self.timeout:g} s",
                                       hint="is the shield powered and in host mode? check the port and the 3686400 baud rate")
            try:
                msg = self._messages.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            if predicate(msg):
                return msg

    def command(self, cmd: str) -> None:
        self.ser.write((cmd + "\n").encode())
        reply = self._expect(lambda m: m.startswith(("ack", "error")) and cmd in m, f"answer to '{cmd}'")
        if reply.startswith("error"):
            try:
                detail = self._expect(lambda m: m.startswith("Error detail"), "error detail", timeout=1.0)
            except TransportTimeout:
                detail = reply
            raise DeviceError(f"LPM01A refused '{cmd}': {detail}", hint="see ST UM2269 for the command's range")

    # ------------------------------------------------------------ meter

    def start(self) -> None:
        self._samples.clear()
        self._markers.clear()
        self.command("start")

    def stop(self) -> PowerTrace:
        self.ser.write(b"stop\n")
        self._expect(lambda m: "Acquisition completed" in m, "end of acquisition")
        period = 1.0 / self.rate
        amps = list(self._samples)
        t = [i * period for i in range(len(amps))]
        watts = [a * self.voltage for a in amps]
        markers = {}
        # The DUT pulls D7 low at the start and again at the end of its timed window.
        falls = [idx for idx, edge, _ in self._markers if edge == "fal"]
        if len(falls) >= 1:
            markers["window_start"] = falls[0] * period
        if len(falls) >= 2:
            markers["window_end"] = falls[1] * period
        return PowerTrace.from_pairs(list(zip(t, watts)), "lpm01a", markers)

    def close(self) -> None:
        try:
            self.command("hrc")
        except (DeviceError, TransportTimeout, OSError):
            pass
        self._running = False
        self._thread.join(timeout=1)
        self.ser.close()


def idle_before_window(trace: PowerTrace) -> PowerTrace:
    """The samples before the device's first marker: the idle baseline of a shield acquisition."""
    a = trace.markers.get("window_start")
    keep = trace.t < a if a is not None else trace.t < trace.t[:1]
    return PowerTrace(trace.t[keep], trace.watts[keep], trace.source)
