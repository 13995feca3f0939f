"""Synthetic skeleton actions on the NTU-25 layout: the embedded default of the `skeleton` task.

A small forward-kinematics body (per-subject bone lengths and handedness) performs one of 12
actions, each a distinct limb motion over time. Nuisances shared by all classes: speed and
phase, amplitude, partial execution (the action fills 30-100 % of the window), time warping, idle sway and
rest pose, unrelated slow arm gestures and weight shifts, camera view (rotation about the
vertical axis around one of three cameras at -45, 0, +45 degrees, +-20), joint noise, and
occasional dropped joints (zero for a few frames, as when tracking is lost). Arrays come out
centred and normalised like the real readers' (edgekd.data.graphs), as (N, 3, T, 25, M).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.data.api import Dataset
from edgekd.data.graphs import NTU25
from edgekd.data.options import positive_int, resolve_options

CLASSES = [
    "wave one hand", "wave both hands", "punch", "kick", "squat", "jump", "clap", "bow",
    "raise both arms", "march in place", "overhand throw", "hand to mouth",
]
VIEWS = {"c1": 0.0, "c2": 45.0, "c3": -45.0}  # NTU-like cameras: front, and 45 degrees each side

DEFAULTS: dict[str, Any] = {
    "samples": 1200,  # sequences in all (train + validation)
    "subjects": 30,
    "frames": 32,  # T
    "persons": 1,  # M (extra persons are zero)
    "noise": 0.03,  # joint noise, metres
    "drop_probability": 0.15,  # sequences with dropped joints
}

# Rest bone lengths in metres.
_LEN = {
    "spine_low": 0.25, "spine_up": 0.25, "neck": 0.08, "head": 0.15, "shoulder": 0.18, "upper_arm": 0.28,
    "forearm": 0.25, "hand": 0.08, "tip": 0.07, "thumb": 0.05, "hip": 0.09, "thigh": 0.42, "shin": 0.40, "foot": 0.12,
}


def load_synthetic_skeleton(path: str | None = None, seed: int = 0, **options: Any) -> Dataset:
    where = "synthetic skeleton data"
    opts = resolve_options(options, DEFAULTS, where)
    n = positive_int(opts, "samples", where)
    subjects = positive_int(opts, "subjects", where)
    frames = positive_int(opts, "frames", where, minimum=2)
    persons = positive_int(opts, "persons", where)
    return generate_skeleton_actions(n, subjects, frames, persons, float(opts["noise"]), float(opts["drop_probability"]), seed)


def generate_skeleton_actions(n: int, subjects: int, frames: int, persons: int, noise: float, drop_probability: float,
                              seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    subject = rng.permutation(np.arange(n) % subjects)
    label = np.empty(n, dtype=np.int64)
    for s in range(subjects):
        members = np.flatnonzero(subject == s)
        label[members] = rng.permutation(np.arange(len(members)) % len(CLASSES))
    scale = rng.uniform(0.85, 1.15, subjects)[subject]
    lengths = {k: v * scale * rng.uniform(0.93, 1.07, subjects)[subject] for k, v in _LEN.items()}
    handed = np.where(rng.random(subjects) < 0.7, -1.0, 1.0)[subject]  # -1 = right-handed (x = subject's left)

    t = np.linspace(0, 1, frames, dtype=np.float64)[None, :]
    pose = _actions(rng, label, t, handed)
    joints = _forward_kinematics(pose, lengths)  # (N, T, V, 3), body frame, metres

    view_names = np.array(list(VIEWS))[rng.integers(0, len(VIEWS), n)]
    yaw = np.deg2rad(np.array([VIEWS[v] for v in view_names]) + rng.uniform(-20, 20, n))
    cos, sin = np.cos(yaw)[:, None, None], np.sin(yaw)[:, None, None]
    x, y, f = joints[..., 0], joints[..., 1], joints[..., 2]
    cam = np.stack([cos * x + sin * f, y, 3.0 - (-sin * x + cos * f)], axis=-1)  # camera 3 m in front
    cam += rng.normal(0, noise, cam.shape)

    # Centre on spine mid of the first frame, scale by the median torso length (as graphs.normalise_sequence).
    origin = cam[:, :1, NTU25.center : NTU25.center + 1]
    a, b = NTU25.torso
    torso = np.median(np.linalg.norm(cam[:, :, a] - cam[:, :, b], axis=-1), axis=1)
    norm = (cam - origin) / torso[:, None, None, None]

    dropped = rng.random(n) < drop_probability
    for i in np.flatnonzero(dropped):
        joints_lost = rng.choice(NTU25.num_joints, size=rng.integers(1, 4), replace=False)
        start = rng.integers(0, frames)
        norm[i, start : start + rng.integers(2, 9), joints_lost] = 0.0

    out = np.zeros((n, 3, frames, NTU25.num_joints, persons), dtype=np.float32)
    out[..., 0] = norm.transpose(0, 3, 1, 2)
    subject_names = np.array([f"syn-p{s:03d}" for s in subject])
    return Dataset(
        task="skeleton",
        x={"joints": out},
        y=label,
        classes=list(CLASSES),
        meta={
            "subject": subject_names,
            "view": view_names,
            "name": np.array([f"syn_{i:05d}_{subject_names[i]}_{view_names[i]}_a{label[i]:02d}" for i in range(n)]),
            "dropped_joints": dropped,
            "subset": np.full(n, "train"),
        },
        layout="ntu25",
        source="synthetic",
        notes=[f"synthetic skeleton: seed {seed}, {subjects} subjects, T={frames}, 12 actions, NTU-25 layout"],
    )


def _actions(rng: np.random.Generator, label: np.ndarray, t: np.ndarray, handed: np.ndarray) -> dict[str, np.ndarray]:
    """Joint angles (N, T) per degree of freedom for every sequence."""
    n, frames = len(label), t.shape[1]
    u = lambda lo, hi: rng.uniform(lo, hi, (n, 1))  # noqa: E731
    zeros = np.zeros((n, frames))
    amp = u(0.3, 1.2)
    # A smooth, monotonic time warp per sample: performers speed up and slow down.
    tw = t + u(-0.8, 0.8) * np.sin(2 * np.pi * t) / (2 * np.pi)
    cycles = u(1.0, 3.0)
    phase = 2 * np.pi * cycles * tw + u(0, 2 * np.pi)
    osc = np.sin(phase)
    ramp = np.clip((tw - u(0.05, 0.35)) / u(0.2, 0.4), 0, 1)
    bump = np.sin(np.pi * np.clip((tw - u(0.0, 0.2)) / u(0.6, 0.9), 0, 1)) ** 2
    # Rest pose with per-sample variation and idle sway (every class).
    p = {
        "trunk_pitch": u(-0.05, 0.1) + 0.03 * np.sin(2 * np.pi * u(0.3, 1.0) * t),
        "trunk_yaw": u(-0.1, 0.1) + zeros,
        "root_x": 0.02 * np.sin(2 * np.pi * u(0.2, 0.8) * t + u(0, 6)),
        "root_y": zeros.copy(),
        "root_f": 0.02 * np.sin(2 * np.pi * u(0.2, 0.8) * t + u(0, 6)),
    }
    for side in ("L", "R"):
        p[f"{side}_up_el"] = u(0.05, 0.3) + 0.05 * np.sin(2 * np.pi * u(0.3, 1.0) * t)
        p[f"{side}_up_az"] = u(0.2, 1.2) + zeros
        p[f"{side}_fo_el"] = p[f"{side}_up_el"] + u(0.0, 0.5)
        p[f"{side}_fo_az"] = p[f"{side}_up_az"] + u(0.0, 0.4)
        p[f"{side}_hip"] = u(-0.05, 0.1) + zeros
        p[f"{side}_abd"] = u(0.0, 0.12) + zeros
        p[f"{side}_knee"] = u(0.0, 0.15) + zeros
        # Distractors in every class: a slow unrelated arm gesture, a shift of weight.
        gesture = (rng.random((n, 1)) < 0.6) * u(0.2, 1.4) * (0.5 + 0.5 * np.sin(2 * np.pi * u(0.3, 1.0) * t + u(0, 6)))
        p[f"{side}_up_el"] = p[f"{side}_up_el"] + gesture
        p[f"{side}_fo_el"] = p[f"{side}_fo_el"] + gesture * u(0.8, 1.6)
        p[f"{side}_knee"] = p[f"{side}_knee"] + (rng.random((n, 1)) < 0.3) * u(0.0, 0.4) * (0.5 + 0.5 * np.sin(
            2 * np.pi * u(0.2, 0.8) * t + u(0, 6)))
    rest = {k: v.copy() for k, v in p.items()}

    def set_(mask: np.ndarray, key: str, value: np.ndarray) -> None:
        p[key][mask] = np.broadcast_to(value, (n, frames))[mask]

    def arms(c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = label == c
        main = np.where(handed < 0, "R", "L")
        return m & (main == "R"), m & (main == "L"), m

    # 0 wave one hand: upper arm raised, forearm swings side to side overhead.
    for m, s in zip(arms(0)[:2], ("R", "L")):
        set_(m, f"{s}_up_el", 2.3 + 0 * t)
        set_(m, f"{s}_up_az", 0.3 + 0 * t)
        set_(m, f"{s}_fo_el", 2.8 + 0.45 * amp * np.sin(2 * phase))
        set_(m, f"{s}_fo_az", 0.2 + 0 * t)
    # 1 wave both hands overhead.
    m = label == 1
    for s in ("L", "R"):
        set_(m, f"{s}_up_el", 2.5 + 0 * t)
        set_(m, f"{s}_up_az", 0.2 + 0 * t)
        set_(m, f"{s}_fo_el", 2.8 + 0.4 * amp * np.sin(2 * phase))
        set_(m, f"{s}_fo_az", 0.1 + 0 * t)
    # 2 punch: main arm retracts and extends forward.
    ext = 0.5 + 0.5 * np.sin(2 * phase)
    for m, s in zip(arms(2)[:2], ("R", "L")):
        set_(m, f"{s}_up_el", 0.6 + 0.95 * ext * amp)
        set_(m, f"{s}_up_az", 1.5 + 0 * t)
        set_(m, f"{s}_fo_el", 1.9 - 0.35 * ext)
        set_(m, f"{s}_fo_az", 1.5 + 0 * t)
    # 3 kick: main leg swings forward, knee extends at the top.
    kick = np.clip(np.sin(phase), 0, None)
    for m, s in zip(arms(3)[:2], ("R", "L")):
        set_(m, f"{s}_hip", 1.2 * kick * amp)
        set_(m, f"{s}_knee", 1.0 * (1 - kick) * np.clip(np.cos(phase), 0, None))
    # 4 squat: hips and knees bend together, arms forward for balance.
    m = label == 4
    sq = 0.5 - 0.5 * np.cos(phase)
    for s in ("L", "R"):
        set_(m, f"{s}_hip", 1.0 * sq * amp)
        set_(m, f"{s}_knee", 1.8 * sq * amp)
        set_(m, f"{s}_up_el", 0.3 + 1.1 * sq)
        set_(m, f"{s}_up_az", 1.5 + 0 * t)
        set_(m, f"{s}_fo_el", 0.3 + 1.1 * sq)
        set_(m, f"{s}_fo_az", 1.5 + 0 * t)
    set_(m, "trunk_pitch", 0.45 * sq * amp)
    # 5 jump: crouch, then the whole body leaves the ground.
    m = label == 5
    air = np.clip(np.sin(phase), 0, None)
    crouch = np.clip(-np.sin(phase), 0, None)
    set_(m, "root_y", 0.3 * air * amp)
    for s in ("L", "R"):
        set_(m, f"{s}_hip", 0.6 * crouch)
        set_(m, f"{s}_knee", 1.1 * crouch)
        set_(m, f"{s}_up_el", 0.3 + 1.2 * air)
    # 6 clap: arms forward, hands open sideways and meet in front.
    m = label == 6
    close = 0.5 + 0.5 * np.sin(3 * phase)
    for s in ("L", "R"):
        set_(m, f"{s}_up_el", 1.1 + 0 * t)
        set_(m, f"{s}_up_az", 0.5 + 0.9 * close)
        set_(m, f"{s}_fo_el", 1.4 + 0 * t)
        set_(m, f"{s}_fo_az", 0.7 + 1.3 * close)
    # 7 bow: the trunk bends forward once.
    m = label == 7
    set_(m, "trunk_pitch", 0.9 * bump * amp)
    # 8 raise both arms sideways to overhead, slowly, and hold.
    m = label == 8
    for s in ("L", "R"):
        set_(m, f"{s}_up_el", 0.2 + 2.7 * ramp * np.minimum(amp, 1))
        set_(m, f"{s}_up_az", 0.1 + 0 * t)
        set_(m, f"{s}_fo_el", 0.2 + 2.8 * ramp * np.minimum(amp, 1))
        set_(m, f"{s}_fo_az", 0.1 + 0 * t)
    # 9 march in place: legs alternate, arms swing in opposition.
    m = label == 9
    for s, sign in (("L", 1.0), ("R", -1.0)):
        lift = np.clip(sign * osc, 0, None)
        set_(m, f"{s}_hip", 0.9 * lift * amp)
        set_(m, f"{s}_knee", 1.3 * lift * amp)
        set_(m, f"{s}_up_el", 0.15 + 0.5 * np.clip(-sign * osc, 0, None))
        set_(m, f"{s}_up_az", 1.5 + 0 * t)
        set_(m, f"{s}_fo_el", 0.6 + 0.6 * np.clip(-sign * osc, 0, None))
        set_(m, f"{s}_fo_az", 1.5 + 0 * t)
    # 10 overhand throw: the main arm winds back overhead, then whips forward once; the trunk turns.
    wind = np.clip(bump * 2, 0, 1)
    whip = np.clip((tw - u(0.45, 0.65)) / 0.15, 0, 1)
    for m, s in zip(arms(10)[:2], ("R", "L")):
        set_(m, f"{s}_up_el", 0.3 + 2.4 * wind * (1 - whip) + 1.3 * whip)
        set_(m, f"{s}_up_az", -0.4 * (1 - whip) + 1.6 * whip)
        set_(m, f"{s}_fo_el", 0.5 + 2.5 * wind * (1 - whip) + 1.0 * whip)
        set_(m, f"{s}_fo_az", -0.6 * (1 - whip) + 1.6 * whip)
    m = label == 10
    set_(m, "trunk_yaw", 0.5 * (wind * (1 - whip) - whip) * amp)
    # 11 hand to mouth (drinking): the main forearm rises to the face and back, slowly.
    for m, s in zip(arms(11)[:2], ("R", "L")):
        lift = 0.5 - 0.5 * np.cos(phase / 1.5)
        set_(m, f"{s}_up_el", 0.25 + 0.45 * lift)
        set_(m, f"{s}_up_az", 1.4 + 0 * t)
        set_(m, f"{s}_fo_el", 0.5 + 2.2 * lift * np.minimum(amp, 1))
        set_(m, f"{s}_fo_az", 1.9 + 0 * t)
    # The action fills only part of the window (between 30 and 100 % of it): rest pose around it.
    start = u(0.0, 0.35)
    stop = np.minimum(start + u(0.3, 1.0), 1.0)
    active = np.clip((t - start) / 0.1, 0, 1) * np.clip((stop - t) / 0.1, 0, 1)
    return {k: rest[k] + active * (p[k] - rest[k]) for k in p}


def _direction(elevation: np.ndarray, azimuth: np.ndarray, side: float) -> np.ndarray:
    """Unit vector (N, T, 3) in the body frame (x = subject's left, y up, f forward):
    elevation 0 = hanging down, pi = straight up; azimuth 0 = sideways outwards, pi/2 = forward."""
    s = np.sin(elevation)
    return np.stack([side * s * np.cos(azimuth), -np.cos(elevation), s * np.sin(azimuth)], axis=-1)


def _forward_kinematics(p: dict[str, np.ndarray], length: dict[str, np.ndarray]) -> np.ndarray:
    n, frames = p["trunk_pitch"].shape
    L = {k: v[:, None, None] for k, v in length.items()}  # noqa: N806 - (N, 1, 1) broadcast over (N, T, 3)
    j = np.zeros((n, frames, 25, 3))
    up = np.stack([np.zeros((n, frames)), np.ones((n, frames)), np.zeros((n, frames))], axis=-1)
    lateral = np.array([1.0, 0.0, 0.0])
    # Upper body in an upright frame, rotated by the trunk pitch/yaw about spine base below.
    upper = np.zeros((n, frames, 25, 3))
    upper[:, :, 1] = up * L["spine_low"]
    upper[:, :, 20] = upper[:, :, 1] + up * L["spine_up"]
    upper[:, :, 2] = upper[:, :, 20] + up * L["neck"]
    upper[:, :, 3] = upper[:, :, 2] + up * L["head"]
    for side, sign, (sh, el, wr, ha, tip, th) in (("L", 1.0, (4, 5, 6, 7, 21, 22)), ("R", -1.0, (8, 9, 10, 11, 23, 24))):
        upper[:, :, sh] = upper[:, :, 20] + sign * lateral * L["shoulder"] - up * 0.03
        d_up = _direction(p[f"{side}_up_el"], p[f"{side}_up_az"], sign)
        d_fo = _direction(p[f"{side}_fo_el"], p[f"{side}_fo_az"], sign)
        upper[:, :, el] = upper[:, :, sh] + d_up * L["upper_arm"]
        upper[:, :, wr] = upper[:, :, el] + d_fo * L["forearm"]
        upper[:, :, ha] = upper[:, :, wr] + d_fo * L["hand"]
        upper[:, :, tip] = upper[:, :, ha] + d_fo * L["tip"]
        upper[:, :, th] = upper[:, :, ha] + (d_fo * 0.5 + np.array([0.0, 0.0, 1.0]) * 0.5) * L["thumb"]
    pitch, yaw = p["trunk_pitch"][..., None], p["trunk_yaw"][..., None]
    x, y, f = upper[..., 0], upper[..., 1], upper[..., 2]
    y, f = y * np.cos(pitch) - f * np.sin(pitch), f * np.cos(pitch) + y * np.sin(pitch)  # bend forward
    x, f = x * np.cos(yaw) + f * np.sin(yaw), f * np.cos(yaw) - x * np.sin(yaw)
    upper = np.stack([x, y, f], axis=-1)
    upper_joints = [1, 2, 3, 20, 4, 5, 6, 7, 21, 22, 8, 9, 10, 11, 23, 24]
    j[:, :, upper_joints] = upper[:, :, upper_joints]
    # Legs from the hips (not pitched with the trunk).
    for side, sign, (hip, knee, ankle, foot) in (("L", 1.0, (12, 13, 14, 15)), ("R", -1.0, (16, 17, 18, 19))):
        j[:, :, hip] = sign * lateral * L["hip"] - up * 0.05
        beta, gamma, kappa = p[f"{side}_hip"], p[f"{side}_abd"], p[f"{side}_knee"]
        thigh = np.stack([sign * np.sin(gamma), -np.cos(beta) * np.cos(gamma), np.sin(beta) * np.cos(gamma)], axis=-1)
        shin = np.stack([sign * np.sin(gamma), -np.cos(beta - kappa), np.sin(beta - kappa)], axis=-1)
        j[:, :, knee] = j[:, :, hip] + thigh * L["thigh"]
        j[:, :, ankle] = j[:, :, knee] + shin * L["shin"]
        j[:, :, foot] = j[:, :, ankle] + np.array([0.0, -0.03, 1.0]) * L["foot"]
    # Stand on the ground: the lower foot touches y = 0, plus the jump height and sway.
    ground = j[:, :, [15, 19], 1].min(axis=2)
    j[..., 1] -= ground[..., None]
    j[..., 1] += p["root_y"][..., None]
    j[..., 0] += p["root_x"][..., None]
    j[..., 2] += p["root_f"][..., None]
    return j
