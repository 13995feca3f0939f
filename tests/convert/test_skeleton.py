"""The spiking skeleton GCN student (`skeleton-sgn`) over 16 frames through 16 channels.

skeleton-mksgn's student runs over 16 frames; its "small" size starts with 16 channels. The
graph mixing over the joints used to flatten a (N, C, T, V) map to (N*C*T, V) and back, and
onnx2tf, reading the 4-D result's layout from its shape, took the 16 frames for the 16
channels and failed at `units.0.gcn.conv`. The smallest student with that clash (one modality,
one unit of 16 channels, no attention) converts here and its float TFLite model agrees with
ONNX and torch."""

from __future__ import annotations

import json

import numpy as np

FRAMES, JOINTS, CLASSES = 16, 25, 4


def _student():
    import torch

    from edgekd.models.gcn import SkeletonSGN

    torch.manual_seed(0)
    model = SkeletonSGN("ntu25", CLASSES, channels=[FRAMES], modalities=["joints"], attention=False)
    for m in model.modules():  # spread BN statistics: spikes that vary with the input
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(1.0, 3.0)
    return model.eval()


def test_16_frame_skeleton_student_converts_with_fp32_agreement(tmp_path) -> None:
    from edgekd.convert.api import ConvertOptions, HeldOut, convert_model
    from edgekd.convert.representative import Representative
    from edgekd.targets import get_target

    rng = np.random.default_rng(0)
    x = (rng.normal(0, 2, (48, 3, FRAMES, JOINTS, 1))).astype(np.float32)
    y = rng.integers(0, CLASSES, 48)
    classes = [f"action{i}" for i in range(CLASSES)]
    held = HeldOut({"joints": x[:32]}, y[:32], classes, {"task": "skeleton", "split": "validation", "samples": 32})
    cal = Representative({"joints": x[32:]}, y[32:], "random skeleton sequences")
    model = _student()
    result = convert_model(model, held, cal, get_target("local"), tmp_path / "sgn", formats=["tflite-fp32"],
                           options=ConvertOptions(min_calibration_samples=16))
    parity = json.loads((result.out_dir / "parity.json").read_text())
    by = {h["target"]: h for h in parity["hops"]}
    assert parity["ok"] is True, parity
    assert by["onnx"]["agreement"] == 1.0 and by["tflite-fp32"]["agreement"] == 1.0
    assert by["onnx"]["max_abs"] < 1e-4 and by["tflite-fp32"]["max_abs"] < 1e-4
    # the scores depend on the input (a graph that lost the spikes would agree on a constant)
    import torch

    from edgekd.models.neurons import set_export_mode

    with torch.no_grad():
        scores = set_export_mode(model, True)(torch.from_numpy(x[:32])).numpy()
    assert np.ptp(scores, axis=0).max() > 1e-3
    # the graph mixing exports with no Reshape around it (the frames cannot pass for channels)
    import onnx

    graph = onnx.load(str(result.out_dir / "model.onnx")).graph
    gcn = [n for n in graph.node if "/gcn/" in n.name]
    assert gcn and not [n.name for n in gcn if n.op_type == "Reshape"]
