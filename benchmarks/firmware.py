"""Firmware benchmark: bit-exactness and memory of the C int8 runtime against TFLite / TFLite Micro.

For each MCU-sized student stand-in (eye SNN, skeleton spiking GCN, face CNN; built in TensorFlow
and converted to full int8 by edgekd.firmware.reference_models until the real students come
through the conversion chain):

- host build of the runtime vs the TFLite interpreter's reference kernels (bit-exact inputs),
  vs the optimized kernels (reported, not expected equal), and the "tflm" flavour vs the TFLite
  Micro interpreter
- the same on the emulated board (qemu-system-arm -M mps2-an386) through the serial protocol
- flash and RAM of the firmware (ELF + linker map) next to TFLite Micro's arena for the model
- instructions per inference under qemu -icount (repeatable; not the latency of a real M4)

    python benchmarks/firmware.py --quick --out runs/benchmarks/firmware.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
from _common import write_result

from edgekd.firmware import reference_models as rm

MODELS = ("eye_snn", "skeleton_sgcn", "face_cnn")
TARGET = "qemu-mps2-an386"


def interpreter_outputs(path: Path, x: np.ndarray, resolver: str) -> np.ndarray | None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = {"experimental_op_resolver_type": OpResolverType.BUILTIN_REF} if resolver == "ref" else {}
    try:
        interp = Interpreter(model_path=str(path), **kw)
        interp.allocate_tensors()
    except Exception:  # noqa: BLE001 - e.g. XNNPACK refusing a model: reported as missing
        return None
    i, o = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    out = []
    for s in x:
        interp.set_tensor(i, s)
        interp.invoke()
        out.append(interp.get_tensor(o).copy())
    return np.stack(out)


def tflm_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_file(str(path), arena_size=1 << 20)
    out = []
    for s in x:
        interp.set_input(s, 0)
        interp.invoke()
        out.append(np.asarray(interp.get_output(0)).copy())
    return np.stack(out)


def same_rows(a: np.ndarray, b: np.ndarray) -> int:
    n = a.shape[0]
    return int(np.all(a.reshape(n, -1) == b.reshape(n, -1), axis=1).sum())


def bench_model(name: str, work: Path, n_host: int, n_board: int) -> dict[str, float]:
    from edgekd.convert.tflite2c import tflm_arena_bytes
    from edgekd.firmware.api import profile_mcu
    from edgekd.firmware.build import build_firmware
    from edgekd.firmware.host import build_host_model

    f: dict[str, float] = {}
    path = rm.build_cached(name, work / "models")
    host = build_host_model(path, work / name / "host-tflite", reference="tflite")
    host_tflm = build_host_model(path, work / name / "host-tflm", reference="tflm")
    shape = tuple(host.metadata["inputs"][0]["shape"])
    x = rm.random_int8_inputs(shape, n_host, seed=1234)
    mine = host.run(x)
    ref = interpreter_outputs(path, x, "ref")
    opt = interpreter_outputs(path, x, "opt")
    f[f"{name}.host_inputs"] = n_host
    f[f"{name}.host_bit_exact_vs_tflite_ref"] = same_rows(mine, ref.reshape(mine.shape))
    if opt is not None:
        f[f"{name}.host_bit_exact_vs_tflite_optimized"] = same_rows(mine, opt.reshape(mine.shape))
    f[f"{name}.host_tflm_flavour_bit_exact_vs_tflm"] = same_rows(host_tflm.run(x), tflm_outputs(path, x).reshape(mine.shape))

    build = build_firmware(path, TARGET, work / name / "fw")
    s = build.sizes
    f[f"{name}.flash_bytes"] = s["flash_bytes"]
    f[f"{name}.ram_bytes"] = s["ram_bytes"]
    f[f"{name}.arena_bytes"] = s["arena_bytes"]
    f[f"{name}.stack_reserved_bytes"] = s["stack_bytes"]
    f[f"{name}.model_flash_bytes"] = s["model_flash_bytes"]
    tflm = tflm_arena_bytes(path)
    f[f"{name}.tflm_arena_bytes"] = tflm
    f[f"{name}.arena_over_tflm_arena"] = round(s["arena_bytes"] / tflm, 4)
    f[f"{name}.ram_over_tflm_arena"] = round(s["ram_bytes"] / tflm, 4)

    xb = rm.random_int8_inputs(shape, n_board, seed=4321)
    t0 = time.monotonic()
    res = profile_mcu(path, TARGET, xb, out_dir=build.out_dir, timing_runs=10, progress=False)
    f[f"{name}.board_inputs"] = res["n_done"]
    f[f"{name}.board_bit_exact_vs_tflite_ref"] = res.get("bit_exact_inputs", 0)
    f[f"{name}.board_seconds"] = round(time.monotonic() - t0, 2)
    t = res.get("timing") or {}
    if "instructions_per_inference" in t:
        f[f"{name}.board_instructions_per_inference"] = round(t["instructions_per_inference"])
    mem = res.get("memory_on_board") or {}
    if "stack_used" in mem:
        f[f"{name}.board_stack_used_bytes"] = mem["stack_used"]
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer inputs (same code path), < 3 min on 2 cores")
    ap.add_argument("--out", type=Path, help="write the JSON result here")
    ap.add_argument("--work", type=Path, help="keep models and builds here (default: a temporary folder)")
    args = ap.parse_args()
    n_host, n_board = (300, 200) if args.quick else (2000, 1000)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        figures: dict[str, float] = {}
        for name in MODELS:
            figures.update(bench_model(name, work, n_host, n_board))
            print(f"{name}: " + ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in figures.items() if k.startswith(name)),
                  flush=True)
    figures["wall_seconds"] = round(time.monotonic() - t0, 1)
    config = {"quick": args.quick, "models": list(MODELS), "target": TARGET, "host_inputs": n_host,
              "board_inputs": n_board, "inputs": "uniform random int8 over the whole range, fixed seeds",
              "models_note": "stand-ins built in TensorFlow (edgekd.firmware.reference_models), random weights"}
    write_result(args.out, figures, config)


if __name__ == "__main__":
    main()
