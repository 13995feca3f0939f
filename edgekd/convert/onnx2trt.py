"""Jetson: what the device needs to build TensorRT engines from the ONNX model.

TensorRT engines are specific to the device's GPU and TensorRT version, so they are built on
the device at deploy time by `trtexec`. This hop writes, beside model.onnx:

- model.qdq.onnx: explicit int8 quantization (QuantizeLinear/DequantizeLinear pairs,
  symmetric int8 as TensorRT requires, per-channel weights), calibrated by onnxruntime on our
  representative data. TensorRT 8+ builds it with `--int8` and needs no calibrator; onnxruntime
  runs it here, so this int8 hop is checked in the ledger like the TFLite ones.
- calibration.cache: per-tensor ranges (max |x| over the calibration data) in TensorRT's
  text cache format, for the implicit-quantization route (`trtexec --int8 --calib=...`).
  Its header names the TensorRT version from the target file; TensorRT ignores a cache whose
  header does not match its own, so check it on the device (not verifiable on this host).
- trtexec.json / trtexec.sh: the fp16 and int8 build commands the deploy step runs.

`onnxruntime` remains the fallback engine where TensorRT is missing (it runs model.onnx).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import atomic_write_json, atomic_write_text
from edgekd.errors import ConversionError, MissingDependencyError

QDQ_FILE = "model.qdq.onnx"
CACHE_FILE = "calibration.cache"
COMMANDS_FILE = "trtexec.json"


@dataclass
class TrtOptions:
    calibration: Mapping[str, np.ndarray]  # name -> (N, ...) in model layout
    per_channel: bool = True
    tensorrt_version: str | None = None  # e.g. "8.2.1" (from the target's runtime.version)
    trtexec: str = "trtexec"
    workspace_mb: int = 1024
    log_path: Path | None = None
    notes: list[str] = field(default_factory=list)


def onnx2trt(onnx_path: str | os.PathLike, out_dir: str | os.PathLike, options: TrtOptions) -> Path:
    """Write the QDQ model, the calibration cache and the trtexec commands; returns trtexec.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    qdq = onnx2qdq(onnx_path, out_dir, options)
    cache = calibration_cache(onnx_path, out_dir, options)
    commands = trtexec_commands(Path(onnx_path).name, qdq.name, cache.name, options)
    atomic_write_json(out_dir / COMMANDS_FILE, commands)
    script = ["#!/bin/sh", "# Build TensorRT engines on the Jetson (run in the deploy workdir).", "set -e"]
    for name, c in commands["builds"].items():
        script.append(f"# {name}: {c['what']}")
        script.append(shlex.join(c["argv"]))
    atomic_write_text(out_dir / "trtexec.sh", "\n".join(script) + "\n")
    return out_dir / COMMANDS_FILE


def onnx2qdq(onnx_path: str | os.PathLike, out_dir: str | os.PathLike, options: TrtOptions) -> Path:
    """Static int8 QDQ quantization with onnxruntime (MinMax calibration, symmetric)."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError:
        raise MissingDependencyError("onnxruntime is not installed", hint="pip install 'edgekd[convert]'") from None
    from edgekd.convert.logs import capture_native_output

    out = Path(out_dir) / QDQ_FILE
    names = list(options.calibration)
    n = len(options.calibration[names[0]])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= n:
                return None
            sample = {k: np.ascontiguousarray(options.calibration[k][self.i : self.i + 1], dtype=np.float32) for k in names}
            self.i += 1
            return sample

    log = options.log_path or Path(out_dir) / "onnxruntime_quantization.log"
    quant_logger = logging.getLogger()  # quantize_static warns through the root logger
    level = quant_logger.level
    try:
        quant_logger.setLevel(logging.ERROR)
        with capture_native_output(log):
            quantize_static(
                str(onnx_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=options.per_channel,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            )
    except Exception as exc:
        raise ConversionError(f"onnxruntime could not quantize {Path(onnx_path).name} to QDQ int8: {exc}",
                              hint=f"see {log}") from None
    finally:
        quant_logger.setLevel(level)
    return out


def calibration_cache(onnx_path: str | os.PathLike, out_dir: str | os.PathLike, options: TrtOptions) -> Path:
    """TensorRT's text calibration cache: 'TRT-<version>-EntropyCalibration2' then one
    'tensor: <float32 scale as big-endian hex>' line per tensor, scale = max|x| / 127."""
    from edgekd.convert.runtime import OnnxIntermediates

    model = OnnxIntermediates(onnx_path)
    amax: dict[str, float] = {}
    names = list(options.calibration)
    n = len(options.calibration[names[0]])
    for i in range(n):
        sample = {k: options.calibration[k][i : i + 1] for k in names}
        values = dict(model.run_one(sample))
        values.update({k: v for k, v in sample.items()})
        for tensor, value in values.items():
            arr = np.asarray(value)
            if arr.dtype.kind != "f" or arr.size == 0:
                continue
            amax[tensor] = max(amax.get(tensor, 0.0), float(np.abs(arr).max()))
    lines = [f"TRT-{trt_version_code(options.tensorrt_version)}-EntropyCalibration2"]
    for tensor in sorted(amax):
        scale = max(amax[tensor], 1e-8) / 127.0
        lines.append(f"{tensor}: {struct.pack('>f', scale).hex()}")
    path = Path(out_dir) / CACHE_FILE
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def read_calibration_cache(path: str | os.PathLike) -> dict[str, float]:
    """{tensor: scale} from a TensorRT text cache (the inverse of calibration_cache)."""
    scales = {}
    for line in Path(path).read_text().splitlines()[1:]:
        name, _, hexval = line.rpartition(": ")
        if name:
            scales[name] = struct.unpack(">f", bytes.fromhex(hexval.strip()))[0]
    return scales


def trt_version_code(version: str | None) -> str:
    """'TensorRT 8.2.1 (JetPack 4.6)' -> '8201'; unknown -> '8601' (TensorRT 8.6.1)."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    if not m:
        return "8601"
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    return f"{major}{minor}{patch:02d}" if major < 10 else f"{major}{minor:02d}{patch:02d}"


def trtexec_commands(onnx_name: str, qdq_name: str, cache_name: str, options: TrtOptions) -> dict[str, Any]:
    t = options.trtexec
    code = int(trt_version_code(options.tensorrt_version))
    # --workspace was replaced by --memPoolSize in TensorRT 8.4 (JetPack 4.6 ships 8.2)
    old = code < 8400 if code < 10000 else False
    ws = f"--workspace={options.workspace_mb}" if old else f"--memPoolSize=workspace:{options.workspace_mb}"
    return {
        "tensorrt_version": options.tensorrt_version,
        "note": "engines are built on the device (they depend on its GPU and TensorRT version)",
        "builds": {
            "fp16": {"what": "fp16 engine from the float ONNX model", "engine": "model.fp16.engine",
                     "argv": [t, f"--onnx={onnx_name}", "--fp16", ws, "--saveEngine=model.fp16.engine"]},
            "int8": {"what": "int8 engine from the QDQ model (explicit quantization; no calibrator needed)",
                     "engine": "model.int8.engine",
                     "argv": [t, f"--onnx={qdq_name}", "--int8", "--fp16", ws, "--saveEngine=model.int8.engine"]},
            "int8-calib": {"what": "int8 engine from the float model and the calibration cache (implicit quantization; "
                                   "deprecated in TensorRT 10)",
                           "engine": "model.int8-calib.engine",
                           "argv": [t, f"--onnx={onnx_name}", "--int8", "--fp16", f"--calib={cache_name}", ws,
                                    "--saveEngine=model.int8-calib.engine"]},
        },
    }


def load_commands(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
