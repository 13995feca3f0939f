"""Synthetic eye and skeleton data: deterministic by seed, the documented arrays, splits by subject."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.data.api import load_dataset, read_all, split_indices
from edgekd.errors import UsageError

EYE = {"samples": 112, "subjects": 8, "size": 24, "frames": 6, "substeps": 2}


@pytest.fixture(scope="module")
def eye():
    return read_all("eye", "synthetic", seed=3, **EYE)


def test_eye_arrays_follow_the_contract(eye) -> None:
    n = EYE["samples"]
    assert eye.x["frames"].shape == (n, 6, 1, 24, 24) and eye.x["frames"].dtype == np.float32
    assert eye.x["events"].shape == (n, 6, 2, 24, 24) and eye.x["events"].dtype == np.float32
    assert 0 <= eye.x["frames"].min() and eye.x["frames"].max() <= 1
    assert 0 <= eye.x["events"].min() and eye.x["events"].max() <= 1 and eye.x["events"].max() > 0
    assert eye.classes == ["angry", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    assert eye.y.dtype == np.int64
    assert set(eye.meta["lighting"]) == {"normal", "overexposed", "low-light", "hdr"}
    counts = np.bincount(eye.y, minlength=7)
    assert counts.min() >= counts.max() - len(np.unique(eye.meta["subject"]))  # balanced within each subject


def test_eye_is_deterministic_by_seed(eye) -> None:
    again = read_all("eye", "synthetic", seed=3, **EYE)
    assert np.array_equal(eye.x["frames"], again.x["frames"]) and np.array_equal(eye.x["events"], again.x["events"])
    assert np.array_equal(eye.y, again.y)
    other = read_all("eye", "synthetic", seed=4, **EYE)
    assert not np.array_equal(eye.x["frames"], other.x["frames"])


def test_eye_lighting_degrades_frames_not_events(eye) -> None:
    frames, events, light = eye.x["frames"], eye.x["events"], eye.meta["lighting"]
    clipped = {lt: float((frames[light == lt] >= 1).mean()) for lt in ("normal", "overexposed")}
    assert clipped["overexposed"] > 0.3 > clipped["normal"]
    # Frame-to-frame noise is far larger in low light (digital gain on a few photons).
    def jitter(lt):
        return float(np.abs(np.diff(frames[light == lt], axis=1)).mean())
    assert jitter("low-light") > 2 * jitter("normal")
    # Events see the same moving eye in every lighting: their activity differs by far less.
    rate = {lt: float(events[light == lt].mean()) for lt in ("normal", "overexposed")}
    assert rate["overexposed"] > 0.5 * rate["normal"]


def test_eye_validation_is_subject_disjoint() -> None:
    train = load_dataset("eye", "synthetic", split="train", seed=1, **EYE)
    val = load_dataset("eye", "synthetic", split="validation", seed=1, **EYE)
    assert set(train.meta["subject"]).isdisjoint(val.meta["subject"])
    assert len(train) + len(val) == EYE["samples"]
    assert len(set(val.meta["subject"])) == 2  # 20 % of 8 subjects


def test_eye_options_are_checked() -> None:
    with pytest.raises(UsageError, match="did you mean 'frames'"):
        read_all("eye", "synthetic", frame=4)
    with pytest.raises(UsageError, match="lighting"):
        read_all("eye", "synthetic", lightings=["sunny"], samples=10)
    only_normal = read_all("eye", "synthetic", lightings=["normal"], events=False, samples=14, subjects=2, size=16)
    assert set(only_normal.meta["lighting"]) == {"normal"} and "events" not in only_normal.x


def test_skeleton_arrays_and_determinism() -> None:
    ds = read_all("skeleton", "synthetic", seed=2, samples=96, subjects=8, frames=20)
    assert ds.x["joints"].shape == (96, 3, 20, 25, 1) and ds.x["joints"].dtype == np.float32
    assert ds.layout == "ntu25" and len(ds.classes) >= 10
    assert np.isfinite(ds.x["joints"]).all()
    assert set(ds.meta["view"]) <= {"c1", "c2", "c3"}
    again = read_all("skeleton", "synthetic", seed=2, samples=96, subjects=8, frames=20)
    assert np.array_equal(ds.x["joints"], again.x["joints"])
    # Centred on spine mid of the first frame (unless that joint was dropped), torso-normalised.
    centre = ds.x["joints"][:, :, 0, 1, 0]
    assert np.median(np.abs(centre)) < 0.1
    torso = np.linalg.norm(ds.x["joints"][:, :, :, 0, 0] - ds.x["joints"][:, :, :, 20, 0], axis=1)
    assert 0.8 < np.median(torso) < 1.2
    # Different classes move different limbs: mean motion energy per class differs.
    energy = np.abs(np.diff(ds.x["joints"], axis=2)).mean(axis=(1, 2, 4))  # (N, V)
    per_class = np.stack([energy[ds.y == c].mean(0) for c in range(len(ds.classes))])
    assert np.unique(per_class.argmax(axis=1)).size >= 4
    two = read_all("skeleton", "synthetic", samples=24, subjects=4, persons=2)
    assert two.x["joints"].shape[-1] == 2 and np.all(two.x["joints"][..., 1] == 0)


def test_skeleton_split_by_subject() -> None:
    ds = read_all("skeleton", "synthetic", samples=120, subjects=10)
    tr, va = split_indices(ds, "train"), split_indices(ds, "validation")
    assert set(ds.meta["subject"][tr]).isdisjoint(ds.meta["subject"][va])
    assert len(np.unique(ds.meta["subject"][va])) == 2
    # The cut depends on split_seed, not on the data seed.
    other = read_all("skeleton", "synthetic", samples=120, subjects=10, seed=5)
    assert np.array_equal(np.unique(ds.meta["subject"][va]), np.unique(other.meta["subject"][split_indices(other, "validation")]))


def test_synthetic_faces() -> None:
    ds = read_all("face", "synthetic", samples=70, subjects=5, size=32, seed=1)
    assert ds.x["image"].shape == (70, 1, 32, 32) and ds.x["image"].dtype == np.float32
    assert 0 <= ds.x["image"].min() and ds.x["image"].max() <= 1
    assert ds.classes[3] == "happy" and np.bincount(ds.y).tolist() == [10] * 7
    assert np.array_equal(ds.x["image"], read_all("face", "synthetic", samples=70, subjects=5, size=32, seed=1).x["image"])
    val = load_dataset("face", "synthetic", split="validation", samples=70, subjects=5, size=32)
    assert np.bincount(val.y).tolist() == [2] * 7  # face: stratified by class
