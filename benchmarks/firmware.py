"""Firmware benchmark: bit-exactness and memory of the C int8 runtime against TFLite / TFLite Micro.

Models:
- the real MCU-sized students, trained briefly with cross-entropy on the recipe's synthetic data
  (accuracy is not the point here; bit-exactness is) and converted to full int8 by the chain
  `edgekd convert` runs (torch -> ONNX -> onnx2tf -> TFLite int8): the eye spiking CNN
  (eye-snn tiny, T=4 16x16 with --quick, T=8 32x32 in the full run, which also has size small),
  the skeleton spiking GCN (skeleton-sgn tiny, T=4 with --quick, T=8 in the full run; 4 inputs:
  joints, bones and their motions), the face CNN (face-resemotenet tiny, 48x48) when its
  architecture is present;
- full run only: the TensorFlow-built stand-ins of edgekd.firmware.reference_models.

For each: the host build of the runtime vs the TFLite interpreter's reference kernels, the
"tflm" flavour vs the TFLite Micro interpreter and the "tflite-cpu" flavour vs TFLite's
default CPU kernels (XNNPACK) on every validation sample (cut from the training
side; real students) or on random int8 inputs (stand-ins); the same on the emulated board
(qemu-system-arm -M mps2-an386) through the serial protocol; flash and RAM of the firmware (ELF +
linker map) next to TFLite Micro's arena for the same model; the bytes of constants shared by the
unrolled time steps (emitted once); instructions per inference under qemu -icount (repeatable;
not the latency of a real M4). Two models convert at a time (onnx2tf is single-threaded) and the
boards run on threads of their own as soon as their model is ready; training is serialized
(torch's global random state), so each student is the same as when benchmarked alone.

--int8-exact: the students built to compute what int8 computes (`int8_exact`, as in
benchmarks/convert.py), with the firmware in the "tflite-cpu" flavour: the board's
outputs compared with TFLite's default CPU kernels, whose results equal the float model's.

    python benchmarks/firmware.py --quick --out runs/benchmarks/firmware-quick.json
    python benchmarks/firmware.py --quick --int8-exact --out runs/benchmarks/firmware-exact.json
    python benchmarks/firmware.py --out runs/benchmarks/firmware.json          (tens of minutes)
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
from _common import write_result

TARGET = "qemu-mps2-an386"
# One model built in-process at a time: training uses torch's global random state (each student is
# then the same as when benchmarked alone) and the stand-ins are built by TensorFlow in-process.
BUILD_LOCK = threading.Lock()
STAND_INS = ("eye_snn", "skeleton_sgcn", "face_cnn")
# figure-name suffix for the interpreter each firmware flavour is compared with
COMPARED = {"tflite": "tflite_ref", "tflite-cpu": "tflite_cpu", "tflm": "tflm"}


@dataclass
class Student:
    task: str  # benchmarks/convert.py's task name (its --int8-exact overrides)
    recipe: str
    arch: str
    params: dict[str, Any]
    quick: list[str] | None  # recipe overrides for --quick (None: full run only)
    full: list[str] = field(default_factory=list)
    board_inputs: int = 200  # the bar: >= 200 inputs on the emulated board


# In this order: the skeleton student converts longest (onnx2tf on ~800 nodes), so it goes first
# and the others convert while its board run goes on.
STUDENTS: dict[str, Student] = {
    "skeleton_tiny": Student("skeleton", "skeleton-mksgn", "skeleton-sgn", {"size": "tiny"},
                             quick=["data.options.frames=4"], full=["data.options.frames=8"]),
    "eye_tiny": Student("eye", "eye-mskd", "eye-snn", {"size": "tiny"},
                        quick=["data.options.frames=4", "data.options.size=16", "data.options.samples=1100"]),
    # ~1.5e9 instructions per inference: fewer inputs on the emulated board (its flash is the figure)
    "eye_small": Student("eye", "eye-mskd", "eye-snn", {"size": "small"}, quick=None, board_inputs=50),
    "face_tiny": Student("face", "face-mini-resemotenet", "face-resemotenet", {"size": "tiny"},
                         quick=["data.options.samples=1100"]),
}


# ---------------------------------------------------------------- the real students


def convert_student(name: str, quick: bool, work: Path, log: Any, exact: bool = False) -> tuple[Path, Any, np.ndarray, dict[str, Any]]:
    """Train the student briefly and convert it to full int8; returns the .tflite, the validation
    inputs as edgekd convert writes them (eval.npz), their labels and a description."""
    from convert import EXACT, train_student  # benchmarks/convert.py: the same brief training

    from edgekd.config import load_recipe
    from edgekd.convert import representative as rep
    from edgekd.convert.api import ConvertOptions, convert_model, held_out_from
    from edgekd.firmware.api import load_inputs
    from edgekd.models import count_parameters
    from edgekd.targets import get_target

    s = STUDENTS[name]
    overrides = (s.quick if quick else s.full) or []
    overrides = [*overrides, f"student.arch={s.arch}"] + [f'student.params.{k}="{v}"' for k, v in s.params.items()]
    overrides += EXACT[s.task] if exact else []
    recipe = load_recipe(s.recipe, overrides)
    steps = 60 if quick else 150
    with BUILD_LOCK:
        t0 = time.perf_counter()
        model, data = train_student(recipe, steps, recipe.seed)
        train_s = time.perf_counter() - t0
    names = list(model.input_names)
    held = held_out_from(data.validation, names, 10_000, recipe.seed)  # every validation sample
    cal = rep.from_training_split(data.train, names, 64 if quick else recipe.convert.calibration_samples, recipe.seed)
    out = work / name / "convert"
    t0 = time.perf_counter()
    result = convert_model(model, held, cal, get_target("local"), out, formats=["tflite-int8"],
                           options=ConvertOptions(check_parity=False, min_calibration_samples=32), log=log)
    convert_s = time.perf_counter() - t0
    inputs = load_inputs(out / "eval.npz")  # TFLite layout, float: quantized with the model's own scales
    desc = {"recipe": recipe.name, "overrides": overrides, "student": f"{s.arch} {recipe.student.params}",
            "parameters": count_parameters(model), "training": f"{steps} steps of cross-entropy, batch 32",
            "train_seconds": round(train_s, 1), "convert_seconds": round(convert_s, 1),
            "validation": held.description, "input_shapes": {sig.name: list(sig.tflite_shape) for sig in result.io.inputs}}
    return result.formats["tflite-int8"], inputs, np.asarray(held.labels), desc


# ---------------------------------------------------------------- one model through host and board


def bench_host(name: str, path: Path, inputs: Any, work: Path, log: Any,
               reference: str = "tflite") -> tuple[dict[str, float], dict[str, Any], Any, list]:
    """Host build vs the interpreters, firmware sizes vs TFLite Micro's arena; returns the figures,
    notes, the firmware build (in the `reference` flavour) and the model's int8 inputs (for the board)."""
    from edgekd.convert.tflite2c import tflm_arena_bytes
    from edgekd.errors import EdgekdError
    from edgekd.firmware.api import input_arrays, interpreter_outputs
    from edgekd.firmware.build import build_firmware
    from edgekd.firmware.host import build_host_model

    f: dict[str, float] = {}
    notes: dict[str, Any] = {}
    host = build_host_model(path, work / name / "host-tflite", reference="tflite")
    arrays = input_arrays(inputs, host.metadata["inputs"])
    n = len(arrays[0])
    mine = host.run(arrays)
    f[f"{name}.host_inputs"] = n
    f[f"{name}.host_bit_exact_vs_tflite_ref"] = same_rows(mine, interpreter_outputs(path, arrays).reshape(mine.shape))
    # a model that answers the same for every input would be bit-exact trivially: say how varied it is
    f[f"{name}.host_distinct_outputs"] = len({row.tobytes() for row in mine.reshape(n, -1)})
    try:
        tflm_out = interpreter_outputs(path, arrays, "tflm").reshape(mine.shape)
        host_tflm = build_host_model(path, work / name / "host-tflm", reference="tflm")
        f[f"{name}.host_tflm_flavour_bit_exact_vs_tflm"] = same_rows(host_tflm.run(arrays), tflm_out)
    except Exception as exc:  # noqa: BLE001 - TFLite Micro refusing a model is a result
        notes["tflm_interpreter"] = f"TFLite Micro did not run the model: {exc}"
    try:  # one rounding, as TFLite's default CPU kernels: what an int8_exact student needs
        cpu_out = interpreter_outputs(path, arrays, "tflite-cpu").reshape(mine.shape)
        host_single = build_host_model(path, work / name / "host-single", reference="tflite-cpu")
        f[f"{name}.host_cpu_flavour_bit_exact_vs_tflite_cpu"] = same_rows(host_single.run(arrays), cpu_out)
        f[f"{name}.host_tflite_ref_flavour_bit_exact_vs_tflite_cpu"] = same_rows(mine, cpu_out)
    except EdgekdError as exc:  # XNNPACK refusing a model is a result too
        notes["tflite_cpu_interpreter"] = exc.message
    log(f"{name}: host {f[f'{name}.host_bit_exact_vs_tflite_ref']}/{n} bit-exact")

    build = build_firmware(path, TARGET, work / name / "fw", reference=reference)
    s = build.sizes
    f[f"{name}.flash_bytes"] = s["flash_bytes"]
    f[f"{name}.ram_bytes"] = s["ram_bytes"]
    f[f"{name}.arena_bytes"] = s["arena_bytes"]
    f[f"{name}.stack_reserved_bytes"] = s["stack_bytes"]
    f[f"{name}.model_flash_bytes"] = s["model_flash_bytes"]
    f[f"{name}.constants_bytes"] = build.model["weight_bytes"]
    f[f"{name}.constants_shared_bytes"] = build.model["shared_weight_bytes"]  # repeats not emitted again
    try:
        tflm = tflm_arena_bytes(path)
        f[f"{name}.tflm_arena_bytes"] = tflm
        f[f"{name}.arena_over_tflm_arena"] = round(s["arena_bytes"] / tflm, 4)
        f[f"{name}.ram_over_tflm_arena"] = round(s["ram_bytes"] / tflm, 4)
    except EdgekdError as exc:
        notes["tflm_arena"] = exc.message
    return f, notes, build, arrays


def bench_board(name: str, path: Path, build: Any, arrays: list, labels: np.ndarray | None, n_board: int,
                log: Any, reference: str = "tflite") -> tuple[dict[str, float], dict[str, Any]]:
    """The first n_board inputs on the emulated board through the serial protocol (qemu's own thread
    of work: the next model converts meanwhile)."""
    from edgekd.convert.runtime import tflite_name
    from edgekd.firmware.api import profile_mcu

    f: dict[str, float] = {}
    notes: dict[str, Any] = {}
    if n_board > 0:
        board_in = {tflite_name(m["name"]): a[:n_board] for m, a in zip(build.model["inputs"], arrays)}
        t0 = time.monotonic()
        res = profile_mcu(path, TARGET, board_in, labels=None if labels is None else labels[:n_board],
                          out_dir=build.out_dir, timing_runs=10, progress=False, reference=reference)
        exact_key = f"{name}.board_bit_exact_vs_{COMPARED[reference]}"
        f[f"{name}.board_inputs"] = res["n_done"]
        f[exact_key] = res.get("bit_exact_inputs", 0)
        f[f"{name}.board_seconds"] = round(time.monotonic() - t0, 2)
        if "accuracy" in res:
            f[f"{name}.board_accuracy"] = round(res["accuracy"], 4)
        t = res.get("timing") or {}
        if "instructions_per_inference" in t:
            f[f"{name}.board_instructions_per_inference"] = round(t["instructions_per_inference"])
        mem = res.get("memory_on_board") or {}
        if "stack_used" in mem:
            f[f"{name}.board_stack_used_bytes"] = mem["stack_used"]
        if res.get("events"):
            notes["board_events"] = res["events"][:10]
        log(f"{name}: board {f[exact_key]}/{res['n_done']} bit-exact vs {res['compared_with']}, "
            f"{t.get('instructions_per_inference', 0):.3g} instructions/inference")
    return f, notes


def same_rows(a: np.ndarray, b: np.ndarray) -> int:
    n = a.shape[0]
    return int(np.all(a.reshape(n, -1) == b.reshape(n, -1), axis=1).sum())


def student_available(name: str) -> str | None:
    """Why the student cannot be built here (None: it can)."""
    from edgekd.config import load_recipe
    from edgekd.errors import EdgekdError
    from edgekd.models import ARCHITECTURES

    s = STUDENTS[name]
    if s.arch not in ARCHITECTURES:
        return f"no architecture '{s.arch}' in edgekd.models yet (have {sorted(ARCHITECTURES)})"
    try:
        load_recipe(s.recipe, [])
    except EdgekdError as exc:
        return f"recipe '{s.recipe}': {exc.message}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller students, no stand-ins (same code path), < 3 min on 2 cores")
    ap.add_argument("--out", type=Path, help="write the JSON result here")
    ap.add_argument("--work", type=Path, help="keep models and builds here (default: a temporary folder)")
    ap.add_argument("--models", help="comma-separated subset of: " + ", ".join([*STUDENTS, *STAND_INS]))
    ap.add_argument("--int8-exact", action="store_true",
                    help="int8_exact students; firmware in the tflite-cpu flavour (no stand-ins)")
    args = ap.parse_args()
    board_reference = "tflite-cpu" if args.int8_exact else "tflite"
    n_stand_in_host, n_stand_in_board = 2000, 200
    wanted = [m.strip() for m in args.models.split(",")] if args.models else (
        [k for k, s in STUDENTS.items() if s.quick is not None] if args.quick or args.int8_exact else [*STUDENTS, *STAND_INS])
    unknown = [m for m in wanted if m not in STUDENTS and m not in STAND_INS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}")

    import torch

    torch.set_num_threads(2)
    t_start = time.monotonic()
    figures: dict[str, float] = {}
    config: dict[str, Any] = {"quick": args.quick, "int8_exact": args.int8_exact, "target": TARGET,
                              "firmware_reference": board_reference, "models": {}}

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f} s] {msg}", flush=True)

    def prepare(name: str, work: Path) -> tuple[dict[str, Any], Any] | None:
        """Convert (or build) one model and run the host comparison; None when it is skipped."""
        if name in STUDENTS:
            why = student_available(name)
            if why or (args.quick and STUDENTS[name].quick is None):
                config["models"][name] = {"skipped": why or "full run only"}
                if why:
                    log(f"{name}: skipped ({why})")
                return None
            log(f"{name}: training and converting")
            path, inputs, labels, desc = convert_student(name, args.quick, work, lambda m: None, args.int8_exact)
            desc["inputs"] = "the validation split (cut from the training side), quantized with the model's scales"
            n_board = STUDENTS[name].board_inputs
        else:
            from edgekd.convert.tflite2c import load_graph
            from edgekd.firmware import reference_models as rm

            with BUILD_LOCK:
                path = rm.build_cached(name, work / "stand-ins")
            graph = load_graph(path)
            shape = graph.tensors[graph.inputs[0]].shape
            inputs, labels = rm.random_int8_inputs(shape, n_stand_in_host, seed=1234), None
            n_board = n_stand_in_board
            desc = {"student": "stand-in built in TensorFlow (edgekd.firmware.reference_models), random weights",
                    "inputs": "uniform random int8 over the whole range, fixed seed"}
        f, notes, build, arrays = bench_host(name, Path(path), inputs, work, log, board_reference)
        return {"figures": f, "config": {**desc, **notes, "board_inputs_asked": n_board}}, (
            name, Path(path), build, arrays, labels, n_board, log, board_reference)

    with tempfile.TemporaryDirectory(prefix="edgekd-bench-firmware-") as tmp, \
            ThreadPoolExecutor(2) as convert_pool, ThreadPoolExecutor(2) as board_pool:
        work = args.work or Path(tmp)
        prepared = [convert_pool.submit(prepare, name, work) for name in wanted]
        boards = []
        for job in as_completed(prepared):
            ready = job.result()
            if ready is None:
                continue
            host, board_args = ready
            name = board_args[0]
            figures.update(host["figures"])
            config["models"][name] = host["config"]
            write_result(args.out, figures, config)  # after every model: partial results survive
            boards.append((name, board_pool.submit(bench_board, *board_args)))
        for name, board in boards:
            f, notes = board.result()
            figures.update(f)
            config["models"][name].update(notes)
            write_result(args.out, figures, config)
    figures["wall_seconds"] = round(time.monotonic() - t_start, 1)
    write_result(args.out, figures, config)
    for k, v in figures.items():
        print(f"{k:56s} {v}")


if __name__ == "__main__":
    main()
