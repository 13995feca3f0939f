"""Coral: full-int8 (per-tensor) .tflite -> Edge TPU .tflite with `edgetpu_compiler`.

The compiler's log is parsed into an op-coverage report (ops mapped to the Edge TPU vs left to
the CPU, on-chip and off-chip memory for parameters). Where the compiler is absent (it exists
for x86-64 Debian/Ubuntu only), the error says how to get it, and the coverage predicted
from the op inventory (`ops.predict_edgetpu_coverage`) is written first, so the user sees
which ops would fall back before compiling anywhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.artifacts import atomic_write_json
from edgekd.errors import ConversionError, MissingDependencyError

COVERAGE_FILE = "edgetpu_coverage.json"
INSTALL_HINT = (
    "install the Edge TPU compiler (x86-64 Debian/Ubuntu): "
    "curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - && "
    "echo 'deb https://packages.cloud.google.com/apt coral-edgetpu-stable main' | "
    "sudo tee /etc/apt/sources.list.d/coral-edgetpu.list && sudo apt-get update && "
    "sudo apt-get install edgetpu-compiler; or compile in Coral's Colab notebook; "
    "or convert with --formats tflite-int8 to skip the Edge TPU model (it then runs on the CPU)"
)


@dataclass
class EdgeTPUOptions:
    compiler: str | None = None  # path; default: edgetpu_compiler on PATH
    timeout_s: float = 600.0
    min_runtime_version: int | None = None  # -m: the libedgetpu version on the device


def find_compiler(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit if Path(explicit).exists() or shutil.which(explicit) else None
    return shutil.which("edgetpu_compiler")


def tflite2edgetpu(tflite_path: str | os.PathLike, out_dir: str | os.PathLike, options: EdgeTPUOptions | None = None) -> Path:
    """Compile; returns the *_edgetpu.tflite path and writes edgetpu_coverage.json beside it."""
    from edgekd.convert.ops import format_counts, inventory, predict_edgetpu_coverage

    options = options or EdgeTPUOptions()
    tflite_path, out_dir = Path(tflite_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inv = inventory(tflite_path)
    predicted = predict_edgetpu_coverage(inv)
    compiler = find_compiler(options.compiler)
    if compiler is None:
        atomic_write_json(out_dir / COVERAGE_FILE, predicted)
        first = predicted["first_unmapped"]
        detail = (f"predicted from the op inventory: {predicted['tpu']} of {predicted['total']} ops on the Edge TPU, "
                  f"{predicted['cpu']} on the CPU")
        if first:
            detail += (f" (from op #{first['index']} {first['op']}: {first['reason']}; "
                       f"CPU ops: {format_counts(predicted['cpu_op_counts'])})")
        raise MissingDependencyError(
            f"edgetpu_compiler not found, so no Edge TPU model was made; {detail}. "
            f"The prediction is in {out_dir / COVERAGE_FILE}",
            hint=INSTALL_HINT,
        )
    argv = [compiler, "-s", "-o", str(out_dir)]
    if options.min_runtime_version:
        argv += ["-m", str(options.min_runtime_version)]
    argv.append(str(tflite_path))
    log = out_dir / "edgetpu_compiler.log"
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=options.timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"edgetpu_compiler did not finish within {options.timeout_s:.0f} s") from None
    log.write_text(proc.stdout + proc.stderr)
    out = out_dir / f"{tflite_path.stem}_edgetpu.tflite"
    if proc.returncode != 0 or not out.exists():
        last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["(no output)"]
        raise ConversionError(f"edgetpu_compiler failed (exit {proc.returncode}): {last[0]}",
                              hint=f"see {log}; the model must be full int8 with static shapes")
    op_log = out_dir / f"{tflite_path.stem}_edgetpu.log"
    text = proc.stdout + ("\n" + op_log.read_text(errors="replace") if op_log.exists() else "")
    report = parse_compiler_log(text)
    report["predicted_before_compiling"] = {k: predicted[k] for k in ("total", "tpu", "cpu", "first_unmapped")}
    atomic_write_json(out_dir / COVERAGE_FILE, report)
    return out


_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def _bytes(text: str) -> int | None:
    m = re.match(r"\s*([\d.]+)\s*(B|KiB|MiB|GiB)", text)
    return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def parse_compiler_log(text: str) -> dict[str, Any]:
    """edgetpu_compiler's summary and operator table -> op coverage and memory figures."""
    report: dict[str, Any] = {"predicted": False}
    fields = {
        "compiler_version": r"Edge TPU Compiler version\s+(\S+)",
        "on_chip_memory_used": r"On-chip memory used for caching model parameters:\s*(.+)",
        "on_chip_memory_remaining": r"On-chip memory remaining for caching model parameters:\s*(.+)",
        "off_chip_memory_used": r"Off-chip memory used for streaming uncached model parameters:\s*(.+)",
        "subgraphs": r"Number of Edge TPU subgraphs:\s*(\d+)",
        "total": r"Total number of operations:\s*(\d+)",
        "tpu": r"Number of operations that will run on Edge TPU:\s*(\d+)",
        "cpu": r"Number of operations that will run on CPU:\s*(\d+)",
    }
    for key, pattern in fields.items():
        m = re.search(pattern, text)
        if not m:
            continue
        value = m.group(1).strip()
        if key.endswith("memory_used") or key.endswith("memory_remaining"):
            report[key + "_bytes"] = _bytes(value)
        elif key == "compiler_version":
            report[key] = value
        else:
            report[key] = int(value)
    rows = []
    table = re.split(r"Operator\s+Count\s+Status", text, maxsplit=1)
    if len(table) == 2:
        for line in table[1].splitlines():
            m = re.match(r"^\s*([A-Z][A-Z0-9_]+)\s+(\d+)\s+(\S.*?)\s*$", line)
            if m:
                rows.append({"op": m.group(1), "count": int(m.group(2)), "status": m.group(3),
                             "on_tpu": m.group(3).startswith("Mapped to Edge TPU")})
    report["operators"] = rows
    tpu_rows = sum(r["count"] for r in rows if r["on_tpu"])
    cpu_rows = sum(r["count"] for r in rows if not r["on_tpu"])
    report.setdefault("tpu", tpu_rows)
    report.setdefault("cpu", cpu_rows)
    report.setdefault("total", tpu_rows + cpu_rows)
    if "Model compiled successfully" not in text and not rows:
        raise ConversionError("edgetpu_compiler's output has no summary and no operator table",
                              hint="check the compiler version (16 is known to work)")
    return report
