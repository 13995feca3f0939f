"""The CLI as a user runs it: a subprocess, exit codes, one clear line per mistake."""

import json
import subprocess
import sys

from tests.helpers import REPO, run_cli


def test_version_and_help():
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("edgekd ")
    res = run_cli("--help")
    assert res.returncode == 0 and "targets" in res.stdout


def test_targets_list_json_has_every_shipped_target():
    res = run_cli("targets", "list", "--json")
    assert res.returncode == 0, res.stderr
    names = {t["name"] for t in json.loads(res.stdout)}
    assert {"local", "qemu-mps2-an386", "rpi4", "rpi5", "jetson-nano", "jetson-orin-nano",
            "coral-devboard", "coral-usb", "nucleo-l4r5zi"} <= names


def test_targets_list_table():
    res = run_cli("targets", "list")
    assert res.returncode == 0 and "jetson-orin-nano" in res.stdout


def test_targets_show_json():
    res = run_cli("targets", "show", "jetson-nano", "--json")
    assert res.returncode == 0
    data = json.loads(res.stdout)
    assert data["hardware"]["ram_mb"] == 4096 and data["runtime"]["engine"] == "tensorrt"


def test_unknown_target_is_one_clear_line_without_traceback():
    res = run_cli("targets", "show", "rpi-4")
    assert res.returncode == 4
    assert "Traceback" not in res.stderr
    assert res.stderr.splitlines()[0] == "error: unknown target 'rpi-4' (did you mean 'rpi4'?)"
    assert "hint:" in res.stderr


def test_misspelled_key_in_user_target_exits_with_config_code(tmp_path):
    (tmp_path / "b.toml").write_text(
        'name = "b"\ndescription = "x"\nkind = "linux"\n[transport]\ntype = "ssh"\nhost = "h"\n'
        '[runtime]\nengine = "tflite"\nformats = ["tflite-int8"]\nthreds = 2\n'
    )
    res = run_cli("targets", "show", "b", "--targets-dir", str(tmp_path))
    assert res.returncode == 3
    first = res.stderr.splitlines()[0]
    assert "b.toml" in first and "'runtime.threds'" in first and "did you mean 'threads'" in first
    assert "Traceback" not in res.stderr


def test_debug_shows_traceback():
    res = run_cli("--debug", "targets", "show", "nope-board")
    assert res.returncode == 4 and "Traceback" in res.stderr


def test_targets_check_local_passes():
    res = run_cli("targets", "check", "local", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    names = {c["check"]: c["ok"] for c in report["checks"]}
    assert names == {"python": True, "numpy": True, "tflite-runtime": True, "tflite-invoke": True}


def test_targets_check_qemu_reports_emulator_and_toolchain():
    res = run_cli("targets", "check", "qemu-mps2-an386", "--json")
    report = json.loads(res.stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert {"emulator", "toolchain"} <= set(checks)
    assert res.returncode == (0 if report["ok"] else 1)


def test_targets_check_serial_missing_port(tmp_path):
    (tmp_path / "board.toml").write_text(
        'name = "board"\ndescription = "x"\nkind = "mcu"\n[transport]\ntype = "serial"\n'
        'port = "/dev/ttyNOPE0"\n[runtime]\nengine = "firmware"\nformats = ["c-int8"]\n'
    )
    res = run_cli("targets", "check", "board", "--targets-dir", str(tmp_path))
    assert res.returncode == 1
    assert "/dev/ttyNOPE0 does not exist" in res.stdout and "hint:" in res.stdout


def test_inspect_prints_manifest(tmp_path):
    from edgekd.artifacts import stage_dir

    with stage_dir(tmp_path / "01-x", "x", params={"k": 1}) as sd:
        sd.file("o.txt").write_text("hi")
        sd.set_metrics(acc=0.5)
    res = run_cli("inspect", str(tmp_path / "01-x"))
    assert res.returncode == 0 and "[x]" in res.stdout and "acc: 0.5" in res.stdout
    res = run_cli("inspect", str(tmp_path / "01-x"), "--json")
    assert json.loads(res.stdout)["params"] == {"k": 1}
    res = run_cli("inspect", str(tmp_path / "missing"))
    assert res.returncode == 4 and "Traceback" not in res.stderr


def test_import_is_light():
    """`import edgekd` and building the CLI import neither torch nor TensorFlow."""
    code = (
        "import sys, edgekd, edgekd.cli, edgekd.targets, edgekd.config, edgekd.artifacts;"
        "heavy = [m for m in ('torch', 'tensorflow', 'onnx', 'onnxruntime', 'cv2') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""
