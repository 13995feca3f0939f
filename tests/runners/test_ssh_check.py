"""`edgekd targets check` against a real OpenSSH server started by the test."""

import json

from tests.helpers import run_cli
from tests.runners.sshd import free_port, keygen


def _write_target(tmp_path, sshd, text_name="dev", **kw):
    folder = tmp_path / "targets"
    folder.mkdir(exist_ok=True)
    (folder / f"{text_name}.toml").write_text(sshd.target_toml(text_name, str(tmp_path / "work dir"), **kw))
    return folder


def test_check_over_ssh_passes(sshd, tmp_path):
    folder = _write_target(tmp_path, sshd, python=__import__("sys").executable)
    res = run_cli("targets", "check", "dev", "--targets-dir", str(folder), "--json")
    report = json.loads(res.stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert res.returncode == 0, res.stdout + res.stderr
    assert ["reachable", "login", "python", "numpy", "tflite-runtime", "tflite-invoke"] == list(checks)
    assert "127.0.0.1" in checks["reachable"]["detail"]


def test_unknown_host_key_is_refused_with_hint(sshd, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    config = sshd.client_config(alias="unknown-host", known_hosts=empty)
    folder = _write_target(tmp_path, sshd, config=config, alias="unknown-host")
    res = run_cli("targets", "check", "dev", "--targets-dir", str(folder), "--json")
    report = json.loads(res.stdout)
    assert res.returncode == 1
    login = [c for c in report["checks"] if c["check"] == "login"][0]
    assert not login["ok"] and "not in known_hosts" in login["detail"]
    assert "ssh-keyscan" in login["hint"]


def test_refused_key_is_an_auth_error(sshd, tmp_path):
    other = tmp_path / "other_key"
    keygen(other)
    config = sshd.client_config(alias="wrong-key", key=other)
    folder = _write_target(tmp_path, sshd, config=config, alias="wrong-key")
    res = run_cli("targets", "check", "dev", "--targets-dir", str(folder), "--json")
    login = [c for c in json.loads(res.stdout)["checks"] if c["check"] == "login"][0]
    assert res.returncode == 1 and "authentication refused" in login["detail"] and "ssh-copy-id" in login["hint"]


def test_closed_port_is_unreachable_with_hint(tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "gone.toml").write_text(
        'name = "gone"\ndescription = "x"\nkind = "linux"\n[transport]\ntype = "ssh"\n'
        f'host = "127.0.0.1"\nport = {free_port()}\nconnect_timeout_s = 2\n'
        '[runtime]\nengine = "tflite"\nformats = ["tflite-int8"]\n'
    )
    res = run_cli("targets", "check", "gone", "--targets-dir", str(folder))
    assert res.returncode == 1
    assert "FAIL" in res.stdout and "cannot connect to 127.0.0.1" in res.stdout and "hint:" in res.stdout


def test_missing_python_on_device_says_what_to_do(sshd, tmp_path):
    folder = _write_target(tmp_path, sshd, python="python9.9")
    res = run_cli("targets", "check", "dev", "--targets-dir", str(folder), "--json")
    agent = [c for c in json.loads(res.stdout)["checks"] if c["check"] == "agent"][0]
    assert res.returncode == 1 and not agent["ok"] and "transport.python" in agent["hint"]
