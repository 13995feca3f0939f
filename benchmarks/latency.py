"""Latency on the local target, batch 1, same thread count, side by side in one run:
int8 TFLite student vs fp32 PyTorch teacher vs fp32 PyTorch student vs onnxruntime fp32 student.

    python benchmarks/latency.py --quick --out latency.json
    python benchmarks/latency.py --run runs/quickstart-eye --out latency.json   # trained models

Without --run the eye task's teacher and student are built with random weights and the student is
converted here: latency of these dense graphs does not depend on the weight values (recorded in
config.weights). Each engine is timed with warm-up, then repeated for at least --min-time seconds;
the median is the figure, ratios are teacher/int8 etc.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np

from _common import write_result


def time_fn(fn: Callable[[], object], warmup: int, min_time_s: float, min_runs: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < min_time_s:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)), "runs": len(times)}


def models_from_run(run: Path):
    from edgekd.artifacts import read_manifest
    from edgekd.models import load_model

    convert = run / "03-convert"
    outputs = read_manifest(convert).outputs
    teacher, student = load_model(run / "01-teacher"), load_model(run / "02-student")
    onnx = convert / outputs["onnx"]["path"] if "onnx" in outputs else None
    return teacher, student, convert / outputs["tflite-int8"]["path"], onnx, "trained (" + str(run) + ")"


def models_built(workdir: Path, samples: int):
    from edgekd.convert import representative as rep
    from edgekd.convert.api import convert_model, held_out_from
    from edgekd.data.api import load_dataset
    from edgekd.distill.api import build_from_section
    from edgekd.config import load_recipe
    from edgekd.targets import get_target

    recipe = load_recipe("eye-mskd")
    data = load_dataset("eye", "synthetic", split="all", samples=samples, subjects=10)
    teacher = build_from_section(recipe.teacher, data)
    student = build_from_section(recipe.student, data)
    names = list(student.input_names)
    held_out = held_out_from(data, names, 64, 0)
    calibration = rep.from_training_split(data, names, 64, 0)
    result = convert_model(student, held_out, calibration, get_target("local"), workdir / "convert",
                           formats=["onnx", "tflite-int8"])
    onnx = result.formats.get("onnx")
    return teacher, student, result.formats["tflite-int8"], onnx, "random init (latency does not depend on weight values)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing windows")
    parser.add_argument("--out", help="JSON file to write")
    parser.add_argument("--run", help="a pipeline run directory with trained models (01-teacher, 02-student, 03-convert)")
    parser.add_argument("--min-time", type=float, default=None, help="seconds per engine (default 1 quick, 5 full)")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from edgekd.agent.edgekd_agent import open_model
    from edgekd.targets import get_target

    threads = get_target("local").runtime.threads
    torch.set_num_threads(threads)
    min_time = args.min_time if args.min_time is not None else (1.0 if args.quick else 5.0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            teacher, student, int8_path, onnx_path, weights = models_from_run(Path(args.run))
        else:
            teacher, student, int8_path, onnx_path, weights = models_built(Path(tmp), 120 if args.quick else 400)
        teacher.eval()
        student.eval()
        from edgekd.data.api import load_dataset

        sample = load_dataset("eye", "synthetic", split="all", samples=14, subjects=2)
        frames = torch.from_numpy(sample.x["frames"][:1].astype(np.float32))
        events = torch.from_numpy(sample.x["events"][:1].astype(np.float32))
        teacher_args = tuple({"frames": frames, "events": events}[n] for n in teacher.input_names)

        results = {}
        with torch.inference_mode():
            results["torch_fp32_teacher"] = time_fn(lambda: teacher(*teacher_args), 5, min_time, 20)
            results["torch_fp32_student"] = time_fn(lambda: student(frames), 5, min_time, 20)
        tfl = open_model(str(int8_path), "tflite", threads)
        tensor = tfl.prepare(np.zeros(tfl.input_shape, np.float32))
        results["tflite_int8_student"] = time_fn(lambda: tfl.invoke(tensor), 10, min_time, 50)
        if onnx_path is not None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            feed = {name: frames.numpy()}
            results["ort_fp32_student"] = time_fn(lambda: session.run(None, feed), 10, min_time, 50)
        int8 = results["tflite_int8_student"]["median_ms"]
        figures = {f"{k}_ms": v["median_ms"] for k, v in results.items()}
        figures["teacher_torch_over_int8_tflite"] = results["torch_fp32_teacher"]["median_ms"] / int8
        figures["student_torch_over_int8_tflite"] = results["torch_fp32_student"]["median_ms"] / int8
        if "ort_fp32_student" in results:
            figures["student_ort_over_int8_tflite"] = results["ort_fp32_student"]["median_ms"] / int8
        config = {"threads": threads, "batch": 1, "min_time_s": min_time, "weights": weights, "quick": args.quick,
                  "task": "eye", "teacher": getattr(teacher, "arch_name", ""), "student": getattr(student, "arch_name", ""),
                  "runs": {k: v["runs"] for k, v in results.items()},
                  "p90_ms": {k: v["p90_ms"] for k, v in results.items()}}
        result = write_result(args.out, figures, config)
    for k, v in result["figures"].items():
        print(f"{k:40s} {v:10.4f}")


if __name__ == "__main__":
    main()
