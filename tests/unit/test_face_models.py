"""Face models (ResEmoteNet and its channel-cut students): parameter counts of the teacher and
of students A/B/C/tiny, forward shapes at 48x48 and 64x64, the embedding module, clear errors
for conflicting sizes, ONNX export (runtime ops, same scores in onnxruntime), and the
face-mini-resemotenet recipe through `edgekd train` / `edgekd distill` on small synthetic data."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from edgekd.artifacts import read_manifest
from edgekd.cli import main
from edgekd.config import load_recipe
from edgekd.errors import ConfigError
from edgekd.models import build_model, count_parameters, load_model
from edgekd.models.resemotenet import FULL_CHANNELS, SIZES, count_resemotenet_parameters

ARCH = "face-resemotenet"
# ONNX ops whose int8 TFLite counterparts the C runtime has (CONV_2D, DEPTHWISE_CONV_2D,
# FULLY_CONNECTED, MAX_POOL_2D, MEAN, MUL, ADD, LOGISTIC, RELU, RESHAPE).
FIRMWARE_ONNX_OPS = {"Conv", "Gemm", "MatMul", "Relu", "MaxPool", "ReduceMean", "GlobalAveragePool", "Sigmoid",
                     "Mul", "Add", "Reshape", "Flatten", "Unsqueeze", "Constant", "Identity"}


@pytest.fixture(scope="module")
def teacher_on_meta():
    """The 80 M-parameter teacher built once without memory (meta tensors): shapes only."""
    with torch.device("meta"):
        return build_model(ARCH, size="full")


def test_teacher_has_about_80m_parameters(teacher_on_meta) -> None:
    n = count_parameters(teacher_on_meta)
    assert 78_000_000 <= n <= 82_000_000  # SEEDS: "about 80 M parameters"
    assert n == count_resemotenet_parameters(size="full")
    assert teacher_on_meta.channels == FULL_CHANNELS
    # the paper's 64x64 input (and FER2013's 48x48) through the teacher, shapes only
    for side in (64, 48):
        out = teacher_on_meta.eval()(torch.empty(2, 1, side, side, device="meta"))
        assert out.shape == (2, 7)


@pytest.mark.parametrize("size,cut", [("A", 0.5), ("B", 0.75), ("C", 0.875)])
def test_students_cut_every_layer(size: str, cut: float, teacher_on_meta) -> None:
    with torch.device("meta"):
        student = build_model(ARCH, size=size)
    assert student.channels == tuple(round(c * (1 - cut)) for c in FULL_CHANNELS)
    # Parameters scale with the square of the width (conv kernels are c_in x c_out).
    ratio = count_parameters(student) / count_parameters(teacher_on_meta)
    assert (1 - cut) ** 2 * 0.95 <= ratio <= (1 - cut) ** 2 * 1.05
    assert count_parameters(student) == count_resemotenet_parameters(size=size)
    assert count_resemotenet_parameters(width=1 - cut) == count_parameters(student)


def test_tiny_student_fits_a_microcontroller() -> None:
    tiny = build_model(ARCH, size="tiny")
    n = count_parameters(tiny)
    assert n < 100_000 and n == count_resemotenet_parameters(size="tiny")
    assert tiny.separable and any(m.groups > 1 for m in tiny.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("side", [48, 64])
@pytest.mark.parametrize("size", ["C", "tiny"])
def test_forward_shapes_and_embedding(size: str, side: int) -> None:
    model = build_model(ARCH, size=size, num_classes=7).eval()
    seen = {}
    handle = model.embedding.register_forward_hook(lambda _m, _i, out: seen.setdefault("e", out))
    with torch.no_grad():
        out = model(torch.rand(3, 1, side, side))
    handle.remove()
    assert out.shape == (3, 7)
    assert seen["e"].shape == (3, model.embedding_dim) and model.embedding_dim == model.channels[-1] // 8
    assert "embedding" in dict(model.named_modules())


def test_width_and_channels_build_other_sizes() -> None:
    assert build_model(ARCH, width=0.0625).channels == tuple(c // 16 for c in FULL_CHANNELS)
    custom = build_model(ARCH, channels=[4, 8, 8, 16, 16, 16], separable=True, num_classes=3)
    assert custom(torch.rand(2, 1, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("params,message", [
    ({"size": "A", "width": 0.5}, "one of size, width, channels"),
    ({"size": "tiny", "separable": False}, "fixes separable"),
    ({"size": "a"}, "did you mean 'A'"),
    ({"width": 0.0}, "width must be"),
    ({"channels": [8, 16, 32]}, "six positive integers"),
    ({"dropout": [0.2]}, "two rates"),
])
def test_conflicting_or_wrong_sizes_are_config_errors(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model(ARCH, **params)


def test_wrong_input_shape_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"\(N, 1, H, W\)"):
        build_model(ARCH, size="tiny")(torch.rand(2, 3, 48, 48))


def test_every_size_is_named_in_the_table() -> None:
    assert set(SIZES) == {"full", "A", "B", "C", "tiny"}


def test_dropout_is_the_papers_except_for_the_tiny_head() -> None:
    assert build_model(ARCH, size="C").dropout_rates == (0.2, 0.5)
    assert build_model(ARCH, width=0.1).dropout_rates == (0.2, 0.5)
    tiny = build_model(ARCH, size="tiny")
    assert tiny.dropout_rates == SIZES["tiny"]["dropout"] and tiny.dropout_rates[1] < 0.5
    assert build_model(ARCH, size="tiny", dropout=[0.1, 0.2]).dropout_rates == (0.1, 0.2)


@pytest.mark.parametrize("size", ["tiny", "C"])
def test_student_exports_to_onnx_with_runtime_ops(size: str) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model(ARCH, size=size).eval()
    # Non-trivial BN statistics, so folding them into the convs is really exercised.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(4, 1, 48, 48)
    buf = io.BytesIO()
    torch.onnx.export(model, (x[:1],), buf, opset_version=17, dynamo=False, do_constant_folding=True,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "n"}})
    proto = onnx.load_from_string(buf.getvalue())
    ops = {node.op_type for node in proto.graph.node}
    assert ops <= FIRMWARE_ONNX_OPS, ops - FIRMWARE_ONNX_OPS
    assert "BatchNormalization" not in ops  # every BN follows a conv: folded
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _set(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


SMALL = ["data.options.samples=140", "data.options.subjects=10", "data.options.size=32",
         "train.epochs=1", "teacher_train.epochs=1", "train.batch_size=32", "teacher_train.batch_size=32",
         'teacher.params={size="C"}', 'student.params={size="tiny"}']


def test_recipe_trains_teacher_and_distills_students(tmp_path, capsys) -> None:
    recipe = load_recipe("face-mini-resemotenet")
    assert recipe.task == "face" and recipe.teacher.params == {"size": "full"}
    assert [t.name for t in recipe.losses] == ["ce", "kd"]
    assert sum(t.weight for t in recipe.losses) == pytest.approx(1.0)  # (1 - alpha) CE + alpha KD

    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    assert main(["train", "--recipe", "face-mini-resemotenet", "--out", str(teacher_dir), "--json", *_set(SMALL)]) == 0
    capsys.readouterr()
    assert main(["distill", "--recipe", "face-mini-resemotenet", "--teacher", str(teacher_dir),
                 "--out", str(student_dir), "--json", *_set(SMALL)]) == 0
    out = json.loads(capsys.readouterr().out)
    metrics = read_manifest(student_dir).metrics
    assert metrics["teacher_parameters"] == count_resemotenet_parameters(size="C")
    assert metrics["parameters"] == count_resemotenet_parameters(size="tiny")
    assert 0.0 <= out["metrics"]["val_accuracy"] <= 1.0
    arch = json.loads((student_dir / "arch.json").read_text())
    assert arch["arch"] == ARCH and arch["params"]["size"] == "tiny" and arch["input_names"] == ["image"]
    reloaded = load_model(student_dir, expect_arch=ARCH)
    assert reloaded(torch.rand(2, 1, 32, 32)).shape == (2, 7)
    history = [json.loads(line) for line in (student_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_ce", "loss_kd"} <= set(history[0])


def test_int8_exact_face_student_puts_every_activation_on_a_grid_set_by_data() -> None:
    """int8_exact: before training the grids pass values through; a training batch sets each
    grid's step from the activations' running max; evaluation equals the export form, and the
    logits are whole steps of the logit grid."""
    import torch

    from edgekd.models.int8 import ActivationGrid
    from edgekd.models.neurons import set_export_mode
    from edgekd.models.resemotenet import ResEmoteNet

    torch.manual_seed(0)
    model = ResEmoteNet(7, size="tiny", int8_exact=True)
    grids = [m for m in model.modules() if isinstance(m, ActivationGrid)]
    assert len(grids) == 3 + 3 + 3 * 4 + 1 + 3 + 1 and all(g.step == 0.0 for g in grids)
    x = torch.rand(6, 1, 48, 48)
    model.train()
    model(x).sum().backward()
    assert all(g.step > 0 for g in grids)
    assert model.classifier.weight.grad is not None
    model.eval()
    with torch.no_grad():
        ref = model(x)
        exported = set_export_mode(model, True)(x)
    assert torch.equal(exported, ref)
    steps = ref / model.logit_grid.step
    assert torch.allclose(steps, torch.round(steps), atol=1e-3) and float(ref.std()) > 0
