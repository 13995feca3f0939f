"""The frames-to-events pixel model (edgekd.data.events)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.data.events import EventParams, accumulate, event_frames, frames_to_events
from edgekd.errors import DataError

QUIET = EventParams(threshold=0.2, threshold_mismatch=0.0, refractory=0, noise_rate=0.0, max_events_per_step=8)


def _step(before: float, after: float, steps: int = 6) -> np.ndarray:
    frames = np.full((steps, 8, 8), before, np.float32)
    frames[steps // 2:, 2:6, 2:6] = after
    return frames


def test_static_scene_gives_no_events() -> None:
    ev = frames_to_events(np.full((5, 8, 8), 0.5, np.float32), QUIET)
    assert ev.shape == (5, 2, 8, 8) and ev.sum() == 0


def test_polarity_and_count_follow_log_contrast() -> None:
    ev = frames_to_events(_step(0.2, 0.6), QUIET)
    # log(0.62/0.22) = 1.036 -> floor(1.036 / 0.2) = 5 ON events, in the changed square only, at the change step.
    assert ev[3, 0, 3, 3] == 5 and ev[:, 1].sum() == 0
    assert ev[3, 0, 0, 0] == 0 and ev[:3].sum() == 0
    off = frames_to_events(_step(0.6, 0.2), QUIET)
    assert off[3, 1, 3, 3] == 5 and off[:, 0].sum() == 0


def test_events_ignore_global_gain_that_clips_frames() -> None:
    """The point of events: a 4x exposure gain clips frames but leaves log-contrast events unchanged."""
    scene = _step(0.3, 0.45)
    bright = scene * 4.0
    ev_normal = frames_to_events(scene, EventParams(log_eps=1e-6, threshold_mismatch=0, noise_rate=0, refractory=0))
    ev_bright = frames_to_events(bright, EventParams(log_eps=1e-6, threshold_mismatch=0, noise_rate=0, refractory=0))
    assert np.array_equal(ev_normal, ev_bright) and ev_normal.sum() > 0
    clipped = np.clip(bright, 0, 1)
    assert np.ptp(clipped[-1]) == 0  # the frame camera saw nothing


def test_refractory_period_delays_firing() -> None:
    frames = np.linspace(0.2, 0.8, 8, dtype=np.float32)[:, None, None] * np.ones((8, 4, 4), np.float32)
    free = frames_to_events(frames, QUIET)
    blind = frames_to_events(frames, EventParams(threshold=0.2, threshold_mismatch=0, refractory=2, noise_rate=0))
    fired_free = (free[:, 0, 0, 0] > 0).sum()
    fired_blind = (blind[:, 0, 0, 0] > 0).sum()
    assert fired_blind < fired_free
    assert blind[:, 0].sum() == pytest.approx(free[:, 0].sum(), abs=2)  # the change is caught later, not lost


def test_noise_and_normalisation() -> None:
    rng = np.random.default_rng(0)
    ev = frames_to_events(np.full((10, 16, 16), 0.5, np.float32), EventParams(noise_rate=0.1), rng)
    assert 0.05 < ev.mean() * 2 < 0.15  # about noise_rate events per pixel per step, both polarities
    frames = event_frames(np.random.default_rng(1).random((2, 8, 8, 8)).astype(np.float32), bins=4)
    assert frames.shape == (2, 4, 2, 8, 8) and frames.min() >= 0 and frames.max() <= 1


def test_accumulate_and_bad_input() -> None:
    ev = np.ones((2, 8, 2, 4, 4), np.float32)
    assert accumulate(ev, 4).shape == (2, 4, 2, 4, 4) and accumulate(ev, 4)[0, 0, 0, 0, 0] == 2
    with pytest.raises(DataError):
        accumulate(ev, 3)
    with pytest.raises(DataError):
        frames_to_events(-np.ones((3, 4, 4), np.float32))
    with pytest.raises(DataError):
        frames_to_events(np.ones((4, 4), np.float32))
