"""Frames to event frames: an event-camera (DVS) pixel model, as DSEE makes synthetic events.

Each pixel keeps a reference log intensity. When the current log intensity differs from it by
at least the pixel's contrast threshold C (per-pixel mismatch around the nominal value), the
pixel emits floor(|diff| / C) events of that polarity (ON for brighter, OFF for darker) and moves
its reference by that many thresholds. A pixel that fired is blind for `refractory` steps (its
change is caught after). Background-activity noise adds random events. Because the model works
on log intensity, a global gain (exposure, dim light) leaves the events unchanged while the
frames clip or drown in noise: that is why events keep information frames lose.

Works on any (..., S, H, W) stack of frames, synthetic or real (frames in [0, 1] or linear
radiance); `accumulate` sums the per-step events into bins (e.g. one bin per output frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekd.errors import DataError


@dataclass(frozen=True)
class EventParams:
    threshold: float = 0.15  # nominal contrast threshold C, in log-intensity units
    threshold_mismatch: float = 0.03  # std of the per-pixel threshold around C
    refractory: int = 1  # steps a pixel stays blind after firing (0 = none)
    noise_rate: float = 0.002  # background events per pixel per step
    log_eps: float = 0.02  # log(x + eps): the dark floor of the pixel's photoreceptor
    max_events_per_step: int = 4  # saturation of one pixel in one step


def frames_to_events(frames: np.ndarray, params: EventParams = EventParams(),
                     rng: np.random.Generator | None = None) -> np.ndarray:
    """Per-step event counts (..., S, 2, H, W) float32 from intensity frames (..., S, H, W).

    Step 0 only initialises the reference, so its counts are noise only. Channel 0 = ON,
    channel 1 = OFF.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim < 3:
        raise DataError(f"frames_to_events needs (..., S, H, W) frames, got shape {frames.shape}")
    if not np.isfinite(frames).all() or frames.min() < 0:
        raise DataError("frames_to_events: frames must be finite and non-negative (linear intensity)")
    rng = rng if rng is not None else np.random.default_rng(0)
    lead = frames.shape[:-3]
    steps, h, w = frames.shape[-3:]
    x = frames.reshape((-1, steps, h, w))
    n = x.shape[0]
    logi = np.log(x + params.log_eps)
    threshold = params.threshold + params.threshold_mismatch * rng.standard_normal((n, h, w)).astype(np.float32)
    threshold = np.maximum(threshold, 0.25 * params.threshold).astype(np.float32)
    reference = logi[:, 0].copy()
    blind_until = np.zeros((n, h, w), dtype=np.int32)
    out = np.zeros((n, steps, 2, h, w), dtype=np.float32)
    for s in range(1, steps):
        diff = logi[:, s] - reference
        count = np.minimum(np.floor(np.abs(diff) / threshold), params.max_events_per_step)
        count = np.where(blind_until <= s, count, 0.0)
        fired = count > 0
        on = fired & (diff > 0)
        out[:, s, 0] = np.where(on, count, 0.0)
        out[:, s, 1] = np.where(fired & ~on, count, 0.0)
        reference = np.where(fired, reference + np.sign(diff) * count * threshold, reference)
        if params.refractory > 0:
            blind_until = np.where(fired, s + 1 + params.refractory, blind_until)
    if params.noise_rate > 0:
        noise = rng.random((n, steps, 2, h, w), dtype=np.float32) < params.noise_rate / 2
        out += noise
    return out.reshape(lead + (steps, 2, h, w))


def accumulate(events: np.ndarray, bins: int) -> np.ndarray:
    """Sum per-step events (..., S, 2, H, W) into `bins` equal bins (S must divide evenly)."""
    steps = events.shape[-4]
    if steps % bins:
        raise DataError(f"cannot accumulate {steps} event steps into {bins} equal bins")
    shape = events.shape[:-4] + (bins, steps // bins) + events.shape[-3:]
    return events.reshape(shape).sum(axis=-4)


def normalise_event_frames(counts: np.ndarray, scale: float = 4.0) -> np.ndarray:
    """Event counts to about [0, 1]: count / scale, clipped at 1 (a saturated pixel)."""
    return np.clip(counts / np.float32(scale), 0.0, 1.0).astype(np.float32)


def event_frames(frames: np.ndarray, bins: int | None = None, params: EventParams = EventParams(),
                 rng: np.random.Generator | None = None, scale: float = 4.0) -> np.ndarray:
    """Frames (..., S, H, W) -> normalised event frames (..., bins, 2, H, W).

    The convenience used for real frame sequences: events between consecutive frames land in
    the bin of the later frame. With bins=None there is one bin per frame.
    """
    counts = frames_to_events(frames, params, rng)
    if bins is not None and bins != counts.shape[-4]:
        counts = accumulate(counts, bins)
    return normalise_event_frames(counts, scale)
