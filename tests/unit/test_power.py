"""Power parsers on real formats, energy attribution against analytic traces, the LPM01A protocol."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgekd.agent import device_power as power
from edgekd.errors import DeviceError, MeasurementError
from edgekd.measure.power.base import PowerTrace
from edgekd.measure.power.energy import energy_per_inference
from edgekd.measure.power.lpm01a import Lpm01aMeter, decode_ascii_dec, idle_before_window
from tests.unit.power_trees import ina2xx_hwmon, jetpack4_ina3221, jetpack5_ina3221

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def tegrastats_lines() -> dict[str, str]:
    lines, name = {}, None
    for line in (FIXTURES / "tegrastats.txt").read_text().splitlines():
        if line.startswith("# ") and not line.startswith("# Real"):
            name = line[2:].strip()
        elif line and not line.startswith("#"):
            lines[name] = line
    return lines


@pytest.mark.parametrize("generation, watts", [
    ("jetpack4-nano", 2.132), ("jetpack5-xavier-nx", 3.325), ("jetpack6-orin-nano", 4.862), ("jetpack7-thor", 27.519),
])
def test_tegrastats_total_is_the_input_rail(generation, watts):
    line = tegrastats_lines()[generation]
    assert power.tegrastats_total_watts(line) == pytest.approx(watts)
    rails = power.parse_tegrastats_rails(line)
    assert "RAM" not in rails and "SWAP" not in rails and len(rails) >= 3


def test_tegrastats_three_value_form_keeps_all_values():
    rails = power.parse_tegrastats_rails(tegrastats_lines()["jetpack7-thor"])
    assert rails["VDD_IN"] == (27519.0, 27519.0, 28110.0)


def test_vin_sys_5v0_is_not_taken_as_a_total():
    line = tegrastats_lines()["jetpack5-agx-orin-no-total"]
    assert "VIN_SYS_5V0" in power.parse_tegrastats_rails(line)
    with pytest.raises(power.PowerSourceError, match="no total rail"):
        power.tegrastats_total_watts(line)


def test_ina3221_jetpack4_iio_layout(tmp_path):
    jetpack4_ina3221(tmp_path, total_mw=2132)
    source = power.open_source("ina3221", str(tmp_path))
    assert source.read_watts() == pytest.approx(2.132)
    assert "POM_5V_IN" in source.channel


def test_ina3221_jetpack5_hwmon_layout(tmp_path):
    volt, curr = jetpack5_ina3221(tmp_path, volts_mv=5000, total_ma=665)
    source = power.open_source("ina3221", str(tmp_path))
    assert source.read_watts() == pytest.approx(5.0 * 0.665)
    curr.write_text("1000\n")
    assert source.read_watts() == pytest.approx(5.0)


def test_ina3221_absent_says_why(tmp_path):
    with pytest.raises(power.PowerSourceError, match="no INA3221 channel"):
        power.open_source("ina3221", str(tmp_path))


def test_ina219_hwmon_power_file_in_microwatts(tmp_path):
    ina2xx_hwmon(tmp_path, "ina219", microwatts=1_250_000)
    assert power.open_source("ina219", str(tmp_path)).read_watts() == pytest.approx(1.25)


def test_ina260_hwmon_without_power_file_uses_v_times_i(tmp_path):
    ina2xx_hwmon(tmp_path, "ina260", microwatts=None)
    assert power.open_source("ina260", str(tmp_path)).read_watts() == pytest.approx(5.0 * 0.25)


# ---------------------------------------------------------------- energy


def _trace(fn, t0=0.0, t1=2.0, rate=1000.0, markers=(0.5, 1.5)):
    t = np.arange(t0, t1, 1.0 / rate)
    return PowerTrace(t, fn(t), "test", {"window_start": markers[0], "window_end": markers[1]})


def test_constant_power_energy_is_exact():
    trace = _trace(lambda t: np.full_like(t, 3.0))
    idle = PowerTrace(np.linspace(0, 1, 101), np.full(101, 1.0), "test")
    r = energy_per_inference(trace, inferences=100, idle=idle)
    assert r.total_mj_per_inference == pytest.approx(3.0 * 1.0 / 100 * 1e3)      # 30 mJ
    assert r.dynamic_mj_per_inference == pytest.approx((3.0 - 1.0) / 100 * 1e3)  # 20 mJ
    assert r.total_mj_ci95 == pytest.approx(0.0, abs=1e-9)
    assert r.avg_power_w == pytest.approx(3.0)


def test_square_wave_energy_matches_the_analytic_answer():
    # 2 W / 4 W square wave, 20 ms period, sampled at 10 kHz: mean 3 W over whole periods.
    trace = _trace(lambda t: np.where((t * 50) % 1 < 0.5, 2.0, 4.0), rate=10000.0, markers=(0.5, 1.5))
    r = energy_per_inference(trace, inferences=50)
    assert r.total_mj_per_inference == pytest.approx(3.0 * 1.0 / 50 * 1e3, rel=2e-3)
    assert r.total_mj_ci95 < 0.5


def test_missing_markers_refuse_to_report():
    trace = _trace(lambda t: np.ones_like(t))
    del trace.markers["window_end"]
    with pytest.raises(MeasurementError, match="window_end are missing"):
        energy_per_inference(trace, 10)


def test_sparse_samples_refuse_to_report():
    trace = _trace(lambda t: np.ones_like(t), rate=5.0, markers=(0.5, 1.5))
    with pytest.raises(MeasurementError, match="samples too sparse: 5 .* at least 10"):
        energy_per_inference(trace, 10)


def test_samples_not_covering_the_window_refuse():
    trace = _trace(lambda t: np.ones_like(t), t0=0.7, markers=(0.5, 1.5))
    with pytest.raises(MeasurementError, match="do not cover the window"):
        energy_per_inference(trace, 10)



class _SlowSource:
    """A sensor whose every read takes 30 ms (a loaded device, a slow I2C bus), asked for 1 kHz."""

    def read_watts(self) -> float:
        time.sleep(0.03)
        return 1.0


def test_sampler_brackets_both_window_edges_with_a_slow_source():
    # The agent once slept two sample periods (2 ms here) around the window and hoped: a read that
    # takes longer left an edge uncovered and the run's energy unreported.
    sampler = power.Sampler(_SlowSource(), 1000.0).start()
    try:
        assert sampler.wait_for_sample_after(time.monotonic(), timeout_s=2.0)
        start = time.monotonic()
        time.sleep(0.05)
        end = time.monotonic()
        assert sampler.wait_for_sample_after(end, timeout_s=2.0)
    finally:
        samples = sampler.stop()
    t = np.array([x for x, _ in samples])
    assert t[0] <= start and t[-1] >= end
    trace = PowerTrace.from_pairs(samples, "slow", {"window_start": start, "window_end": end})
    with pytest.raises(MeasurementError, match="samples too sparse"):  # covered, but 30 ms apart
        energy_per_inference(trace, 10)


def test_sampler_wait_gives_up_on_a_dead_source():
    class Dead:
        def read_watts(self):
            raise OSError("sensor gone")

    sampler = power.Sampler(Dead(), 100.0).start()
    t0 = time.monotonic()
    assert not sampler.wait_for_sample_after(time.monotonic(), timeout_s=2.0)
    assert time.monotonic() - t0 < 1.0  # it notices the dead thread rather than waiting the timeout out
    sampler.stop()
    assert isinstance(sampler.error, OSError)


# ---------------------------------------------------------------- LPM01A over a pty


def test_ascii_dec_decoding():
    assert decode_ascii_dec("6409-07") == pytest.approx(640.9e-6)
    assert decode_ascii_dec("1000+00") == pytest.approx(1000.0)


class PowerShieldPeer(threading.Thread):
    """The LPM01A's side of its ASCII protocol on a pty: acks commands, streams ascii_dec samples
    with D7 'event' lines around a 1 s window of 12 mA, idle 2 mA around it."""

    def __init__(self, fd: int, rate: int = 1000, refuse: str | None = None):
        super().__init__(daemon=True)
        self.fd, self.rate, self.refuse = fd, rate, refuse
        self.received: list[str] = []

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def run(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self.fd, 1024)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self.handle(line.decode().strip())

    def handle(self, cmd: str) -> None:
        self.received.append(cmd)
        if cmd == self.refuse:
            self.send(f"PowerShield > error {cmd}\r\nPowerShield > Error detail: value out of range\r\n")
            return
        if cmd == "stop":
            self.send("PowerShield > Acquisition completed\r\nPowerShield > summary beg\r\n")
            return
        self.send(f"PowerShield > ack {cmd}\r\n")
        if cmd == "start":
            idle, busy = "2000-06", "1200-05"  # 2 mA, 12 mA
            lines = [" ".join([idle] * 10) for _ in range(50)]          # 0.5 s idle
            lines.append("event 1 fal")
            lines += [" ".join([busy] * 10) for _ in range(100)]         # 1.0 s busy
            lines.append("event 2 fal")
            lines += [" ".join([idle] * 10) for _ in range(20)]
            self.send("\r\n".join(lines) + "\r\n")


@pytest.fixture
def shield():
    import serial

    master, slave = os.openpty()
    peer = PowerShieldPeer(master)
    peer.start()
    port = serial.Serial(os.ttyname(slave), 115200, timeout=0.1)
    yield peer, port
    os.close(master)


def test_lpm01a_energy_from_the_devices_own_markers(shield):
    peer, port = shield
    meter = Lpm01aMeter("/dev/pty-test", voltage_v=3.0, rate_hz=1000, serial_port=port)
    assert peer.received[:3] == ["htc", "pwr off", "volt 3000m"] and "format ascii_dec" in peer.received
    meter.start()
    time.sleep(0.3)
    trace = meter.stop()
    assert len(trace) == 1700 and trace.markers == {"window_start": 0.5, "window_end": 1.5}
    r = energy_per_inference(trace, inferences=100, idle=idle_before_window(trace))
    # 12 mA x 3 V for 1 s over 100 inferences = 0.36 mJ each; idle 2 mA -> dynamic 0.30 mJ.
    assert r.total_mj_per_inference == pytest.approx(0.36, rel=1e-2)
    assert r.dynamic_mj_per_inference == pytest.approx(0.30, rel=1e-2)
    meter.close()


def test_lpm01a_error_reply_is_surfaced_with_detail():
    import serial

    master, slave = os.openpty()
    peer = PowerShieldPeer(master, refuse="volt 3300m")
    peer.start()
    port = serial.Serial(os.ttyname(slave), 115200, timeout=0.1)
    with pytest.raises(DeviceError, match="refused 'volt 3300m': Error detail: value out of range"):
        Lpm01aMeter("/dev/pty-test", voltage_v=3.3, serial_port=port)
    os.close(master)
