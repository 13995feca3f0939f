"""PKDOT: the optimal-transport structure loss (exact values, zero and invariance properties,
gradients, k against the batch), the hallucination net, joints-only skeleton students, and
distillation through the trainer and the CLI with one or several teachers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from edgekd.cli import main
from edgekd.config import LossTerm, TrainSection
from edgekd.distill.losses import KDOutputs, WeightedLoss
from edgekd.distill.pkdot import (
    Hallucinator,
    anchor_columns,
    cosine_similarity_matrix,
    embedding,
    sinkhorn_divergence,
    structure_divergence,
)
from edgekd.distill.trainer import CHECKPOINT, TensorData, fit
from edgekd.errors import ConfigError
from edgekd.models import build_model, save_model


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: on a shared 2-core machine extra OpenMP threads only wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _embeddings(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the divergence


def test_divergence_values_follow_the_definition() -> None:
    # One point each: the plan is 1 and OT(x, x) = 0, so S = |x - y|^2 / 2 (the cost convention).
    x, y = _embeddings(1, 5, 0), _embeddings(1, 5, 1)
    assert float(sinkhorn_divergence(x, y)) == pytest.approx(0.5 * float(((x - y) ** 2).sum()), rel=1e-5)
    # A translated cloud: every feasible plan pays the same linear term, so S = |t|^2 / 2 exactly
    # (the debiasing removes the entropic part at any epsilon).
    cloud, t = _embeddings(12, 4, 2), torch.tensor([0.3, -0.2, 0.1, 0.05])
    for eps in (0.01, 0.5):
        assert float(sinkhorn_divergence(cloud + t, cloud, eps)) == pytest.approx(0.5 * float((t**2).sum()), rel=1e-4)


def test_zero_for_identical_structures_positive_otherwise() -> None:
    teacher = _embeddings(24, 16, 0)
    s_t = cosine_similarity_matrix(teacher)
    assert float(structure_divergence(s_t.clone(), s_t, k=8)) == 0.0
    # another embedding with the same structure: rotated, scaled, in more dimensions
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(3)))
    student = 2.5 * torch.cat([teacher, torch.zeros(24, 16)], dim=1) @ q
    assert abs(float(structure_divergence(cosine_similarity_matrix(student), s_t, k=8))) < 1e-8
    other = cosine_similarity_matrix(_embeddings(24, 16, 1))
    assert float(structure_divergence(other, s_t, k=8)) > 1e-2


@pytest.mark.parametrize("anchors", ["least", "most"])
def test_invariant_to_a_permutation_applied_to_both(anchors: str) -> None:
    teacher, student = _embeddings(20, 12, 0), _embeddings(20, 6, 1)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(5))
    base = structure_divergence(cosine_similarity_matrix(student), cosine_similarity_matrix(teacher), 7, anchors=anchors)
    permuted = structure_divergence(cosine_similarity_matrix(student[perm]), cosine_similarity_matrix(teacher[perm]), 7,
                                    anchors=anchors)
    assert float(base) > 1e-2
    assert float(permuted) == pytest.approx(float(base), rel=1e-5, abs=1e-7)
    # permuting only one side changes the structure, so the loss sees it
    assert float(structure_divergence(cosine_similarity_matrix(student[perm]), cosine_similarity_matrix(teacher), 7,
                                      anchors=anchors)) != pytest.approx(float(base), rel=1e-3)


def test_the_shift_is_a_constant_of_the_batch() -> None:
    s_t = cosine_similarity_matrix(_embeddings(16, 8, 0))
    student = _embeddings(16, 8, 1).requires_grad_(True)
    grads = []
    for offset in (0.0, 0.3):
        value = structure_divergence(cosine_similarity_matrix(student) + offset, s_t, 6)
        grads.append((float(value), torch.autograd.grad(value, student)[0]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-6)
    # the same gradient as with the minimum taken as a plain number: none flows through it
    s_s = cosine_similarity_matrix(student)
    idx = anchor_columns(s_t, 6)
    by_hand = sinkhorn_divergence((s_s - float(s_s.min())).gather(1, idx), (s_t - s_t.min()).gather(1, idx))
    torch.testing.assert_close(torch.autograd.grad(by_hand, student)[0], grads[0][1], rtol=1e-4, atol=1e-7)


def test_anchors_come_from_the_teacher_and_skip_the_sample_itself() -> None:
    s = cosine_similarity_matrix(_embeddings(10, 4, 0))
    least, most = anchor_columns(s, 3, "least"), anchor_columns(s, 3, "most")
    for i in range(10):
        others = [j for j in range(10) if j != i]
        ranked = sorted(others, key=lambda j: float(s[i, j]))
        assert least[i].tolist() == ranked[:3] and most[i].tolist() == ranked[::-1][:3]


def test_gradient_is_finite_even_for_silent_spiking_samples() -> None:
    student = _embeddings(16, 8, 0).abs()
    student[3] = 0.0  # a sample whose spike maps are all zero
    student.requires_grad_(True)
    loss = structure_divergence(cosine_similarity_matrix(student), cosine_similarity_matrix(_embeddings(16, 8, 1)), 6)
    loss.backward()
    assert torch.isfinite(student.grad).all() and float(student.grad.abs().sum()) > 0
    # descending the gradient lowers the divergence
    with torch.no_grad():
        stepped = student - 0.05 * student.grad / student.grad.norm()
    after = structure_divergence(cosine_similarity_matrix(stepped), cosine_similarity_matrix(_embeddings(16, 8, 1)), 6)
    assert float(after) < float(loss.detach())


def test_embedding_averages_merged_steps_and_trailing_axes() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2 * 3, 4, 5)  # (N*T, C, P), N = 2
    mean = embedding(x, 2)
    torch.testing.assert_close(mean, x.reshape(2, 3, 4, 5).mean(dim=(1, 3)))
    assert embedding(x, 2, pool="flatten").shape == (2, 20)
    with pytest.raises(ConfigError, match="7 rows for a batch of 2"):
        embedding(torch.zeros(7, 4), 2)


# ---------------------------------------------------------------- the loss term and its parameters


def _term(**params) -> LossTerm:
    base = {"student": "s", "teacher": "t", "k": 4}
    base.update(params)
    return LossTerm(name="pkdot", params=base)


def test_k_larger_than_the_batch_is_rejected() -> None:
    loss = WeightedLoss([LossTerm(name="ce"), _term(k=16)])
    loss.check_batch(17)  # 16 other samples: fine
    with pytest.raises(ConfigError, match=r"k = 16 anchors per row, but a batch of 16 samples has only 15") as info:
        loss.check_batch(16)
    assert "params.k" in info.value.hint
    with pytest.raises(ConfigError, match=r"per process \(32 over 4 processes\)"):
        loss.check_batch(32, processes=4)


def test_bad_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'least'"):
        WeightedLoss([_term(anchors="lest")])
    with pytest.raises(ConfigError, match="needs params.teacher"):
        WeightedLoss([LossTerm(name="pkdot", params={"student": "s"})])
    with pytest.raises(ConfigError, match="both params.visual and params.privileged"):
        WeightedLoss([_term(visual="a")])
    with pytest.raises(ConfigError, match="k must be a whole number"):
        WeightedLoss([_term(k=0)])


def test_term_on_features_with_hallucination() -> None:
    g = torch.Generator().manual_seed(0)
    n = 12
    feats = {"s": torch.randn(n, 6, 3, generator=g, requires_grad=True)}
    ref = {"vis": torch.randn(n, 5, generator=g), "priv": torch.randn(n * 2, 4, generator=g)}  # priv on (N*T) rows
    out = KDOutputs(labels=torch.zeros(n, dtype=torch.long), student_logits=torch.zeros(n, 3),
                    teacher_logits=torch.zeros(n, 3), student_features=feats,
                    teacher_features={"t": torch.randn(n, 7, generator=g)}, reference_features=ref)
    loss = WeightedLoss([_term(visual="vis", privileged=["priv"], hallucination_epochs=2)])
    assert loss.reference_paths() == ["priv", "vis"] and loss.teacher_paths() == ["t"]
    loss.build(out)
    term = loss.terms["pkdot"]
    assert term.adapter.in_features == 6 and term.adapter.out_features == 5
    message = term.prepare(lambda: iter([(n, ref)]))
    assert "R^2" in message and term.prepared["samples"] + term.prepared["held_out"] == n
    total, parts = loss(out)
    total.backward()
    assert math.isfinite(float(parts["pkdot"])) and float(parts["pkdot"]) > 0
    assert torch.isfinite(feats["s"].grad).all() and float(feats["s"].grad.abs().sum()) > 0
    assert term.adapter.weight.grad is not None  # trained with the student
    assert all(p.grad is None and not p.requires_grad for p in term.hallucinator.parameters())  # frozen


def test_hallucination_net_learns_a_mapping_then_is_frozen() -> None:
    g = torch.Generator().manual_seed(0)
    visual = torch.randn(1024, 16, generator=g) * 3 + 1
    # privileged features driven by 3 factors of the visual ones (the net's bottleneck is 16/4 = 4)
    privileged = torch.tanh(visual @ torch.randn(16, 3, generator=g) / 4) @ torch.randn(3, 8, generator=g)
    net = Hallucinator(16, 8)
    torch.set_num_threads(2)
    fit_ = net.fit(visual, privileged, epochs=60, lr=3e-3)
    assert torch.get_num_threads() == 2  # it trains on one thread and gives the caller's setting back
    assert fit_["held_out_r2"] > 0.8 and (fit_["samples"], fit_["held_out"]) == (820, 204)
    assert not any(p.requires_grad for p in net.parameters())
    shuffled = Hallucinator(16, 8).fit(visual, privileged[torch.randperm(1024, generator=g)], epochs=60, lr=3e-3)
    assert shuffled["held_out_r2"] < 0.2  # nothing to learn when the pairs are broken


# ---------------------------------------------------------------- joints-only skeleton models


def test_skeleton_models_restricted_to_some_modalities() -> None:
    full = build_model("skeleton-sgn", layout="kinect20", num_classes=4, size="tiny")
    joints = build_model("skeleton-sgn", layout="kinect20", num_classes=4, size="tiny", modalities=["joints"])
    assert full.input_names == ("joints", "bones", "joint_motion", "bone_motion")
    assert joints.input_names == ("joints",) and joints.arch_params["modalities"] == ["joints"]
    assert not any("bones" in k for k in joints.state_dict())
    x = torch.randn(2, 3, 8, 20, 1)
    assert joints(x).shape == (2, 4) and full(x, x, x, x).shape == (2, 4)
    gcn = build_model("skeleton-gcn", layout="kinect20", num_classes=4, channels=[8, 8], strides=[1, 1],
                      modalities=["bone_motion", "bones"])
    assert gcn.input_names == ("bones", "bone_motion") and gcn(x, x).shape == (2, 4)
    with pytest.raises(ConfigError, match="did you mean 'bones'"):
        build_model("skeleton-sgn", layout="kinect20", num_classes=4, modalities=["bonez"])
    with pytest.raises(ConfigError, match="reads joints: 1 inputs, got 4"):
        joints(x, x, x, x)


# ---------------------------------------------------------------- through the trainer


def _skeleton_data(n: int, seed: int) -> TensorData:
    """A learnable toy: the class sets which joint group drifts over the frames."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    joints = torch.randn(n, 3, 8, 20, 1, generator=g) * 0.1
    ramp = torch.linspace(0, 1, 8).reshape(1, 8, 1)
    for i, c in enumerate(y.tolist()):
        joints[i, :, :, c * 5 : c * 5 + 5, 0] += ramp
    bones = joints - joints[:, :, :, torch.clamp(torch.arange(20) - 1, min=0)]
    motion = torch.cat([joints[:, :, 1:] - joints[:, :, :-1], torch.zeros_like(joints[:, :, :1])], dim=2)
    bone_motion = torch.cat([bones[:, :, 1:] - bones[:, :, :-1], torch.zeros_like(bones[:, :, :1])], dim=2)
    inputs = {"joints": joints, "bones": bones, "joint_motion": motion, "bone_motion": bone_motion}
    return TensorData(inputs, y, ["a", "b", "c"])


def _cfg(**kw) -> TrainSection:
    base = dict(epochs=2, batch_size=16, lr=0.01, optimizer="adam", device="cpu")
    base.update(kw)
    return TrainSection(**base)


PKDOT_SKELETON = LossTerm(name="pkdot", weight=0.2, params={
    "student": "units.1", "teacher": "trunk.0", "k": 6, "visual": "stems.joints",
    "privileged": ["stems.bones", "stems.joint_motion", "stems.bone_motion"], "hallucination_epochs": 5})


def _gcn(modalities: list[str], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("skeleton-gcn", layout="kinect20", num_classes=3, channels=[8, 8], strides=[1, 1],
                       modalities=modalities)


def _sgn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("skeleton-sgn", layout="kinect20", num_classes=3, channels=[4, 8], strides=[1, 1],
                       attention=False, modalities=["joints"])


def test_multi_teacher_pkdot_with_hallucination_trains_and_resumes(tmp_path) -> None:
    train, val = _skeleton_data(64, 0), _skeleton_data(16, 1)
    joint = _gcn(["joints", "bones", "joint_motion", "bone_motion"], 1)
    fit(joint, train, val, _cfg(epochs=3), [LossTerm(name="ce")], progress=False, log=lambda _m: None)
    bones = _gcn(["bones", "bone_motion"], 2)  # untrained: the joint teacher has the lower CE
    teachers = [joint, bones]
    losses = [LossTerm(name="ce", weight=0.8), PKDOT_SKELETON]
    messages: list[str] = []

    def stop_after_epoch_1(msg: str) -> None:
        messages.append(msg)
        if msg.startswith("epoch 1/"):
            raise KeyboardInterrupt  # Ctrl-C right after epoch 1's checkpoint

    with pytest.raises(KeyboardInterrupt):
        fit(_sgn(), train, val, _cfg(), losses, teacher=teachers, out_dir=tmp_path, progress=False, log=stop_after_epoch_1)
    rec = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["teacher_1_picked"] + rec["teacher_2_picked"] == pytest.approx(1.0)
    assert rec["teacher_1_picked"] > rec["teacher_2_picked"]
    assert rec["loss_pkdot"] > 0 and np.isfinite(rec["loss"])
    assert any("hallucination net stems.joints -> stems.bones+" in m and "52 training samples" in m for m in messages)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)["loss"]
    assert "terms.pkdot.hallucinator.net.0.weight" in state and "terms.pkdot.adapter.weight" in state
    # resuming restores the hallucination net from the checkpoint instead of training it again
    messages.clear()
    resumed = fit(_sgn(), train, val, _cfg(), losses, teacher=teachers, out_dir=tmp_path, progress=False,
                  log=messages.append)
    assert resumed.resumed_from == 1 and resumed.epochs_run == 2 and not any("hallucination" in m for m in messages)
    after = torch.load(tmp_path / CHECKPOINT, weights_only=True)["loss"]
    torch.testing.assert_close(after["terms.pkdot.hallucinator.net.0.weight"], state["terms.pkdot.hallucinator.net.0.weight"])
    # the teacher set is part of the fingerprint: a run with other teachers does not resume this one
    from edgekd.errors import TrainingError

    with pytest.raises(TrainingError, match="other settings"):
        fit(_sgn(), train, val, _cfg(), losses, teacher=[joint, _gcn(["joints"], 3)], out_dir=tmp_path,
            progress=False, log=lambda _m: None)


def test_hallucination_paths_are_read_on_the_first_teacher_only() -> None:
    train, val = _skeleton_data(32, 0), _skeleton_data(16, 1)
    bones_first = [_gcn(["bones", "bone_motion"], 2), _gcn(["joints", "bones", "joint_motion", "bone_motion"], 1)]
    with pytest.raises(ConfigError, match="teacher 1 has no module 'stems.joint"):
        fit(_sgn(), train, val, _cfg(epochs=1), [LossTerm(name="ce"), PKDOT_SKELETON], teacher=bones_first,
            progress=False, log=lambda _m: None)


def test_fit_rejects_k_above_the_batch_before_training() -> None:
    train, val = _skeleton_data(32, 0), _skeleton_data(16, 1)
    with pytest.raises(ConfigError, match="k = 6 anchors per row, but a batch of 4 samples"):
        fit(_sgn(), train, val, _cfg(epochs=1, batch_size=4), [LossTerm(name="ce"), PKDOT_SKELETON],
            teacher=_gcn(["joints", "bones", "joint_motion", "bone_motion"], 1), progress=False, log=lambda _m: None)


# ---------------------------------------------------------------- through the CLI

TINY_EYE = [
    "data.options.samples=48", "data.options.size=16", "data.options.frames=4",
    "student.params.channels=[4, 8]", "train.epochs=1", "train.batch_size=16",
    "teacher.params.spatial_channels=[4, 8]", "teacher.params.temporal_channels=[4, 8]", "teacher.params.hidden=8",
]


def _set(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _teacher_dir(path, seed: int):
    torch.manual_seed(seed)
    save_model(build_model("eye-hybrid", num_classes=7, spatial_channels=[4, 8], temporal_channels=[4, 8], hidden=8), path)
    return path


def test_cli_distill_with_two_teachers_and_the_k_error(tmp_path, capsys) -> None:
    from edgekd.artifacts import read_manifest

    t1, t2 = _teacher_dir(tmp_path / "t1", 0), _teacher_dir(tmp_path / "t2", 1)
    # eye-pkdot's student path is the last block: 2 blocks here, so address block 1
    paths = ["losses=[{name='ce'}, {name='pkdot', weight=0.6, params={student='features.blocks.1.pool', "
             "teacher='fuse', k=8, visual='spatial', privileged='temporal.blocks.1.pool', hallucination_epochs=2}}]"]
    out = tmp_path / "student"
    assert main(["distill", "--recipe", "eye-pkdot", "--teacher", str(t1), "--teacher", str(t2), "--out", str(out),
                 "--json", *_set(TINY_EYE + paths)]) == 0
    result = json.loads(capsys.readouterr().out)
    manifest = read_manifest(out)
    assert {"teacher_model", "teacher_model_2"} <= set(manifest.inputs)
    assert "teacher_2_val_accuracy" in result["metrics"]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["loss_pkdot"] > 0 and "teacher_2_picked" in lines[0]

    code = main(["distill", "--recipe", "eye-pkdot", "--teacher", str(t1), "--out", str(tmp_path / "bad"),
                 *_set(TINY_EYE + paths + ["train.batch_size=8"])])
    err = capsys.readouterr().err
    assert code == 3 and "k = 8 anchors per row, but a batch of 8 samples has only 7" in err


@pytest.mark.parametrize("name", ["eye-pkdot", "skeleton-pkdot", "skeleton-mtpkdot"])
def test_shipped_pkdot_recipes_address_real_modules(name: str) -> None:
    from edgekd.config import load_recipe

    recipe = load_recipe(name)
    extra = {"layout": "ntu25", "persons": 1} if recipe.task == "skeleton" else {}
    teacher = build_model(recipe.teacher.arch, num_classes=7, **recipe.teacher.params, **extra)
    student = build_model(recipe.student.arch, num_classes=7, **recipe.student.params, **extra)
    privileged = {"eye": {"events"}, "skeleton": {"bones", "joint_motion", "bone_motion"}}[recipe.task]
    assert privileged <= set(teacher.input_names) and not privileged & set(student.input_names)
    loss = WeightedLoss(list(recipe.losses))
    loss.check_batch(recipe.train.batch_size)
    assert set(loss.student_paths()) <= dict(student.named_modules()).keys()
    assert set(loss.teacher_paths() + loss.reference_paths()) <= dict(teacher.named_modules()).keys()
    weights = {t.name: t.weight for t in recipe.losses}
    assert weights == ({"ce": 0.8, "pkdot": 0.2} if "mt" in name else {"ce": 1.0, "pkdot": 0.6})
