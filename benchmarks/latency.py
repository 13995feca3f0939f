"""Latency on the local target, batch 1, same thread count, side by side in one run, for every
task: int8 TFLite student vs fp32 PyTorch teacher vs fp32 PyTorch student vs onnxruntime fp32
student. The aim is an int8 student at least 10x faster than its fp32 teacher.

    python benchmarks/latency.py --quick --out latency-quick.json
    python benchmarks/latency.py --out latency.json                     # the recipes' own input sizes
    python benchmarks/latency.py --tasks eye --run runs/quickstart-eye --out latency.json   # trained models

Each task's teacher and student are built from its recipe (eye-mskd, skeleton-mksgn,
face-mini-resemotenet): the architectures and sizes are the recipe's, read at run time. Without
--run the weights are random and the student is converted here through the real chain
(torch -> ONNX -> onnx2tf -> full-int8 TFLite); latency of these dense graphs does not depend on
the weight values (recorded in config). --quick keeps every model's width and depth and shortens
only the sequences (eye and skeleton time steps; recorded in config.data) and the timing windows,
so it fits in 3 minutes on 2 cores; the full run uses the recipes' own inputs. The int8 model is
run by the device agent's own engine class with the evaluation arrays `edgekd convert` wrote, bound
as on a device. The students are converted first (--workers at a time); then each engine, one at a
time, with the same --threads (default: the local target's): warm-up, then timed for at least
--min-time seconds; the median is the figure. Ratios are slower/int8 (teacher_over_int8 = how many
times faster the int8 student is). On a machine busy with other jobs, multi-threaded engines (torch
above all) lose far more than single-threaded ones: the load average is recorded in config, and
--threads 1 keeps the comparison fair there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np

from _common import write_result
from edgekd.errors import EdgekdError

RECIPES = {"eye": "eye-mskd", "skeleton": "skeleton-mksgn", "face": "face-mini-resemotenet"}
# --quick: shorter sequences only (the time steps an unrolled SNN converts and runs); widths and
# depths stay the recipe's.
QUICK_DATA = {"eye": {"frames": 4}, "skeleton": {"frames": 4}, "face": {}}
# Synthetic samples to calibrate and time with: few subjects, so every class occurs.
DATA_SIZE = {"eye": {"samples": 140, "subjects": 10}, "skeleton": {"samples": 120, "subjects": 5},
             "face": {"samples": 140, "subjects": 10}}
ENGINE_REST_S = 0.5  # between engines, so the last one's spinning threads have gone to sleep


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


def task_data(task: str, quick: bool) -> tuple[Any, Any, dict[str, Any]]:
    from edgekd.config import load_recipe
    from edgekd.data.api import load_dataset

    recipe = load_recipe(RECIPES[task])
    options = {**recipe.data.options, **(QUICK_DATA[task] if quick else {}), **DATA_SIZE[task]}
    data = load_dataset(task, "synthetic", split="all", seed=recipe.seed, **options)
    return recipe, data, options


def models_built(task: str, workdir: Path, quick: bool) -> dict[str, Any]:
    """The recipe's teacher and student, random init; the student saved for its conversion."""
    import torch

    from edgekd.distill.api import build_from_section
    from edgekd.models import save_model

    recipe, data, options = task_data(task, quick)
    torch.manual_seed(recipe.seed)
    teacher = build_from_section(recipe.teacher, data)
    student = build_from_section(recipe.student, data)
    settle_batch_norm(student, data)
    save_model(student, workdir / task / "student")
    return {"recipe": recipe.name, "data": data, "data_options": options, "teacher": teacher, "student": student,
            "convert_dir": workdir / task / "convert", "convert_seconds": None,
            "weights": "random init with BatchNorm statistics from 64 samples (so spiking layers fire and "
                       "their int8 scales are a trained model's); calibration and timing inputs drawn "
                       "from the same synthetic samples (no accuracy is measured here)"}


def settle_batch_norm(model: Any, data: Any, samples: int = 64) -> None:
    """BatchNorm statistics from `samples` inputs (no gradient step): at random init the running
    statistics (mean 0, var 1) leave a spiking student's neurons silent, its spike tensors get
    degenerate int8 scales, and XNNPACK then declines ops it would run for a trained model, so
    the timing would not be a trained model's."""
    import torch

    from edgekd.distill.trainer import tensors_for

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    batch = tensors_for(data.subset(np.arange(min(samples, len(data.y)))), list(model.input_names)).inputs
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for start in range(0, len(next(iter(batch.values()))), 16):
            model(*(batch[n][start:start + 16] for n in model.input_names))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def convert_saved(task: str, student_dir: str, out_dir: str, quick: bool) -> float:
    """Convert a saved student through the real chain (onnx + full int8); runs in a worker process."""
    from edgekd.convert import representative as rep
    from edgekd.convert.api import ConvertOptions, convert_model, held_out_from
    from edgekd.models import load_model
    from edgekd.targets import get_target

    _, data, _ = task_data(task, quick)
    student = load_model(student_dir)
    names = list(student.input_names)
    n = 16 if quick else 64
    t0 = time.perf_counter()
    convert_model(student, held_out_from(data, names, n, 0), rep.from_training_split(data, names, n, 0),
                  get_target("local"), out_dir, formats=["onnx", "tflite-int8"],
                  options=ConvertOptions(check_parity=False, eval_samples=n, calibration_samples=n,
                                         min_calibration_samples=n))
    return time.perf_counter() - t0


def convert_all(built: dict[str, dict[str, Any]], workdir: Path, quick: bool, workers: int) -> None:
    """Every task's student converted, up to `workers` at a time (each conversion is mostly one
    process's work); timing starts only after all of them have finished."""
    import concurrent.futures as futures
    import multiprocessing

    with futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = {task: pool.submit(convert_saved, task, str(workdir / task / "student"), str(m["convert_dir"]), quick)
                for task, m in built.items()}
        for task, job in jobs.items():
            try:
                built[task]["convert_seconds"] = job.result()
            except EdgekdError as exc:  # recorded, and the other tasks are still measured
                built[task]["error"] = exc.message
                print(f"{task}: the student does not convert: {exc.message}", flush=True)


def models_from_run(task: str, run: Path) -> dict[str, Any]:
    """A pipeline run's trained teacher and student and its converted student."""
    from edgekd.models import load_model

    recipe, data, options = task_data(task, quick=False)  # the inputs the run was trained and converted on
    return {"recipe": recipe.name, "data": data, "data_options": options,
            "teacher": load_model(run / "01-teacher"), "student": load_model(run / "02-student"),
            "convert_dir": run / "03-convert", "convert_seconds": None, "weights": f"trained ({run})"}


def measure_task(task: str, models: dict[str, Any], threads: int, min_time: float) -> tuple[dict[str, float], dict[str, Any]]:
    import onnxruntime as ort
    import torch

    from edgekd.agent.edgekd_agent import open_model
    from edgekd.artifacts import read_manifest
    from edgekd.distill.trainer import tensors_for
    from edgekd.models import count_parameters
    from edgekd.runners.deploy import load_eval_set

    teacher, student, data = models["teacher"], models["student"], models["data"]
    teacher.eval()
    student.eval()
    one = data.subset(np.arange(1))
    t_args = tuple(tensors_for(one, list(teacher.input_names)).inputs[n] for n in teacher.input_names)
    s_inputs = tensors_for(one, list(student.input_names)).inputs
    s_args = tuple(s_inputs[n] for n in student.input_names)
    outputs = read_manifest(models["convert_dir"]).outputs
    int8_path = models["convert_dir"] / outputs["tflite-int8"]["path"]
    onnx_path = models["convert_dir"] / outputs["onnx"]["path"] if "onnx" in outputs else None

    # Each engine keeps its own thread pool, and a pool that has just worked spins on the cores for
    # a while: on 2 cores torch's OpenMP threads, timed first, made XNNPACK's 2-thread int8 runs
    # 2-3x slower. So the engines run one after the other with a rest between them, the int8 model
    # first, and each pool is released (del) before the next engine starts.
    results: dict[str, dict[str, float]] = {}
    tfl = open_model(str(int8_path), "tflite", threads)
    eval_inputs, _ = load_eval_set(models["convert_dir"] / outputs["eval"]["path"])
    bound = tfl.bind([(name, x.shape[1:]) for name, x in eval_inputs.items()])
    tensors = tfl.prepare([x[:1] for x in eval_inputs.values()])
    results["tflite_int8_student"] = time_fn(lambda: tfl.invoke(tensors), 10, min_time, 50)
    del tfl
    if onnx_path is not None:
        time.sleep(ENGINE_REST_S)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        feed = {i.name: s_inputs[i.name].numpy() for i in session.get_inputs()}
        results["ort_fp32_student"] = time_fn(lambda: session.run(None, feed), 10, min_time, 50)
        del session
    time.sleep(ENGINE_REST_S)
    with torch.inference_mode():
        results["torch_fp32_teacher"] = time_fn(lambda: teacher(*t_args), 3, min_time, 10)
        results["torch_fp32_student"] = time_fn(lambda: student(*s_args), 3, min_time, 10)

    int8 = results["tflite_int8_student"]["median_ms"]
    figures = {f"{task}_{k}_ms": v["median_ms"] for k, v in results.items()}
    figures[f"{task}_ratio_teacher_over_int8"] = results["torch_fp32_teacher"]["median_ms"] / int8
    figures[f"{task}_ratio_student_torch_over_int8"] = results["torch_fp32_student"]["median_ms"] / int8
    if "ort_fp32_student" in results:
        figures[f"{task}_ratio_student_ort_over_int8"] = results["ort_fp32_student"]["median_ms"] / int8
    figures[f"{task}_teacher_params"] = count_parameters(teacher)
    figures[f"{task}_student_params"] = count_parameters(student)
    figures[f"{task}_int8_bytes"] = int8_path.stat().st_size
    if models["convert_seconds"] is not None:
        figures[f"{task}_convert_seconds"] = round(models["convert_seconds"], 1)
    config = {
        "recipe": models["recipe"], "weights": models["weights"], "data": {"source": "synthetic", **{
            k: v for k, v in models["data_options"].items() if k not in DATA_SIZE[task]}},
        "teacher": {"arch": teacher.arch_name, "params": teacher.arch_params},
        "student": {"arch": student.arch_name, "params": student.arch_params},
        "teacher_inputs": {n: list(a.shape) for n, a in zip(teacher.input_names, t_args)},
        "student_inputs": {n: list(a.shape) for n, a in zip(student.input_names, s_args)},
        "int8_inputs_bound": bound, "int8_model": str(int8_path.name),
        "runs": {k: v["runs"] for k, v in results.items()}, "p90_ms": {k: v["p90_ms"] for k, v in results.items()},
    }
    return figures, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter sequences and timing windows (under 3 minutes)")
    parser.add_argument("--out", help="JSON file to write")
    parser.add_argument("--tasks", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--run", help="a pipeline run directory with trained models (01-teacher, 02-student, "
                                      "03-convert) for the one task given in --tasks")
    parser.add_argument("--min-time", type=float, default=None, help="seconds per engine (default 1 quick, 5 full)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every engine (default: the local target's runtime.threads)")
    parser.add_argument("--workers", type=int, default=2, help="conversions run at once (before any timing)")
    args = parser.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in RECIPES]
    if unknown or not tasks:
        parser.error(f"unknown task(s) {unknown}; choose from {', '.join(RECIPES)}")
    if args.run and len(tasks) != 1:
        parser.error("--run holds one task's models: give that task alone with --tasks")

    import torch

    from edgekd.targets import get_target

    threads = args.threads or get_target("local").runtime.threads
    torch.set_num_threads(threads)
    min_time = args.min_time if args.min_time is not None else (1.0 if args.quick else 5.0)
    figures: dict[str, float] = {}
    config: dict[str, Any] = {"threads": threads, "batch": 1, "min_time_s": min_time, "quick": args.quick,
                              "target": "local", "convert_workers": args.workers, "tasks": {}}
    config["load_average_start"] = list(os.getloadavg())  # other jobs on the machine shift absolute times
    if os.getloadavg()[0] > (os.cpu_count() or 1) and threads > 1:
        print(f"note: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: multi-threaded engines "
              "(torch above all) slow down badly on a busy machine; --threads 1 compares them fairly", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            built = {tasks[0]: models_from_run(tasks[0], Path(args.run))}
        else:
            built = {task: models_built(task, Path(tmp), args.quick) for task in tasks}
            print(f"converting {', '.join(tasks)} ({args.workers} at a time) ...", flush=True)
            convert_all(built, Path(tmp), args.quick, args.workers)
        for task, models in built.items():
            if models.get("error"):
                config["tasks"][task] = {"recipe": models["recipe"], "data": models["data_options"],
                                         "convert_error": models["error"]}
                figures[f"{task}_converted"] = 0
                continue
            task_figures, task_config = measure_task(task, models, threads, min_time)
            task_figures[f"{task}_converted"] = 1
            figures.update(task_figures)
            config["tasks"][task] = task_config
            print(f"{task}: int8 student {task_figures[f'{task}_tflite_int8_student_ms']:.3f} ms, fp32 teacher "
                  f"{task_figures[f'{task}_torch_fp32_teacher_ms']:.3f} ms: "
                  f"{task_figures[f'{task}_ratio_teacher_over_int8']:.1f}x", flush=True)
    figures["seconds_total"] = round(time.perf_counter() - started, 1)
    config["load_average_end"] = list(os.getloadavg())
    result = write_result(args.out, figures, config)
    for k, v in result["figures"].items():
        print(f"{k:45s} {v:12.4f}")


if __name__ == "__main__":
    main()
