"""`edgekd train` / `edgekd distill` on the shipped recipes (tiny sizes): artifact directories with
manifest metrics, weights_only checkpoints, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from edgekd.artifacts import read_manifest
from edgekd.cli import main
from edgekd.config import load_recipe

TINY_EYE = [
    "data.options.samples=48", "data.options.size=16", "data.options.frames=4",
    "teacher.params.spatial_channels=[4, 8]", "teacher.params.temporal_channels=[4, 8]", "teacher.params.hidden=8",
    "student.params.channels=[4, 8]", "train.epochs=1", "teacher_train.epochs=1", "train.batch_size=16",
    "teacher_train.batch_size=16",
]


def _set(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.mark.parametrize("name", ["eye-mskd", "skeleton-mksgn"])
def test_shipped_recipes_validate(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.teacher and recipe.student and recipe.losses
    from edgekd.distill.losses import LOSSES

    assert all(term.name in LOSSES for term in recipe.losses)


def test_train_then_distill_write_artifacts(tmp_path, capsys) -> None:
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    assert main(["train", "--recipe", "eye-mskd", "--out", str(teacher_dir), "--json", *_set(TINY_EYE)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["parameters"] > 0 and 0.0 <= out["metrics"]["val_accuracy"] <= 1.0
    manifest = read_manifest(teacher_dir)
    assert manifest.stage == "train" and {"model", "arch", "metrics.jsonl"} <= set(manifest.outputs)
    assert "val_accuracy_lighting_low-light" in manifest.metrics or "val_accuracy" in manifest.metrics

    assert main(["distill", "--recipe", "eye-mskd", "--teacher", str(teacher_dir), "--out", str(student_dir),
                 "--json", *_set(TINY_EYE)]) == 0
    out = json.loads(capsys.readouterr().out)
    metrics = read_manifest(student_dir).metrics
    assert metrics["teacher_parameters"] > metrics["parameters"]
    assert set(metrics["firing_rates"]) == {"features.blocks.0.lif", "features.blocks.1.lif"}
    assert str(teacher_dir / "model.pt") in {v["path"] for v in read_manifest(student_dir).inputs.values()}
    state = torch.load(student_dir / "model.pt", weights_only=True)
    assert any(k.startswith("features.") for k in state)
    assert out["stage"] == "distill"


def test_distill_errors_are_clear(tmp_path, capsys) -> None:
    code = main(["distill", "--recipe", "eye-mskd", "--teacher", str(tmp_path / "missing"), *_set(TINY_EYE)])
    assert code == 4 and "no teacher run directory" in capsys.readouterr().err
    code = main(["train", "--recipe", "eye-mskd", "--set", "teacher.arch=eye-hybird", "--out", str(tmp_path / "x"),
                 *_set(TINY_EYE)])
    err = capsys.readouterr().err
    assert code == 3 and "did you mean 'eye-hybrid'" in err


def test_student_alone_keeps_the_recipes_student_regularizers(tmp_path, monkeypatch) -> None:
    from edgekd.distill import api

    seen = {}
    monkeypatch.setattr(api, "_run", lambda recipe, stage, out, section, losses, *a, **k: seen.setdefault(section.arch, losses))
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'name = "r"\ntask = "eye"\n[data]\nsource = "synthetic"\n[teacher]\narch = "eye-hybrid"\n'
        '[student]\narch = "eye-snn"\nparams = { lif = { spike_margin = 0.1 } }\n'
        '[[losses]]\nname = "kd"\n[[losses]]\nname = "spike_margin"\nweight = 5.0\n'
        '[[losses]]\nname = "logit_margin"\nparams = { steps = 2.0 }\n')
    api.train_recipe(str(recipe), model="student", out=tmp_path / "s")
    api.train_recipe(str(recipe), model="teacher", out=tmp_path / "t")
    assert [(t.name, t.weight) for t in seen["eye-snn"]] == [("ce", 1.0), ("spike_margin", 5.0), ("logit_margin", 1.0)]
    assert [t.name for t in seen["eye-hybrid"]] == ["ce"]  # the teacher trains without the student's terms
