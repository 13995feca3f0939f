"""The serial wire protocol of microcontroller targets (EEMBC / MLPerf Tiny compatible).

Pure functions and data only: formatting commands, classifying and parsing reply lines,
chunking uploads, scaling time-outs. The I/O (port, reader thread, retries) is in
runners/serial.py; the firmware side is firmware/src/ekd_protocol.c.

Wire summary (see DESIGN.md, "Serial protocol"): ASCII commands end with '%'; each is
answered by lines and a final `m-ready`; errors are `e-[...]`; boot prints `m-init-done`
then `m-ready`. Extensions are announced by `edgekd-caps%`.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from edgekd.errors import DeviceError

TERMINATOR = "%"
READY = "m-ready"
INIT_DONE = "m-init-done"
LOAD_DONE = "m-load-done"
MAX_DB_BYTES_PER_LINE = 31  # "db " + 62 hex digits + "%" stays inside the 80-character command buffer
CMD_BUFFER = 80

_RESULTS = re.compile(r"^m-results-\[(.*)\]$")
_LAP_US = re.compile(r"^m-lap-us-(\d+)$")
_BRACKETED = re.compile(r"^([me])-(.*?)-?\[(.*)\]$")


class BoardError(DeviceError):
    """The board answered e-[...]: the command failed on the device."""

    def __init__(self, message: str, hint: str | None = None, lines: list[str] | None = None):
        super().__init__(message, hint)
        self.lines = lines or []


class BoardReset(DeviceError):
    """The board rebooted (m-init-done appeared) in the middle of a command; the banner's
    m-ready is still to come (DutClient.resync reads it)."""

    def __init__(self, message: str, hint: str | None = None, lines: list[str] | None = None):
        super().__init__(message, hint)
        self.lines = lines or []


class ProtocolError(DeviceError):
    """A reply that does not follow the protocol (garbled, truncated, unexpected)."""


def command(text: str) -> bytes:
    """The bytes of one command: its text and the '%' terminator."""
    if TERMINATOR in text:
        raise ValueError(f"a command cannot contain '{TERMINATOR}': {text!r}")
    if len(text) > CMD_BUFFER:
        raise ValueError(f"command of {len(text)} characters exceeds the {CMD_BUFFER}-character buffer")
    return (text + TERMINATOR).encode("ascii")


def db_lines(data: bytes, per_line: int = MAX_DB_BYTES_PER_LINE) -> list[str]:
    """`db <hex>` commands carrying `data`, at most `per_line` (<= 31) bytes each."""
    if not 1 <= per_line <= MAX_DB_BYTES_PER_LINE:
        raise ValueError(f"per_line must be 1..{MAX_DB_BYTES_PER_LINE}, not {per_line}")
    return [f"db {data[i:i + per_line].hex()}" for i in range(0, len(data), per_line)]


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def classify(line: str) -> str:
    """'m' (message), 'e' (error) or 'noise' (anything else: garbage, partial line, boot chatter)."""
    if line.startswith("m-"):
        return "m"
    if line.startswith("e-"):
        return "e"
    return "noise"


def error_text(line: str) -> str:
    m = re.match(r"^e-\[(.*)\]$", line)
    return m.group(1) if m else line[2:]


def parse_results(line: str) -> list[float]:
    """`m-results-[v0,v1,...]` -> numbers (ints from this firmware, floats from others)."""
    m = _RESULTS.match(line.strip())
    if not m:
        raise ProtocolError(f"not a results line: {line!r}")
    body = m.group(1).strip()
    if not body:
        return []
    try:
        return [float(v) for v in body.split(",")]
    except ValueError:
        raise ProtocolError(f"garbled results line: {line!r}") from None


def parse_lap_us(line: str) -> int | None:
    m = _LAP_US.match(line.strip())
    return int(m.group(1)) if m else None


def parse_bracket(line: str, prefix: str) -> str | None:
    """The text inside `<prefix>[...]`, e.g. parse_bracket('m-name-dut-[x]', 'm-name-dut-') == 'x'."""
    line = line.strip()
    if line.startswith(prefix + "[") and line.endswith("]"):
        return line[len(prefix) + 1:-1]
    return None


def parse_kv(text: str) -> dict[str, int | str]:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'}."""
    out: dict[str, int | str] = {}
    for item in text.split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k.strip()] = int(v) if v.strip().lstrip("-").isdigit() else v.strip()
    return out


def infer_timeout(n: int, warmup: int, expected_latency_s: float | None, base_s: float = 5.0,
                  margin: float = 3.0, unknown_latency_s: float = 2.0) -> float:
    """Time-out for `infer N W`: a base for the round trip plus (N + W) x the expected latency
    with a safety margin; an unknown latency assumes `unknown_latency_s` per inference."""
    per = expected_latency_s if expected_latency_s and expected_latency_s > 0 else unknown_latency_s
    return base_s + (n + warmup) * per * margin


@dataclass
class Reply:
    """Everything a command produced up to its m-ready."""

    command: str
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)

    def find(self, prefix: str) -> str | None:
        for line in self.lines:
            if line.startswith(prefix):
                return line
        return None

    def bracket(self, prefix: str) -> str | None:
        for line in self.lines:
            v = parse_bracket(line, prefix)
            if v is not None:
                return v
        return None


@dataclass
class InferResult:
    n: int
    warmup: int
    results: list[float]
    lap_us: list[int]
    per_inference_ticks: list[int] = field(default_factory=list)
    wall_s_per_inference: float | None = None  # measured on the host, round trip included

    def expected_latency_s(self) -> float | None:
        """A per-inference latency to scale later time-outs: the larger of board time and wall time."""
        board = (self.total_us / 1e6 / self.n) if self.total_us is not None and self.n else None
        values = [v for v in (board, self.wall_s_per_inference) if v]
        return max(values) if values else None

    @property
    def total_us(self) -> int | None:
        return self.lap_us[-1] - self.lap_us[0] if len(self.lap_us) >= 2 else None

    @property
    def mean_us(self) -> float | None:
        t = self.total_us
        return t / self.n if t is not None and self.n else None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "warmup": self.warmup, "results": self.results, "lap_us": self.lap_us,
                "total_us": self.total_us, "mean_us": self.mean_us, "per_inference_ticks": self.per_inference_ticks}


def parse_infer(reply: Reply, n: int, warmup: int) -> InferResult:
    """The lines of `infer N W` -> laps, optional per-inference laps and results."""
    laps = [v for v in (parse_lap_us(x) for x in reply.lines) if v is not None]
    if not any(x.startswith("m-infer-done") for x in reply.lines):
        raise ProtocolError(f"'infer {n} {warmup}' ended without m-infer-done (got {len(reply.lines)} lines)")
    if len(laps) < 2:
        raise ProtocolError(f"'infer {n} {warmup}' gave {len(laps)} m-lap-us lines, expected 2")
    results_line = reply.find("m-results-")
    if results_line is None:
        raise ProtocolError(f"'infer {n} {warmup}' gave no m-results line")
    ticks: list[int] = []
    laps_text = reply.bracket("m-edgekd-laps-")
    if laps_text:
        try:
            ticks = [int(v) for v in laps_text.split(",") if v]
        except ValueError:
            raise ProtocolError(f"garbled per-inference laps: {laps_text[:80]!r}") from None
    return InferResult(n, warmup, parse_results(results_line), laps[-2:], ticks)
