import json
import os

import pytest

from edgekd.artifacts import (
    MANIFEST_NAME,
    atomic_write_bytes,
    is_up_to_date,
    read_manifest,
    sha256_file,
    stage_dir,
)
from edgekd.errors import ArtifactError, NotFoundError


def test_stage_writes_manifest_with_inputs_outputs_params_tools(tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"abc")
    out_dir = tmp_path / "run" / "01-train"
    with stage_dir(out_dir, "train", params={"epochs": 3, "lr": 0.1}, inputs={"data": src}) as sd:
        sd.file("model.bin").write_bytes(b"weights")
        sd.set_metrics(accuracy=0.75)
    m = json.loads((out_dir / MANIFEST_NAME).read_text())
    assert m["schema"].startswith("edgekd.manifest/")
    assert m["stage"] == "train"
    assert m["params"] == {"epochs": 3, "lr": 0.1}
    assert m["inputs"]["data"]["sha256"] == sha256_file(src)
    assert m["outputs"]["model.bin"] == {"path": "model.bin", "sha256": sha256_file(out_dir / "model.bin")}
    assert m["metrics"] == {"accuracy": 0.75}
    assert m["tools"]["python"] and m["tools"]["numpy"]
    assert m["started"] <= m["finished"]


def test_interrupted_stage_leaves_no_manifest_and_is_redone(tmp_path):
    out_dir = tmp_path / "02-convert"
    with pytest.raises(KeyboardInterrupt):
        with stage_dir(out_dir, "convert", params={"a": 1}) as sd:
            sd.file("partial.tflite").write_bytes(b"half")
            raise KeyboardInterrupt
    assert not (out_dir / MANIFEST_NAME).exists()
    assert not is_up_to_date(out_dir, {"a": 1})
    with pytest.raises(ArtifactError, match="did not finish"):
        read_manifest(out_dir)


def test_failed_redo_removes_the_old_manifest(tmp_path):
    out_dir = tmp_path / "s"
    with stage_dir(out_dir, "s", params={"v": 1}) as sd:
        sd.file("o").write_text("1")
    assert is_up_to_date(out_dir, {"v": 1})
    with pytest.raises(RuntimeError):
        with stage_dir(out_dir, "s", params={"v": 2}):
            raise RuntimeError("boom")
    assert not (out_dir / MANIFEST_NAME).exists()


def test_up_to_date_tracks_params_inputs_and_outputs(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("one")
    out_dir = tmp_path / "s"
    with stage_dir(out_dir, "s", params={"seed": 0}, inputs={"src": src}) as sd:
        sd.file("o.txt").write_text("out")
    assert is_up_to_date(out_dir, {"seed": 0}, {"src": src})
    assert not is_up_to_date(out_dir, {"seed": 1}, {"src": src})
    src.write_text("two")
    assert not is_up_to_date(out_dir, {"seed": 0}, {"src": src})
    src.write_text("one")
    (out_dir / "o.txt").write_text("tampered")
    assert not is_up_to_date(out_dir, {"seed": 0}, {"src": src})


def test_stage_missing_declared_output_fails(tmp_path):
    with pytest.raises(ArtifactError, match="did not write"):
        with stage_dir(tmp_path / "s", "s") as sd:
            sd.file("never-written.bin")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "b.bin"
    atomic_write_bytes(target, b"x" * 10)
    atomic_write_bytes(target, b"y")
    assert target.read_bytes() == b"y"
    assert os.listdir(target.parent) == ["b.bin"]


def test_read_manifest_of_missing_dir_is_not_found(tmp_path):
    with pytest.raises(NotFoundError):
        read_manifest(tmp_path / "nope")


def test_read_manifest_rejects_foreign_json(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text('{"hello": 1}')
    with pytest.raises(ArtifactError, match="not an edgekd manifest"):
        read_manifest(tmp_path)
