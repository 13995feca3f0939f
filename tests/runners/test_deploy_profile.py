"""deploy/profile end to end through the local transport and a real OpenSSH server, and the faults."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO, default_sigint, run_cli

NASTY_DIR = "work dir;$(touch PWNED)'`x`"


def write_target(folder: Path, sshd, name: str, workdir: str, python: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text(sshd.target_toml(name, workdir, python=python or sys.executable))
    return folder


def agent_pids(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "edgekd_agent.py run" in cmd and marker in cmd:
                pids.append(int(entry.name))
    return pids


def progress_lines(workdir: Path) -> int:
    files = list((workdir / "progress").glob("*.jsonl")) if (workdir / "progress").is_dir() else []
    return sum(len(f.read_text().splitlines()) for f in files)


def test_profile_local_end_to_end(small_model, tmp_path):
    model, eval_set = small_model
    res = run_cli("profile", str(model), "--target", "local", "--runs", "50", "--min-time", "0",
                  "--out", str(tmp_path), "--json", env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stdout + res.stderr
    [result] = json.loads(res.stdout)
    s = result["summary"]
    assert result["status"] == "complete" and s["samples_done"] == 64
    assert s["agreement_with_host"] == 1.0 and s["accuracy"] > 0.8
    assert s["latency_count"] >= 50 and 0 < s["min_ms"] <= s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]
    saved = json.loads((tmp_path / "local" / "results.json").read_text())
    assert saved["env"]["runtime"] == "ai_edge_litert" and saved["env"]["cores"] >= 1
    lines = (tmp_path / "local" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 65 and len(json.loads(lines[-1])["invoke_ms"]) == s["latency_count"]
    assert (tmp_path / "local" / "manifest.json").exists()


def test_deploy_and_profile_over_ssh_with_nasty_workdir(sshd, small_model, tmp_path):
    model, eval_set = small_model
    workdir = tmp_path / NASTY_DIR
    folder = write_target(tmp_path / "targets", sshd, "dev", str(workdir))
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    res = run_cli("deploy", str(model), "--target", "dev", "--targets-dir", str(folder), "--json", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    first = json.loads(res.stdout)
    assert len(first["sent"]) == 4 and first["unchanged"] == []
    assert (workdir / "edgekd_agent.py").is_file() and (workdir / "models").is_dir()
    res = run_cli("deploy", str(model), "--target", "dev", "--targets-dir", str(folder), "--json", env=env)
    again = json.loads(res.stdout)
    assert again["sent"] == [] and len(again["unchanged"]) == 4  # only what changed is sent
    res = run_cli("profile", str(model), "--target", "dev", "--targets-dir", str(folder), "--runs", "20",
                  "--min-time", "0", "--out", str(tmp_path / "out"), "--json", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    [result] = json.loads(res.stdout)
    assert result["status"] == "complete" and result["summary"]["agreement_with_host"] == 1.0
    assert not list(Path("/").glob("PWNED")) and not list(tmp_path.rglob("PWNED"))
    assert not (Path.home() / "PWNED").exists()


def test_two_targets_in_parallel_give_one_table(sshd, small_model, tmp_path):
    model, _ = small_model
    folder = write_target(tmp_path / "targets", sshd, "dev", str(tmp_path / "remote"))
    res = run_cli("profile", str(model), "-t", "local", "-t", "dev", "--targets-dir", str(folder), "--runs", "10",
                  "--min-time", "0", "--out", str(tmp_path / "out"), env={"XDG_CACHE_HOME": str(tmp_path / "c")})
    assert res.returncode == 0, res.stdout + res.stderr
    table = res.stdout
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert [r.split("│")[1].strip() for r in rows] == ["local", "dev"]
    assert all(r.split("│")[2].strip() == "ok" for r in rows)


def test_missing_numpy_on_device_gives_install_command(sshd, small_model, tmp_path):
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    folder = write_target(tmp_path / "targets", sshd, "dev", str(tmp_path / "w"), python=str(bare / "bin" / "python"))
    res = run_cli("deploy", str(small_model[0]), "--target", "dev", "--targets-dir", str(folder))
    assert res.returncode == 8
    assert "numpy cannot be imported" in res.stderr and "-m pip install numpy" in res.stderr


def test_missing_tflite_runtime_on_device_gives_install_command(sshd, small_model, tmp_path):
    import numpy

    venv = tmp_path / "numpy-only"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    numpy_dir = Path(numpy.__file__).parent
    for item in (numpy_dir, numpy_dir.parent / "numpy.libs"):
        if item.exists():
            os.symlink(item, site / item.name)
    folder = write_target(tmp_path / "targets", sshd, "dev", str(tmp_path / "w"), python=str(venv / "bin" / "python"))
    res = run_cli("deploy", str(small_model[0]), "--target", "dev", "--targets-dir", str(folder))
    assert res.returncode == 8, res.stderr
    assert "no TFLite runtime" in res.stderr and "pip install ai-edge-litert" in res.stderr


def test_eval_inputs_that_do_not_match_the_model_fail_before_running(small_model, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 7, 7, 1), np.float32), y=np.zeros(4, np.int64))
    res = run_cli("profile", str(small_model[0]), "--eval", str(bad), "--out", str(tmp_path / "o"))
    assert res.returncode == 5
    assert "shape [7, 7, 1] per sample" in res.stderr and "[16, 16, 1]" in res.stderr
    assert not (tmp_path / "o" / "local").exists()


def mute_target(folder: Path) -> socket.socket:
    """A target 'mute' whose port accepts TCP but never speaks SSH; close the socket after use."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    folder.mkdir()
    (folder / "mute.toml").write_text(
        'name = "mute"\ndescription = "x"\nkind = "linux"\n[transport]\ntype = "ssh"\n'
        f'host = "127.0.0.1"\nport = {silent.getsockname()[1]}\nconnect_timeout_s = 2\n'
        '[runtime]\nengine = "tflite"\nformats = ["tflite-int8"]\n'
    )
    return silent


def test_unreachable_host_times_out_with_hint(tmp_path):
    silent = mute_target(tmp_path / "t")
    # run_cli's own 60 s limit fails the test if the check hangs instead of timing out.
    res = run_cli("targets", "check", "mute", "--targets-dir", str(tmp_path / "t"), "--json", timeout=60)
    silent.close()
    login = [c for c in json.loads(res.stdout)["checks"] if c["check"] == "login"][0]
    assert res.returncode == 1 and not login["ok"] and "timed out" in login["detail"] and login["hint"]


def _start_profile(model, eval_set, folder, out, env, min_time: str = "0"):
    cmd = [sys.executable, "-m", "edgekd", "profile", str(model), "--eval", str(eval_set), "--target", "dev",
           "--targets-dir", str(folder), "--runs", "5", "--min-time", min_time, "--out", str(out), "--json"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint,
                            env={**os.environ, **env})


def _wait_for_progress(workdir: Path, proc, at_least: int = 50) -> None:
    deadline = time.monotonic() + 120
    while progress_lines(workdir) < at_least:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the agent made no progress"
        time.sleep(0.02)


def test_agent_killed_mid_run_keeps_partial_results_and_rerun_resumes(sshd, slow_model, tmp_path):
    model, eval_set = slow_model
    workdir = tmp_path / "remote-kill"
    folder = write_target(tmp_path / "targets", sshd, "dev", str(workdir))
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = _start_profile(model, eval_set, folder, tmp_path / "out", env)
    _wait_for_progress(workdir, proc)
    for pid in agent_pids(str(workdir)):
        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    [result] = json.loads(out)
    assert result["status"] == "incomplete" and "stopped after" in result["error"] and "resume" in result["hint"]
    saved = json.loads((tmp_path / "out" / "dev" / "results.json").read_text())
    done_before = saved["summary"]["samples_done"]
    assert saved["status"] == "incomplete" and 0 < done_before < 1500
    assert not (tmp_path / "out" / "dev" / "manifest.json").exists()

    proc = _start_profile(model, eval_set, folder, tmp_path / "out", env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    [result] = json.loads(out)
    assert result["status"] == "complete" and result["summary"]["samples_done"] == 1500
    assert result["summary"]["resumed_from_device"] >= done_before
    assert (tmp_path / "out" / "dev" / "manifest.json").exists()


def test_ctrl_c_keeps_partial_results_and_stops_the_agent(sshd, slow_model, tmp_path):
    model, eval_set = slow_model
    workdir = tmp_path / "remote-int"
    folder = write_target(tmp_path / "targets", sshd, "dev", str(workdir))
    # timed runs after the samples (up to 300 s or the agent's 10000-run cap): the run is still
    # going when the signal comes, however late a busy machine lets this test see the progress file
    proc = _start_profile(model, eval_set, folder, tmp_path / "out", {"XDG_CACHE_HOME": str(tmp_path / "cache")},
                          min_time="300")
    _wait_for_progress(workdir, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    saved = json.loads((tmp_path / "out" / "dev" / "results.json").read_text())
    assert saved["status"] == "incomplete" and saved["summary"]["samples_done"] > 0
    deadline = time.monotonic() + 20
    while agent_pids(str(workdir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert agent_pids(str(workdir)) == []  # the agent saw its stdin close and exited


def test_deploy_and_profile_refuse_unknown_host_key_and_wrong_key(sshd, small_model, tmp_path):
    from tests.runners.sshd import keygen

    model, _ = small_model
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    other = tmp_path / "other_key"
    keygen(other)
    cases = {
        "unknown-host": (sshd.client_config(alias="unknown-host", known_hosts=empty), "not in known_hosts", "ssh-keyscan"),
        "wrong-key": (sshd.client_config(alias="wrong-key", key=other), "authentication refused", "ssh-copy-id"),
    }
    for alias, (config, detail, hint) in cases.items():
        folder = tmp_path / f"targets-{alias}"
        folder.mkdir()
        workdir = tmp_path / f"w-{alias}"
        (folder / "dev.toml").write_text(sshd.target_toml("dev", str(workdir), config=config, alias=alias,
                                                          python=sys.executable))
        res = run_cli("deploy", str(model), "--target", "dev", "--targets-dir", str(folder), timeout=60)
        assert res.returncode == 8 and detail in res.stderr and hint in res.stderr, (alias, res.stderr)
        res = run_cli("profile", str(model), "--target", "dev", "--targets-dir", str(folder), "--out",
                      str(tmp_path / f"out-{alias}"), "--json", timeout=60)
        [result] = json.loads(res.stdout)
        assert res.returncode == 1 and result["status"] == "failed", (alias, res.stdout + res.stderr)
        assert detail in result["error"] and hint in result["hint"]
        assert not workdir.exists()
    assert empty.read_text() == ""  # the unknown key was not added behind the user's back


def test_profile_on_unreachable_host_times_out_with_hint(small_model, tmp_path):
    silent = mute_target(tmp_path / "t")
    try:
        # run_cli's own 60 s limit fails the test if profile hangs instead of timing out.
        res = run_cli("profile", str(small_model[0]), "--target", "mute", "--targets-dir", str(tmp_path / "t"),
                      "--out", str(tmp_path / "out"), "--json", timeout=60)
    finally:
        silent.close()
    [result] = json.loads(res.stdout)
    assert res.returncode == 1 and result["status"] == "failed"
    assert "timed out" in result["error"] and "reachable" in result["hint"]


def test_targets_profiled_at_once_write_the_same_files_without_colliding(tmp_path):
    """`edgekd profile -t a -t b` deploys to both at once: the inputs cache file and, for targets on
    this host, the agent and model land at the same paths. Each writer has a temporary file of its
    own (a shared one made the second rename fail in CI), and nothing temporary stays behind."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from edgekd.runners.deploy import inputs_file
    from edgekd.runners.local import LocalTransport

    x = np.random.default_rng(0).normal(size=(64, 2048)).astype(np.float32)
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: inputs_file(x, tmp_path / "cache"), range(32)))
    assert len(set(paths)) == 1 and np.array_equal(np.load(paths[0]), x)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [paths[0].name]

    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(1 << 20))
    transport = LocalTransport()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: transport.put(src, str(tmp_path / "dev" / "model.bin")), range(32)))
    assert (tmp_path / "dev" / "model.bin").read_bytes() == src.read_bytes()
    assert sorted(p.name for p in (tmp_path / "dev").iterdir()) == ["model.bin"]
    assert oct((tmp_path / "dev" / "model.bin").stat().st_mode & 0o777) == "0o644"
