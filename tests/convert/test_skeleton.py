"""The spiking skeleton GCN student (`skeleton-sgn`) over 16 frames through 16 channels.

skeleton-mksgn's student runs over 16 frames; its "small" size starts with 16 channels. The
graph mixing over the joints used to flatten a (N, C, T, V) map to (N*C*T, V) and back, and
onnx2tf, reading the 4-D result's layout from its shape, took the 16 frames for the 16
channels and failed at `units.0.gcn.conv`. The spiking self-attention had the same clash: it
folded the frames into the batch, (N*T, V, d) tokens reshaped to (N*T, V, d, 1) and back, and
onnx2tf laid the reshaped maps out wrongly (the float TFLite model off ONNX on every sample
from `units.1.attn` on). A small student with both clashes (skeleton-mksgn's four streams, two
units of 16 channels, attention in the second) converts here, its float TFLite model agrees
with ONNX and torch, and neither module exports a Reshape."""

from __future__ import annotations

import json

import numpy as np

FRAMES, JOINTS, CLASSES = 16, 25, 4
# all four streams as skeleton-mksgn's student: with "joints" alone onnx2tf happened to lay the
# attention's reshaped maps out right, with the four it did not (max |error| 3e-3, 81 % within)
MODALITIES = ("joints", "bones", "joint_motion", "bone_motion")


def _sequences(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {m: rng.normal(0, 2, (n, 3, FRAMES, JOINTS, 1)).astype(np.float32) for m in MODALITIES}


def _student():
    import torch

    from edgekd.models.gcn import SkeletonSGN

    torch.manual_seed(0)
    model = SkeletonSGN("ntu25", CLASSES, channels=[FRAMES, FRAMES], modalities=MODALITIES, attention=[1])
    for m in model.modules():  # spread BN statistics: spikes that vary with the input
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(1.0, 3.0)
    # the attention's products are small (means over joints and features of spikes): its BN takes
    # their statistics on random sequences, so that its LIF fires and the attention shows in the scores
    model.eval()
    bn = model.units[1].attn.attn_bn
    bn.reset_running_stats()
    bn.momentum = None
    bn.train()
    with torch.no_grad():
        model(*map(torch.from_numpy, _sequences(3, 32).values()))
    return model.eval()


def test_16_frame_skeleton_student_converts_with_fp32_agreement(tmp_path) -> None:
    from edgekd.convert.api import ConvertOptions, HeldOut, convert_model
    from edgekd.convert.representative import Representative
    from edgekd.targets import get_target

    xs = _sequences(0, 48)
    y = np.random.default_rng(0).integers(0, CLASSES, 48)
    classes = [f"action{i}" for i in range(CLASSES)]
    held = HeldOut({m: x[:32] for m, x in xs.items()}, y[:32], classes,
                   {"task": "skeleton", "split": "validation", "samples": 32})
    cal = Representative({m: x[32:] for m, x in xs.items()}, y[32:], "random skeleton sequences")
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
        scores = set_export_mode(model, True)(*[torch.from_numpy(x[:32]) for x in xs.values()]).numpy()
    assert np.ptp(scores, axis=0).max() > 1e-3
    # the graph mixing exports with no Reshape around it (the frames cannot pass for channels)
    import onnx

    graph = onnx.load(str(result.out_dir / "model.onnx")).graph
    gcn = [n for n in graph.node if "/gcn/" in n.name]
    assert gcn and not [n.name for n in gcn if n.op_type == "Reshape"]
    # nor does the attention outside its LIF layers (whose per-step split is the neurons' own)
    attn = [n for n in graph.node if "/attn/" in n.name and "_lif/" not in n.name]
    assert attn and not [n.name for n in attn if n.op_type == "Reshape"]


def test_attention_export_form_equals_training_form() -> None:
    import torch

    from edgekd.models.neurons import set_export_mode

    model = _student()
    xs = [torch.from_numpy(x) for x in _sequences(1, 8).values()]
    attn = model.units[1].attn
    s = torch.from_numpy(np.random.default_rng(2).normal(0, 2, (8, FRAMES, FRAMES, JOINTS)).astype(np.float32))
    with torch.no_grad():
        train_scores, train_attn = set_export_mode(model, False)(*xs), attn(s)
        export_scores, export_attn = set_export_mode(model, True)(*xs), attn(s)
    assert (train_scores - export_scores).abs().max() <= 1e-6
    assert (train_attn - export_attn).abs().max() <= 1e-6 and train_attn.abs().max() > 0


EXACT_LIF = {"beta": 0.6, "reset": "subtract", "surrogate": "sigmoid", "alpha": 4.0, "current_clamp": 2.0,
             "membrane_grid": 16}


def test_int8_exact_skeleton_student_computes_its_float_model_in_int8(tmp_path) -> None:
    """`int8_exact` skeleton student (integer membranes, int8 weights, input and added currents on
    model-set grids, logits on a grid) in full int8: the converter pins what the model sets, and
    the int8 model (TFLite's default CPU kernels) gives the float model's logits exactly on
    (nearly) every sample; spike maps and the residual stream are on their grids."""
    import torch

    from edgekd.convert.api import ConvertOptions, HeldOut, convert_model
    from edgekd.convert.representative import Representative
    from edgekd.convert.runtime import TFLiteRunner
    from edgekd.models.gcn import SkeletonSGN
    from edgekd.targets import get_target

    frames, n = 4, 64
    rng = np.random.default_rng(0)
    xs = {m: rng.normal(0, 0.8, (n, 3, frames, JOINTS, 1)).astype(np.float32) for m in MODALITIES}
    torch.manual_seed(0)
    model = SkeletonSGN("ntu25", CLASSES, channels=[8, 8, 16], strides=[1, 1, 2], attention=[1], lif=EXACT_LIF,
                        int8_exact=True)
    with torch.no_grad():  # BN statistics of these inputs, so that every unit fires
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        model.train()
        model(*[torch.from_numpy(x[32:]) for x in xs.values()])
        model.head.weight.mul_(20.0)  # spread the logits over many grid steps: ties would hide a mismatch
    model.eval()
    y = rng.integers(0, CLASSES, n)
    held = HeldOut({m: x[:32] for m, x in xs.items()}, y[:32], [f"action{i}" for i in range(CLASSES)],
                   {"task": "skeleton", "split": "validation", "samples": 32})
    cal = Representative({m: x[32:] for m, x in xs.items()}, y[32:], "random skeleton sequences")
    # converted for the emulated microcontroller: the int8 .tflite on the way, then C
    result = convert_model(model, held, cal, get_target("qemu-mps2-an386"), tmp_path / "exact",
                           options=ConvertOptions(min_calibration_samples=16))
    parity = json.loads((result.out_dir / "parity.json").read_text())
    int8 = next(h for h in parity["hops"] if h["target"] == "tflite-int8")
    assert int8["agreement"] == 1.0, int8
    with torch.no_grad():
        ref = model(*[torch.from_numpy(x[:32]) for x in xs.values()]).numpy()
    assert np.ptp(ref, axis=0).max() > 0.5  # scores that depend on the input
    from edgekd.convert.layout import ModelIO

    io = ModelIO.load(result.out_dir / "io.json")
    got = TFLiteRunner(result.out_dir / "model.int8.tflite", io).predict({m: x[:32] for m, x in xs.items()})
    identical = np.all(np.asarray(got).reshape(ref.shape) == ref, axis=1)
    assert identical.mean() >= 0.9, f"{identical.sum()} of 32 samples with the float model's logits"
    report = json.loads((result.out_dir / "calibration" / "tf_worker_result.json").read_text())["int8"]["pinned_ranges"]
    assert report["spike_maps"] > 0 and report["grid_tensors"] > report["integer_tensors"] > 0

    # On the microcontroller: the C runtime built to round once (as TFLite's CPU kernels do) gives
    # the CPU interpreter's int8 logits bit for bit (built like TFLite's reference kernels, two
    # roundings as TFLite Micro, it need not). The convert directory says the model is int8_exact,
    # so its C source and every firmware command pick that flavour by themselves.
    from edgekd.firmware.api import default_reference, input_arrays, interpreter_outputs, load_inputs
    from edgekd.firmware.host import build_host_model

    tflite = result.out_dir / "model.int8.tflite"
    assert default_reference(tflite) == "tflite-cpu"
    assert "#if !EKD_SINGLE_ROUNDING" in (result.formats["c-int8"] / "model.c").read_text()
    single = build_host_model(tflite, tmp_path / "host-single", reference=default_reference(tflite))
    arrays = input_arrays(load_inputs(result.out_dir / "eval.npz"), single.metadata["inputs"])
    mine = single.run(arrays)
    cpu = interpreter_outputs(tflite, arrays, "tflite-cpu").reshape(mine.shape)
    assert np.array_equal(mine, cpu)
    assert len({row.tobytes() for row in mine}) > 8  # not one answer for every input
