"""Synthetic single-eye emotion sequences with events: the embedded default of the `eye` task.

Each sequence is a procedurally rendered right eye (skin with a per-subject texture, upper and
lower lids with lashes and crease, sclera, iris and pupil, brow) whose shape follows one of seven
expression dynamics over time, plus nuisances shared by all classes: per-subject anatomy and
expressiveness, onset time, speed, intensity, blinks, gaze saccades and head jitter.

The classes differ mainly in *how* the face moves, as in SEE:
  surprise  fast upper-lid and brow raise, then a slow partial release
  fear      upper-lid raise with inner-brow raise, tense lower lid and a tremor
  happiness slow lower-lid raise and squint (crow's feet at the outer corner)
  sadness   slow inner-brow raise, drooping upper lid, gaze down
  angry     brow lowered and pulled in, lids narrowed (medium speed)
  disgust   quick lower-lid raise, brow lowering and squint that partly releases
  neutral   only the nuisances
Static appearance varies across subjects by as much as an expression changes it, so a single
frame is a weak cue: the dynamics carry the label.

The scene is rendered at `substeps` steps per output frame. Frames integrate the steps of their
interval (motion blur) and pass through a camera model per lighting: normal; overexposed (gain
2.2-3.5, skin and sclera clip); low-light (gain 0.05-0.09, shot and read noise, 8-bit
quantisation, then digital gain); HDR (a strong illumination gradient: one side clips, the
other is dark and noisy). Events come from the same radiance through `events.frames_to_events`
(log intensity: insensitive to gain, hence informative where frames are not), with more
background noise in low light.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from edgekd.data.api import Dataset
from edgekd.data.events import EventParams, accumulate, frames_to_events, normalise_event_frames
from edgekd.data.options import positive_int, resolve_options
from edgekd.errors import UsageError

CLASSES = ["angry", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
LIGHTINGS = ["normal", "overexposed", "low-light", "hdr"]

# Expression channels and the amplitude of each class on them (before per-sample jitter).
CHANNELS = ("lid_up", "lid_low", "brow_raise", "brow_inner", "squint", "gaze_y", "pupil")
AMPLITUDE = {
    "angry": (-0.35, 0.30, -0.55, -0.45, 0.10, 0.00, 0.0),
    "disgust": (-0.30, 0.45, -0.35, -0.10, 0.45, -0.10, 0.0),
    "fear": (0.55, 0.25, 0.35, 0.55, 0.00, 0.00, 0.4),
    "happiness": (-0.15, 0.60, 0.05, 0.00, 0.70, 0.00, 0.0),
    "neutral": (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "sadness": (-0.35, 0.00, 0.00, 0.65, 0.00, -0.30, 0.0),
    "surprise": (0.75, -0.10, 0.70, 0.15, 0.00, 0.00, -0.2),
}
# Temporal envelope per class: (rise duration as a fraction of the sequence, level it releases
# to after the peak, tremor amplitude).
DYNAMICS = {
    "angry": (0.25, 1.0, 0.0),
    "disgust": (0.12, 0.45, 0.0),
    "fear": (0.18, 1.0, 0.25),
    "happiness": (0.35, 1.0, 0.0),
    "neutral": (0.3, 1.0, 0.0),
    "sadness": (0.50, 1.0, 0.0),
    "surprise": (0.06, 0.6, 0.0),
}

DEFAULTS: dict[str, Any] = {
    "samples": 2000,  # sequences in all (train + validation)
    "subjects": 40,
    "frames": 8,  # T
    "size": 32,  # H = W
    "substeps": 4,  # rendered steps per frame (motion blur and events)
    "lightings": LIGHTINGS,
    "events": True,
    "event_threshold": 0.15,
}


def load_synthetic_eye(path: str | None = None, seed: int = 0, **options: Any) -> Dataset:
    opts = resolve_options(options, DEFAULTS, "synthetic eye data")
    n = positive_int(opts, "samples", "synthetic eye data")
    subjects = positive_int(opts, "subjects", "synthetic eye data", minimum=1)
    frames = positive_int(opts, "frames", "synthetic eye data", minimum=2)
    size = positive_int(opts, "size", "synthetic eye data", minimum=8)
    substeps = positive_int(opts, "substeps", "synthetic eye data")
    lightings = list(opts["lightings"]) if not isinstance(opts["lightings"], str) else [opts["lightings"]]
    bad = [light for light in lightings if light not in LIGHTINGS]
    if bad or not lightings:
        raise UsageError(f"synthetic eye data: unknown lighting {bad or '(none)'}", hint=f"lightings: {', '.join(LIGHTINGS)}")
    return generate_eye_sequences(n, subjects, frames, size, substeps, lightings, bool(opts["events"]),
                                  float(opts["event_threshold"]), seed)


def generate_eye_sequences(n: int, subjects: int, frames: int, size: int, substeps: int, lightings: list[str],
                           with_events: bool, event_threshold: float, seed: int, chunk: int = 128,
                           subject_seed: int | None = None) -> Dataset:
    rng = np.random.default_rng(seed)
    subj_params = _subject_params(rng, subjects, size)
    if subject_seed is not None:  # the same subjects across calls with different seeds (a live stream)
        subj_params = _subject_params(np.random.default_rng(subject_seed), subjects, size)
    # Balanced design: every subject gets every class and every lighting in turn.
    subject = rng.permutation(np.arange(n) % subjects)
    label = np.empty(n, dtype=np.int64)
    lighting = np.empty(n, dtype=np.int64)
    for s in range(subjects):
        members = np.flatnonzero(subject == s)
        label[members] = rng.permutation(np.arange(len(members)) % len(CLASSES))
        lighting[members] = rng.permutation(np.arange(len(members)) % len(lightings))
    light_names = np.array(lightings)[lighting]
    seq_params = _sequence_params(rng, n, label, subj_params["expressiveness"][subject])

    x_frames = np.empty((n, frames, 1, size, size), dtype=np.float32)
    x_events = np.empty((n, frames, 2, size, size), dtype=np.float32) if with_events else None
    chunk_seeds = rng.integers(0, 2**31 - 1, size=(n + chunk - 1) // chunk)
    for ci, start in enumerate(range(0, n, chunk)):
        idx = np.arange(start, min(n, start + chunk))
        crng = np.random.default_rng(chunk_seeds[ci])
        # Rendering is deterministic: done in small pieces, whose arrays stay in cache (about 1.5x faster).
        radiance = np.concatenate([_render(idx[i:i + 16], subject, label, seq_params, subj_params, frames * substeps, size)
                                   for i in range(0, len(idx), 16)])  # (B, S, H, W)
        illum = _illumination(crng, light_names[idx], size)  # (B, 1, H, W)
        scene = radiance * illum
        blurred = scene.reshape(len(idx), frames, substeps, size, size).mean(axis=2)
        x_frames[idx, :, 0] = _camera(crng, blurred, light_names[idx])
        if x_events is not None:
            noise = np.where(light_names[idx] == "low-light", 0.01, np.where(light_names[idx] == "hdr", 0.004, 0.002))
            counts = np.empty((len(idx), frames * substeps, 2, size, size), dtype=np.float32)
            for rate in np.unique(noise):
                sel = noise == rate
                params = EventParams(threshold=event_threshold, noise_rate=float(rate))
                counts[sel] = frames_to_events(scene[sel], params, crng)
            x_events[idx] = normalise_event_frames(accumulate(counts, frames))

    x = {"frames": x_frames}
    if x_events is not None:
        x["events"] = x_events
    subject_names = np.array([f"syn-s{s:03d}" for s in subject])
    names = np.array([f"syn_{i:05d}_{subject_names[i]}_{light_names[i]}_{CLASSES[label[i]]}" for i in range(n)])
    return Dataset(
        task="eye",
        x=x,
        y=label,
        classes=list(CLASSES),
        meta={
            "subject": subject_names,
            "lighting": light_names.astype(str),
            "name": names,
            "blink": seq_params["blink"] > 0,
            "intensity": seq_params["intensity"].astype(np.float32),
            "subset": np.full(n, "train"),
        },
        source="synthetic",
        notes=[f"synthetic eye: seed {seed}, {subjects} subjects, T={frames}, {size}x{size}, {substeps} substeps"],
    )


def synthetic_eye_stream(seed: int = 0, frames: int = 8, size: int = 32, substeps: int = 4,
                         lightings: Sequence[str] = LIGHTINGS, clips: int | None = None, batch: int = 28,
                         event_threshold: float = 0.15) -> Iterator[tuple[np.ndarray, int, str]]:
    """A live stream of one synthetic wearer: clips of T frames one after another, each
    (frames (T, H, W) float32 in [0, 1], class index, lighting). The wearer is fixed by `seed`
    (a subject the training data, seed 0, does not hold); every `batch` clips are balanced over
    classes and lightings when `batch` is a multiple of both counts. clips=None: endless."""
    bad = [light for light in lightings if light not in LIGHTINGS]
    if bad or not lightings:
        raise UsageError(f"synthetic eye stream: unknown lighting {bad or '(none)'}", hint=f"lightings: {', '.join(LIGHTINGS)}")
    wearer = int(np.random.SeedSequence([seed, 7919]).generate_state(1)[0])
    made, b = 0, 0
    while clips is None or made < clips:
        count = batch if clips is None else min(batch, clips - made)
        batch_seed = int(np.random.SeedSequence([seed, b]).generate_state(1)[0])
        data = generate_eye_sequences(count, 1, frames, size, substeps, list(lightings), False, event_threshold,
                                      batch_seed, subject_seed=wearer)
        for i in range(count):
            yield data.x["frames"][i, :, 0], int(data.y[i]), str(data.meta["lighting"][i])
        made, b = made + count, b + 1


# ---------------------------------------------------------------- parameters


def _subject_params(rng: np.random.Generator, k: int, size: int) -> dict[str, np.ndarray]:
    u = lambda lo, hi: rng.uniform(lo, hi, k).astype(np.float32)  # noqa: E731
    coarse = rng.standard_normal((k, 6, 6)).astype(np.float32)
    texture = 1 + 0.10 * _upsample(coarse, size) + 0.035 * rng.standard_normal((k, size, size)).astype(np.float32)
    return {
        "skin": u(0.45, 0.75),
        "texture": texture.astype(np.float32),
        "cx": u(-0.12, 0.12), "cy": u(-0.25, -0.05),
        "half_width": u(0.6, 0.8),
        "open_up": u(0.2, 0.34), "open_low": u(0.12, 0.2),
        "iris_r": u(0.2, 0.27), "iris": u(0.12, 0.40), "sclera": u(0.72, 0.92),
        "brow_h": u(0.38, 0.55), "brow_t": u(0.09, 0.15), "brow_tilt": u(-0.12, 0.12), "brow_dark": u(0.45, 0.75),
        "lash": u(0.35, 0.7), "crease": u(0.10, 0.17),
        "expressiveness": u(0.65, 1.2),
    }


def _sequence_params(rng: np.random.Generator, n: int, label: np.ndarray, expressiveness: np.ndarray) -> dict[str, np.ndarray]:
    u = lambda lo, hi, shape=(n,): rng.uniform(lo, hi, shape).astype(np.float32)  # noqa: E731
    amp = np.array([AMPLITUDE[c] for c in CLASSES], dtype=np.float32)[label]  # (n, channels)
    amp = amp * u(0.7, 1.3, (n, len(CHANNELS)))
    intensity = u(0.5, 1.1) * expressiveness
    dyn = np.array([DYNAMICS[c] for c in CLASSES], dtype=np.float32)[label]
    return {
        "amp": amp * intensity[:, None],
        "intensity": intensity,
        "onset": u(0.02, 0.45),
        "rise": dyn[:, 0] * u(0.7, 1.4),
        "release": dyn[:, 1],
        "tremor": dyn[:, 2] * u(0.7, 1.3),
        "tremor_freq": u(3.0, 5.0),
        "tremor_phase": u(0, 2 * np.pi),
        "drift": rng.standard_normal((n, len(CHANNELS), 2)).astype(np.float32) * 0.08,
        "blink": (rng.random(n) < 0.35).astype(np.float32),
        "blink_t": u(0.05, 0.95),
        "blink_len": u(0.04, 0.09),
        "gaze_x0": rng.normal(0, 0.12, n).astype(np.float32),
        "gaze_x1": rng.normal(0, 0.12, n).astype(np.float32),
        "saccade_t": np.where(rng.random(n) < 0.5, u(0.1, 0.9), 2.0).astype(np.float32),
        "head": rng.normal(0, 0.04, (n, 2)).astype(np.float32),
        "head_jitter_seed": rng.integers(0, 2**31 - 1, n),
    }


def _upsample(coarse: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of (K, h, w) to (K, size, size)."""
    k, h, w = coarse.shape
    ys = np.linspace(0, h - 1, size)
    xs = np.linspace(0, w - 1, size)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = (ys - y0)[None, :, None]
    wx = (xs - x0)[None, None, :]
    top = coarse[:, y0][:, :, x0] * (1 - wx) + coarse[:, y0][:, :, x1] * wx
    bottom = coarse[:, y1][:, :, x0] * (1 - wx) + coarse[:, y1][:, :, x1] * wx
    return top * (1 - wy) + bottom * wy


# ---------------------------------------------------------------- rendering


def _expression(p: dict[str, np.ndarray], idx: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    """Per-step expression channels (B, S) for the sequences idx."""
    t = ((np.arange(steps) + 0.5) / steps).astype(np.float32)[None, :]
    onset, rise = p["onset"][idx, None], p["rise"][idx, None]
    phase = np.clip((t - onset) / rise, 0, 1)
    level = phase * phase * (3 - 2 * phase)  # smoothstep rise
    after = np.clip((t - onset - rise) / 0.4, 0, 1)
    level = level * (1 - (1 - p["release"][idx, None]) * after)
    tremor = p["tremor"][idx, None] * np.sin(2 * np.pi * p["tremor_freq"][idx, None] * t + p["tremor_phase"][idx, None])
    level = level * (1 + tremor * (t > onset))
    amp = p["amp"][idx]  # (B, C)
    drift = p["drift"][idx]  # (B, C, 2): slow random motion of every channel, all classes
    out = {}
    for c, name in enumerate(CHANNELS):
        slow = drift[:, c, 0, None] * np.sin(np.pi * t) + drift[:, c, 1, None] * np.sin(2 * np.pi * t)
        out[name] = (amp[:, c, None] * level + slow).astype(np.float32)
    blink = p["blink"][idx, None] * np.exp(-(((t - p["blink_t"][idx, None]) / p["blink_len"][idx, None]) ** 2))
    out["blink"] = blink.astype(np.float32)
    gaze_x = np.where(t < p["saccade_t"][idx, None], p["gaze_x0"][idx, None], p["gaze_x1"][idx, None])
    out["gaze_x"] = gaze_x.astype(np.float32)
    return out


def _render(idx: np.ndarray, subject: np.ndarray, label: np.ndarray, seq: dict[str, np.ndarray],
            subj: dict[str, np.ndarray], steps: int, size: int) -> np.ndarray:
    """Scene radiance (B, S, H, W) in about [0.02, 1]."""
    b = len(idx)
    e = _expression(seq, idx, steps)
    s = subject[idx]
    px = 2.0 / size
    coords = np.linspace(-1 + px / 2, 1 - px / 2, size, dtype=np.float32)
    gx = coords[None, None, None, :]  # x to the right
    gy = -coords[None, None, :, None]  # y up

    def sp(name: str) -> np.ndarray:  # subject parameter broadcast to (B, 1, 1, 1)
        return subj[name][s][:, None, None, None]

    def ch(name: str) -> np.ndarray:  # expression channel broadcast to (B, S, 1, 1)
        return e[name][:, :, None, None]

    jitter = np.stack([np.random.default_rng(int(k)).normal(0, 0.012, (steps, 2)) for k in seq["head_jitter_seed"][idx]])
    cx = sp("cx") + seq["head"][idx, 0][:, None, None, None] + jitter[:, :, 0, None, None].astype(np.float32)
    cy = sp("cy") + seq["head"][idx, 1][:, None, None, None] + jitter[:, :, 1, None, None].astype(np.float32)
    xr = gx - cx
    a = sp("half_width")
    shape = np.clip(1 - (xr / a) ** 2, 0, None) ** 0.8

    squint = ch("squint")
    blink = ch("blink")
    h_low = sp("open_low") * (1 - 0.55 * ch("lid_low")) * (1 - 0.2 * squint)
    h_up = sp("open_up") * (1 + 0.6 * ch("lid_up")) * (1 - 0.25 * squint)
    h_up = h_up * (1 - blink) - 0.9 * h_low * blink
    y_up = cy + h_up * shape
    y_low = cy - h_low * shape
    inside = np.clip((y_up - gy) / px + 0.5, 0, 1) * np.clip((gy - y_low) / px + 0.5, 0, 1)

    # Eye interior: sclera shaded under the upper lid, iris, pupil.
    ix = cx + ch("gaze_x") * a * 0.6
    iy = cy + ch("gaze_y") * 0.08
    r = np.sqrt((gx - ix) ** 2 + (gy - iy) ** 2)
    ri = sp("iris_r")
    rp = ri * 0.4 * (1 + 0.3 * ch("pupil"))
    iris = np.clip((ri - r) / px + 0.5, 0, 1)
    pupil = np.clip((rp - r) / px + 0.5, 0, 1)
    sclera = sp("sclera") * (1 - 0.25 * np.exp(-np.clip(y_up - gy, 0, None) / 0.08))
    eye = sclera * (1 - iris) + sp("iris") * iris * (1 - pupil) + 0.03 * pupil

    # Skin: texture, crease above the lid, lashes on the lid margin, cheek fold, crow's feet, brow.
    skin = sp("skin") * subj["texture"][s][:, None] * (1 - 0.12 * gy)
    near = np.exp(-((xr / (a * 1.1)) ** 6))
    y_crease = y_up + sp("crease") * (1 + 0.5 * ch("lid_up")) * (0.4 + 0.6 * shape)
    skin = skin * (1 - 0.25 * near * np.exp(-(((gy - y_crease) / 0.035) ** 2)))
    skin = skin * (1 - sp("lash") * (shape > 0) * np.exp(-(((gy - y_up) / 0.035) ** 2)))
    fold = 0.12 + 0.4 * np.clip(ch("lid_low"), 0, None) * 0.1
    skin = skin * (1 - 0.3 * np.clip(squint + ch("lid_low"), 0, None) * near * np.exp(-(((gy - (y_low - fold)) / 0.04) ** 2)))
    corner_x, corner_y = xr - a, gy - cy
    angle = np.arctan2(corner_y, corner_x + 1e-6)
    corner_d = np.sqrt(corner_x**2 + corner_y**2)
    crows = 0.5 + 0.5 * np.cos(angle * 10)
    skin = skin * (1 - 0.4 * np.clip(squint, 0, None) * crows * np.exp(-(((corner_d - 0.18) / 0.1) ** 2)) * (corner_x > 0))
    y_brow = cy + sp("brow_h") + 0.22 * ch("brow_raise") + (sp("brow_tilt") + 0.2 * ch("brow_inner")) * np.clip(xr, -1, 1) * -1
    y_brow = y_brow - 0.15 * xr**2
    brow = np.clip((sp("brow_t") / 2 - np.abs(gy - y_brow)) / px + 0.5, 0, 1) * np.clip((0.95 - np.abs(xr)) / px + 0.5, 0, 1)
    skin = skin * (1 - sp("brow_dark") * brow)

    radiance = skin * (1 - inside) + eye * inside
    return np.clip(radiance, 0.02, 1.0).astype(np.float32).reshape(b, steps, size, size)


def _illumination(rng: np.random.Generator, lighting: np.ndarray, size: int) -> np.ndarray:
    """Multiplicative illumination (B, 1, H, W): a soft vignette, and for HDR a strong gradient
    (a lamp on one side: a factor of 10-30 across the eye)."""
    b = len(lighting)
    coords = np.linspace(-1, 1, size, dtype=np.float32)
    gx, gy = coords[None, None, :], coords[None, :, None]
    angle = rng.uniform(0, 2 * np.pi, b).astype(np.float32)[:, None, None]
    ratio = np.log(rng.uniform(10, 30, b)).astype(np.float32)[:, None, None]
    along = np.cos(angle) * gx + np.sin(angle) * gy
    hdr = np.exp(ratio * along / 2)
    vignette = 1 - 0.15 * (gx**2 + gy**2) / 2
    illum = np.where((lighting == "hdr")[:, None, None], hdr, np.ones_like(hdr)) * vignette
    return illum[:, None].astype(np.float32)


def _camera(rng: np.random.Generator, scene: np.ndarray, lighting: np.ndarray) -> np.ndarray:
    """The frame camera: exposure gain, shot and read noise, clipping, 8-bit quantisation."""
    b = len(lighting)
    col = lambda v: np.asarray(v, dtype=np.float32)[:, None, None, None]  # noqa: E731
    gain = np.select(
        [lighting == "overexposed", lighting == "low-light"],
        [rng.uniform(2.2, 3.5, b), rng.uniform(0.05, 0.09, b)],
        rng.uniform(0.85, 1.15, b),
    )
    signal = scene * col(gain)
    noisy = signal + np.sqrt(np.clip(signal, 0, None) * 0.002) * rng.standard_normal(scene.shape).astype(np.float32)
    noisy = noisy + 0.008 * rng.standard_normal(scene.shape).astype(np.float32)
    quantised = np.round(np.clip(noisy, 0, 1) * 255) / 255
    # Low light: the camera's digital gain brings the mean up, and the noise and steps with it.
    digital = np.where(lighting == "low-light", 0.4 / np.maximum(quantised.mean(axis=(1, 2, 3)), 1e-3), 1.0)
    return np.clip(quantised * col(digital), 0, 1).astype(np.float32)
