"""Conversion benchmark: the accuracy ledger and the cost of the chain for each task's student.

For each student (eye spiking CNN, skeleton spiking GCN, face tiny ResEmoteNet student),
trained briefly on the recipe's synthetic data, or read from a run directory given
with --run TASK=DIR:

- the accuracy ledger on the validation split: torch fp32 -> ONNX -> TFLite fp32 -> TFLite
  int8 (per-channel), each with its top-1 agreement with the previous format
- per-channel vs per-tensor int8 (the same SavedModel quantized both ways)
- file sizes per format (ONNX, TFLite fp32/fp16/dynamic-int8/int8, int8 per-tensor)
- conversion time: the whole chain, onnx2tf, TensorFlow's converter

Everything goes through `edgekd.convert.api.convert_model` (target `local`), the path
`edgekd convert` runs. --quick: shorter sequences and fewer samples (same code path).
--int8-exact: the students built to compute what int8 computes (`int8_exact`, with the integer
membrane the spiking ones need; docs/int8-spiking.md) instead of the recipes' students.

    python benchmarks/convert.py --quick --out runs/benchmarks/convert.json
    python benchmarks/convert.py --quick --int8-exact --out runs/benchmarks/convert-exact.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import write_result

STUDENTS: dict[str, dict[str, Any]] = {
    "eye": {"recipe": "eye-mskd", "student": {"arch": "eye-snn", "params": {"size": "tiny"}},
            "quick": ["data.options.frames=4", "data.options.size=16", "data.options.samples=320", "data.options.subjects=16"],
            "full": []},
    "skeleton": {"recipe": "skeleton-mksgn", "student": {"arch": "skeleton-sgn", "params": {"size": "tiny"}},
                 "quick": ["data.options.frames=4", "data.options.samples=320", "data.options.subjects=16"],
                 "full": ["data.options.frames=16"]},
    "face": {"recipe": "face-mini-resemotenet", "student": {"arch": "face-resemotenet", "params": {"size": "tiny"}},
             "quick": ["data.options.samples=700"], "full": []},
}
# --int8-exact: the overrides that make each student int8_exact (spiking ones: integer membrane)
EXACT_LIF = ["student.params.lif.beta=0.6", "student.params.lif.threshold=1.0", "student.params.lif.current_clamp=2.0",
             "student.params.lif.membrane_grid=16"]
EXACT = {
    "eye": ["student.params.int8_exact=true", *EXACT_LIF],
    "skeleton": ["student.params.int8_exact=true", 'student.params.lif.reset="subtract"',
                 'student.params.lif.surrogate="sigmoid"', "student.params.lif.alpha=4.0", *EXACT_LIF],
    "face": ["student.params.int8_exact=true"],
}
FORMAT_KEYS = {"onnx": "onnx", "tflite-fp32": "tflite_fp32", "tflite-fp16": "tflite_fp16",
               "tflite-dynamic-int8": "tflite_dynamic_int8", "tflite-int8": "tflite_int8"}


def train_student(recipe: Any, steps: int, seed: int = 0) -> tuple[Any, Any]:
    """The recipe's student trained with cross-entropy for `steps` batches (a stand-in for a
    distilled student: the ledger needs a model whose scores mean something)."""
    import torch

    from edgekd.distill.api import build_from_section, load_recipe_data
    from edgekd.distill.trainer import tensors_for

    data = load_recipe_data(recipe)
    torch.manual_seed(seed)
    model = build_from_section(recipe.student, data.train)
    train = tensors_for(data.train, model.input_names)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(train), (32,))
        logits = model(*[train.inputs[k][idx] for k in model.input_names])
        loss = torch.nn.functional.cross_entropy(logits, train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), data


def from_run(run_dir: str) -> tuple[Any, Any, Any]:
    from edgekd.convert.api import find_model_dir
    from edgekd.distill.api import load_recipe_data
    from edgekd.models import load_model

    run = find_model_dir(run_dir)
    return load_model(run.model_dir), load_recipe_data(run.recipe), run.recipe


def bench_student(task: str, quick: bool, run_dir: str | None, work: Path, log: Any,
                  exact: bool = False) -> tuple[dict[str, float], dict[str, Any]]:
    from edgekd.config import load_recipe
    from edgekd.convert import representative as rep
    from edgekd.convert.api import ConvertOptions, convert_model, held_out_from, spiking_kind
    from edgekd.convert.onnx2tflite import TFLiteOptions, savedmodel2tflite
    from edgekd.convert.parity import ParityLimits, compare
    from edgekd.convert.runtime import TFLiteRunner
    from edgekd.targets import get_target

    spec = STUDENTS[task]
    start = time.perf_counter()
    if run_dir:
        model, data, recipe = from_run(run_dir)
        origin = f"run {run_dir}"
    else:
        overrides = spec["quick" if quick else "full"] + [f"student.arch={spec['student']['arch']}"]
        overrides += [f"student.params.{k}={v!r}".replace("'", '"') for k, v in spec["student"]["params"].items()]
        recipe = load_recipe(spec["recipe"], overrides + (EXACT[task] if exact else []))
        steps = 150 if quick else 400
        model, data = train_student(recipe, steps, recipe.seed)
        origin = (f"{recipe.name} {'int8_exact ' if exact else ''}student trained {steps} steps with cross-entropy "
                  f"on {recipe.data.source} data")
    train_s = time.perf_counter() - start
    names = list(model.input_names)
    held = held_out_from(data.validation, names, 96 if quick else 1000, recipe.seed)
    cal = rep.from_training_split(data.train, names, 64 if quick else recipe.convert.calibration_samples, recipe.seed)
    options = ConvertOptions(check_parity=False, min_calibration_samples=32,
                             limits=ParityLimits(max_accuracy_drop=recipe.convert.max_accuracy_drop,
                                                 min_agreement=recipe.convert.min_agreement,
                                                 float_min_within=recipe.convert.float_min_within))
    out = work / task
    t0 = time.perf_counter()
    result = convert_model(model, held, cal, get_target("local"), out, options=options, log=log)
    convert_s = time.perf_counter() - t0
    # per-tensor int8 from the same SavedModel, checked like the per-channel one
    t0 = time.perf_counter()
    tfl = TFLiteOptions(modes=["int8"], io=result.io, calibration=cal.inputs, per_channel=False,
                        spiking=spiking_kind(model))  # type: ignore[arg-type]
    per_tensor = savedmodel2tflite(out / "saved_model", out, tfl, suffix=".per-tensor")["int8"]
    per_tensor_s = time.perf_counter() - t0
    fp32 = TFLiteRunner(result.formats["tflite-fp32"], result.io).predict(held.inputs)
    pt_scores = TFLiteRunner(per_tensor, result.io).predict(held.inputs)
    pt_hop = compare("tflite-fp32", "tflite-int8-per-tensor", fp32, pt_scores, held.labels, held.classes, "quantized",
                     options.limits)

    f: dict[str, float] = {}
    hops = {h.target: h for h in result.ledger.hops}
    first = result.ledger.hops[0]
    f[f"{task}_acc_torch_fp32"] = round(100 * first.accuracy_source, 2)
    for target, key in (("onnx", "onnx"), ("tflite-fp32", "tflite_fp32"), ("tflite-int8", "tflite_int8")):
        h = hops[target]
        f[f"{task}_acc_{key}"] = round(100 * h.accuracy_target, 2)
        f[f"{task}_agreement_{key}_pct"] = round(100 * h.agreement, 2)
        f[f"{task}_max_abs_{key}"] = float(f"{h.max_abs:.4g}")
    f[f"{task}_int8_delta_points"] = hops["tflite-int8"].accuracy_delta
    f[f"{task}_acc_tflite_int8_per_tensor"] = round(100 * pt_hop.accuracy_target, 2)
    f[f"{task}_agreement_tflite_int8_per_tensor_pct"] = round(100 * pt_hop.agreement, 2)
    f[f"{task}_int8_per_tensor_delta_points"] = pt_hop.accuracy_delta
    f[f"{task}_int8_within_limits"] = int(hops["tflite-int8"].ok)
    for fmt, key in FORMAT_KEYS.items():
        if fmt in result.formats:  # an int8_exact student's chain has no fp16 / dynamic-int8
            f[f"{task}_bytes_{key}"] = int(Path(result.formats[fmt]).stat().st_size)
    f[f"{task}_bytes_tflite_int8_per_tensor"] = int(per_tensor.stat().st_size)
    f[f"{task}_seconds_convert"] = round(convert_s, 1)
    f[f"{task}_seconds_onnx2tf"] = result.seconds.get("onnx2tflite_onnx2tf", float("nan"))
    f[f"{task}_seconds_tensorflow"] = result.seconds.get("onnx2tflite_tensorflow", float("nan"))
    f[f"{task}_seconds_per_tensor_int8"] = round(per_tensor_s, 1)
    f[f"{task}_validation_samples"] = len(held.labels)
    config = {"origin": origin, "train_seconds": round(train_s, 1), "validation": held.description,
              "calibration": cal.describe() | {"shapes": None}, "notes": result.notes,
              "ops_int8": result.ops["files"]["tflite-int8"]["op_counts"],
              "input_shapes": {s.name: list(s.shape) for s in result.io.inputs}}
    return f, config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (same code path), < 3 min on 2 cores")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    parser.add_argument("--tasks", default="eye,skeleton,face", help="comma-separated: eye, skeleton, face")
    parser.add_argument("--run", action="append", default=[], metavar="TASK=DIR",
                        help="use the trained student in this run directory for TASK instead of a brief training")
    parser.add_argument("--work", type=Path, default=None, help="keep the artifact directories here")
    parser.add_argument("--int8-exact", action="store_true",
                        help="train the int8_exact students (ignored for --run: the run's model is used)")
    args = parser.parse_args(argv)
    runs = dict(item.split("=", 1) for item in args.run)
    import torch

    torch.set_num_threads(2)
    figures: dict[str, float] = {}
    config: dict[str, Any] = {"quick": args.quick, "int8_exact": args.int8_exact, "target": "local", "students": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekd-bench-convert-") as tmp:
        work = args.work or Path(tmp)
        for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
            print(f"== {task}", flush=True)
            f, c = bench_student(task, args.quick, runs.get(task), work, lambda m: print(f"   {m}", flush=True),
                                 args.int8_exact)
            figures.update(f)
            config["students"][task] = c
            result = write_result(args.out, figures, config)  # after every student: partial results survive
    figures["total_seconds"] = round(time.perf_counter() - started, 1)
    result = write_result(args.out, figures, config)
    for k, v in result["figures"].items():
        print(f"{k:48s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
