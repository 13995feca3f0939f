"""Power sources read ON the device: Jetson INA3221, INA219/INA226/INA260 (hwmon or I2C), tegrastats.

Standard library only (smbus2 when a direct-I2C INA2xx is used): deployed next to the agent and
imported by it; the host imports the same module to parse recorded output, so each format is
parsed in exactly one place.

Every source returns the TOTAL board input power in watts. Jetson rails are never added: the
total is the VDD_IN / POM_5V_IN rail (VIN_SYS_5V0 is a carrier-board rail, not a total).
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import threading
import time

TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
NOT_TOTAL = ("VIN_SYS_5V0",)


class PowerSourceError(Exception):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


# ---------------------------------------------------------------- tegrastats

# JetPack 4:   POM_5V_IN 2132/2132 POM_5V_GPU 0/0 POM_5V_CPU 408/408          (mW current/average)
# JetPack 5/6: VDD_IN 3325mW/3325mW VDD_CPU_GPU_CV 516mW/516mW VDD_SOC 1033mW/1033mW
# JetPack 7:   VDD_IN 4862mW/4862mW/4862mW ...                               (current/average/peak)
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")


def parse_tegrastats_rails(line: str) -> dict[str, tuple[float, ...]]:
    """{rail: (current_mW, average_mW[, peak_mW])} for every power rail on one tegrastats line."""
    rails = {}
    for m in _RAIL.finditer(line):
        name = m.group(1)
        if name in ("RAM", "SWAP", "IRAM", "LFB"):
            continue
        values = tuple(float(v) for v in m.groups()[1:] if v is not None)
        rails[name] = values
    return rails


def tegrastats_total_watts(line: str) -> float:
    """Instantaneous total input power (W) from one tegrastats line."""
    rails = parse_tegrastats_rails(line)
    for name in TOTAL_RAILS:
        if name in rails:
            return rails[name][0] / 1000.0
    raise PowerSourceError(
        f"tegrastats line has no total rail ({' or '.join(TOTAL_RAILS)}); rails: {', '.join(rails) or 'none'}",
        "this board's tegrastats does not report the module input; use the ina3221 source instead",
    )


class TegrastatsSource:
    """Runs `tegrastats --interval MS` and keeps the latest total."""

    name = "tegrastats"

    def __init__(self, interval_ms: int = 10, binary: str = "tegrastats"):
        exe = binary if os.path.sep in binary else _which(binary)
        if exe is None:
            raise PowerSourceError("tegrastats not found", "it ships with JetPack (/usr/bin/tegrastats)")
        self._proc = subprocess.Popen([exe, "--interval", str(max(1, interval_ms))], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
        self._latest: float | None = None
        self._error: PowerSourceError | None = None
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + 5
        while self._latest is None and self._error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._error:
            raise self._error
        if self._latest is None:
            self.close()
            raise PowerSourceError("tegrastats printed nothing within 5 s", "run it by hand to check it works")

    def _pump(self) -> None:
        for line in self._proc.stdout:
            try:
                self._latest = tegrastats_total_watts(line)
            except PowerSourceError as exc:
                self._error = exc
                return

    def read_watts(self) -> float:
        if self._error:
            raise self._error
        return self._latest  # type: ignore[return-value]

    def close(self) -> None:
        self._proc.terminate()


def _which(name: str) -> str | None:
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            return path
    return None


# ---------------------------------------------------------------- sysfs readers


def _read_number(path: str) -> float:
    with open(path) as fh:
        return float(fh.read().strip())


def _read_label(path: str) -> str:
    with open(path) as fh:
        return fh.read().strip()


class Ina3221Source:
    """Jetson on-board INA3221: the channel whose label is the module input.

    JetPack 4 (iio):    .../ina3221x/<bus>-0040/iio:device0/rail_name_<n>, in_power<n>_input (mW)
    JetPack 5+ (hwmon): .../ina3221/<bus>-0040/hwmon/hwmon<k>/in<n>_label, in<n>_input (mV), curr<n>_input (mA)
    """

    name = "ina3221"

    def __init__(self, root: str = "/sys"):
        self.root = root
        self._read = self._discover()

    def _discover(self):
        base = os.path.join(self.root, "bus", "i2c", "drivers")
        for dev in sorted(glob.glob(os.path.join(base, "ina3221x", "*", "iio:device*"))):
            for label_file in sorted(glob.glob(os.path.join(dev, "rail_name_*"))):
                label = _read_label(label_file)
                n = label_file.rsplit("_", 1)[1]
                if label in TOTAL_RAILS:
                    power = os.path.join(dev, f"in_power{n}_input")
                    self.channel = f"{label} ({power})"
                    return lambda p=power: _read_number(p) / 1000.0
        for hw in sorted(glob.glob(os.path.join(base, "ina3221", "*", "hwmon", "hwmon*"))):
            for label_file in sorted(glob.glob(os.path.join(hw, "in*_label"))):
                label = _read_label(label_file)
                n = os.path.basename(label_file)[2:].split("_")[0]
                if label in TOTAL_RAILS:
                    volt = os.path.join(hw, f"in{n}_input")
                    curr = os.path.join(hw, f"curr{n}_input")
                    self.channel = f"{label} ({hw}, channel {n})"
                    return lambda v=volt, c=curr: _read_number(v) * _read_number(c) / 1e6
        raise PowerSourceError(
            f"no INA3221 channel labelled {' or '.join(TOTAL_RAILS)} under {base}",
            "this is not a Jetson, or its power monitor driver is not loaded (ls /sys/bus/i2c/drivers/ina3221*)",
        )

    def read_watts(self) -> float:
        return self._read()

    def close(self) -> None:
        pass


class Ina2xxHwmonSource:
    """An INA219/INA226/INA260 bound to Linux's ina2xx (or ina260 via ina2xx) hwmon driver."""

    name = "ina2xx"
    CHIPS = ("ina219", "ina220", "ina226", "ina230", "ina231", "ina260")

    def __init__(self, root: str = "/sys", chips: tuple = CHIPS):
        self.root = root
        for hw in sorted(glob.glob(os.path.join(root, "class", "hwmon", "hwmon*"))):
            name_file = os.path.join(hw, "name")
            if os.path.exists(name_file) and _read_label(name_file) in chips:
                self.chip = _read_label(name_file)
                self.path = hw
                power = os.path.join(hw, "power1_input")  # microwatts
                if os.path.exists(power):
                    self._read = lambda p=power: _read_number(p) / 1e6
                else:
                    volt, curr = os.path.join(hw, "in1_input"), os.path.join(hw, "curr1_input")
                    self._read = lambda v=volt, c=curr: _read_number(v) * _read_number(c) / 1e6
                return
        raise PowerSourceError(
            f"no {'/'.join(chips)} hwmon device under {os.path.join(root, 'class', 'hwmon')}",
            "bind the driver (e.g. echo ina219 0x40 > /sys/bus/i2c/devices/i2c-1/new_device) or set "
            "power.i2c_bus/i2c_address in the target to read it directly over I2C",
        )

    def read_watts(self) -> float:
        return self._read()

    def close(self) -> None:
        pass


class Ina2xxI2cSource:
    """Direct I2C reads (smbus2) of an INA260 (integrated shunt) or an INA219 with a known shunt."""

    name = "ina2xx-i2c"

    def __init__(self, chip: str, bus: int, address: int, shunt_ohms: float | None = None):
        try:
            from smbus2 import SMBus  # type: ignore
        except ImportError:
            raise PowerSourceError("smbus2 is not installed", "python3 -m pip install smbus2") from None
        self.chip, self.address = chip, address
        try:
            self.bus = SMBus(bus)
        except OSError as exc:
            raise PowerSourceError(f"cannot open /dev/i2c-{bus}: {exc}", "enable I2C (raspi-config) and check permissions") from None
        if chip == "ina219":
            if not shunt_ohms:
                raise PowerSourceError("an INA219 needs power.shunt_ohms in the target", "the usual breakout has 0.1 ohm")
            self.current_lsb = 0.0001  # 100 uA per bit: up to 3.2 A
            cal = int(0.04096 / (self.current_lsb * shunt_ohms))
            self._write(0x05, cal)

    def _write(self, reg: int, value: int) -> None:
        self.bus.write_i2c_block_data(self.address, reg, [(value >> 8) & 0xFF, value & 0xFF])

    def _read_u16(self, reg: int) -> int:
        hi, lo = self.bus.read_i2c_block_data(self.address, reg, 2)
        return (hi << 8) | lo

    def read_watts(self) -> float:
        if self.chip == "ina260":
            return self._read_u16(0x03) * 0.010  # 10 mW per bit
        return self._read_u16(0x04) * 20 * self.current_lsb  # INA219 power LSB = 20 x current LSB

    def close(self) -> None:
        self.bus.close()


def open_source(name: str, root: str = "/sys", options: dict | None = None):
    """A power source by the target's name for it; PowerSourceError when absent here."""
    options = options or {}
    if name == "ina3221":
        return Ina3221Source(root)
    if name == "tegrastats":
        return TegrastatsSource(int(options.get("interval_ms", 10)), options.get("tegrastats", "tegrastats"))
    if name in ("ina219", "ina260"):
        try:
            return Ina2xxHwmonSource(root, chips=(name,))
        except PowerSourceError:
            if options.get("i2c_bus") is None or options.get("i2c_address") is None:
                raise
            return Ina2xxI2cSource(name, int(options["i2c_bus"]), int(options["i2c_address"]), options.get("shunt_ohms"))
    raise PowerSourceError(f"power source '{name}' is not read on the device", "lpm01a/ppk2/joulescope are read by the host")


# ---------------------------------------------------------------- sampling


class Sampler:
    """Reads a source at a fixed rate on a thread, timestamped with the device's monotonic clock."""

    def __init__(self, source, rate_hz: float):
        self.source = source
        self.period = 1.0 / rate_hz
        self.samples: list[tuple[float, float]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), float(self.source.read_watts())))
            except Exception as exc:  # a sensor read failing mid-run is reported, not swallowed
                self.error = exc
                return
            next_t += self.period
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_t = time.monotonic()

    def wait_for_sample_after(self, t: float, timeout_s: float) -> bool:
        """Block until a sample taken at or after monotonic time t exists; False after timeout_s.

        The window's edges must lie between samples: a fixed sleep of a few periods is not enough
        on a loaded device, where the sampler thread can wait tens of milliseconds to be scheduled."""
        deadline = time.monotonic() + timeout_s
        while not (self.samples and self.samples[-1][0] >= t):
            if self.error is not None or not self._thread.is_alive() or time.monotonic() > deadline:
                return False
            time.sleep(min(self.period, 0.01) / 2)
        return True

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.samples
