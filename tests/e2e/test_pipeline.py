"""The pipeline end to end on tiny sizes: every stage writes its artifact, a rerun skips them all."""

from __future__ import annotations

import json

from tests.helpers import run_cli

TINY = ["data.options.samples=140", "data.options.subjects=7", "teacher_train.epochs=1", "train.epochs=1",
        "convert.calibration_samples=32", "convert.min_agreement=0.0", "convert.max_accuracy_drop=100",
        "convert.float_min_within=0.0"]


def test_run_recipe_through_every_stage_then_skip(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--recipe", "eye-mskd", "--target", "local", "--out", str(out), "--runs", "20", "--json"]
    for item in TINY:
        args += ["--set", item]
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    res = run_cli(*args, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(res.stdout)
    names = [s["name"] for s in result["stages"]]
    assert names == ["01-teacher", "02-student", "03-convert", "04-profile-local", "06-energy-teacher", "06-energy-student"]
    assert all(s["status"] == "done" for s in result["stages"])
    for name in names:
        assert (out / name / "manifest.json").is_file(), name
    profile = json.loads((out / "04-profile-local" / "results.json").read_text())
    assert profile["status"] == "complete" and profile["summary"]["samples_done"] > 0
    energy = json.loads((out / "06-energy-student" / "energy.json").read_text())
    assert energy["label"] == "estimate (45 nm)" and energy["total_mj"] > 0
    page = (out / "report.html").read_text()
    assert 'id="ledger-table"' in page and 'id="training-table"' in page and 'id="energy-bars-eye-snn"' in page

    again = run_cli(*args, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(s["status"] == "skipped" for s in json.loads(again.stdout)["stages"])


def test_every_quickstart_task_is_a_valid_recipe_with_its_overrides():
    """`edgekd quickstart --task eye|skeleton|face`: each built-in entry loads (every override key
    exists in the recipe schema); an unknown task says which exist."""
    import pytest

    from edgekd.config import load_recipe
    from edgekd.errors import UsageError
    from edgekd.pipeline import QUICKSTART, quickstart

    assert set(QUICKSTART) == {"eye", "skeleton", "face"}
    for task, (name, overrides) in QUICKSTART.items():
        recipe = load_recipe(name, [*overrides, "seed=1"])
        assert recipe.task == task and recipe.seed == 1
    face = load_recipe(*QUICKSTART["face"])
    assert face.teacher.params["size"] == "C" and face.student.params["size"] == "tiny"
    with pytest.raises(UsageError, match="tasks with a quickstart: eye, face, skeleton"):
        quickstart("ears", None, 0, ["local"])
