"""Multi-input models (the skeleton students' joints/bones/motion streams) through deploy and
profile: the local transport and a real OpenSSH server, inputs bound by name, mismatches refused
before anything is sent or run; the agent's ONNX engine with several inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers import REPO, run_cli
from tests.runners.test_deploy_profile import write_target


def _eval(eval_set: Path) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    data = np.load(eval_set)
    names = [str(n) for n in data["input_names"]]
    return {n: data[f"x_{n}"] for n in names}, data["y"], names


def _write_eval(path: Path, arrays: dict[str, np.ndarray], y: np.ndarray) -> Path:
    np.savez(path, **{f"x_{n}": a for n, a in arrays.items()}, input_names=np.array(list(arrays)), y=y)
    return path


def _profile(model, out, env, *extra):
    res = run_cli("profile", str(model), "--runs", "10", "--min-time", "0", "--out", str(out), "--json", *extra, env=env)
    return res, (json.loads(res.stdout) if res.stdout.strip().startswith("[") else None)


def test_multi_input_profile_local_binds_inputs_by_name(multi_input_model, tmp_path):
    model, eval_set = multi_input_model
    arrays, y, names = _eval(eval_set)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    res, out = _profile(model, tmp_path / "out", env)
    assert res.returncode == 0, res.stdout + res.stderr
    s = out[0]["summary"]
    assert out[0]["status"] == "complete" and s["samples_done"] == s["samples_total"] == len(y)
    assert s["agreement_with_host"] == 1.0 and s["max_abs_diff_vs_host"] < 1e-5  # the agent sends 6 decimals
    saved = json.loads((tmp_path / "out" / "local" / "results.json").read_text())
    assert sorted(map(tuple, saved["inputs_bound"])) == sorted((n, n) for n in names)
    assert saved["params"]["inputs"] == {n: list(a.shape[1:]) for n, a in arrays.items()}

    # The same arrays with the same-shaped pair's contents exchanged: the model must notice, which
    # is what makes the accuracy above evidence that each array reached its own input.
    swapped = dict(arrays)
    swapped["joints"], swapped["bones"] = arrays["bones"], arrays["joints"]
    res2, out2 = _profile(model, tmp_path / "out-swapped", env, "--eval", str(_write_eval(tmp_path / "sw.npz", swapped, y)))
    assert res2.returncode == 0, res2.stderr
    assert s["accuracy"] - out2[0]["summary"]["accuracy"] >= 0.3


def test_multi_input_deploy_and_profile_over_ssh(sshd, multi_input_model, tmp_path):
    model, eval_set = multi_input_model
    arrays, y, names = _eval(eval_set)
    workdir = tmp_path / "remote dir; $(touch PWNED)"
    folder = write_target(tmp_path / "targets", sshd, "dev", str(workdir))
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    res = run_cli("deploy", str(model), "--target", "dev", "--targets-dir", str(folder), "--json", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    dep = json.loads(res.stdout)
    assert sorted(dep["inputs"]) == sorted(names) and len(dep["sent"]) == 3 + len(names)
    assert dep["inputs_check"].startswith("matched on this host")
    for name, remote in dep["inputs"].items():
        np.testing.assert_array_equal(np.load(remote), arrays[name])
    res, out = _profile(model, tmp_path / "out", env, "--target", "dev", "--targets-dir", str(folder))
    assert res.returncode == 0, res.stdout + res.stderr
    s = out[0]["summary"]
    assert out[0]["status"] == "complete" and s["samples_done"] == len(y)
    assert s["agreement_with_host"] == 1.0 and s["accuracy"] > 0.8
    assert not list(tmp_path.rglob("PWNED"))


def test_multi_input_mismatch_fails_before_anything_is_sent(sshd, multi_input_model, tmp_path):
    model, eval_set = multi_input_model
    arrays, y, _ = _eval(eval_set)
    workdir = tmp_path / "remote"
    folder = write_target(tmp_path / "targets", sshd, "dev", str(workdir))
    renamed = {("a" if n == "joints" else "b" if n == "bones" else n): x for n, x in arrays.items()}
    missing = {n: x for n, x in arrays.items() if n != "motion"}
    wrong_shape = {**arrays, "joints": arrays["joints"][:, :, :5]}
    cases = {
        "renamed": (renamed, ["cannot tell which evaluation array feeds", "cannot be told apart"]),
        "missing": (missing, ["takes 3 input(s)", "has 2"]),
        "wrong_shape": (wrong_shape, ["model input 'joints' expects [8, 6, 3]", "has [8, 5, 3]"]),
    }
    for case, (data, phrases) in cases.items():
        bad = _write_eval(tmp_path / f"{case}.npz", data, y)
        res = run_cli("deploy", str(model), "--eval", str(bad), "--target", "dev", "--targets-dir", str(folder))
        assert res.returncode == 5, (case, res.stderr)
        assert all(p in res.stderr for p in phrases), (case, res.stderr)
        assert "x_<input name>" in res.stderr  # the hint
        res, _ = _profile(model, tmp_path / f"out-{case}", {}, "--eval", str(bad), "--target", "dev",
                          "--targets-dir", str(folder))
        assert res.returncode == 5 and phrases[0] in res.stderr, (case, res.stderr)
        assert not (tmp_path / f"out-{case}" / "dev").exists()
    assert not workdir.exists()  # nothing was sent


def _onnx_two_inputs(path: Path) -> None:
    """y = a @ Wa + b @ Wb with a: [1, 3] and b: [1, 3] (same shape: only names tell them apart)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    wa = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    wb = -np.arange(12, dtype=np.float32).reshape(3, 4)[::-1].copy()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "Wa"], ["ya"]), helper.make_node("MatMul", ["b", "Wb"], ["yb"]),
         helper.make_node("Add", ["ya", "yb"], ["y"])],
        "two_inputs",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3]), helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(wa, "Wa"), numpy_helper.from_array(wb, "Wb")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_agent_runs_a_multi_input_onnx_model_with_arrays_given_in_another_order(tmp_path):
    model = tmp_path / "two.onnx"
    _onnx_two_inputs(model)
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 3), dtype=np.float32), rng.random((5, 3), dtype=np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    agent = REPO / "edgekd" / "agent" / "edgekd_agent.py"
    res = subprocess.run([sys.executable, str(agent), "run", "--model", str(model), "--input", "b", str(tmp_path / "b.npy"),
                          "--input", "a", str(tmp_path / "a.npy"), "--runs", "3", "--warmup", "1", "--min-time", "0"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [ln for ln in lines if ln["type"] == "inputs"][0]["bound"] == [["a", "a"], ["b", "b"]]
    outputs = np.array([ln["output"] for ln in lines if ln["type"] == "sample"])
    wa = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    wb = -np.arange(12, dtype=np.float32).reshape(3, 4)[::-1]
    np.testing.assert_allclose(outputs, a @ wa + b @ wb, atol=1e-4)
    assert lines[-1]["type"] == "done"
