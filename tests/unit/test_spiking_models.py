"""Students and teachers: shapes, sizes, export mode (same outputs, allowed ONNX ops), firing
rates, checkpoints (weights_only, wrong architecture -> clear error)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from edgekd.errors import ArtifactError, ConfigError
from edgekd.models import build_model, count_parameters, firing_rates, load_model, save_model
from edgekd.models.neurons import set_export_mode

SKELETON_INPUTS = ("joints", "bones", "joint_motion", "bone_motion")
# ONNX ops whose TFLite counterparts are in the int8 runtime's list (CONV_2D, FULLY_CONNECTED,
# ADD, SUB, MUL, FLOOR, DEQUANTIZE/QUANTIZE, CONCATENATION, TRANSPOSE, PAD, MEAN, RESHAPE, pooling).
ALLOWED_ONNX_OPS = {
    "Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Floor", "Concat", "Transpose", "Pad",
    "ReduceMean", "GlobalAveragePool", "AveragePool", "MaxPool", "Reshape", "Flatten", "Constant", "Identity",
    "BatchNormalization",  # a BN not folded into a conv (after a spike sum) lowers to MUL + ADD in TFLite
}


def _skeleton_inputs(n: int, t: int, v: int, m: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, 3, t, v, m, generator=g) for _ in SKELETON_INPUTS]


def test_eye_student_sizes_and_shapes() -> None:
    tiny = build_model("eye-snn", num_classes=7, size="tiny")
    small = build_model("eye-snn", num_classes=7, size="small")
    assert count_parameters(tiny) < 100_000 and count_parameters(small) > count_parameters(tiny)
    frames = torch.rand(2, 5, 1, 16, 16)
    assert tiny(frames).shape == (2, 7)
    assert tiny.forward_steps(frames).shape == (2, 5, 7)
    # (N, T*C, H, W) is the same input flattened over time (the exported layout)
    tiny.eval()
    torch.testing.assert_close(tiny(frames), tiny(frames.reshape(2, 5, 16, 16)))
    teacher = build_model("eye-hybrid", num_classes=7, spatial_channels=[4, 8], temporal_channels=[4, 8], hidden=8)
    assert teacher.forward_steps(frames, torch.rand(2, 5, 2, 16, 16)).shape == (2, 5, 7)
    assert count_parameters(teacher) > 0


@pytest.mark.parametrize("layout,v", [("ntu25", 25), ("kinect20", 20)])
def test_skeleton_models_for_both_layouts(layout: str, v: int) -> None:
    student = build_model("skeleton-sgn", layout=layout, num_classes=5, size="tiny", persons=2)
    teacher = build_model("skeleton-gcn", layout=layout, num_classes=5, channels=[8, 8, 16], strides=[1, 2, 1], persons=2)
    x = _skeleton_inputs(2, 8, v, 2)
    assert student(*x).shape == (2, 5) and teacher(*x).shape == (2, 5)
    assert count_parameters(build_model("skeleton-sgn", layout=layout, num_classes=60, size="tiny")) < 100_000


def test_unknown_architecture_or_parameter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="did you mean 'eye-snn'"):
        build_model("eye-sn")
    with pytest.raises(ConfigError, match="no parameter 'chanels'"):
        build_model("eye-snn", chanels=[4])


@pytest.mark.parametrize("coding", [{}, {"onset_difference": True, "lif": {"current_clamp": 1.5}}])
def test_export_mode_equals_training_graph_in_eval(coding: dict) -> None:
    torch.manual_seed(0)
    eye = build_model("eye-snn", num_classes=7, channels=[4, 8], **coding).eval()
    frames = torch.rand(3, 4, 1, 16, 16)
    ref = eye(frames)
    set_export_mode(eye, True)
    torch.testing.assert_close(eye(frames), ref)
    if coding:  # frame, frame difference and onset difference: three input channels
        assert eye.features.blocks[0]["conv"].in_channels == 3
    sgn = build_model("skeleton-sgn", layout="kinect20", num_classes=4, channels=[4, 8], strides=[1, 2]).eval()
    x = _skeleton_inputs(2, 6, 20)
    ref = sgn(*x)
    set_export_mode(sgn, True)
    torch.testing.assert_close(sgn(*x), ref)


def _onnx_ops(model: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> set[str]:
    onnx = pytest.importorskip("onnx")
    buf = io.BytesIO()
    torch.onnx.export(model, args, buf, opset_version=17, dynamo=False, do_constant_folding=True)
    return {node.op_type for node in onnx.load_from_string(buf.getvalue()).graph.node}


def test_exported_students_use_only_runtime_ops() -> None:
    eye = set_export_mode(build_model("eye-snn", num_classes=7, channels=[4, 8]).eval(), True)
    ops = _onnx_ops(eye, (torch.rand(1, 4, 16, 16),))
    assert "Floor" in ops and ops <= ALLOWED_ONNX_OPS, ops - ALLOWED_ONNX_OPS
    clamped = set_export_mode(build_model("eye-snn", num_classes=7, channels=[4, 8], onset_difference=True,
                                          lif={"current_clamp": 2.0}).eval(), True)
    ops = _onnx_ops(clamped, (torch.rand(1, 4, 16, 16),))
    assert "Clip" in ops and ops <= ALLOWED_ONNX_OPS | {"Clip"}, ops - ALLOWED_ONNX_OPS
    sgn = set_export_mode(build_model("skeleton-sgn", layout="kinect20", num_classes=4, channels=[4, 4],
                                      strides=[1, 1]).eval(), True)
    ops = _onnx_ops(sgn, tuple(_skeleton_inputs(1, 4, 20)))
    assert "Floor" in ops and ops <= ALLOWED_ONNX_OPS, ops - ALLOWED_ONNX_OPS


def test_firing_rates_per_layer() -> None:
    torch.manual_seed(0)
    model = build_model("eye-snn", num_classes=3, channels=[4, 8])
    model.train()
    model(torch.rand(8, 3, 1, 8, 8))  # one training-mode pass sets BN statistics to the data
    rates = firing_rates(model, [(torch.rand(4, 3, 1, 8, 8),), (torch.rand(4, 3, 1, 8, 8),)])
    assert list(rates) == ["features.blocks.0.lif", "features.blocks.1.lif"]
    assert all(0.0 <= r <= 1.0 for r in rates.values())
    assert rates["features.blocks.0.lif"] > 0
    assert model.training  # restored


def test_checkpoint_round_trip_weights_only_and_wrong_architecture(tmp_path) -> None:
    model = build_model("eye-snn", num_classes=7, channels=[4, 8])
    save_model(model, tmp_path)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == set(model.state_dict())
    again = load_model(tmp_path, expect_arch="eye-snn")
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    with pytest.raises(ConfigError, match="holds a 'eye-snn' model"):
        load_model(tmp_path, expect_arch="skeleton-sgn")
    desc = json.loads((tmp_path / "arch.json").read_text())
    desc["params"]["channels"] = [4, 16]
    (tmp_path / "arch.json").write_text(json.dumps(desc))
    with pytest.raises(ArtifactError, match="does not fit architecture 'eye-snn'.*another shape"):
        load_model(tmp_path)


EXACT_LIF = {"beta": 0.6, "reset": "subtract", "surrogate": "sigmoid", "alpha": 4.0, "current_clamp": 2.0,
             "membrane_grid": 16}


def test_skeleton_student_int8_exact_keeps_every_added_current_on_the_membrane_grid() -> None:
    """int8_exact skeleton student: evaluation equals its export form; the unit outputs (the
    residual stream) are whole steps of threshold / K inside int8's range; logits on the 1/8 grid;
    settings int8 cannot run exactly are refused."""
    from edgekd.models.gcn import LOGIT_LEVELS, SkeletonSGN

    with pytest.raises(ConfigError, match="membrane_grid"):
        SkeletonSGN("ntu25", 5, size="tiny", int8_exact=True)
    with pytest.raises(ConfigError, match="persons"):
        SkeletonSGN("ntu25", 5, size="tiny", int8_exact=True, lif=EXACT_LIF, persons=2)
    torch.manual_seed(0)
    model = SkeletonSGN("ntu25", 5, channels=[8, 8, 16], strides=[1, 1, 2], attention=[1], lif=EXACT_LIF,
                        int8_exact=True)
    xs = [torch.randn(4, 3, 8, 25, 1) for _ in range(4)]
    model.train()
    model(*xs).sum().backward()  # trains: straight-through rounding everywhere
    assert model.units[1].attn.q.conv.weight.grad is not None
    with torch.no_grad():  # BN statistics of these inputs, so that the units fire
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model(*xs)
    model.eval()
    streams = []
    hooks = [u.register_forward_hook(lambda m, i, o: streams.append(o)) for u in model.units]
    with torch.no_grad():
        ref = model(*xs)
        for h in hooks:
            h.remove()
        exported = set_export_mode(model, True)(*xs)
    assert torch.equal(exported, ref)
    assert torch.equal(ref * LOGIT_LEVELS, torch.round(ref * LOGIT_LEVELS))
    for s in streams:
        assert torch.equal(s * 16, torch.round(s * 16)) and float(s.abs().max()) <= 8.0
    assert len({tuple(r.tolist()) for r in ref}) > 1  # the logits depend on the input
