"""Fast tests of the conversion chain's parts that need no TensorFlow: layouts, the parity
arithmetic, calibration diagnosis, chain planning, compiler-log parsing, the torch -> ONNX hop
and the checks that must fail before any conversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekd.convert.layout import ModelIO, TensorSig, candidate_perms, channel_last_perm, from_tflite_layout, to_tflite_layout
from edgekd.convert.parity import Ledger, ParityLimits, compare, failure_error
from edgekd.convert.representative import diagnose
from edgekd.errors import ConversionError, DataError, NotFoundError, ParityError, UsageError
from edgekd.targets import get_target

# ---------------------------------------------------------------- layouts


def test_channel_last_rule_and_candidates() -> None:
    assert channel_last_perm(4) == (0, 2, 3, 1)
    assert channel_last_perm(5) == (0, 2, 3, 4, 1)  # eye (N, T, 1, H, W) -> (N, 1, H, W, T)
    assert channel_last_perm(2) == (0, 1)
    assert candidate_perms((1, 8, 1, 32, 32), (1, 1, 32, 32, 8)) == [(0, 2, 3, 4, 1)]
    assert candidate_perms((1, 3, 16, 16), (1, 3, 16, 16)) == [(0, 1, 2, 3)]
    assert candidate_perms((1, 4, 4, 4), (1, 4, 4, 4)) == [(0, 2, 3, 1), (0, 1, 2, 3)]  # ambiguous: the rule first
    assert candidate_perms((1, 3, 16, 16), (1, 16, 3, 16)) == []


def test_layout_round_trip_and_signature_file(tmp_path: Path) -> None:
    x = np.arange(2 * 8 * 1 * 4 * 5, dtype=np.float32).reshape(2, 8, 1, 4, 5)
    perm = channel_last_perm(5)
    t = to_tflite_layout(x, perm)
    assert t.shape == (2, 1, 4, 5, 8)
    assert t[1, 0, 2, 3, 6] == x[1, 6, 0, 2, 3]
    np.testing.assert_array_equal(from_tflite_layout(t, perm), x)
    io = ModelIO([TensorSig("frames", (1, 8, 1, 4, 5), tflite_perm=perm)], [TensorSig("logits", (1, 7))])
    back = ModelIO.load(io.save(tmp_path / "io.json"))
    assert back.inputs[0].tflite_shape == (1, 1, 4, 5, 8)
    assert json.loads((tmp_path / "io.json").read_text())["inputs"][0]["tflite_shape"] == [1, 1, 4, 5, 8]


# ---------------------------------------------------------------- parity arithmetic


def _scores(labels: np.ndarray, k: int, margin: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = rng.normal(0, 0.3, (len(labels), k)).astype(np.float32)
    s[np.arange(len(labels)), labels] += margin
    return s


def test_float_hop_passes_within_tolerance_and_fails_beyond() -> None:
    y = np.repeat(np.arange(4), 25)
    ref = _scores(y, 4)
    ok = compare("torch-fp32", "onnx", ref, ref + 1e-6, y, ["a", "b", "c", "d"], "float", ParityLimits())
    assert ok.ok and ok.agreement == 1.0 and ok.max_abs < 1e-5 and ok.accuracy_delta == 0.0
    bad = compare("onnx", "tflite-fp32", ref, ref + 0.5, y, None, "float", ParityLimits())
    assert not bad.ok
    assert "max |error|" in bad.failures[0] and "0.5" in bad.failures[0]


def test_spike_flip_on_one_sample_is_tolerated_by_the_share_rule() -> None:
    y = np.repeat(np.arange(4), 50)
    ref = _scores(y, 4)
    cand = ref.copy()
    cand[0] += 0.8  # one sample moved by a flipped spike, same top-1
    hop = compare("onnx", "tflite-fp32", ref, cand, y, None, "float", ParityLimits())
    assert hop.ok and hop.max_abs == pytest.approx(0.8, abs=1e-5) and hop.within_tolerance == pytest.approx(0.995)


def test_quantized_hop_reports_worst_classes_and_fails_with_numbers(tmp_path: Path) -> None:
    y = np.repeat(np.arange(4), 25)
    ref = _scores(y, 4)
    cand = ref.copy()
    broken = np.flatnonzero(y == 2)[:10]  # class 'c' loses 10 of 25
    cand[broken, 2] -= 10
    hop = compare("tflite-fp32", "tflite-int8", ref, cand, y, ["a", "b", "c", "d"], "quantized",
                  ParityLimits(max_accuracy_drop=1.0, min_agreement=0.98))
    assert not hop.ok
    assert hop.accuracy_delta == pytest.approx(-10.0)
    assert hop.agreement == pytest.approx(0.9)
    assert hop.worst_classes[0]["class"] == "c" and hop.worst_classes[0]["drop_points"] == pytest.approx(40.0)
    ledger = Ledger([hop], {"split": "validation"})
    path = ledger.write(tmp_path / "parity.json")
    err = failure_error(hop, path)
    assert isinstance(err, ParityError)
    assert "10.00 points" in err.message and "90.00 %" in err.message and "c 100 -> 60 %" in err.message
    assert json.loads(path.read_text())["ok"] is False
    rows = ledger.table()
    assert [r["format"] for r in rows] == ["tflite-fp32", "tflite-int8"]


def test_near_ties_within_one_output_step_are_counted_apart() -> None:
    # 100 samples: 20 whose two best scores differ by 0.01 (below the int8 step 0.05), of which
    # the candidate flips 5; and 1 flip among the 80 clear ones.
    ref = np.zeros((100, 3), np.float32)
    ref[:, 0] = 1.0
    ref[:20, 1] = 0.99
    cand = ref.copy()
    cand[:5, 1] = 1.02
    cand[50, 2] = 2.0
    hop = compare("tflite-fp32", "tflite-int8", ref, cand, None, None, "quantized",
                  ParityLimits(min_agreement=0.98), output_step=0.05)
    assert hop.agreement == pytest.approx(0.94)
    assert hop.near_ties == pytest.approx(0.20)
    assert hop.agreement_beyond_ties == pytest.approx(79 / 80)
    assert "20.0 % of samples are within one int8 output step (0.05) of a tie; agreement on the others 98.75 %" in hop.failures[0]
    plain = compare("tflite-fp32", "tflite-fp16", ref, cand, None, None, "quantized", ParityLimits(min_agreement=0.98))
    assert plain.near_ties is None and "tie" not in plain.failures[0]


def test_score_shape_mismatch_is_a_parity_error() -> None:
    with pytest.raises(ParityError, match="score shapes differ"):
        compare("a", "b", np.zeros((3, 4)), np.zeros((3, 5)), None, None, "float", ParityLimits())


# ---------------------------------------------------------------- calibration diagnosis


def _cal(n: int = 64, shape: tuple[int, ...] = (1, 16, 16), scale: float = 1.0) -> dict[str, np.ndarray]:
    return {"image": (np.random.default_rng(0).random((n, *shape)) * scale).astype(np.float32)}


def test_calibration_ok_and_each_bad_case_named() -> None:
    shapes = {"image": (1, 1, 16, 16)}
    ref = _cal(100)
    assert diagnose(_cal(), shapes, ref) == []
    with pytest.raises(DataError, match="has 8 samples; at least 32"):
        diagnose(_cal(8), shapes, ref)
    with pytest.raises(DataError, match="channel-last"):
        diagnose(_cal(shape=(16, 16, 1)), {"image": (1, 1, 16, 16)}, None)
    with pytest.raises(DataError, match="spans .* a different scaling"):
        diagnose(_cal(scale=255.0), shapes, ref)
    with pytest.raises(DataError, match="no 'image'"):
        diagnose({"x": _cal()["image"]}, shapes, ref)
    nan = _cal()
    nan["image"][0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="1 NaN"):
        diagnose(nan, shapes, ref)
    with pytest.raises(DataError, match="constant"):
        diagnose({"image": np.zeros((40, 1, 16, 16), np.float32)}, shapes, ref)
    with pytest.raises(DataError, match="per-sample shape \\[1, 8, 8\\]"):
        diagnose(_cal(shape=(1, 8, 8)), shapes, ref)


# ---------------------------------------------------------------- planning the chain


def test_plan_follows_the_target_and_rejects_what_it_cannot_run() -> None:
    from edgekd.convert.api import plan_chain

    local = plan_chain(get_target("local"), None, None)
    assert local.tflite_modes == ["fp32", "fp16", "dynamic-int8", "int8"] and local.per_channel
    coral = plan_chain(get_target("coral-usb"), None, None)
    assert coral.formats == ["edgetpu", "tflite-int8"] and coral.per_channel is False
    mcu = plan_chain(get_target("qemu-mps2-an386"), None, None)
    assert mcu.formats == ["c-int8"] and mcu.tflite_modes == ["fp32", "int8"]
    jetson = plan_chain(get_target("jetson-nano"), ["onnx", "tensorrt"], None)
    assert jetson.tflite_modes == []
    with pytest.raises(UsageError, match="did you mean 'tflite-int8'"):
        plan_chain(get_target("local"), ["tflite-int"], None)
    with pytest.raises(UsageError, match="cannot run format 'c-int8'"):
        plan_chain(get_target("local"), ["c-int8"], None)
    with pytest.raises(UsageError, match="per-tensor"):
        plan_chain(get_target("coral-usb"), None, True)
    # an int8_exact model: the default chain leaves out the formats that cannot compute it exactly,
    # and says so; asked for by name they stay
    exact = plan_chain(get_target("local"), None, None, int8_exact=True)
    assert exact.tflite_modes == ["fp32", "int8"] and "tflite-fp16" not in exact.formats
    assert any("int8_exact" in n and "--formats" in n for n in exact.notes)
    named = plan_chain(get_target("local"), ["tflite-fp16", "tflite-int8"], None, int8_exact=True)
    assert named.tflite_modes == ["fp32", "fp16", "int8"] and not named.notes


# ---------------------------------------------------------------- Edge TPU compiler log

COMPILER_LOG = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 352 ms.

Input model: model.int8.tflite
Input size: 24.33KiB
Output model: out/model.int8_edgetpu.tflite
Output size: 87.31KiB
On-chip memory used for caching model parameters: 21.00KiB
On-chip memory remaining for caching model parameters: 7.73MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 12
Operation log: out/model.int8_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 4
Number of operations that will run on CPU: 8

Operator                       Count      Status

CONV_2D                        2          Mapped to Edge TPU
RESHAPE                        1          Mapped to Edge TPU
GREATER_EQUAL                  2          Operation not supported
CAST                           2          Operation not supported
MUL                            4          More than one subgraph is not supported
FULLY_CONNECTED                1          Mapped to Edge TPU
"""


def test_compiler_log_parsed_into_coverage() -> None:
    from edgekd.convert.tflite2edgetpu import parse_compiler_log

    r = parse_compiler_log(COMPILER_LOG)
    assert (r["total"], r["tpu"], r["cpu"], r["subgraphs"]) == (12, 4, 8, 1)
    assert r["on_chip_memory_used_bytes"] == 21 * 1024 and r["off_chip_memory_used_bytes"] == 0
    assert r["compiler_version"] == "16.0.384591198"
    cpu = {row["op"]: row["count"] for row in r["operators"] if not row["on_tpu"]}
    assert cpu == {"GREATER_EQUAL": 2, "CAST": 2, "MUL": 4}
    with pytest.raises(ConversionError):
        parse_compiler_log("segmentation fault")


def test_tensorrt_versions_and_build_commands() -> None:
    from edgekd.convert.onnx2trt import TrtOptions, trt_version_code, trtexec_commands

    assert trt_version_code("TensorRT 8.2.1 (JetPack 4.6)") == "8201"
    assert trt_version_code("TensorRT 8.6 (JetPack 6.0)") == "8600"
    assert trt_version_code(None) == "8601"
    old = trtexec_commands("model.onnx", "model.qdq.onnx", "calibration.cache",
                           TrtOptions(calibration={}, tensorrt_version="8.2.1"))
    assert "--workspace=1024" in old["builds"]["fp16"]["argv"]
    new = trtexec_commands("model.onnx", "model.qdq.onnx", "calibration.cache",
                           TrtOptions(calibration={}, tensorrt_version="8.6"))
    assert "--memPoolSize=workspace:1024" in new["builds"]["int8"]["argv"]
    assert "--calib=calibration.cache" in new["builds"]["int8-calib"]["argv"]


# ---------------------------------------------------------------- torch -> ONNX


def test_onnx_node_names_map_to_the_torch_module_of_each_call() -> None:
    from edgekd.convert.torch2onnx import module_for_node

    modules = ["features", "features.blocks.0.conv", "features.blocks.1.conv", "head", "features.0"]
    calls = ["features"] + ["features.blocks.0.conv"] * 8 + ["features.blocks.1.conv"] * 8 + ["head"] * 8
    assert module_for_node("/features/conv/Conv", modules, calls) == "features.blocks.0.conv"
    assert module_for_node("/features/conv_8/Conv", modules, calls) == "features.blocks.1.conv"
    assert module_for_node("/head_3/Gemm", modules, calls) == "head"
    assert module_for_node("/features/features.0/Conv", modules, calls) == "features.0"
    assert module_for_node("/Reshape", modules, calls) is None
    units = ["units", "units.0", "units.0.tcn", "units.2", "units.2.tcn"]
    assert module_for_node("/units/units.2/tcn/Conv", units, ["units", "units.0", "units.0.tcn", "units.2", "units.2.tcn"]) \
        == "units.2.tcn"


def test_unsupported_torch_op_names_the_op_and_module(tmp_path: Path) -> None:
    import torch
    from torch import nn

    from edgekd.convert.torch2onnx import OnnxOptions, torch2onnx

    class Spectrum(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.rfft(x, dim=-1).abs()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3), Spectrum())
            self.head = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x).mean((2, 3)))

    with pytest.raises(ConversionError) as info:
        torch2onnx(Net(), tmp_path, OnnxOptions(input_shapes={"x": (1, 1, 8, 8)}))
    assert "aten::fft_rfft" in info.value.message and "features.1 (Spectrum)" in info.value.message
    assert not (tmp_path / "model.onnx").exists()


def test_export_is_static_checked_and_folded(tmp_path: Path) -> None:
    import onnx
    import torch

    from edgekd.convert.runtime import predict_onnx, predict_torch
    from edgekd.convert.torch2onnx import OnnxOptions, model_io_for, torch2onnx
    from tests.convert.models import TinyLIFNet

    model = TinyLIFNet(steps=4, size=8).eval()
    opts = OnnxOptions(input_shapes={"frames": (1, 4, 1, 8, 8)})
    path = torch2onnx(model, tmp_path, opts)
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    # spikes are comparisons; the one-hot step pickers became exact slices; nothing left unfolded
    assert {"GreaterOrEqual", "Cast", "Conv", "Slice"} <= ops and not ops & {"EyeLike", "ConstantOfShape", "MatMul"}
    assert any("step pickers became exact Slice" in n for n in opts.extra_notes)
    io = model_io_for(path, opts)
    assert io.inputs[0].name == "frames" and io.inputs[0].shape == (1, 4, 1, 8, 8) and io.outputs[0].name == "logits"
    x = {"frames": (torch.rand(5, 4, 1, 8, 8) * 3).numpy()}
    np.testing.assert_allclose(predict_onnx(path, x), predict_torch(model, x, ["frames"]), atol=1e-5)
    modules = json.loads((tmp_path / "node_modules.json").read_text())
    assert "conv2" in modules.values() and "head" in modules.values()


# ---------------------------------------------------------------- before any conversion


def _held_out(shape: tuple[int, ...], n: int = 40):
    from edgekd.convert.api import HeldOut

    rng = np.random.default_rng(0)
    return HeldOut({"image": rng.random((n, *shape), dtype=np.float32)}, rng.integers(0, 4, n), ["a", "b", "c", "d"],
                   {"split": "validation"})


def test_model_too_big_for_the_board_fails_before_conversion(tmp_path: Path) -> None:
    from torch import nn

    from edgekd.convert.api import convert_model
    from edgekd.convert.representative import Representative

    big = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 64 * 64, 10))
    held = _held_out((1, 64, 64))
    cal = Representative({"image": held.inputs["image"][:40]}, None, "test")
    with pytest.raises(ConversionError) as info:
        convert_model(big, held, cal, get_target("nucleo-l4r5zi"), tmp_path / "out")
    msg = info.value.message
    # 64*9 conv + 64*64*64*10 linear weights, one byte each in int8
    assert "2622016 conv/linear weights" in msg and "2560.6 KiB > limits.flash_kb 2048" in msg
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_bad_calibration_fails_before_conversion(tmp_path: Path) -> None:
    from torch import nn

    from edgekd.convert.api import convert_model
    from edgekd.convert.representative import Representative

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 14 * 14, 4))
    held = _held_out((1, 16, 16))
    pixels = Representative({"image": held.inputs["image"] * 255.0}, None, "0..255 pixels")
    with pytest.raises(DataError, match="a different scaling"):
        convert_model(model, held, pixels, get_target("local"), tmp_path / "out", formats=["tflite-int8"])
    assert not (tmp_path / "out").exists()


def test_run_directory_lookup(tmp_path: Path) -> None:
    from edgekd.convert.api import default_out_dir, find_model_dir

    with pytest.raises(NotFoundError, match="no run directory"):
        find_model_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="holds no trained model"):
        find_model_dir(tmp_path / "empty")
    assert default_out_dir(Path("runs/eye/02-distill"), "local") == Path("runs/eye/03-convert-local")


def test_one_hot_selection_matmuls_become_exact_slices_and_gathers() -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekd.convert.runtime import onnx_session_from_bytes
    from edgekd.convert.torch2onnx import one_hot_matmuls_to_slices

    pick_one = np.zeros((4, 1), np.float32)
    pick_one[2, 0] = 1  # step 2 of 4: a Slice
    shuffle = np.zeros((4, 2), np.float32)
    shuffle[3, 0] = shuffle[0, 1] = 1  # steps 3 and 0: a Gather
    scaled = pick_one * 2  # not a selection: stays a MatMul
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["a"], name="/pick/MatMul"),
         helper.make_node("MatMul", ["x", "w2"], ["b"], name="/shuffle/MatMul"),
         helper.make_node("MatMul", ["x", "w3"], ["c"], name="/scale/MatMul")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [5, k]) for n, k in (("a", 1), ("b", 2), ("c", 1))],
        [numpy_helper.from_array(pick_one, "w1"), numpy_helper.from_array(shuffle, "w2"), numpy_helper.from_array(scaled, "w3")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    before = onnx_session_from_bytes(proto.SerializeToString()).run(None, {"x": x})
    rewritten, n = one_hot_matmuls_to_slices(proto)
    assert n == 2 and [node.op_type for node in rewritten.graph.node] == ["Slice", "Gather", "MatMul"]
    after = onnx_session_from_bytes(rewritten.SerializeToString()).run(None, {"x": x})
    for u, v in zip(before, after):
        np.testing.assert_array_equal(u, v)
    assert onnx.checker.check_model(rewritten) is None


def test_calibration_set_directory_is_loaded_for_the_model_and_checked(tmp_path: Path) -> None:
    from edgekd.convert.representative import from_directory
    from edgekd.data.calibration import build_calibration

    opts = {"samples": 120, "subjects": 6, "frames": 4, "size": 16}
    build_calibration("eye", "synthetic", tmp_path / "cal", n=40, **opts)
    rep = from_directory(tmp_path / "cal", ["frames"], "eye")
    assert rep.inputs["frames"].shape == (40, 4, 1, 16, 16) and len(rep) == 40
    assert diagnose(rep.inputs, {"frames": (1, 4, 1, 16, 16)}, None) == []
    with pytest.raises(DataError, match="is for task 'eye'"):
        from_directory(tmp_path / "cal", ["image"], "face")
