"""Readers on small files written here in each dataset's real format, including bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.data.api import load_dataset, read_all
from edgekd.errors import DataError, NotFoundError, UsageError
from tests.unit import data_writers as w


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


# ---------------------------------------------------------------- FER2013


def test_fer2013_csv_with_bad_rows(tmp_path) -> None:
    rng = np.random.default_rng(0)
    rows = [(label, w.face_image(rng, label), usage) for label in range(7)
            for usage in ("Training", "Training", "PublicTest", "PrivateTest")]
    path = w.write_fer_csv(tmp_path / "fer2013.csv", rows, extra_lines=[
        "9," + " ".join(["0"] * 2304) + ",Training",  # label out of range
        "3,1 2 3,Training",  # too few pixels
        "x," + " ".join(["0"] * 2304) + ",Training",  # not a number
    ])
    ds = read_all("face", "fer2013", str(path))
    assert len(ds) == 28 and len(ds.skipped) == 3
    reasons = " | ".join(f"{s.item}: {s.reason}" for s in ds.skipped)
    assert "emotion 9 outside 0..6" in reasons and "3 pixel values" in reasons and "line 31" in reasons
    assert ds.x["image"].shape == (28, 1, 48, 48) and ds.x["image"].max() <= 1
    assert ds.classes[3] == "happy" and ds.classes[6] == "neutral"  # FER2013 csv label order
    # Mean brightness encodes the label: the pixels went to the right label.
    means = ds.x["image"].mean(axis=(1, 2, 3))
    assert np.all(np.diff([means[ds.y == c].mean() for c in range(7)]) > 0)
    test = load_dataset("face", "fer2013", str(path), split="test")
    assert len(test) == 7  # PrivateTest rows
    train = load_dataset("face", "fer2013", str(path), split="train")
    val = load_dataset("face", "fer2013", str(path), split="validation")
    assert len(train) + len(val) == 14 and set(val.meta["name"]).isdisjoint(train.meta["name"])
    resized = read_all("face", "fer2013", str(path), size=64)
    assert resized.x["image"].shape[-1] == 64


def test_fer2013_csv_wrong_header(tmp_path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("label,image\n1,2\n")
    with pytest.raises(DataError, match="missing column"):
        read_all("face", "fer2013", str(path))


def test_fer2013_folder_skips_corrupt_and_counts(tmp_path) -> None:
    rng = np.random.default_rng(1)
    root = w.write_fer_folder(tmp_path / "train", 3, rng)
    (root / "angry" / "Training_broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "happy" / "notes.txt").write_text("hello")
    ds = read_all("face", "fer2013", str(root))
    assert len(ds) == 21 and ds.class_counts()["happy"] == 3
    items = {s.item: s.reason for s in ds.skipped}
    assert "unreadable image" in items["angry/Training_broken.jpg"]
    assert "not an image" in items["happy/notes.txt"]
    again = read_all("face", "fer2013", str(root))  # from the cache: identical
    assert np.array_equal(ds.x["image"], again.x["image"]) and len(again.skipped) == 2
    # The parent folder with train/ gives the same images as the training side.
    parent = read_all("face", "fer2013", str(tmp_path))
    assert len(parent) == 21 and set(parent.meta["subset"]) == {"train"}


def test_fer2013_folder_unknown_class_and_empty_class(tmp_path) -> None:
    rng = np.random.default_rng(2)
    root = w.write_fer_folder(tmp_path / "a", 1, rng, classes=("angry", "contempt"))
    with pytest.raises(DataError, match="contempt"):
        read_all("face", "fer2013", str(root))
    root = w.write_fer_folder(tmp_path / "b", 1, rng)
    for p in (root / "disgust").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="disgust"):
        read_all("face", "fer2013", str(root))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        read_all("face", "fer2013", str(tmp_path / "empty"))
    with pytest.raises(NotFoundError):
        read_all("face", "fer2013", str(tmp_path / "missing"))


def test_generic_imagefolder_keeps_its_classes(tmp_path) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "ckplus"
    for label, name in enumerate(("anger", "contempt", "happy")):
        for i in range(2):
            w.write_jpg(root / name / f"S{i:03d}.png", w.face_image(rng, label, size=64))
    ds = read_all("face", "imagefolder", str(root), size=32)
    assert ds.classes == ["anger", "contempt", "happy"] and ds.x["image"].shape == (6, 1, 32, 32)


def test_rafdb_basic(tmp_path) -> None:
    rng = np.random.default_rng(4)
    root = tmp_path / "basic"
    lines = []
    for i in range(14):
        split = "train" if i < 10 else "test"
        name = f"{split}_{i:05d}.jpg"
        label = i % 7 + 1
        lines.append(f"{name} {label}")
        rgb = np.stack([w.face_image(rng, label - 1, 100)] * 3, axis=-1)
        w.write_jpg(root / "Image" / "aligned" / f"{split}_{i:05d}_aligned.jpg", rgb)
    lines += ["train_99999.jpg 3", "bad line"]
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    ds = read_all("face", "rafdb", str(root))
    assert len(ds) == 14 and {s.item for s in ds.skipped} == {"train_99999.jpg", "list_patition_label.txt:16"}
    assert ds.classes[ds.y[0]] == "surprise"  # RAF-DB label 1
    assert (ds.meta["subset"] == "test").sum() == 4


def test_periocular_eye_crops_from_faces(tmp_path) -> None:
    rng = np.random.default_rng(5)
    root = w.write_fer_folder(tmp_path / "train", 4, rng)
    eye = read_all("eye", "fer2013", str(root), frames=4, size=16)
    assert eye.task == "eye" and eye.x["frames"].shape == (28, 4, 1, 16, 16) and eye.x["events"].shape == (28, 4, 2, 16, 16)
    assert eye.classes == ["angry", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    face = read_all("face", "fer2013", str(root))
    assert [eye.classes[y] for y in eye.y[:4]] == ["angry"] * 4
    assert "happiness" in {eye.classes[y] for y in eye.y} and set(eye.meta["lighting"]) == {"unknown"}
    assert not np.allclose(eye.x["frames"][:, 0], eye.x["frames"][:, 1])  # fixational jitter
    val = load_dataset("eye", "fer2013", str(root), split="validation", frames=4, size=16)
    face_val = load_dataset("face", "fer2013", str(root), split="validation")
    assert sorted(val.meta["name"]) == sorted(face_val.meta["name"]) and len(face) == 28


# ---------------------------------------------------------------- MSR Action3D


def test_msr_action3d_skips_degenerate_and_truncated(tmp_path, caplog) -> None:
    rng = np.random.default_rng(6)
    root = tmp_path / "msr"
    for action in (1, 2, 3):
        for subject in (1, 2, 3, 5):
            w.write_msr_file(root, action, subject, 1, w.moving_skeleton(rng, 30 + action, 20))
    w.write_msr_file(root, 13, 9, 2, np.zeros((38, 20, 3)))
    nan = w.moving_skeleton(rng, 20, 20)
    nan[4, 2] = np.nan
    w.write_msr_file(root, 4, 1, 1, nan)
    (root / "a05_s01_e01_skeleton3D.txt").write_text("0.1 0.2 0.3 1\n" * 30)  # 30 lines: not whole frames
    (root / "readme.txt").write_text("not a sequence")
    ds = read_all("skeleton", "msr-action3d", str(root))
    assert len(ds) == 12 and ds.x["joints"].shape == (12, 3, 32, 20, 1) and ds.layout == "kinect20"
    reasons = {s.item: s.reason for s in ds.skipped}
    assert "all 38 frames are zero" in reasons["a13_s09_e02"]
    assert "NaN" in reasons["a04_s01_e01"]
    assert "truncated" in reasons["a05_s01_e01_skeleton3D.txt"]
    assert "readme.txt" in reasons
    assert "a13_s09_e02" in caplog.text  # a warning, not only a list entry
    # Odd subjects are the training side, even ones the official test side.
    assert set(load_dataset("skeleton", "msr-action3d", str(root), split="test").meta["subject"]) == {"s02"}
    val = load_dataset("skeleton", "msr-action3d", str(root), split="validation")
    train = load_dataset("skeleton", "msr-action3d", str(root), split="train")
    assert len(set(val.meta["subject"])) == 1 and set(val.meta["subject"]).isdisjoint(train.meta["subject"])
    assert ds.classes[ds.y[0]] == "high arm wave"


def test_msr_empty_folder(tmp_path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="no aAA_sSS_eEE"):
        read_all("skeleton", "msr-action3d", str(tmp_path / "x"))


# ---------------------------------------------------------------- NTU RGB+D


def test_ntu_skeleton_files(tmp_path) -> None:
    rng = np.random.default_rng(7)
    root = tmp_path / "nturgb+d_skeletons"
    for performer in (1, 2, 3, 6):  # 1, 2 are X-Sub training performers; 3, 6 are not
        for action in (1, 2):
            a = w.moving_skeleton(rng, 40, 25)
            b = w.moving_skeleton(rng, 40, 25) * 1.01
            b[:10] = np.nan  # the second body enters at frame 11
            still = np.repeat(w.moving_skeleton(rng, 1, 25), 40, axis=0)  # a third, motionless body
            w.write_ntu_skeleton(root / f"S001C00{performer % 3 + 1}P{performer:03d}R001A{action:03d}.skeleton", [a, b, still])
    empty = root / "S001C001P001R001A003.skeleton"
    empty.write_text("3\r\n0\r\n0\r\n0\r\n")
    ds = read_all("skeleton", "ntu", str(root))
    assert ds.x["joints"].shape == (8, 3, 32, 25, 2) and ds.layout == "ntu25" and len(ds.classes) == 60
    assert [s.item for s in ds.skipped] == ["S001C001P001R001A003"]
    assert set(ds.meta["subset"][np.isin(ds.meta["subject"], ["P001", "P002"])]) == {"train"}
    assert set(ds.meta["subset"][np.isin(ds.meta["subject"], ["P003", "P006"])]) == {"test"}
    assert np.abs(ds.x["joints"][..., 1]).sum() > 0  # the moving second body was kept, not the still one
    xview = read_all("skeleton", "ntu", str(root), benchmark="xview")
    assert set(xview.meta["subset"][xview.meta["view"] == "C001"]) == {"test"}


def test_ntu_truncated_file_names_file_and_line(tmp_path) -> None:
    rng = np.random.default_rng(8)
    path = w.write_ntu_skeleton(tmp_path / "S001C001P001R001A001.skeleton", [w.moving_skeleton(rng, 5, 25)])
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:70]) + "\n")  # cut inside frame 3
    with pytest.raises(DataError) as err:
        read_all("skeleton", "ntu", str(tmp_path))
    assert "S001C001P001R001A001.skeleton:71" in err.value.message and "truncated" in err.value.message


def test_ntu_npz(tmp_path) -> None:
    rng = np.random.default_rng(9)
    x = np.zeros((12, 300, 150), np.float32)
    x[:, :50] = rng.normal(size=(12, 50, 150))
    y = np.eye(60)[np.arange(12) % 3]
    np.savez(tmp_path / "NTU60_CS.npz", x_train=x[:9], y_train=y[:9], x_test=x[9:], y_test=y[9:])
    ds = read_all("skeleton", "ntu", str(tmp_path / "NTU60_CS.npz"), frames=16)
    assert ds.x["joints"].shape == (12, 3, 16, 25, 2) and (ds.meta["subset"] == "test").sum() == 3
    val = load_dataset("skeleton", "ntu", str(tmp_path / "NTU60_CS.npz"), split="validation")
    assert len(val) == 3  # stratified (no subjects in the npz): one per class
    np.savez(tmp_path / "bad.npz", data=x)
    with pytest.raises(DataError, match="x_train"):
        read_all("skeleton", "ntu", str(tmp_path / "bad.npz"))


# ---------------------------------------------------------------- SEE


def test_see_sequences(tmp_path) -> None:
    rng = np.random.default_rng(10)
    root = w.write_see(tmp_path / "SEE", rng)
    w.write_jpg(root / "frame" / "angry" / "1_004_man_30_PhD_normal_angry_45_take000" / "00000.jpg", np.zeros((8, 8), np.uint8))
    broken = root / "frame" / "happiness" / "1_001_man_24_Master_normal_happiness_45_take000" / "00004.jpg"  # a sampled frame
    broken.write_bytes(b"garbage")
    ds = read_all("eye", "see", str(root), frames=4, size=16)
    assert ds.x["frames"].shape == (35, 4, 1, 16, 16) and ds.x["events"].shape == (35, 4, 2, 16, 16)
    assert set(ds.meta["lighting"]) == {"normal", "overexposed", "low-light", "hdr"}
    reasons = {s.item: s.reason for s in ds.skipped}
    assert reasons["1_004_man_30_PhD_normal_angry_45_take000"] == "not in the split file"
    assert "unreadable image 00004.jpg" in reasons["1_001_man_24_Master_normal_happiness_45_take000"]
    # Red = ON in the top-left square, blue = OFF in the bottom-right one.
    on, off = ds.x["events"][:, :, 0], ds.x["events"][:, :, 1]
    assert on[:, :, 2:4, 2:4].mean() > 0.5 > on[:, :, 10:12, 10:12].mean()
    assert off[:, :, 10:12, 10:12].mean() > 0.5 > off[:, :, 2:4, 2:4].mean()
    test = load_dataset("eye", "see", str(root), split="test", frames=4, size=16)
    assert set(test.meta["subject"]) == {"003"}
    val = load_dataset("eye", "see", str(root), split="validation", frames=4, size=16)
    assert len(set(val.meta["subject"])) == 1 and "003" not in set(val.meta["subject"])


def test_unknown_names_are_usage_errors(tmp_path) -> None:
    with pytest.raises(UsageError, match="did you mean 'msr-action3d'"):
        read_all("skeleton", "msr-action", str(tmp_path))
    with pytest.raises(UsageError, match="sources for skeleton"):
        read_all("skeleton", "fer2013", str(tmp_path))
    with pytest.raises(UsageError, match="needs a PATH"):
        read_all("face", "fer2013")
    with pytest.raises(UsageError, match="did you mean 'validation'"):
        load_dataset("eye", "synthetic", split="valid")
    with pytest.raises(DataError, match="no official test side"):
        load_dataset("eye", "synthetic", split="test", samples=14, subjects=2, size=16)


def test_all_images_corrupt_is_a_clear_empty_dataset_error(tmp_path) -> None:
    root = tmp_path / "faces"
    for name in ("angry", "happy"):
        (root / name).mkdir(parents=True)
        (root / name / "a.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError) as err:
        read_all("face", "imagefolder", str(root))
    assert "no usable samples" in err.value.message and "2 skipped" in err.value.message
    assert "unreadable image" in err.value.message
