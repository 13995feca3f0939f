"""The HTML report over real profile results, rendered in headless Chromium, and run diffs."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.helpers import run_cli
from tests.unit.power_trees import jetpack4_ina3221

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def run_dir(small_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    sysfs = root / "sys"
    jetpack4_ina3221(sysfs, total_mw=4200)
    targets = root / "targets"
    targets.mkdir()
    (targets / "board.toml").write_text(
        'name = "board"\ndescription = "this host with an emulated INA3221"\nkind = "host"\n[transport]\ntype = "local"\n'
        '[runtime]\nengine = "tflite"\nformats = ["tflite-int8"]\n'
        f'[power]\nsources = ["ina3221"]\nsample_hz = 500\nsysfs_root = "{sysfs}"\nidle_s = 0.2\n'
    )
    res = run_cli("profile", str(small_model[0]), "-t", "local", "-t", "board", "--targets-dir", str(targets),
                  "--power", "--runs", "50", "--min-time", "0.3", "--out", str(root / "04-profile"),
                  env={"XDG_CACHE_HOME": str(root / "cache")})
    assert res.returncode == 0, res.stdout + res.stderr
    return root


def test_report_has_every_section_and_renders_in_chromium(run_dir, tmp_path):
    res = run_cli("report", str(run_dir))
    assert res.returncode == 0, res.stderr
    page = (run_dir / "report.html").read_text()
    for section in ("ledger", "targets", "pareto", "latency", "power", "confusion", "energy", "training", "versions"):
        assert f'<section id="{section}">' in page
    for element in ('id="targets-table"', 'id="pareto-latency"', 'id="pareto-energy"', 'id="latency-local"',
                    'id="latency-board"', 'id="power-board"', 'id="confusion-local"', 'id="versions-table"'):
        assert element in page, element
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    if CHROMIUM is None:
        pytest.skip("chromium not installed (make test installs it): rendering not checked")
    profile_dir = tmp_path / "chromium-profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", "--dump-dom", f"file://{run_dir / 'report.html'}"],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") >= 5 and 'id="power-board"' in dom.stdout
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", "--window-size=1200,1800",
                    f"--screenshot={shot}", f"file://{run_dir / 'report.html'}"], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000


def test_diff_explains_a_changed_parameter(run_dir, small_model, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    res = run_cli("profile", str(small_model[0]), "-t", "local", "--runs", "80", "--min-time", "0",
                  "--out", str(other / "04-profile"), env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr
    res = run_cli("diff", str(run_dir), str(other), "--json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    local = [s for s in d["stages"] if s["stage"].endswith("local")][0]
    assert {"key": "runs", "a": 50, "b": 80, "delta": 30} in local["params"]
    board = [s for s in d["stages"] if s["stage"].endswith("board")][0]
    assert board["same"]
    text = run_cli("diff", str(run_dir), str(other)).stdout
    assert "because: params changed" in text and "params.runs: 50 -> 80  (+30)" in text


def test_report_on_a_folder_without_stages_is_a_clear_error(tmp_path):
    res = run_cli("report", str(tmp_path))
    assert res.returncode == 11 and "holds no finished stage" in res.stderr


def test_targets_table_gives_no_delta_over_a_subset_of_the_samples(tmp_path):
    """fp32 accuracy over 240 validation samples and a board that ran the first 20: no Δ between
    them (it would compare different samples); a target over all 240 gets its Δ."""
    from edgekd.artifacts import atomic_write_json, stage_dir
    from edgekd.report.html import render_report

    with stage_dir(tmp_path / "03-convert", "convert") as sd:
        atomic_write_json(tmp_path / "03-convert" / "parity.json", {"hops": [
            {"hop": "torch-fp32 -> onnx", "source": "torch-fp32", "target": "onnx", "samples": 240,
             "accuracy_source": 0.5, "accuracy_target": 0.5, "agreement": 1.0}]})
        sd.add_output("parity", tmp_path / "03-convert" / "parity.json")
    for name, stage, samples, acc in (("05-firmware-board", "firmware-profile", 20, 0.45),
                                      ("04-profile-local", "profile", 240, 0.475)):
        with stage_dir(tmp_path / name, stage, params={"target": name[3:]}) as sd:
            key = "samples" if stage == "firmware-profile" else "samples_done"
            atomic_write_json(tmp_path / name / "results.json", {"status": "complete", "summary": {key: samples, "accuracy": acc}})
            sd.add_output("results.json", tmp_path / name / "results.json")
    page = render_report(tmp_path).read_text()
    table = page[page.index('id="targets-table"'):]
    table = table[:table.index("</table>")]
    assert "– (20 of 240 samples)" in table and "-2.50" in table and "-5.00" not in table
