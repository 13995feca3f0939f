"""Skeleton layouts, modalities, normalisation and resampling (edgekd.data.graphs)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.data import graphs
from edgekd.errors import DataError


@pytest.mark.parametrize("name,joints,root", [("ntu25", 25, 20), ("kinect20", 20, 6)])
def test_layout_is_a_tree_over_all_joints(name: str, joints: int, root: int) -> None:
    layout = graphs.get_layout(name)
    assert layout.num_joints == joints
    assert len(layout.bones) == joints - 1
    children = [c for _, c in layout.bones]
    assert sorted(children + [root]) == list(range(joints))  # every joint but the root is a child once
    # Walking up from any joint reaches the root.
    for v in range(joints):
        seen = 0
        while v != root:
            v = layout.parents[v]
            seen += 1
            assert seen <= joints
    adj = layout.adjacency()
    assert (adj == adj.T).all() and adj.sum() == 2 * (joints - 1)


def test_ntu_pairs_follow_seeds_convention() -> None:
    layout = graphs.get_layout("ntu25")
    # SEEDS.md (child, parent) 1-based (1,2): spine base's parent is spine mid; (23, 8): thumb on left hand.
    assert layout.parents[0] == 1 and layout.parents[22] == 7 and layout.parents[24] == 11
    assert layout.joint_names[20] == "spine shoulder"
    kinect = graphs.get_layout("kinect20")
    assert kinect.parents[19] == 2  # head (20) hangs from shoulder centre (3)


def test_unknown_layout_lists_accepted() -> None:
    with pytest.raises(DataError) as err:
        graphs.get_layout("coco17")
    assert "ntu25" in err.value.hint and "kinect20" in err.value.hint


def test_modalities_shapes_and_definitions() -> None:
    rng = np.random.default_rng(0)
    joints = rng.normal(size=(2, 3, 6, 25, 2)).astype(np.float32)
    mods = graphs.skeleton_modalities(joints, "ntu25")
    assert set(mods) == {"joints", "bones", "joint_motion", "bone_motion"}
    for arr in mods.values():
        assert arr.shape == joints.shape and arr.dtype == np.float32
    layout = graphs.get_layout("ntu25")
    assert np.allclose(mods["bones"][:, :, :, layout.root], 0)
    assert np.allclose(mods["bones"][:, :, :, 0], joints[:, :, :, 0] - joints[:, :, :, 1])
    assert np.allclose(mods["joint_motion"][:, :, -1], 0)
    assert np.allclose(mods["joint_motion"][:, :, 2], joints[:, :, 3] - joints[:, :, 2])
    assert np.allclose(mods["bone_motion"][:, :, 0], mods["bones"][:, :, 1] - mods["bones"][:, :, 0])


def test_modalities_reject_wrong_joint_count() -> None:
    with pytest.raises(DataError, match="expected"):
        graphs.skeleton_modalities(np.zeros((1, 3, 4, 20, 1), np.float32), "ntu25")


def test_normalise_centres_and_scales() -> None:
    rng = np.random.default_rng(1)
    seq = rng.normal(size=(10, 20, 1, 3)).astype(np.float32) + 5
    out = graphs.normalise_sequence(seq, "kinect20")
    assert np.allclose(out[0, 6, 0], 0, atol=1e-6)  # hip centre of the first frame at the origin
    torso = np.linalg.norm(out[:, 6, 0] - out[:, 2, 0], axis=-1)
    assert np.median(torso) == pytest.approx(1.0, rel=1e-5)


def test_resample_modes_and_padding() -> None:
    seq = np.zeros((50, 25, 2, 3), np.float32)
    seq[5:45, :, 0] = np.arange(40, dtype=np.float32)[:, None, None] + 1  # frames 0-4 and 45-49 untracked
    center = graphs.resample_sequence(seq, 16, "center")
    assert center.shape == (16, 25, 2, 3)
    assert center[:, 0, 0, 0].min() >= 1 and np.all(np.diff(center[:, 0, 0, 0]) > 0)  # padding dropped, order kept
    assert np.allclose(center[:, :, 1], 0)  # the absent second person stays zero
    full = graphs.resample_sequence(seq, 40, "full")
    assert np.allclose(full[:, 0, 0, 0], np.arange(1, 41))
    rng = np.random.default_rng(0)
    crops = [graphs.resample_sequence(seq, 16, "random", rng) for _ in range(5)]
    assert any(not np.allclose(crops[0], c) for c in crops[1:])
    batch = graphs.random_crop_resize(graphs.to_nctvm([center, center], 2), rng)
    assert batch.shape == (2, 3, 16, 25, 2)


def test_degenerate_sequences_are_detected() -> None:
    assert "zero" in graphs.degenerate_reason(np.zeros((30, 20, 1, 3)))
    nan = np.ones((30, 20, 1, 3))
    nan[3, 4] = np.nan
    assert "NaN" in graphs.degenerate_reason(nan)
    assert "constant" in graphs.degenerate_reason(np.ones((30, 20, 1, 3)))
    assert graphs.degenerate_reason(np.random.default_rng(0).normal(size=(30, 20, 1, 3))) is None


def test_augment_views_turns_and_scales_each_copy_and_keeps_the_originals() -> None:
    rng = np.random.default_rng(0)
    joints = rng.normal(size=(5, 3, 4, 20, 2)).astype(np.float32)
    joints[:, :, :, :, 1] = 0.0  # an untracked second person
    out = graphs.augment_views(joints, 2, np.random.default_rng(1))
    assert out.shape == (15, 3, 4, 20, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:5], joints)
    assert not np.any(out[:, :, :, :, 1])  # zero stays zero
    for copy in (out[5:10], out[10:15]):
        for i in range(5):
            # each copy is one linear map of the whole sequence: solve it back and check its range
            a, b = joints[i, :, :, :, 0].reshape(3, -1), copy[i, :, :, :, 0].reshape(3, -1)
            m = b @ np.linalg.pinv(a)
            np.testing.assert_allclose(m @ a, b, atol=1e-4)
            singular = np.linalg.svd(m, compute_uv=False)
            assert 0.9 - 1e-4 <= singular.min() and singular.max() <= 1.1 + 1e-4
            assert not np.allclose(m, np.eye(3), atol=1e-3)
    with pytest.raises(DataError, match=r"\(N, 3, T, V, M\)"):
        graphs.augment_views(joints[:, :2], 1, rng)


def test_augment_option_grows_the_training_split_only() -> None:
    from edgekd.data.api import load_dataset
    from edgekd.errors import UsageError

    common = dict(samples=60, frames=8, seed=0)
    train = load_dataset("skeleton", "synthetic", split="train", **common)
    aug = load_dataset("skeleton", "synthetic", split="train", augment=2, **common)
    val = load_dataset("skeleton", "synthetic", split="validation", augment=2, **common)
    assert len(aug) == 3 * len(train) and len(val) == len(load_dataset("skeleton", "synthetic", split="validation", **common))
    np.testing.assert_array_equal(aug.y, np.tile(train.y, 3))
    assert "augmented" in aug.notes[-1]
    with pytest.raises(UsageError, match="augment"):
        load_dataset("skeleton", "synthetic", split="train", augment=-1, **common)
    with pytest.raises(UsageError, match="augment"):
        load_dataset("eye", "synthetic", split="train", augment=2, samples=20)
