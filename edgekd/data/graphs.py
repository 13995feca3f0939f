"""Skeleton joint layouts, the four skeleton modalities, centring/normalisation and resampling.

Arrays follow the GCN convention (N, C=3, T, V, M): xyz, frames, joints, persons. A layout names
its joints and its bones as (parent, child) pairs, 0-based; the root's bone is the zero vector
(CTR-GCN's (21, 21) self pair on NTU), so the bone modality has V entries like the joints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekd.errors import DataError, did_you_mean


@dataclass(frozen=True)
class JointLayout:
    name: str
    joint_names: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]  # (parent, child), 0-based; every non-root joint once as child
    center: int  # joint the skeleton is centred on
    root: int  # root of the bone tree (its bone is zero)
    torso: tuple[int, int]  # two joints whose distance sets the body scale
    description: str = ""
    parents: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        parents = [-1] * len(self.joint_names)
        for parent, child in self.bones:
            parents[child] = parent
        parents[self.root] = self.root
        object.__setattr__(self, "parents", tuple(parents))

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def adjacency(self) -> np.ndarray:
        """(V, V) symmetric 0/1 adjacency of the bone graph, no self loops."""
        a = np.zeros((self.num_joints, self.num_joints), dtype=np.float32)
        for p, c in self.bones:
            a[p, c] = a[c, p] = 1.0
        return a


def _pairs_1based(pairs: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple((p - 1, c - 1) for p, c in pairs)


# NTU RGB+D / Kinect v2, 25 joints (1-based names in the dataset's documentation order).
_NTU25_NAMES = (
    "spine base", "spine mid", "neck", "head", "left shoulder", "left elbow", "left wrist", "left hand",
    "right shoulder", "right elbow", "right wrist", "right hand", "left hip", "left knee", "left ankle",
    "left foot", "right hip", "right knee", "right ankle", "right foot", "spine shoulder",
    "left hand tip", "left thumb", "right hand tip", "right thumb",
)
# SEEDS.md lists CTR-GCN's pairs as (child, parent), 1-based; the (21, 21) self pair marks the root.
_NTU25_CHILD_PARENT = [
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
    (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (22, 23),
    (23, 8), (24, 25), (25, 12),
]
NTU25 = JointLayout(
    name="ntu25",
    joint_names=_NTU25_NAMES,
    bones=_pairs_1based([(p, c) for c, p in _NTU25_CHILD_PARENT]),
    center=1,  # spine mid, as in CTR-GCN's preprocessing
    root=20,  # spine shoulder
    torso=(0, 20),  # spine base - spine shoulder
    description="NTU RGB+D / Kinect v2, 25 joints",
)

# MSR Action3D / Kinect v1, 20 joints, in the order of the MSR files.
_KINECT20_NAMES = (
    "left shoulder", "right shoulder", "shoulder centre", "spine", "left hip", "right hip", "hip centre",
    "left elbow", "right elbow", "left wrist", "right wrist", "left hand", "right hand", "left knee",
    "right knee", "left ankle", "right ankle", "left foot", "right foot", "head",
)
KINECT20 = JointLayout(
    name="kinect20",
    joint_names=_KINECT20_NAMES,
    bones=_pairs_1based([
        (7, 4), (4, 3), (3, 20), (3, 1), (3, 2), (1, 8), (2, 9), (8, 10), (9, 11), (10, 12),
        (11, 13), (7, 5), (7, 6), (5, 14), (6, 15), (14, 16), (15, 17), (16, 18), (17, 19),
    ]),
    center=6,  # hip centre
    root=6,
    torso=(6, 2),  # hip centre - shoulder centre
    description="MSR Action3D / Kinect v1, 20 joints",
)

LAYOUTS: dict[str, JointLayout] = {NTU25.name: NTU25, KINECT20.name: KINECT20}


def get_layout(name: str | JointLayout) -> JointLayout:
    if isinstance(name, JointLayout):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    aliases = {"ntu": "ntu25", "ntu25": "ntu25", "kinect20": "kinect20", "msr": "kinect20", "msraction3d": "kinect20"}
    if key in aliases:
        return LAYOUTS[aliases[key]]
    raise DataError(
        f"unknown joint layout '{name}'{did_you_mean(name, LAYOUTS)}",
        hint="accepted layouts: " + ", ".join(f"{k} ({v.description})" for k, v in LAYOUTS.items()),
    )


# ---------------------------------------------------------------- modalities

MODALITIES = ("joints", "bones", "joint_motion", "bone_motion")


def _check_joints(joints: np.ndarray, layout: JointLayout) -> None:
    if joints.ndim != 5 or joints.shape[1] != 3 or joints.shape[3] != layout.num_joints:
        raise DataError(
            f"skeleton array has shape {tuple(joints.shape)}; expected (N, 3, T, {layout.num_joints}, M) "
            f"for layout {layout.name}",
            hint="arrays are (samples, xyz, frames, joints, persons)",
        )


def bones_from_joints(joints: np.ndarray, layout: str | JointLayout) -> np.ndarray:
    """bone[v] = joint[v] - joint[parent(v)]; the root's bone is zero. Shape kept (N, 3, T, V, M)."""
    layout = get_layout(layout)
    _check_joints(joints, layout)
    parents = np.asarray(layout.parents)
    return (joints - joints[:, :, :, parents, :]).astype(joints.dtype, copy=False)


def motion(x: np.ndarray) -> np.ndarray:
    """Frame difference x[t+1] - x[t] along T (axis 2); the last frame is zero."""
    out = np.zeros_like(x)
    out[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    return out


def skeleton_modalities(joints: np.ndarray, layout: str | JointLayout) -> dict[str, np.ndarray]:
    """{"joints", "bones", "joint_motion", "bone_motion"}, each (N, 3, T, V, M) float32."""
    joints = np.asarray(joints, dtype=np.float32)
    bones = bones_from_joints(joints, layout)
    return {"joints": joints, "bones": bones, "joint_motion": motion(joints), "bone_motion": motion(bones)}


# ---------------------------------------------------------------- per-sequence preprocessing
# A raw sequence is (F, V, M, 3): frames, joints, persons, xyz, with all-zero entries where a
# person or joint was not tracked (the convention of NTU and of CTR-GCN's padding).


def valid_frames(seq: np.ndarray) -> np.ndarray:
    """Boolean (F,) mask of frames where any person has a non-zero, finite joint."""
    finite = np.isfinite(seq).all(axis=(1, 2, 3))
    nonzero = np.abs(np.nan_to_num(seq)).sum(axis=(1, 2, 3)) > 0
    return finite & nonzero


def degenerate_reason(seq: np.ndarray) -> str | None:
    """Why a raw sequence is unusable, or None: all zeros, NaN/inf, or no motion at all."""
    if seq.size == 0 or seq.shape[0] == 0:
        return "no frames"
    if not np.isfinite(seq).all():
        bad = int((~np.isfinite(seq)).any(axis=(1, 2, 3)).sum())
        return f"NaN or infinite coordinates in {bad} of {seq.shape[0]} frames"
    if not np.any(seq):
        return f"all {seq.shape[0]} frames are zero"
    if valid_frames(seq).sum() < 2:
        return "fewer than 2 frames with tracked joints"
    if np.ptp(seq[valid_frames(seq)], axis=0).max() == 0:
        return "constant: no joint moves in any frame"
    return None


def normalise_sequence(seq: np.ndarray, layout: str | JointLayout, scale: bool = True) -> np.ndarray:
    """Centre on the layout's centre joint of the first tracked frame (person 0) and divide by
    the median torso length, so sequences of different people and cameras share units.
    Untracked (all-zero) persons stay zero."""
    layout = get_layout(layout)
    seq = np.asarray(seq, dtype=np.float32)
    frames = np.flatnonzero(valid_frames(seq))
    if len(frames) == 0:
        return seq.copy()
    origin = seq[frames[0], layout.center, 0]
    present = np.abs(seq).sum(axis=(1, 3), keepdims=True) > 0  # (F, 1, M, 1): person tracked in frame
    out = np.where(present, seq - origin, 0.0).astype(np.float32)
    if scale:
        a, b = layout.torso
        p0 = seq[frames, :, 0]
        lengths = np.linalg.norm(p0[:, a] - p0[:, b], axis=-1)
        lengths = lengths[lengths > 0]
        if len(lengths):
            out /= np.float32(np.median(lengths))
    return out


def resample_indices(num_frames: int, window: int, mode: str = "center", rng: np.random.Generator | None = None,
                     min_crop: float = 0.5) -> np.ndarray:
    """Fractional frame positions (window,) to sample from a sequence of `num_frames` frames.

    "center": the central 90 % of the sequence stretched to the window (evaluation); "full": all
    frames; "random": a random crop of between min_crop and 100 % of the frames (training).
    """
    if num_frames < 1:
        raise DataError("cannot resample a sequence with no frames")
    if mode == "full":
        ratio, start = 1.0, 0.0
    elif mode == "center":
        ratio = 0.9 if num_frames >= 10 else 1.0
        start = (1.0 - ratio) / 2 * num_frames
    elif mode == "random":
        rng = rng if rng is not None else np.random.default_rng()
        ratio = float(rng.uniform(min_crop, 1.0))
        start = float(rng.uniform(0.0, (1.0 - ratio) * num_frames))
    else:
        raise DataError(f"unknown resampling mode '{mode}'", hint="use 'center', 'full' or 'random'")
    length = ratio * num_frames
    pos = start + (np.arange(window) + 0.5) * length / window - 0.5
    return np.clip(pos, 0.0, num_frames - 1)


def resample_sequence(seq: np.ndarray, window: int, mode: str = "center", rng: np.random.Generator | None = None,
                      min_crop: float = 0.5) -> np.ndarray:
    """Resample (F, ...) to (window, ...) by linear interpolation between frames, over the
    tracked frames only (leading/trailing padding is dropped first)."""
    seq = np.asarray(seq, dtype=np.float32)
    if seq.ndim == 4:
        tracked = np.flatnonzero(valid_frames(seq))
        if len(tracked):
            seq = seq[tracked[0]: tracked[-1] + 1]
    pos = resample_indices(seq.shape[0], window, mode, rng, min_crop)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, seq.shape[0] - 1)
    frac = (pos - lo).astype(np.float32)
    w = frac.reshape((-1,) + (1,) * (seq.ndim - 1))
    out = seq[lo] * (1 - w) + seq[hi] * w
    # Interpolating into an untracked (zero) entry would invent a half-scaled joint: keep zeros.
    if seq.ndim == 4:
        missing = (np.abs(seq[lo]).sum(-1, keepdims=True) == 0) | (np.abs(seq[hi]).sum(-1, keepdims=True) == 0)
        out = np.where(missing, seq[np.where(frac < 0.5, lo, hi)], out)
    return out.astype(np.float32)


def to_nctvm(seqs: list[np.ndarray], persons: int) -> np.ndarray:
    """Stack (T, V, M, 3) sequences into (N, 3, T, V, persons), padding or cutting persons."""
    if not seqs:
        return np.zeros((0, 3, 0, 0, persons), dtype=np.float32)
    t, v = seqs[0].shape[:2]
    out = np.zeros((len(seqs), 3, t, v, persons), dtype=np.float32)
    for i, s in enumerate(seqs):
        m = min(persons, s.shape[2])
        out[i, :, :, :, :m] = s[:, :, :m].transpose(3, 0, 1, 2)
    return out


def random_crop_resize(joints: np.ndarray, rng: np.random.Generator, min_crop: float = 0.5) -> np.ndarray:
    """Training augmentation on fixed windows (N, 3, T, V, M): each sample gets a random temporal
    crop of its window, stretched back to T frames."""
    n, _, t, _, _ = joints.shape
    out = np.empty_like(joints)
    for i in range(n):
        seq = joints[i].transpose(1, 2, 3, 0)  # (T, V, M, 3)
        out[i] = resample_sequence(seq, t, "random", rng, min_crop).transpose(3, 0, 1, 2)
    return out


# Rotation range of `augment_views` (radians, about each axis) and scale range: CTR-GCN's
# random_rot uses 0.3 rad; the scale covers body sizes the torso normalisation leaves.
AUGMENT_MAX_ANGLE = 0.3
AUGMENT_SCALE = (0.9, 1.1)


def random_view_matrices(count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` 3x3 matrices R_z R_y R_x * diag(scale), angles in ±AUGMENT_MAX_ANGLE, scales per axis
    in AUGMENT_SCALE: a camera turned a little and a body a little wider or taller."""
    out = np.empty((count, 3, 3), dtype=np.float32)
    for i in range(count):
        ax, ay, az = rng.uniform(-AUGMENT_MAX_ANGLE, AUGMENT_MAX_ANGLE, 3)
        rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
        ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
        rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
        out[i] = rz @ ry @ rx @ np.diag(rng.uniform(*AUGMENT_SCALE, 3))
    return out


def augment_views(joints: np.ndarray, copies: int, rng: np.random.Generator) -> np.ndarray:
    """(N, 3, T, V, M) -> (N * (1 + copies), 3, T, V, M): the sequences, then `copies` blocks of
    them each seen through its own random view (`random_view_matrices`, one per sequence and
    copy). Linear, so untracked (all-zero) persons stay zero; bones and motions, which the
    models derive from the joints, turn with them."""
    n = joints.shape[0]
    if joints.ndim != 5 or joints.shape[1] != 3:
        raise DataError(f"augment_views needs (N, 3, T, V, M) joints, got {joints.shape}")
    views = random_view_matrices(n * copies, rng).reshape(copies, n, 3, 3)
    turned = [np.einsum("nij,njtvm->nitvm", views[c], joints).astype(joints.dtype) for c in range(copies)]
    return np.concatenate([joints, *turned], axis=0)
