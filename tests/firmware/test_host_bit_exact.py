"""The firmware runtime, compiled for this host, against the TFLite and TFLite Micro interpreters.

Same C as on the board (kernels + generated model); many random int8 inputs per model; the
outputs must be identical, not close.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from edgekd.firmware.reference_models import random_int8_inputs
from tests.firmware.fixtures import litert_reference_outputs

MODELS = ["cnn_ops", "eye_snn", "eye_snn_floor", "skeleton_sgcn", "face_cnn", "misc_ops"]
N_INPUTS = 300


def _tflm(path, inputs):
    runtime = pytest.importorskip("tflite_micro").runtime
    interp = runtime.Interpreter.from_file(str(path), arena_size=1 << 20)
    outs = []
    for x in inputs:
        interp.set_input(x, 0)
        interp.invoke()
        outs.append(np.asarray(interp.get_output(0)).copy())
    return np.stack(outs)


@pytest.mark.parametrize("name", MODELS)
def test_host_build_matches_tflite_reference_kernels(name, ref_model, tmp_path, host_cc):
    from edgekd.firmware.host import build_host_model

    path = ref_model(name)
    host = build_host_model(path, tmp_path / "host", reference="tflite")
    x = random_int8_inputs(tuple(host.metadata["inputs"][0]["shape"]), N_INPUTS, seed=7)
    mine = host.run(x)
    theirs = litert_reference_outputs(path, x).reshape(mine.shape)
    same = np.all(mine.reshape(N_INPUTS, -1) == theirs.reshape(N_INPUTS, -1), axis=1)
    assert same.all(), f"{name}: {int((~same).sum())} of {N_INPUTS} inputs differ, first at {int(np.argmin(same))}"
    # the outputs are not trivially constant (a broken model would agree on garbage too)
    assert len({tuple(r) for r in mine.reshape(N_INPUTS, -1)[:50]}) > 5


@pytest.mark.parametrize("name", MODELS)
def test_host_build_matches_tflite_micro(name, ref_model, tmp_path, host_cc):
    from edgekd.firmware.host import build_host_model

    path = ref_model(name)
    host = build_host_model(path, tmp_path / "host", reference="tflm")
    x = random_int8_inputs(tuple(host.metadata["inputs"][0]["shape"]), 200, seed=11)
    mine = host.run(x)
    theirs = _tflm(path, x).reshape(mine.shape)
    assert np.array_equal(mine, theirs)


def test_eye_snn_has_the_lif_op_pattern(ref_model):
    """The eye stand-in uses exactly the op pattern DESIGN.md lists for an unrolled LIF SNN."""
    from edgekd.convert.tflite2c import load_graph

    ops = set(load_graph(ref_model("eye_snn")).op_counts())
    design = {"CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "GREATER_EQUAL", "CAST", "CONCATENATION",
              "TRANSPOSE", "PAD", "MEAN", "RESHAPE", "QUANTIZE"}
    assert design <= ops, f"missing {design - ops}"


def test_cnn_covers_the_cnn_ops(ref_model):
    from edgekd.convert.tflite2c import load_graph

    ops = set(load_graph(ref_model("cnn_ops")).op_counts())
    want = {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "ADD", "SUB", "MUL", "MAXIMUM", "PAD",
            "CONCATENATION", "TRANSPOSE", "MEAN", "FULLY_CONNECTED", "LOGISTIC"}
    assert want <= ops, f"missing {want - ops}"


def test_misc_ops_covers_the_data_movement_ops(ref_model):
    from edgekd.convert.tflite2c import load_graph

    ops = set(load_graph(ref_model("misc_ops")).op_counts())
    want = {"SPLIT", "UNPACK", "PACK", "SLICE", "GATHER", "STRIDED_SLICE", "TANH", "LEAKY_RELU", "HARD_SWISH",
            "MINIMUM", "CONV_2D", "FULLY_CONNECTED"}
    assert want <= ops, f"missing {want - ops}"


def test_reference_flavours_really_differ(ref_model, tmp_path, host_cc):
    """TFLite's reference FULLY_CONNECTED rounds through double, TFLite Micro through the fixed-point
    multiplier: on enough inputs the two flavours disagree somewhere, which is why there are two."""
    from edgekd.firmware.host import build_host_model

    path = ref_model("skeleton_sgcn")
    a = build_host_model(path, tmp_path / "a", reference="tflite")
    b = build_host_model(path, tmp_path / "b", reference="tflm")
    x = random_int8_inputs(tuple(a.metadata["inputs"][0]["shape"]), 300, seed=3)
    ya, yb = a.run(x), b.run(x)
    assert not np.array_equal(ya, yb)
    assert np.abs(ya.astype(int) - yb.astype(int)).max() <= 8



@pytest.mark.parametrize("name", ["cnn_ops", "misc_ops", "elementwise"])
def test_cpu_flavour_matches_tflites_default_cpu_kernels(name, ref_model, tmp_path, host_cc):
    """"tflite-cpu" follows TFLite's default CPU kernels (XNNPACK): float32 requantization of
    convolutions, fully connected layers and MUL, XNNPACK's add, QUANTIZE as a table, one rounding
    elsewhere. On these stand-ins (every conv/pool/elementwise/data-movement op the runtime has;
    `elementwise`: ADD/SUB/MUL on scales where XNNPACK's add rounds differently from TFLite's) it
    gives their outputs bit for bit, where the reference-kernel flavour does not."""
    from edgekd.firmware.api import interpreter_outputs
    from edgekd.firmware.host import build_host_model

    path = ref_model(name)
    cpu = build_host_model(path, tmp_path / "cpu", reference="tflite-cpu")
    ref = build_host_model(path, tmp_path / "ref", reference="tflite")
    x = [random_int8_inputs(tuple(m["shape"]), N_INPUTS, seed=7 + i) for i, m in enumerate(cpu.metadata["inputs"])]
    theirs = interpreter_outputs(path, x, "tflite-cpu").reshape(N_INPUTS, -1)
    mine = cpu.run(x).reshape(N_INPUTS, -1)
    same = np.all(mine == theirs, axis=1)
    assert same.all(), f"{name}: {int((~same).sum())} of {N_INPUTS} inputs differ"
    assert not np.array_equal(ref.run(x).reshape(N_INPUTS, -1), theirs)
    assert len({row.tobytes() for row in mine[:50]}) > 5


def test_cpu_flavour_needs_its_runtime_build(ref_model, tmp_path, host_cc):
    """A model.c generated for one rounding refuses to compile against a runtime built for the
    other (the #error names the flag); an unknown flavour is a usage error naming the three."""
    import subprocess

    from edgekd.convert.tflite2c import write_model_sources
    from edgekd.errors import UsageError
    from edgekd.firmware.host import HOST_CFLAGS, build_host_model
    from edgekd.firmware.sources import src_dir

    path = ref_model("eye_snn")
    for reference, flags in (("tflite-cpu", []), ("tflite", ["-DEKD_SINGLE_ROUNDING=1"])):
        gen = tmp_path / f"gen-{reference}"
        write_model_sources(path, gen, reference=reference)
        proc = subprocess.run(["cc", *HOST_CFLAGS, *flags, f"-I{src_dir()}", "-c", str(gen / "model.c"),
                               "-o", str(gen / "model.o")], capture_output=True, text=True)
        assert proc.returncode != 0 and f"generated for reference '{reference}'" in proc.stderr
    with pytest.raises(UsageError, match="unknown reference 'xnnpack'") as info:
        build_host_model(path, tmp_path / "bad", reference="xnnpack")
    assert "tflite-cpu" in info.value.hint and "tflm" in info.value.hint



def test_op_by_op_comparison_names_the_ops_that_compute_differently(ref_model, tmp_path, host_cc, capsys):
    """compare_ops runs every op alone in the interpreter on the C runtime's own inputs to it. The
    reference-kernel flavour matches them op by op; the CPU flavour matches XNNPACK everywhere
    but MEAN (XNNPACK's int8 mean is not reproduced: a step off on some values), and says so."""
    from edgekd.cli import main
    from edgekd.firmware.host import compare_ops

    path = ref_model("two_streams")  # two inputs, the LIF op pattern, a MEAN readout
    metas = build_host_model_inputs(path, tmp_path)
    xs = [random_int8_inputs(tuple(m["shape"]), 6, seed=3 + i) for i, m in enumerate(metas)]
    ref = compare_ops(path, xs, tmp_path / "ref", reference="tflite", samples=6)
    assert {"ADD", "SUB", "MUL", "QUANTIZE", "FULLY_CONNECTED", "MEAN"} <= set(ref)
    assert all(e["runs"] >= 6 and e["differ"] == 0 for e in ref.values()), ref
    cpu = compare_ops(path, xs, tmp_path / "cpu", reference="tflite-cpu", samples=6)
    assert {k for k, e in cpu.items() if e["differ"]} == {"MEAN"}, cpu
    first = cpu["MEAN"]["first_difference"]
    assert first["max_abs"] == 1 and 0 < first["elements"] < first["of"]

    np.save(tmp_path / "x.npy", random_int8_inputs(tuple(build_host_model_inputs(ref_model("eye_snn"), tmp_path)[0]["shape"]),
                                                    3, seed=1))
    assert main(["firmware", "check", str(ref_model("eye_snn")), "--reference", "tflite-cpu", "--no-tflm",
                 "--inputs", str(tmp_path / "x.npy"), "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "ops vs TFLite default CPU kernels" in out and re.search(r"MEAN\s+│\s+\d+ / 2 \(first: op #", out)
    assert re.search(r"CONV_2D\s+│\s+0 / \d+", out)


def build_host_model_inputs(path, tmp_path):
    from edgekd.firmware.host import build_host_model

    return build_host_model(path, tmp_path / f"meta-{path.stem}").metadata["inputs"]


# ---------------------------------------------------------------- models with several inputs


def test_several_inputs_run_in_the_model_order(ref_model, tmp_path, host_cc):
    """Two inputs given by name (in the other order), a LIF current clamped by MINIMUM/MAXIMUM with
    a constant: the C runtime and both interpreters agree, and swapping the two streams changes
    the result (the order is not a coincidence)."""
    from edgekd.convert.tflite2c import load_graph
    from edgekd.firmware.api import input_arrays, interpreter_outputs
    from edgekd.firmware.host import build_host_model

    path = ref_model("two_streams")
    graph = load_graph(path)
    clamps = [op for op in graph.operators if op.op in ("MINIMUM", "MAXIMUM")]  # the LIF current clamp
    assert {op.op for op in clamps} == {"MINIMUM", "MAXIMUM"} and all(graph.tensors[op.inputs[1]].is_const for op in clamps)
    host = build_host_model(path, tmp_path / "host")
    host_tflm = build_host_model(path, tmp_path / "host-tflm", reference="tflm")
    metas = host.metadata["inputs"]
    assert [m["name"] for m in metas] == ["joints", "bones"]
    rng = np.random.default_rng(5)
    shape = (N_INPUTS, *metas[0]["shape"])
    given = {"bones": rng.normal(0, 1, shape).astype(np.float32), "joints": rng.normal(0, 1, shape).astype(np.float32)}
    arrays = input_arrays(given, metas)
    assert all(a.dtype == np.int8 for a in arrays)
    mine = host.run(arrays)
    assert np.array_equal(mine, interpreter_outputs(path, arrays).reshape(mine.shape))
    assert np.array_equal(host_tflm.run(arrays), interpreter_outputs(path, arrays, "tflm").reshape(mine.shape))
    assert not np.array_equal(host.run(arrays[::-1]), mine)
    assert len({tuple(r) for r in mine.reshape(N_INPUTS, -1)[:50]}) > 5


def test_input_arrays_match_names_and_refuse_mistakes():
    """The device agent's rule (edgekd_agent.match_inputs): by name, else by a shape only one input has."""
    from edgekd.errors import DataError
    from edgekd.firmware.api import input_arrays

    metas = [{"name": "serving_default_joints:0", "dtype": "int8", "shape": [1, 2, 3], "scale": 0.5, "zero_point": 1},
             {"name": "serving_default_bones:0", "dtype": "int8", "shape": [1, 2, 3], "scale": 0.25, "zero_point": 0}]
    j = np.full((4, 1, 2, 3), 1.0, np.float32)
    b = np.full((4, 1, 2, 3), 1.0, np.float32)
    got = input_arrays({"bones": b, "serving_default_joints:0": j}, metas)
    assert [a.shape for a in got] == [(4, 1, 2, 3), (4, 1, 2, 3)]
    assert int(got[0].flat[0]) == 3 and int(got[1].flat[0]) == 4  # 1/0.5 + 1, 1/0.25 + 0
    with pytest.raises(DataError, match="cannot tell which evaluation array"):  # same shapes, no names known
        input_arrays({"a": j, "b": b}, metas)
    got = input_arrays({"joints": j, "bone": 2 * b}, metas)  # 'bone' is the one array left for the one input left
    assert int(got[1].flat[0]) == 8
    with pytest.raises(DataError, match=r"expects \[2, 3\] per sample"):  # named right, wrong shape
        input_arrays({"joints": j, "bones": b.reshape(4, 6)}, metas)
    with pytest.raises(DataError, match="2 inputs"):
        input_arrays(j, metas)
    with pytest.raises(DataError, match="different numbers of samples"):
        input_arrays({"joints": j, "bones": b[:3]}, metas)
    # distinct shapes bind without names; a single-input model takes a flat array too
    wide = [metas[0], {**metas[1], "shape": [1, 6]}]
    got = input_arrays({"a": b.reshape(4, 1, 6), "b": j}, wide)
    assert [a.shape for a in got] == [(4, 1, 2, 3), (4, 1, 6)]
    assert input_arrays({"x": b.reshape(4, 6)}, metas[:1])[0].shape == (4, 1, 2, 3)
    # the model's shape has its batch axis ([1, 2, 3]); arrays with or without it per sample
    got = input_arrays({"bones": b.reshape(4, 2, 3), "joints": j}, metas)
    assert [a.shape for a in got] == [(4, 1, 2, 3), (4, 1, 2, 3)]


def test_load_inputs_reads_eval_sets(tmp_path):
    """An eval.npz as edgekd convert writes it: 'x' (and labels 'y'), or x_<name> per input."""
    from edgekd.firmware.api import load_inputs

    j, b = np.zeros((3, 2), np.float32), np.ones((3, 2), np.float32)
    np.savez(tmp_path / "multi.npz", y=np.arange(3), x_joints=j, x_bones=b, input_names=np.array(["joints", "bones"]))
    got = load_inputs(tmp_path / "multi.npz")
    assert list(got) == ["joints", "bones"] and np.array_equal(got["bones"], b)
    np.savez(tmp_path / "one.npz", y=np.arange(3), x=j)
    assert np.array_equal(load_inputs(tmp_path / "one.npz"), j)


def test_floor_spike_runs_as_one_table_per_lif_step(ref_model):
    """The students' exported spike, DEQUANTIZE -> FLOOR -> QUANTIZE, is lowered to one 256-entry
    table per LIF step (no float kernels, no float buffers); the host tests above check its values."""
    from edgekd.convert.tflite2c import generate_c, load_graph

    graph = load_graph(ref_model("eye_snn_floor"))
    counts = graph.op_counts()
    assert counts.get("FLOOR", 0) == 2 * 4  # two LIF layers, T = 4
    model_c = generate_c(graph).model_c
    assert model_c.count("DEQUANTIZE+FLOOR+QUANTIZE */") == counts["FLOOR"]
    assert model_c.count(" FLOOR */") == 0 and model_c.count(" DEQUANTIZE */") == 0
    assert "ekd_quantize_f32_s8" not in model_c and "ekd_dequantize_s8_f32" not in model_c
