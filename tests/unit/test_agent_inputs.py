"""The device agent's rule for feeding evaluation arrays to a model's inputs (edgekd_agent.match_inputs)
and the eval.npz reader that hands them to deploy/profile."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.agent.edgekd_agent import AgentError, match_inputs, tensor_name
from edgekd.errors import DataError
from edgekd.runners.deploy import load_eval_set

SKELETON = [(4, 25, 1, 3)] * 4  # joints, bones, joint_motion, bone_motion: one shape for all


def test_names_bind_even_when_the_converter_renamed_and_reordered_the_inputs():
    streams = ["joints", "bones", "joint_motion", "bone_motion"]
    model = [(f"serving_default_{n}:0", (1, *SKELETON[0])) for n in reversed(streams)]  # as onnx2tf left them
    arrays = [(n, SKELETON[0]) for n in streams]
    assert match_inputs(model, arrays) == [3, 2, 1, 0]
    assert tensor_name("serving_default_joint_motion:0") == "joint_motion" and tensor_name("x:1") == "x"


def test_a_shape_only_one_input_has_binds_a_misnamed_array():
    model = [("frames", (1, 4, 16, 16, 1)), ("events", (1, 4, 16, 16, 2))]
    assert match_inputs(model, [("b", (4, 16, 16, 2)), ("a", (4, 16, 16, 1))]) == [1, 0]
    # one input, one array: names do not matter (an eval.npz with a single 'x')
    assert match_inputs([("serving_default_image:0", (1, 48, 48, 1))], [("x", (48, 48, 1))]) == [0]


def test_same_shaped_inputs_without_matching_names_are_refused_not_guessed():
    model = [(n, (1, *SKELETON[0])) for n in ("joints", "bones")]
    with pytest.raises(AgentError) as exc:
        match_inputs(model, [("a", SKELETON[0]), ("b", SKELETON[0])])
    assert "cannot be told apart" in exc.value.message and "joints" in exc.value.message
    assert "x_<input name>" in exc.value.hint


@pytest.mark.parametrize("arrays, phrase", [
    ([("joints", (4, 25, 1, 3))], "takes 2 input(s)"),
    ([("joints", (4, 25, 1, 3)), ("bones", (4, 24, 1, 3))], "model input 'bones' expects [4, 25, 1, 3]"),
    ([("joints", (4, 25, 1, 3)), ("other", (9,))], "no evaluation array has their name or shape"),
])
def test_mismatches_name_both_sides(arrays, phrase):
    model = [("joints", (1, 4, 25, 1, 3)), ("bones", (1, 4, 25, 1, 3))]
    with pytest.raises(AgentError) as exc:
        match_inputs(model, arrays)
    assert phrase in exc.value.message


def test_single_input_shape_mismatch():
    with pytest.raises(AgentError) as exc:
        match_inputs([("x", (1, 16, 16, 1))], [("x", (7, 7, 1))])
    assert "shape [7, 7, 1] per sample" in exc.value.message and "[16, 16, 1]" in exc.value.message


def test_eval_set_reader_takes_convert_multi_input_layout(tmp_path):
    rng = np.random.default_rng(0)
    j, b = rng.random((5, 2, 3), dtype=np.float32), rng.random((5, 2, 3), dtype=np.float32)
    path = tmp_path / "eval.npz"
    np.savez(path, x_bones=b, x_joints=j, input_names=np.array(["joints", "bones"]), y=np.arange(5))
    inputs, y = load_eval_set(path)
    assert list(inputs) == ["joints", "bones"] and y.tolist() == list(range(5))
    np.testing.assert_array_equal(inputs["bones"], b)

    np.savez(path, x_joints=j, input_names=np.array(["joints", "bones"]))
    with pytest.raises(DataError, match="x_bones is missing"):
        load_eval_set(path)
    np.savez(path, x_joints=j, x_bones=b[:4], input_names=np.array(["joints", "bones"]))
    with pytest.raises(DataError, match="disagree on the number of samples"):
        load_eval_set(path)
    np.savez(path, z=j)
    with pytest.raises(DataError, match="no array 'x' and no input_names"):
        load_eval_set(path)
