"""`edgekd demo eye-camera`: headless runs on the synthetic stream and a video file, the web view,
local and on-target (agent `stream`) inference, and the errors a user can cause.

Models are made here: a small untrained eye-snn run directory (PyTorch) and a small int8 TFLite
eye model in onnx2tf's (1, 1, H, W, T) layout. Untrained models say nothing about accuracy, so
the tests check the pipeline instead: each clip-aligned window's probabilities equal the model's
own output on that clip of the synthetic stream, and the summary's accuracies agree with the
predictions JSONL. (The accuracy of a trained student is the closing figure, not a test.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgekd.cli import main as cli_main
from edgekd.tasks.eye import CLASSES

T, SIZE = 8, 32


# ---------------------------------------------------------------- models


@pytest.fixture(scope="module")
def snn_run(tmp_path_factory) -> Path:
    """An eye-snn run directory (arch.json + model.pt), untrained, a little smaller than 'tiny'."""
    import torch

    from edgekd.models import build_model, save_model

    torch.manual_seed(0)
    model = build_model("eye-snn", num_classes=7, channels=[8, 16], lif={"beta": 0.5, "threshold": 0.3})
    out = tmp_path_factory.mktemp("snn-run")
    save_model(model, out)
    return out


@pytest.fixture(scope="module")
def eye_tflite(tmp_path_factory) -> Path:
    """A full-int8 TFLite eye model taking (1, 1, H, W, T) frames, as onnx2tf lays them out."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((1, SIZE, SIZE, T), batch_size=1)
    h = tf.keras.layers.Reshape((SIZE, SIZE, T))(inputs)
    h = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(h)
    h = tf.keras.layers.GlobalAveragePooling2D()(h)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(7)(h))
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.random((1, 1, SIZE, SIZE, T), dtype=np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    out = tmp_path_factory.mktemp("eye-tflite") / "eye_int8.tflite"
    out.write_bytes(converter.convert())
    return out


@pytest.fixture(scope="module")
def convert_dir(eye_tflite, tmp_path_factory) -> Path:
    """A convert artifact directory (manifest with tflite-fp32/int8 outputs and io.json)."""
    import shutil

    from edgekd.artifacts import stage_dir
    from edgekd.convert.layout import IO_FILE, ModelIO, TensorSig

    out = tmp_path_factory.mktemp("convert")
    shutil.copyfile(eye_tflite, out / "student_int8.tflite")
    shutil.copyfile(eye_tflite, out / "student_fp32.tflite")  # a stand-in: the demo must pick int8
    io = ModelIO([TensorSig("frames", (1, T, 1, SIZE, SIZE), tflite_perm=(0, 2, 3, 4, 1))], [TensorSig("scores", (1, 7))])
    io.save(out / IO_FILE)
    with stage_dir(out, "convert", params={"target": "local"}) as sd:
        sd.add_output("tflite-fp32", out / "student_fp32.tflite")
        sd.add_output("tflite-int8", out / "student_int8.tflite")
        sd.add_output(IO_FILE, out / IO_FILE)
    return out


def synthetic_clips(clips: int, seed: int = 1) -> list[tuple[np.ndarray, int, str]]:
    """The clips the demo's synthetic source plays, as the source quantises them (8-bit)."""
    from edgekd.data.synthetic_eye import synthetic_eye_stream

    return [(np.round(np.clip(f, 0, 1) * 255).astype(np.uint8).astype(np.float32) / 255, y, light)
            for f, y, light in synthetic_eye_stream(seed=seed, frames=T, size=SIZE, clips=clips)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max())
    return z / z.sum()


def aligned_records(records: list[dict]) -> list[dict]:
    """Frames whose newest result came from a window that is exactly one clip (its last frame)."""
    return [r for r in records if r["new_result"] and r["aligned"]]


# ---------------------------------------------------------------- headless runs


def test_headless_synthetic_run_writes_outputs_and_follows_the_model(snn_run, tmp_path, capsys):
    import cv2
    import torch
    from PIL import Image

    from edgekd.models import load_model

    out = tmp_path / "demo"
    clips = 14
    code = cli_main(["demo", "eye-camera", "--model", str(snn_run), "--headless", "--out", str(out),
                     "--clips", str(clips), "--smoothing", "0", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    frames = clips * T
    assert summary["status"] == "complete" and summary["frames"] == frames
    # not paced: every window after the buffer filled was inferred, none skipped or dropped
    assert summary["inferences"] == frames - T + 1
    assert summary["skipped_inferences"] == 0 and summary["dropped_frames"] == 0
    assert summary["latency_model_ms"]["count"] == summary["inferences"]

    for name in ("annotated.mp4", "annotated.gif", "predictions.jsonl", "frame.png", "summary.json", "manifest.json"):
        assert (out / name).is_file(), name
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    cap.release()
    assert decoded == frames
    assert Image.open(out / "annotated.gif").n_frames == frames  # 10 fps source: every frame
    png = cv2.imread(str(out / "frame.png"))
    assert png is not None and png.shape[0] == 384
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "demo-eye-camera" and "video" in manifest["outputs"]

    records = read_jsonl(out / "predictions.jsonl")
    assert len(records) == frames
    assert [r["frame"] for r in records] == list(range(frames))
    assert all(r["label"] is None for r in records[:T - 1]) and all(r["label"] for r in records[T - 1:])

    # the summary's accuracies are those of the JSONL
    scored = [r for r in records if r["new_result"]]
    window_acc = np.mean([r["raw_label"] == r["window_truth"] for r in scored])
    frame_acc = np.mean([r["label"] == r["truth"] for r in records if r["label"]])
    acc = summary["accuracy"]
    assert acc["window_accuracy"] == pytest.approx(window_acc)
    assert acc["frame_accuracy"] == pytest.approx(frame_acc)

    # every clip-aligned window gave exactly the model's output on that clip of the stream
    aligned = aligned_records(records)
    assert [r["clip"] for r in aligned] == list(range(clips)) and acc["aligned_windows"] == clips
    model = load_model(snn_run).eval()
    stream = synthetic_clips(clips)
    classes = list(CLASSES)
    hits = []
    for r in aligned:
        clip_frames, label, lighting = stream[r["clip"]]
        assert r["truth"] == classes[label] and r["lighting"] == lighting
        with torch.no_grad():
            expected = softmax(model(torch.from_numpy(clip_frames[None, :, None])).numpy()[0].astype(np.float64))
        np.testing.assert_allclose(r["probs"], expected, atol=2e-4)
        hits.append(int(np.argmax(expected)) == label)
    assert acc["aligned_accuracy"] == pytest.approx(np.mean(hits))
    assert acc["window_accuracy_by_start"]["0"] == pytest.approx(np.mean(hits))  # start 0: the whole-clip windows
    assert sorted(acc["window_accuracy_by_start"]) == [str(k) for k in range(T)]


def test_tflite_in_process_on_local_target_and_convert_dir_agree(eye_tflite, convert_dir, tmp_path, monkeypatch):
    from edgekd.agent.edgekd_agent import open_model
    from edgekd.demo.eye_camera import DemoSettings, run_eye_camera

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the local target's device folder

    clips = 7
    runs = {}
    for name, model, target in (("file", eye_tflite, None), ("agent", eye_tflite, "local"), ("convert", convert_dir, None)):
        summary = run_eye_camera(DemoSettings(model=str(model), target=target, headless=True, out=str(tmp_path / name),
                                              clips=clips, smoothing=0.0))
        assert summary["status"] == "complete" and summary["inferences"] == clips * T - T + 1
        runs[name] = (summary, read_jsonl(tmp_path / name / "predictions.jsonl"))
    assert runs["agent"][0]["model"]["where"] == "target local"
    assert runs["convert"][0]["model"]["format"] == "tflite-int8"
    assert runs["convert"][0]["model"]["path"].endswith("student_int8.tflite")
    # the same int8 model through the agent's stream gives the same probabilities as in-process
    for other in ("agent", "convert"):
        np.testing.assert_allclose([r["probs"] for r in runs[other][1][T - 1:]],
                                   [r["probs"] for r in runs["file"][1][T - 1:]], atol=1e-4)

    engine = open_model(str(eye_tflite), "tflite", 1)
    stream = synthetic_clips(clips)
    aligned = aligned_records(runs["file"][1])
    assert len(aligned) == clips
    for r in aligned:
        x = stream[r["clip"]][0][None, :, None].transpose(0, 2, 3, 4, 1)  # (1, T, 1, H, W) -> (1, 1, H, W, T)
        engine.invoke(engine.prepare(x))
        np.testing.assert_allclose(r["probs"], softmax(engine.output().astype(np.float64)), atol=2e-4)


def test_teacher_gets_events_synthesised_from_the_frames(tmp_path):
    import torch

    from edgekd.data.events import event_frames
    from edgekd.demo.eye_camera import DemoSettings, run_eye_camera
    from edgekd.models import build_model, save_model

    torch.manual_seed(0)
    teacher = build_model("eye-hybrid", num_classes=7, spatial_channels=[8], temporal_channels=[8], hidden=16)
    save_model(teacher, tmp_path / "teacher")
    clips = 3
    summary = run_eye_camera(DemoSettings(model=str(tmp_path / "teacher"), headless=True, out=str(tmp_path / "out"),
                                          clips=clips, smoothing=0.0))
    assert summary["model"]["needs_events"] and summary["model"]["arch"] == "eye-hybrid"
    # events need the frame before the window too: T + 1 frames buffered, so one window fewer
    assert summary["inferences"] == clips * T - T
    records = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert records[T - 1]["label"] is None and records[T]["label"] is not None
    # the window ending at clip 1's last frame: its frames, and events from the frame before it on
    stream = synthetic_clips(clips)
    history = np.concatenate([stream[0][0][-1:], stream[1][0]])
    events = event_frames(history)[1:]
    model = teacher.eval()
    with torch.no_grad():
        scores = model(torch.from_numpy(history[1:][None, :, None]), torch.from_numpy(events[None]))
    record = next(r for r in records if r["frame"] == 2 * T - 1)
    assert record["aligned"] and record["new_result"]
    np.testing.assert_allclose(record["probs"], softmax(scores.numpy()[0].astype(np.float64)), atol=2e-4)


def test_video_file_source(snn_run, tmp_path):
    import cv2

    from edgekd.demo.eye_camera import DemoSettings, run_eye_camera

    video = tmp_path / "eye.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (80, 60))
    assert writer.isOpened()
    for clip_frames, _label, _light in synthetic_clips(3):
        for f in clip_frames:
            writer.write(cv2.cvtColor(cv2.resize((f * 255).astype(np.uint8), (80, 60)), cv2.COLOR_GRAY2BGR))
    writer.release()
    summary = run_eye_camera(DemoSettings(model=str(snn_run), source=str(video), headless=True, out=str(tmp_path / "out")))
    assert summary["frames"] == 3 * T and summary["inferences"] == 3 * T - T + 1
    assert summary["source"]["fps"] == pytest.approx(15.0)
    assert summary["accuracy"] is None  # a video file has no ground truth
    records = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert all(r["truth"] is None for r in records) and records[-1]["label"] in CLASSES


def test_board_power_is_shown_when_the_target_has_a_source(eye_tflite, tmp_path, monkeypatch):
    from edgekd.demo.eye_camera import DemoSettings, run_eye_camera
    from tests.unit.power_trees import jetpack4_ina3221

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sysfs = tmp_path / "sys"
    jetpack4_ina3221(sysfs, total_mw=3500)
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "jetson-sim.toml").write_text(
        'name = "jetson-sim"\ndescription = "this host with a Jetson INA3221 sysfs tree written by the test"\n'
        'kind = "host"\n[transport]\ntype = "local"\n[runtime]\nengine = "tflite"\nformats = ["tflite-int8"]\n'
        f'[power]\nsources = ["ina3221"]\nsample_hz = 200\nsysfs_root = "{sysfs}"\nidle_s = 0.1\n')
    summary = run_eye_camera(DemoSettings(model=str(eye_tflite), target="jetson-sim", targets_dirs=[str(targets)],
                                          headless=True, out=str(tmp_path / "out"), clips=2))
    assert summary["model"]["power"]["available"] and summary["model"]["power"]["source"] == "ina3221"
    power = summary["power_w"]
    assert power["source"] == "ina3221" and power["samples"] == summary["inferences"]
    assert power["mean"] == pytest.approx(3.5) and power["min"] == pytest.approx(3.5)
    records = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert all(r["power_w"] == pytest.approx(3.5) for r in records if r["label"])


# ---------------------------------------------------------------- live view


def test_web_view_serves_stream_and_label_while_running(eye_tflite, monkeypatch):
    from edgekd.demo.eye_camera import DemoSettings, run_eye_camera

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    urls: list[str] = []
    ready = threading.Event()

    def log(message: str) -> None:
        if "live view: " in message:
            urls.append(message.split("live view: ")[1].split()[0])
            ready.set()

    result: dict = {}

    def run() -> None:
        try:
            result["summary"] = run_eye_camera(DemoSettings(model=str(eye_tflite), view="auto", port=0, fps=25.0, clips=12), log)
        except BaseException as exc:  # surfaced below
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(60), result.get("error")
    url = urls[0]
    assert url.startswith("http://127.0.0.1:")
    page = urllib.request.urlopen(url, timeout=10).read().decode()
    assert "/stream.mjpg" in page
    jpeg = urllib.request.urlopen(url + "frame.jpg", timeout=10).read()
    assert jpeg[:2] == b"\xff\xd8"
    with urllib.request.urlopen(url + "stream.mjpg", timeout=10) as stream:
        assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        chunk = stream.read(4096)
    assert chunk.startswith(b"--frame") and b"\xff\xd8" in chunk
    state = {}
    deadline = time.time() + 20
    while time.time() < deadline and not state.get("label"):
        state = json.loads(urllib.request.urlopen(url + "state.json", timeout=10).read())
        time.sleep(0.1)
    assert state["label"] in CLASSES
    assert state["truth"] is not None and 0 <= state["confidence"] <= 1
    thread.join(60)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary["status"] == "complete" and summary["settings"]["view"] == "web" and summary["settings"]["realtime"]
    # paced in real time: every shown frame's window was inferred or counted as skipped
    windows = summary["frames"] - T + 1
    assert windows - 1 <= summary["inferences"] + summary["skipped_inferences"] <= windows
    assert summary["frames"] + summary["dropped_frames"] == 12 * T


# ---------------------------------------------------------------- the agent's stream command


def test_agent_stream_answers_each_line_and_survives_a_bad_one(eye_tflite):
    import base64
    import io

    agent = Path(__file__).resolve().parents[2] / "edgekd" / "agent" / "edgekd_agent.py"
    x = np.random.default_rng(0).random((1, 1, SIZE, SIZE, T), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, x)
    good = json.dumps({"i": 2, "npy": base64.b64encode(buf.getvalue()).decode()})
    lines = "\n".join([json.dumps({"i": 1, "npy": "not base64 npy"}), good]) + "\n"
    proc = subprocess.run([sys.executable, str(agent), "stream", "--model", str(eye_tflite)], input=lines,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    kinds = [o["type"] for o in out]
    assert kinds == ["env", "ready", "error", "output", "done"]
    assert out[1]["input_shape"] == [1, 1, SIZE, SIZE, T]
    assert out[2]["i"] == 1 and out[3]["i"] == 2 and len(out[3]["output"]) == 7 and out[4]["inferences"] == 1


# ---------------------------------------------------------------- what a user can get wrong


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = cli_main(["demo", "eye-camera", *args])
    return code, capsys.readouterr().err


def test_no_camera_lists_the_video_devices(snn_run, capsys):
    from edgekd.demo.sources import list_video_devices

    devices = list_video_devices()
    index = next(i for i in range(64) if f"/dev/video{i}" not in devices)
    code, err = run_cli(capsys, "--model", str(snn_run), "--source", str(index), "--headless")
    assert code == 4, err
    assert f"no camera could be opened at index {index}" in err
    assert ("video devices found: " + ", ".join(devices)) in err if devices else "no video devices found" in err
    code, err = run_cli(capsys, "--model", str(snn_run), "--source", "/dev/video99", "--headless")
    assert code == 4 and "no camera device '/dev/video99'" in err


def test_unreadable_video_is_an_error(snn_run, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    code, err = run_cli(capsys, "--model", str(snn_run), "--source", str(bad), "--headless", "--out", str(tmp_path / "o"))
    assert code == 5 and "cannot read video" in err and "broken.mp4" in err
    code, err = run_cli(capsys, "--model", str(snn_run), "--source", str(tmp_path / "missing.mp4"), "--headless")
    assert code == 4 and "no video file" in err


def test_models_that_are_not_eye_models_are_rejected(tmp_path, capsys, snn_run):
    skeleton = tmp_path / "skeleton-run"
    skeleton.mkdir()
    (skeleton / "arch.json").write_text(json.dumps({"arch": "skeleton-sgn", "params": {}}))
    (skeleton / "model.pt").write_bytes(b"")
    code, err = run_cli(capsys, "--model", str(skeleton), "--headless")
    assert code == 2 and "'skeleton-sgn' model, not an eye-task one" in err and "eye-snn" in err

    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"1234")
    code, err = run_cli(capsys, "--model", str(weights), "--headless")
    assert code == 2 and "not a model file or run directory" in err

    code, err = run_cli(capsys, "--model", str(snn_run), "--target", "local", "--headless")
    assert code == 2 and "convert it first" in err

    code, err = run_cli(capsys, "--model", str(snn_run), "--headless", "--view", "web")
    assert code == 2 and "--headless shows no live view" in err

    code, err = run_cli(capsys, "--model", str(tmp_path / "nothing"), "--headless")
    assert code == 4 and "no model" in err


def test_image_classifier_tflite_is_not_an_eye_model(tmp_path, capsys):
    from tests.runners.models import build_int8_classifier

    model, _ = build_int8_classifier(tmp_path / "clf", size=16, classes=4, samples=16)
    code, err = run_cli(capsys, "--model", str(model), "--headless")
    assert code == 2 and "not T eye frames" in err and "eye-task model" in err


# ---------------------------------------------------------------- pieces


def test_eye_detector_without_an_eye_uses_the_whole_frame_and_says_so():
    from edgekd.demo.overlay import OverlayState, compose
    from edgekd.demo.roi import HaarEyeDetector, preprocess

    gray = np.full((240, 320), 128, np.uint8)
    region = HaarEyeDetector().locate(gray)
    assert not region.found and region.box == (0, 0, 320, 240)
    x = preprocess(gray, region.box, (SIZE, SIZE))
    assert x.shape == (SIZE, SIZE) and x.dtype == np.float32 and abs(float(x.mean()) - 128 / 255) < 1e-6
    img = compose(gray, OverlayState(classes=["a", "b"], roi_mode="detect", eye_found=False, roi_box=region.box))
    assert img.shape == (384, 512 + 280, 3)


def test_synthetic_stream_is_reproducible_and_balanced():
    from edgekd.data.synthetic_eye import synthetic_eye_stream

    clips = list(synthetic_eye_stream(seed=3, frames=4, size=16, clips=28, batch=28))
    assert len(clips) == 28 and clips[0][0].shape == (4, 16, 16)
    assert np.bincount([y for _, y, _ in clips], minlength=7).tolist() == [4] * 7
    assert sorted({light for _, _, light in clips}) == ["hdr", "low-light", "normal", "overexposed"]
    again = list(synthetic_eye_stream(seed=3, frames=4, size=16, clips=28, batch=28))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(clips, again))
