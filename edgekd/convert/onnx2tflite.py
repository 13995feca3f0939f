"""Hop 2: ONNX -> onnx2tf SavedModel -> TFLite fp32, fp16, dynamic-range int8, full int8.

onnx2tf (pinned, see constraints.txt) runs in a subprocess whose output goes to
`onnx2tf.log` in the artifact directory. It writes a SavedModel with channel-last inputs
(see layout.py). The TFLite files then come from one of two quantizers:

- "tensorflow" (the default): TensorFlow's TFLiteConverter on the SavedModel for every mode,
  in a subprocess (tf_worker) whose output goes to `tensorflow.log`. This is the path known
  to work with the pinned versions; it makes exactly the modes asked for (onnx2tf's -oiqt
  also makes four int16/float-IO variants: about 3x the time on the students), and gives
  per-channel and per-tensor models from one SavedModel with consistent tensor names (which
  the per-layer comparison pairs by name).
- "onnx2tf": onnx2tf's own outputs (its -oiqt int8 path, calibrated with our representative
  data in the channel-last layout through -cind). Where onnx2tf's int8 step fails or writes
  no file, the SavedModel it wrote is quantized by TensorFlow's converter instead, and the
  fallback is recorded in the notes.

Both quantizers are TensorFlow's converter underneath. Full-int8 models take int8 inputs and
give int8 outputs; per-channel weights by default, per-tensor on request (Edge TPU).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from edgekd.artifacts import atomic_write_json
from edgekd.convert.layout import ModelIO
from edgekd.errors import ConversionError, MissingDependencyError

TFLITE_MODES = ("fp32", "fp16", "dynamic-int8", "int8")
FORMAT_OF_MODE = {"fp32": "tflite-fp32", "fp16": "tflite-fp16", "dynamic-int8": "tflite-dynamic-int8", "int8": "tflite-int8"}
MODE_OF_FORMAT = {v: k for k, v in FORMAT_OF_MODE.items()}
# onnx2tf's file suffixes for each mode
ONNX2TF_SUFFIX = {"fp32": "float32", "fp16": "float16", "dynamic-int8": "dynamic_range_quant", "int8": "full_integer_quant"}

Quantizer = Literal["tensorflow", "onnx2tf"]
QUANTIZERS = ("tensorflow", "onnx2tf")


@dataclass
class TFLiteOptions:
    modes: Sequence[str]
    io: ModelIO
    calibration: Mapping[str, np.ndarray] | None = None  # name -> (N, ...) in MODEL layout
    per_channel: bool = True
    quantizer: Quantizer = "tensorflow"
    timeout_s: float = 1800.0
    node_modules: Mapping[str, str] = field(default_factory=dict)  # ONNX node -> torch module
    file_stem: str = "model"
    # onnx2tf's strict mode checks and corrects each broadcasting op against onnxruntime. It
    # costs about twice the time on an unrolled spiking student, but without it (-dsm) the
    # float TFLite model of a spiking GCN student agreed with ONNX on 83 % of samples instead
    # of 95 %. True: strict, falling back to -dsm where strict mode itself crashes; False: -dsm.
    strict: bool = True
    # a spiking student: int8 pins the ranges its spikes ("spikes"), with lif.membrane_grid its
    # integer membranes ("integer"), and for an int8_exact model also its input and readout
    # ("exact") set, between calibration and quantization (edgekd.convert.spiking_ranges;
    # TensorFlow's quantizer only)
    spiking: Literal["spikes", "integer", "exact"] | None = None


@dataclass
class TFLiteResult:
    paths: dict[str, Path]  # mode -> .tflite
    saved_model: Path
    quantizer_used: dict[str, str]  # mode -> "onnx2tf" | "tensorflow"
    notes: list[str]
    seconds: dict[str, float]


def onnx2tflite(onnx_path: str | os.PathLike, out_dir: str | os.PathLike, options: TFLiteOptions) -> TFLiteResult:
    """Convert an ONNX model to the requested TFLite modes inside `out_dir`."""
    bad = [m for m in options.modes if m not in TFLITE_MODES]
    if bad:
        raise ConversionError(f"unknown TFLite mode(s) {bad}", hint=f"modes: {', '.join(TFLITE_MODES)}")
    quantized = [m for m in options.modes if m == "int8"]
    if quantized and options.calibration is None:
        raise ConversionError("full-int8 TFLite needs a representative dataset", hint="give calibration data")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    seconds: dict[str, float] = {}
    if options.quantizer not in QUANTIZERS:
        raise ConversionError(f"unknown quantizer '{options.quantizer}'", hint=f"quantizers: {', '.join(QUANTIZERS)}")
    use_onnx2tf_quant = options.quantizer == "onnx2tf"
    if quantized and use_onnx2tf_quant and options.spiking in ("integer", "exact"):
        raise ConversionError("a student with integer LIF membranes (lif.membrane_grid) is quantized by TensorFlow's "
                              "converter only (the membrane ranges are pinned between its calibration and quantization)",
                              hint="use the quantizer 'tensorflow' (the default)")
    cal_files = write_calibration_npy(options, out_dir / "calibration") if (quantized and use_onnx2tf_quant) else {}
    start = time.perf_counter()
    sm_dir, onnx2tf_files, sm_notes = onnx2savedmodel(
        onnx_path, out_dir, options, calibration_files=cal_files, per_channel=options.per_channel
    )
    if not use_onnx2tf_quant:
        onnx2tf_files = {}
    seconds["onnx2tf"] = round(time.perf_counter() - start, 2)
    notes += sm_notes
    paths: dict[str, Path] = {}
    used: dict[str, str] = {}
    todo: list[str] = []
    for mode in options.modes:
        found = onnx2tf_files.get(mode)
        if use_onnx2tf_quant and found is not None:
            dest = out_dir / f"{options.file_stem}.{mode}.tflite"
            shutil.copyfile(found, dest)
            paths[mode], used[mode] = dest, "onnx2tf"
        else:
            if use_onnx2tf_quant:
                notes.append(f"onnx2tf wrote no {mode} model; TensorFlow's converter quantized the SavedModel instead")
            todo.append(mode)
    if todo:
        start = time.perf_counter()
        made = savedmodel2tflite(sm_dir, out_dir, options, modes=todo)
        seconds["tensorflow"] = round(time.perf_counter() - start, 2)
        for mode, p in made.items():
            paths[mode], used[mode] = p, "tensorflow"
    return TFLiteResult(paths, sm_dir, used, notes, seconds)


# ---------------------------------------------------------------- onnx2tf


def onnx2savedmodel(onnx_path: str | os.PathLike, out_dir: str | os.PathLike, options: TFLiteOptions,
                    calibration_files: Mapping[str, Path] | None = None,
                    per_channel: bool = True) -> tuple[Path, dict[str, Path], list[str]]:
    """Run onnx2tf; returns (SavedModel dir, {mode: tflite onnx2tf wrote}, notes).

    Without options.strict, onnx2tf runs with -dsm. With it, strict mode first; strict mode
    itself crashes on some graphs (scalar constants in Mul, common in unrolled LIF neurons),
    which is retried with -dsm and noted."""
    if shutil.which("onnx2tf") is None and not _has_module("onnx2tf"):
        raise MissingDependencyError("onnx2tf is not installed",
                                     hint="pip install -c constraints.txt --no-deps onnx2tf onnxoptimizer (see the Makefile)")
    out_dir = Path(out_dir).resolve()  # the subprocess runs in out_dir: every path absolute
    onnx_path = Path(onnx_path).resolve()
    calibration_files = {k: Path(v).resolve() for k, v in (calibration_files or {}).items()}
    sm_dir = out_dir / "saved_model"
    log = out_dir / "onnx2tf.log"
    notes: list[str] = []
    attempts = [[], ["-dsm"]] if options.strict else [["-dsm"]]
    last_error = ""
    for extra in attempts:
        if sm_dir.exists():
            shutil.rmtree(sm_dir)
        argv = [sys.executable, "-m", "edgekd.convert.onnx2tf_worker", "-i", str(onnx_path), "-o", str(sm_dir),
                "-osd", "-v", "error", *extra]
        if not calibration_files:
            argv.append("--savedmodel-only")  # TensorFlow's converter makes every .tflite from the SavedModel
        if calibration_files:
            argv += ["-oiqt", "-qt", "per-channel" if per_channel else "per-tensor"]
            for name, path in calibration_files.items():
                rank = len(options.io.input(name).shape)
                zeros = "[" * rank + "0.0" + "]" * rank
                ones = "[" * rank + "1.0" + "]" * rank
                argv += ["-cind", name, str(path), zeros, ones]
        with open(log, "ab") as fh:
            fh.write(f"\n==== {' '.join(argv)}\n".encode())
            fh.flush()
            try:
                proc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, timeout=options.timeout_s,
                                      env=_quiet_tf_env(), cwd=out_dir, check=False)
            except subprocess.TimeoutExpired:
                raise ConversionError(f"onnx2tf did not finish within {options.timeout_s:.0f} s",
                                      hint=f"see {log}; a smaller model or a longer timeout helps") from None
        saved = (sm_dir / "saved_model.pb").exists()
        if saved:
            if proc.returncode != 0:
                notes.append(f"onnx2tf exited with {proc.returncode} after writing the SavedModel (see onnx2tf.log)")
            if extra and options.strict:
                notes.append("onnx2tf's strict mode crashed on this graph; converted with -dsm")
            files = {}
            stem = Path(onnx_path).stem
            for mode, suffix in ONNX2TF_SUFFIX.items():
                p = sm_dir / f"{stem}_{suffix}.tflite"
                if p.exists():
                    files[mode] = p
            return sm_dir, files, notes
        last_error = _onnx2tf_failure(log)
        if not _strict_mode_failure(last_error):
            break  # a real conversion failure: -dsm would fail the same way
    raise onnx2tf_error(last_error, log, options.node_modules, onnx_path)


def metadata_version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _strict_mode_failure(log_text: str) -> bool:
    """onnx2tf's accuracy-correction step (strict mode) crashed, not the conversion itself."""
    return any(marker in log_text for marker in ("correction_process_for_accuracy_errors", "acquisition_of_validation_data"))


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _quiet_tf_env() -> dict[str, str]:
    env = dict(os.environ)
    # onnx2tf runs the `onnxsim` command: find the one installed beside this Python
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU probing: the host converts on the CPU
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # bit-stable float results across runs
    return env


def _onnx2tf_failure(log: Path) -> str:
    text = log.read_text(errors="replace")
    last_run = text.rsplit("==== ", 1)[-1]
    return re.sub(r"\x1b\[[0-9;]*m", "", last_run)


def onnx2tf_error(log_text: str, log: Path, node_modules: Mapping[str, str],
                  onnx_path: str | os.PathLike | None = None) -> ConversionError:
    op_names = re.findall(r"onnx_op_name:\s*(\S+)", log_text)
    op_types = re.findall(r"onnx_op_type:\s*(\S+)", log_text)
    missing = re.findall(r"(\w+) OP is not yet implemented", log_text)
    if missing and onnx_path is not None:
        # onnx2tf has no converter for this op type at all: name every node of that type
        import onnx

        nodes = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node if n.op_type == missing[-1]]
        modules = sorted({m for m in (node_modules.get(n) or _module_by_prefix(n, node_modules) for n in nodes) if m})
        where = f" (nodes {', '.join(nodes[:3])}" + (f"; torch module {', '.join(modules[:3])}" if modules else "") + ")"
        return ConversionError(
            f"onnx2tf {metadata_version('onnx2tf')} cannot convert ONNX op '{missing[-1]}'{where}: it has no converter for it",
            hint=f"rewrite that module with ops TFLite has (see {log})",
        )
    errors = [ln.strip() for ln in log_text.splitlines() if re.match(r"\s*\w*(Error|Exception):", ln)]
    reason = errors[-1] if errors else "see the log"
    if op_names:
        name = op_names[-1]
        module = node_modules.get(name) or _module_by_prefix(name, node_modules)
        kind = f" ({op_types[-1]})" if op_types else ""
        where = f", from torch module '{module}'" if module else ""
        return ConversionError(
            f"onnx2tf cannot convert ONNX node '{name}'{kind}{where}: {reason}",
            hint=f"rewrite that module with ops TFLite has (see {log}); onnx2tf's parameter replacement "
            "file (-prf) can patch single nodes",
        )
    return ConversionError(f"onnx2tf failed: {reason}", hint=f"see {log}")


def _module_by_prefix(node_name: str, node_modules: Mapping[str, str]) -> str | None:
    # onnxsim/onnx2tf may rename nodes ('/features/conv_3/Conv' -> '/features/conv_3/Conv_new'): match by scope
    scope = node_name.rsplit("/", 1)[0]
    for onnx_name, module in node_modules.items():
        if onnx_name.rsplit("/", 1)[0] == scope:
            return module
    return None


def write_calibration_npy(options: TFLiteOptions, directory: Path) -> dict[str, Path]:
    """One .npy per input in TFLite (channel-last) layout, as onnx2tf's -cind wants."""
    from edgekd.convert.layout import channel_last_perm, to_tflite_layout

    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    if options.calibration is None:
        raise ConversionError("full-int8 TFLite needs a representative dataset", hint="give calibration data")
    for sig in options.io.inputs:
        arr = np.asarray(options.calibration[sig.name], dtype=np.float32)
        perm = sig.tflite_perm or channel_last_perm(len(sig.shape))
        path = directory / f"{sig.name}.npy"
        np.save(path, to_tflite_layout(arr, perm))
        files[sig.name] = path
    return files


# ---------------------------------------------------------------- TensorFlow's converter


def savedmodel2tflite(saved_model: str | os.PathLike, out_dir: str | os.PathLike, options: TFLiteOptions,
                      modes: Sequence[str] | None = None, suffix: str = "") -> dict[str, Path]:
    """TFLiteConverter.from_saved_model for each mode, in one TensorFlow subprocess."""
    out_dir = Path(out_dir).resolve()
    saved_model = Path(saved_model).resolve()
    modes = list(modes or options.modes)
    job_dir = out_dir / "calibration"
    job_dir.mkdir(parents=True, exist_ok=True)
    cal_path = None
    if "int8" in modes:
        if options.calibration is None:
            raise ConversionError("full-int8 TFLite needs a representative dataset", hint="give calibration data")
        from edgekd.convert.layout import channel_last_perm, to_tflite_layout

        arrays = {}
        for sig in options.io.inputs:
            perm = sig.tflite_perm or channel_last_perm(len(sig.shape))
            arrays[sig.name] = to_tflite_layout(np.asarray(options.calibration[sig.name], np.float32), perm)
        cal_path = job_dir / "representative.npz"
        np.savez(cal_path, **arrays)
    outputs = {m: out_dir / f"{options.file_stem}.{m}{suffix}.tflite" for m in modes}
    job = {
        "saved_model": str(saved_model),
        "outputs": {m: str(p) for m, p in outputs.items()},
        "per_channel": options.per_channel,
        "spiking": options.spiking,
        "calibration": str(cal_path) if cal_path else None,
        "result": str(job_dir / f"tf_worker_result{suffix}.json"),
    }
    job_path = atomic_write_json(job_dir / f"tf_worker_job{suffix}.json", job)
    log = out_dir / "tensorflow.log"
    with open(log, "ab") as fh:
        fh.write(f"\n==== tf_worker {job_path}\n".encode())
        fh.flush()
        try:
            proc = subprocess.run([sys.executable, "-m", "edgekd.convert.tf_worker", str(job_path)],
                                  stdout=fh, stderr=subprocess.STDOUT, timeout=options.timeout_s,
                                  env=_quiet_tf_env(), check=False)
        except subprocess.TimeoutExpired:
            raise ConversionError(f"TensorFlow's converter did not finish within {options.timeout_s:.0f} s",
                                  hint=f"see {log}") from None
    result_path = Path(job["result"])
    if not result_path.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise ConversionError(f"TensorFlow's converter crashed (exit {proc.returncode}): {' | '.join(tail)}",
                              hint=f"see {log}")
    result = json.loads(result_path.read_text())
    failed = {m: r["error"] for m, r in result.items() if not r.get("ok")}
    if failed:
        mode, err = next(iter(failed.items()))
        raise tflite_converter_error(mode, err, log, options.node_modules)
    return outputs


def tflite_converter_error(mode: str, err: str, log: Path, node_modules: Mapping[str, str]) -> ConversionError:
    if err.startswith("ConversionError: "):  # edgekd.convert.spiking_ranges' own diagnosis
        return ConversionError(err.split(": ", 1)[1], hint=f"docs/int8-spiking.md; log: {log}")
    ops = re.findall(r"'(tf\.\w+|tfl\.\w+)'", err)
    op = f" at op {ops[0]}" if ops else ""
    first = next((ln for ln in err.splitlines() if "error" in ln.lower()), err.splitlines()[0] if err else "")
    return ConversionError(
        f"TensorFlow's converter cannot make the {mode} TFLite model{op}: {first.strip()[:300]}",
        hint=f"see {log}; ops without an int8 kernel must be replaced in the torch model",
    )
