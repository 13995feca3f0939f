"""The real chain (torch -> ONNX -> onnx2tf -> TFLite -> device formats) on tiny trained models,
one conversion per model and target shared by the tests (see conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.convert.conftest import Converted, quantized_weight_scales


def _ok(c: Converted):
    if c.error is not None:
        raise c.error
    return c.result


# ---------------------------------------------------------------- local: every TFLite mode


def test_local_ledger_has_every_hop_within_its_limits(cnn_local: Converted) -> None:
    r = _ok(cnn_local)
    parity = json.loads((r.out_dir / "parity.json").read_text())
    hops = [h["hop"] for h in parity["hops"]]
    assert hops == ["torch-fp32 -> onnx", "onnx -> tflite-fp32", "tflite-fp32 -> tflite-fp16",
                    "tflite-fp32 -> tflite-dynamic-int8", "tflite-fp32 -> tflite-int8"]
    assert parity["ok"] is True
    by = {h["target"]: h for h in parity["hops"]}
    assert by["onnx"]["max_abs"] < 1e-4 and by["tflite-fp32"]["max_abs"] < 1e-4
    assert by["tflite-int8"]["agreement"] >= 0.98 and by["tflite-int8"]["accuracy_delta"] >= -1.0
    assert by["tflite-int8"]["accuracy_target"] > 0.9  # the task is learnt; int8 keeps it
    assert parity["data"]["split"] == "validation" and parity["data"]["calibration"]["samples"] == 96


def test_local_formats_layout_and_manifest(cnn_local: Converted) -> None:
    from edgekd.artifacts import is_up_to_date, read_manifest
    from edgekd.convert.layout import ModelIO

    r = _ok(cnn_local)
    assert set(r.formats) == {"tflite-int8", "tflite-fp16", "tflite-fp32", "tflite-dynamic-int8", "onnx"}
    io = ModelIO.load(r.out_dir / "io.json")
    assert io.inputs[0].shape == (1, 1, 16, 16) and io.inputs[0].tflite_perm == (0, 2, 3, 1)
    manifest = read_manifest(r.out_dir)
    assert manifest.stage == "convert"
    assert {"tflite-int8", "onnx", "parity.json", "ops.json", "eval"} <= set(manifest.outputs)
    assert manifest.tools["onnx2tf"] == "1.29.24" and manifest.tools["tensorflow"].startswith("2.19")
    assert manifest.metrics["converters"]["onnx2tf"]["matches_pin"] is True
    assert is_up_to_date(r.out_dir, manifest.params)
    ev = np.load(r.out_dir / "eval.npz")
    assert ev["x"].shape == (120, 16, 16, 1) and str(ev["format"]) == "tflite-int8"  # channel-last for TFLite


def test_local_int8_is_full_integer_per_channel_and_runs_in_litert(cnn_local: Converted) -> None:
    from edgekd.convert.runtime import TFLiteRunner

    r = _ok(cnn_local)
    runner = TFLiteRunner(r.formats["tflite-int8"], r.io)
    assert runner.input_dtypes == {"image": "int8"} and runner.output_dtype == "int8"
    assert max(quantized_weight_scales(r.formats["tflite-int8"])) > 1  # per-channel by default
    dynamic = TFLiteRunner(r.formats["tflite-dynamic-int8"], r.io)
    assert dynamic.input_dtypes == {"image": "float32"}
    ops = json.loads((r.out_dir / "ops.json").read_text())
    int8 = ops["files"]["tflite-int8"]
    assert int8["checks"]["tflite"]["ok"] is True and int8["deployed"] is True
    assert set(int8["op_counts"]) >= {"CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D"}
    assert int8["activation_dtypes"] == {"int8": int8["activation_dtypes"]["int8"]}


# ---------------------------------------------------------------- Coral: Edge TPU, compiler absent


def test_coral_without_compiler_says_how_to_get_it_and_predicts_coverage(cnn_coral: Converted) -> None:
    from edgekd.errors import MissingDependencyError

    if cnn_coral.error is None:
        pytest.skip("edgetpu_compiler is installed here: the compiled path ran instead")
    err = cnn_coral.error
    assert isinstance(err, MissingDependencyError), err
    assert "edgetpu_compiler not found" in err.message and "predicted from the op inventory" in err.message
    assert "apt-get install edgetpu-compiler" in err.hint and "--formats tflite-int8" in err.hint
    coverage = json.loads((cnn_coral.out / "edgetpu" / "edgetpu_coverage.json").read_text())
    assert coverage["predicted"] is True and coverage["cpu"] == 0 and coverage["tpu"] == coverage["total"] > 0
    assert not (cnn_coral.out / "manifest.json").exists()  # the stage is not finished


def test_coral_int8_is_per_tensor_from_onnx2tfs_own_quantizer(cnn_coral: Converted) -> None:
    parity = json.loads((cnn_coral.out / "parity.json").read_text())
    int8 = next(h for h in parity["hops"] if h["target"] == "tflite-int8")
    assert int8["ok"] and int8["data"] in ("quantizer: onnx2tf", "quantizer: tensorflow")
    assert set(quantized_weight_scales(cnn_coral.out / "model.int8.tflite")) == {1}
    ops = json.loads((cnn_coral.out / "ops.json").read_text())
    assert ops["files"]["tflite-int8"]["checks"]["edgetpu"]["coverage"]["predicted"] is True


# ---------------------------------------------------------------- Jetson: ONNX + TensorRT inputs


def test_jetson_qdq_model_cache_and_trtexec_commands(cnn_jetson: Converted) -> None:
    from edgekd.convert.onnx2trt import read_calibration_cache

    r = _ok(cnn_jetson)
    trt = r.formats["tensorrt"]
    commands = json.loads((trt / "trtexec.json").read_text())
    assert commands["tensorrt_version"].startswith("TensorRT 8.2")
    assert "--workspace=1024" in commands["builds"]["fp16"]["argv"]  # TensorRT 8.2 syntax
    assert (trt / "model.onnx").exists() and (trt / "model.qdq.onnx").exists()
    cache = (trt / "calibration.cache").read_text().splitlines()
    assert cache[0] == "TRT-8201-EntropyCalibration2"
    scales = read_calibration_cache(trt / "calibration.cache")
    assert scales["image"] == pytest.approx(1.0 / 127, rel=1e-3)  # blob images reach 1.0
    qdq = next(h for h in r.ledger.hops if h.target == "onnx-qdq-int8")
    assert qdq.ok and qdq.agreement >= 0.98
    assert not any(p.suffix == ".tflite" for p in r.out_dir.iterdir())  # no TFLite needed for this target


# ---------------------------------------------------------------- failures that name the culprit


def test_int8_loss_is_traced_to_the_layer_and_torch_module(outlier_local: Converted) -> None:
    from edgekd.errors import ParityError

    err = outlier_local.error
    assert isinstance(err, ParityError), err
    assert "tflite-fp32 -> tflite-int8 is beyond its limit" in err.message and "points" in err.message
    assert "Worst classes:" in err.message
    assert "from torch module 'features.0 (Conv2d)'" in err.message
    parity = json.loads((outlier_local.out / "parity.json").read_text())
    hop = parity["hops"][-1]
    assert hop["ok"] is False and hop["layers"]["culprit"]["onnx_weighted_node"] == "/features/features.0/Conv"


def test_onnx_op_onnx2tf_cannot_convert_names_node_and_module(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from edgekd.convert.layout import ModelIO, TensorSig
    from edgekd.convert.onnx2tflite import TFLiteOptions, onnx2tflite
    from edgekd.errors import ConversionError

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4, 1, 1], np.ones(16, np.float32))
    like = helper.make_tensor("like", TensorProto.FLOAT16, [1], [0])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="/features/conv/Conv"),
         helper.make_node("CastLike", ["c", "like"], ["h"], name="/odd/CastLike"),
         helper.make_node("CastLike", ["h", "x"], ["logits"], name="/odd/CastLike_1")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 8, 8])], [w, like])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    io = ModelIO([TensorSig("x", (1, 4, 8, 8))], [TensorSig("logits", (1, 4, 8, 8))])
    with pytest.raises(ConversionError) as info:
        onnx2tflite(path, tmp_path, TFLiteOptions(modes=["fp32"], io=io, node_modules={"/odd/CastLike": "odd"}))
    assert "'CastLike'" in info.value.message and "/odd/CastLike" in info.value.message
    assert "torch module odd" in info.value.message
