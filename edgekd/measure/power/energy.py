"""Measured energy per inference: ∫(P − P_idle) dt / N over the window the device marked itself.

Energy is attributed only between the device's own markers (as MLPerf Tiny does with its
timestamp pin), with an idle baseline measured before the run. A confidence interval comes from
splitting the window into equal slices. Without markers, or with too few samples inside the
window, no number is given: the caller gets MeasurementError saying why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekd.errors import MeasurementError
from edgekd.measure.power.base import PowerTrace

MIN_SAMPLES_IN_WINDOW = 10
SLICES = 10


@dataclass
class EnergyResult:
    source: str
    inferences: int
    window_s: float
    samples_in_window: int
    idle_w: float | None
    avg_power_w: float
    total_mj_per_inference: float
    total_mj_ci95: float
    dynamic_mj_per_inference: float | None
    dynamic_mj_ci95: float | None
    kind: str = "measured"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _integral(t: np.ndarray, w: np.ndarray, a: float, b: float) -> float:
    """∫_a^b P dt with linear interpolation between samples (and at the window's edges)."""
    inside = (t > a) & (t < b)
    ts = np.concatenate([[a], t[inside], [b]])
    ws = np.concatenate([[np.interp(a, t, w)], w[inside], [np.interp(b, t, w)]])
    return float(np.sum((ws[1:] + ws[:-1]) * np.diff(ts)) / 2.0)


def idle_power(idle: PowerTrace) -> float:
    if len(idle) < 2:
        raise MeasurementError(
            f"the idle baseline has {len(idle)} sample(s) from {idle.source}",
            hint="lengthen the idle measurement or raise the sample rate",
        )
    return _integral(idle.t, idle.watts, float(idle.t[0]), float(idle.t[-1])) / float(idle.t[-1] - idle.t[0])


def energy_per_inference(trace: PowerTrace, inferences: int, idle: PowerTrace | None = None,
                         start_marker: str = "window_start", end_marker: str = "window_end") -> EnergyResult:
    missing = [m for m in (start_marker, end_marker) if m not in trace.markers]
    if missing:
        raise MeasurementError(
            f"no energy from {trace.source}: the run's marker(s) {', '.join(missing)} are missing",
            hint="energy is attributed only between the device's own markers; rerun and check the device log",
        )
    a, b = trace.markers[start_marker], trace.markers[end_marker]
    if not b > a:
        raise MeasurementError(f"the end marker ({b:.6f} s) is not after the start marker ({a:.6f} s)")
    if inferences < 1:
        raise MeasurementError("no inferences between the markers")
    if len(trace) == 0 or trace.t[0] > a or trace.t[-1] < b:
        covered = f"{trace.t[0]:.3f}..{trace.t[-1]:.3f} s" if len(trace) else "nothing"
        raise MeasurementError(
            f"the samples from {trace.source} ({covered}) do not cover the window {a:.3f}..{b:.3f} s",
            hint="start sampling before and stop after the timed runs",
        )
    inside = int(np.count_nonzero((trace.t >= a) & (trace.t <= b)))
    if inside < MIN_SAMPLES_IN_WINDOW:
        rate = (len(trace) - 1) / float(trace.t[-1] - trace.t[0]) if len(trace) > 1 else 0.0
        raise MeasurementError(
            f"samples too sparse: {inside} from {trace.source} (~{rate:.0f} Hz) in a {1e3 * (b - a):.1f} ms window; "
            f"at least {MIN_SAMPLES_IN_WINDOW} are needed",
            hint=f"raise --min-time to at least {MIN_SAMPLES_IN_WINDOW / max(rate, 1e-9):.2f} s or the sample rate",
        )
    window = b - a
    energy = _integral(trace.t, trace.watts, a, b)
    edges = np.linspace(a, b, SLICES + 1)
    per_slice = np.array([_integral(trace.t, trace.watts, lo, hi) for lo, hi in zip(edges[:-1], edges[1:])])
    per_inf_slices = per_slice / (inferences / SLICES)          # J per inference, per slice
    ci = 1.96 * float(per_inf_slices.std(ddof=1)) / np.sqrt(SLICES) * 1e3
    p_idle = idle_power(idle) if idle is not None else None
    total_mj = energy / inferences * 1e3
    dynamic = None if p_idle is None else (energy - p_idle * window) / inferences * 1e3
    return EnergyResult(
        source=trace.source, inferences=inferences, window_s=window, samples_in_window=inside,
        idle_w=p_idle, avg_power_w=energy / window, total_mj_per_inference=total_mj, total_mj_ci95=ci,
        dynamic_mj_per_inference=dynamic, dynamic_mj_ci95=None if dynamic is None else ci,
    )
