"""`edgekd profile --power` with the device's power monitor emulated by a sysfs tree (real file names)."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from tests.helpers import run_cli
from tests.unit.power_trees import jetpack4_ina3221


def _target(folder, sysfs, rate=1000, idle_s=0.3):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "jetson-sim.toml").write_text(
        'name = "jetson-sim"\ndescription = "this host with a Jetson INA3221 sysfs tree written by the test"\n'
        'kind = "host"\n[transport]\ntype = "local"\n[runtime]\nengine = "tflite"\nformats = ["tflite-int8"]\n'
        f'[power]\nsources = ["ina3221", "tegrastats"]\nsample_hz = {rate}\nsysfs_root = "{sysfs}"\nidle_s = {idle_s}\n'
    )
    return folder


class SquareWave(threading.Thread):
    """Rewrites in_power0_input between two levels, logging (monotonic time, watts) of every change."""

    # Half period 0.1 s: a sampler delayed by a busy CI machine (tens of ms between samples) then
    # misplaces a level change by a small fraction of a half period, not a quarter of it.
    def __init__(self, path, low_mw=2000, high_mw=6000, half_period_s=0.1):
        super().__init__(daemon=True)
        self.path, self.levels, self.half = path, (low_mw, high_mw), half_period_s
        self.log: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self):
        k = 0
        while not self.stop.is_set():
            mw = self.levels[k % 2]
            tmp = self.path.with_name(".tmp")
            tmp.write_text(f"{mw}\n")
            os.replace(tmp, self.path)
            self.log.append((time.monotonic(), mw / 1000.0))
            k += 1
            self.stop.wait(self.half)

    def energy(self, a: float, b: float) -> float:
        """∫_a^b of the piecewise-constant power this thread produced (J)."""
        t = np.array([x for x, _ in self.log] + [b])
        w = np.array([y for _, y in self.log])
        total = 0.0
        for i in range(len(w)):
            lo, hi = max(t[i], a), min(t[i + 1], b)
            if hi > lo:
                total += w[i] * (hi - lo)
        return total


def test_profile_power_constant_matches_analytic(small_model, tmp_path):
    sysfs = tmp_path / "sys"
    jetpack4_ina3221(sysfs, total_mw=3500)
    folder = _target(tmp_path / "targets", sysfs)
    res = run_cli("profile", str(small_model[0]), "--target", "jetson-sim", "--targets-dir", str(folder),
                  "--power", "--runs", "10", "--min-time", "0.5", "--out", str(tmp_path / "out"), "--json",
                  env={"XDG_CACHE_HOME": str(tmp_path / "c")})
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)[0]["summary"]
    energy = summary["energy"]
    assert energy is not None, summary.get("energy_note")
    assert energy["source"] == "ina3221" and energy["kind"] == "measured"
    assert energy["samples_in_window"] >= 10
    # 3.5 W constant: total energy per inference = 3.5 W x window / N; idle is 3.5 W too.
    expected_mj = 3.5 * energy["window_s"] / energy["inferences"] * 1e3
    assert summary["energy_mj"] == pytest.approx(expected_mj, rel=1e-6)
    assert energy["idle_w"] == pytest.approx(3.5)
    assert summary["dynamic_energy_mj"] == pytest.approx(0.0, abs=1e-9)
    saved = json.loads((tmp_path / "out" / "jetson-sim" / "power.json").read_text())
    assert set(saved["markers"]) == {"window_start", "window_end"} and len(saved["idle"]) > 10


def test_profile_power_square_wave_matches_analytic(small_model, tmp_path):
    sysfs = tmp_path / "sys"
    power_file = jetpack4_ina3221(sysfs, total_mw=2000)
    wave = SquareWave(power_file)
    wave.start()
    try:
        folder = _target(tmp_path / "targets", sysfs)
        res = run_cli("profile", str(small_model[0]), "--target", "jetson-sim", "--targets-dir", str(folder),
                      "--power", "--runs", "10", "--min-time", "2.0", "--out", str(tmp_path / "out"), "--json",
                      env={"XDG_CACHE_HOME": str(tmp_path / "c")})
    finally:
        wave.stop.set()
        wave.join()
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)[0]["summary"]
    markers = json.loads((tmp_path / "out" / "jetson-sim" / "power.json").read_text())["markers"]
    a, b = markers["window_start"], markers["window_end"]
    expected_mj = wave.energy(a, b) / summary["energy"]["inferences"] * 1e3
    assert summary["energy_mj"] == pytest.approx(expected_mj, rel=0.05)
    # The tiny model runs 10k inferences in ~0.1 s: the window must still last --min-time (it once
    # stopped at the latency cap, inside one level of the wave).
    assert summary["energy"]["window_s"] >= 2.0 and summary["energy"]["inferences"] > 10000
    assert 2.0 < summary["avg_power_w"] < 6.0


def test_profile_power_without_a_source_says_so(small_model, tmp_path):
    folder = _target(tmp_path / "targets", tmp_path / "empty-sys")
    res = run_cli("profile", str(small_model[0]), "--target", "jetson-sim", "--targets-dir", str(folder),
                  "--power", "--runs", "5", "--min-time", "0", "--out", str(tmp_path / "out"),
                  env={"XDG_CACHE_HOME": str(tmp_path / "c")})
    assert res.returncode == 0, res.stderr
    assert "energy not reported: no power source: ina3221: no INA3221 channel" in res.stdout.replace("\n", " ")
    assert "tegrastats: tegrastats not found" in res.stdout.replace("\n", " ")
