"""How often the C firmware runtime gives TFLite's own int8 outputs, per flavour, on converted models.

For each directory written by `edgekd convert` (model.int8.tflite + eval.npz, the validation
split): the runtime built for this host in each flavour asked for, against the interpreter that
flavour is compared with and against TFLite's default CPU kernels (XNNPACK, what `edgekd
convert`'s ledger and the Linux targets run): samples with identical int8 outputs, and top-1
agreement. A measuring tool, not a benchmark (it takes converted runs, so no --quick); used for
the table in docs/int8-spiking.md ("Exact on the microcontroller too"):

    python scripts/firmware_agreement.py runs/s7/msr-exact-convert-local runs/s5/msr-student60-aug4-convert-local \\
        --out runs/s8/firmware-agreement.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def agreement(convert_dir: Path, references: list[str], work: Path) -> dict:
    from edgekd.firmware.api import input_arrays, interpreter_outputs, load_inputs
    from edgekd.firmware.host import build_host_model

    model = convert_dir / "model.int8.tflite"
    row: dict = {"model": str(model)}
    cpu = None
    for reference in references:
        host = build_host_model(model, work / reference, reference=reference)
        arrays = input_arrays(load_inputs(convert_dir / "eval.npz"), host.metadata["inputs"])
        n = len(arrays[0])
        mine = host.run(arrays).reshape(n, -1)
        if cpu is None:
            cpu = interpreter_outputs(model, arrays, "tflite-cpu").reshape(n, -1)
        own = interpreter_outputs(model, arrays, reference).reshape(n, -1)
        row["samples"] = n
        row[reference] = {
            "identical_with_its_interpreter": int(np.all(mine == own, axis=1).sum()),
            "identical_with_tflite_cpu": int(np.all(mine == cpu, axis=1).sum()),
            "top1_with_tflite_cpu": int((mine.argmax(1) == cpu.argmax(1)).sum()),
        }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("convert_dirs", nargs="+", type=Path)
    ap.add_argument("--references", default="tflite-cpu,tflite", help="comma-separated flavours")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekd-agreement-") as tmp:
        for k, d in enumerate(args.convert_dirs):
            row = agreement(d, args.references.split(","), Path(tmp) / str(k))
            rows.append(row)
            n = row["samples"]
            print(f"{d}: " + "; ".join(f"{r} {row[r]['identical_with_tflite_cpu']}/{n} identical with tflite-cpu "
                                        f"(top-1 {row[r]['top1_with_tflite_cpu']}/{n}), "
                                        f"{row[r]['identical_with_its_interpreter']}/{n} with its own"
                                        for r in args.references.split(",")), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
