"""`edgekd convert`: choose the chain from the target, run every hop, check every hop.

    torch fp32 -> ONNX -> onnx2tf SavedModel -> TFLite fp32 -> fp16 / dynamic int8 / full int8
                                                                 -> Edge TPU   (edgetpu_compiler)
                                                                 -> C source   (firmware, tflite2c)
                                                                 -> TFLite Micro (arena, parity)
                       -> QDQ int8 ONNX + calibration cache + trtexec commands (TensorRT)

Which formats: the target's `runtime.formats`, or the ones asked for (each must be runnable
on the target). Before anything is converted: the formats are checked against the target,
the calibration data is diagnosed (representative.py) and the model's size is checked
against the target's limits with lower bounds (int8 weights, the largest layer's
activations). After: every hop is compared with the previous one on held-out samples
(parity.json), every .tflite is inventoried and checked against the target's runtime
(ops.json), and the real sizes are checked against the limits again.

The stage writes an artifact directory (edgekd.artifacts.stage_dir); a finished one with the
same parameters and inputs is reused unless forced.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.convert.layout import IO_FILE, ModelIO, candidate_perms
from edgekd.convert.parity import (
    PARITY_FILE,
    HopResult,
    Ledger,
    ParityLimits,
    compare,
    failure_error,
    float_divergence,
    layer_report,
)
from edgekd.errors import ConversionError, MissingDependencyError, NotFoundError, UsageError, did_you_mean

# Bumped when the chain's output changes for the same inputs (e.g. a new graph rewrite), so
# finished artifact directories of an older chain are not reused.
CHAIN_REVISION = 4
FORMATS = ("onnx", "tflite-fp32", "tflite-fp16", "tflite-dynamic-int8", "tflite-int8", "edgetpu", "tensorrt", "c-int8")
OPS_FILE = "ops.json"
STAGE = "convert"
Log = Callable[[str], None]


@dataclass
class ConvertOptions:
    per_channel: bool | None = None  # None: recipe/target default (Edge TPU: per-tensor)
    quantizer: str = "tensorflow"  # tensorflow | onnx2tf (see onnx2tflite.py)
    opset: int = 17
    calibration_samples: int = 200
    min_calibration_samples: int = 32
    eval_samples: int = 1000
    limits: ParityLimits = field(default_factory=ParityLimits)
    layer_samples: int = 8
    timeout_s: float = 1800.0
    seed: int = 0
    check_parity: bool = True  # raise on a hop beyond its limit (parity.json is written either way)

    def to_params(self) -> dict[str, Any]:
        return {"per_channel": self.per_channel, "quantizer": self.quantizer, "opset": self.opset,
                "calibration_samples": self.calibration_samples, "min_calibration_samples": self.min_calibration_samples,
                "eval_samples": self.eval_samples, "limits": self.limits.to_dict(), "seed": self.seed}


@dataclass
class HeldOut:
    """The held-out samples every hop is measured on (model layout)."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    classes: list[str] | None
    description: dict[str, Any]


@dataclass
class Plan:
    formats: list[str]
    tflite_modes: list[str]
    per_channel: bool
    engine: str
    notes: list[str]


# ---------------------------------------------------------------- planning


def plan_chain(target: Any, formats: Sequence[str] | None, per_channel: bool | None,
               recipe_per_channel: bool = True, int8_exact: bool = False) -> Plan:
    """Formats to make for `target` (a TargetSpec) and the TFLite modes they need. For an
    `int8_exact` model the target's default formats leave out fp16 and dynamic-range int8 (they
    compute its int8 grids in other arithmetic and fail its limits; asked for by name, they stay)."""
    from edgekd.targets import CPU_FALLBACK_FORMATS, ENGINE_FORMATS

    engine = target.runtime.engine
    runnable = set(ENGINE_FORMATS[engine]) | (set(CPU_FALLBACK_FORMATS) if target.kind != "mcu" else set())
    wanted = list(dict.fromkeys(formats)) if formats else list(target.runtime.formats)
    for f in wanted:
        if f not in FORMATS:
            raise UsageError(f"unknown format '{f}'{did_you_mean(f, FORMATS)}", hint=f"formats: {', '.join(FORMATS)}")
        if f not in runnable:
            raise UsageError(
                f"target '{target.name}' ({target.kind}, engine {engine}) cannot run format '{f}'",
                hint=f"it runs {', '.join(sorted(runnable))}; its file lists {', '.join(target.runtime.formats)}",
            )
    notes: list[str] = []
    needs_int8 = any(f in ("tflite-int8", "edgetpu", "c-int8") for f in wanted)
    inexact = [f for f in ("tflite-fp16", "tflite-dynamic-int8") if f in wanted]
    if int8_exact and not formats and needs_int8 and inexact:
        wanted = [f for f in wanted if f not in inexact]
        notes.append(f"int8_exact model: {', '.join(inexact)} left out of the target's formats (they do not compute "
                     "its int8 grids exactly); ask for them with --formats")
    if engine == "edgetpu" and needs_int8:
        if per_channel is True:
            raise UsageError(
                f"target '{target.name}' runs the Edge TPU, which needs per-tensor int8; --per-channel conflicts with it",
                hint="drop --per-channel (per-tensor is used for Edge TPU targets), or pick another target",
            )
        per_channel = False
        notes.append("per-tensor int8 weights: the Edge TPU compiler needs them")
    if per_channel is None:
        per_channel = recipe_per_channel
    modes: list[str] = []
    if any(f.startswith("tflite-") or f in ("edgetpu", "c-int8") for f in wanted):
        modes.append("fp32")  # the float TFLite hop of the ledger, always
        for f, mode in (("tflite-fp16", "fp16"), ("tflite-dynamic-int8", "dynamic-int8")):
            if f in wanted:
                modes.append(mode)
        if needs_int8:
            modes.append("int8")
    return Plan(wanted, modes, bool(per_channel), engine, notes)


# ---------------------------------------------------------------- the chain on a model


@dataclass
class ConvertResult:
    out_dir: Path
    formats: dict[str, Path]
    ledger: Ledger
    io: ModelIO
    ops: dict[str, Any]
    seconds: dict[str, float]
    notes: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


def spiking_kind(model: Any) -> str | None:
    """What int8 conversion pins (edgekd.convert.spiking_ranges): "exact" for a model built to
    compute what int8 computes (`int8_exact`, spiking or not); None for another model without LIF
    layers; "integer" when a LIF layer keeps an integer membrane (lif.membrane_grid); else "spikes"."""
    from edgekd.models.neurons import LIF

    if any(getattr(m, "int8_exact", False) for m in model.modules()):
        return "exact"
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    if not lifs:
        return None
    return "integer" if any(m.params.membrane_grid for m in lifs) else "spikes"


def convert_model(model: Any, held_out: HeldOut, calibration: Any, target: Any, out_dir: str | Path,
                  formats: Sequence[str] | None = None, options: ConvertOptions | None = None,
                  log: Log | None = None, stage_params: Mapping[str, Any] | None = None,
                  stage_inputs: Mapping[str, str | Path] | None = None) -> ConvertResult:
    """Run the chain for `target` on a torch model; writes the artifact directory `out_dir`.

    held_out: the samples the ledger is measured on; calibration: a representative.Representative
    (None when no int8 format is asked for)."""
    from edgekd.artifacts import stage_dir

    options = options or ConvertOptions()
    log = log or (lambda _m: None)
    out_dir = Path(out_dir)
    int8_exact = spiking_kind(model) == "exact"
    plan = plan_chain(target, formats, options.per_channel, int8_exact=int8_exact)
    names = [n for n in (getattr(model, "input_names", None) or held_out.inputs)]  # forward()'s order
    missing = [n for n in names if n not in held_out.inputs]
    if missing:
        raise UsageError(f"no held-out data for model input(s) {missing} (have {sorted(held_out.inputs)})")
    shapes = {n: (1, *held_out.inputs[n].shape[1:]) for n in names}
    notes = list(plan.notes)

    # ---- before any conversion: the data and the size
    if "int8" in plan.tflite_modes or "tensorrt" in plan.formats:
        if calibration is None:
            raise UsageError("int8 formats need calibration data", hint="give a calibration set or a run with a recipe")
        from edgekd.convert.representative import diagnose

        notes += diagnose(calibration.inputs, shapes, held_out.inputs, options.min_calibration_samples)
    check_size_before(model, shapes, plan, target)

    params = {"chain_revision": CHAIN_REVISION, "target": target.name, "engine": plan.engine, "kind": target.kind,
              "formats": plan.formats,
              "tflite_modes": plan.tflite_modes, "per_channel_resolved": plan.per_channel, **options.to_params(),
              "limits_target": target.limits.model_dump(mode="json"), **dict(stage_params or {})}
    seconds: dict[str, float] = {}
    ledger = Ledger(data=dict(held_out.description))
    if calibration is not None:
        ledger.data["calibration"] = calibration.describe()
    made: dict[str, Path] = {}
    deferred: list[Exception] = []
    with stage_dir(out_dir, STAGE, params=params, inputs=stage_inputs) as sd:
        # ---- torch -> ONNX
        from edgekd.convert.runtime import predict_onnx, predict_torch
        from edgekd.convert.torch2onnx import OnnxOptions, model_io_for, torch2onnx

        log("torch -> ONNX")
        t0 = time.perf_counter()
        onnx_opts = OnnxOptions(input_shapes=shapes, opset=options.opset, log_path=out_dir / "logs" / "torch2onnx.log")
        onnx_path = torch2onnx(model, out_dir, onnx_opts)
        seconds["torch2onnx"] = round(time.perf_counter() - t0, 2)
        io = model_io_for(onnx_path, onnx_opts)
        notes += onnx_opts.extra_notes
        io.save(out_dir / IO_FILE)  # again with the TFLite layout once there is a TFLite model
        node_modules = json.loads((out_dir / "node_modules.json").read_text())
        labels, classes = held_out.labels, held_out.classes
        ref = predict_torch(model, held_out.inputs, names)
        onnx_scores = predict_onnx(onnx_path, held_out.inputs)
        hop = ledger.add(compare("torch-fp32", "onnx", ref, onnx_scores, labels, classes, "float", options.limits))
        log(hop.line())
        _stop_if_failed(hop, ledger, out_dir, options)
        if "onnx" in plan.formats:
            made["onnx"] = onnx_path

        # ---- ONNX -> TFLite
        tflite_paths: dict[str, Path] = {}
        if plan.tflite_modes:
            from edgekd.convert.onnx2tflite import TFLiteOptions, onnx2tflite
            from edgekd.convert.runtime import TFLiteRunner

            log(f"ONNX -> onnx2tf SavedModel -> TFLite {', '.join(plan.tflite_modes)} "
                f"({'per-channel' if plan.per_channel else 'per-tensor'} int8)")
            t0 = time.perf_counter()
            tfl_opts = TFLiteOptions(modes=plan.tflite_modes, io=io,
                                     calibration=calibration.inputs if calibration is not None else None,
                                     per_channel=plan.per_channel, quantizer=options.quantizer,  # type: ignore[arg-type]
                                     timeout_s=options.timeout_s, node_modules=node_modules,
                                     spiking=spiking_kind(model))  # type: ignore[arg-type]
            result = onnx2tflite(onnx_path, out_dir, tfl_opts)
            tflite_paths = result.paths
            resolve_layout(io, tflite_paths["fp32"])
            fp32_scores = TFLiteRunner(tflite_paths["fp32"], io).predict(held_out.inputs)
            hop = compare("onnx", "tflite-fp32", onnx_scores, fp32_scores, labels, classes, "float", options.limits)
            if not hop.ok:
                log("the float TFLite model differs from ONNX: looking for the first op that departs")
                hop.layers = {"float_divergence": float_divergence(tflite_paths["fp32"], onnx_path, io, held_out.inputs,
                                                                   node_modules)}
            seconds["onnx2tflite"] = round(time.perf_counter() - t0, 2)
            seconds.update({f"onnx2tflite_{k}": v for k, v in result.seconds.items()})
            notes += result.notes
            io.save(out_dir / IO_FILE)
            ledger.add(hop)
            log(hop.line())
            _stop_if_failed(hop, ledger, out_dir, options)
            for mode in plan.tflite_modes[1:]:
                runner = TFLiteRunner(tflite_paths[mode], io)
                if runner.delegate_error:
                    notes.append(f"tflite-{mode}: ai-edge-litert's XNNPACK delegate refuses this model "
                                 f"({runner.delegate_error}); measured with TFLite's built-in kernels, which a "
                                 "device must then use too")
                scores = runner.predict(held_out.inputs)
                step = runner.output_step()
                hop = ledger.add(compare("tflite-fp32", f"tflite-{mode}", fp32_scores, scores, labels, classes,
                                         "quantized", options.limits, fp16=mode == "fp16", output_step=step))
                hop.data = f"quantizer: {result.quantizer_used.get(mode, '-')}"
                log(hop.line())
                if not hop.ok and mode == "int8":
                    log("int8 beyond its limit: comparing fp32 and int8 activations layer by layer")
                    sample = {k: v[: options.layer_samples] for k, v in held_out.inputs.items()}
                    hop.layers = layer_report(tflite_paths["fp32"], tflite_paths["int8"], io, sample,
                                              onnx_path, node_modules)
                    _name_module_classes(model, hop.layers)
                _stop_if_failed(hop, ledger, out_dir, options)
            for mode, p in tflite_paths.items():
                fmt = f"tflite-{mode}"
                if fmt in plan.formats:
                    made[fmt] = p

        # ---- op inventory of every .tflite, checked against the target's runtime
        ops_report = inventory_all(tflite_paths, plan, target)
        notes += ops_report.get("warnings", [])

        # ---- device formats
        if "c-int8" in plan.formats:
            made["c-int8"], extra_c = to_c(tflite_paths["int8"], out_dir, io, held_out, ledger, options, log,
                                           int8_exact=int8_exact)
            ops_report["firmware"] = extra_c
            if extra_c.get("note"):
                notes.append(extra_c.pop("note"))
        if "tensorrt" in plan.formats:
            made["tensorrt"] = to_tensorrt(onnx_path, onnx_scores, out_dir, held_out, calibration, target, plan,
                                           ledger, options, log)
        if "edgetpu" in plan.formats:
            from edgekd.convert.tflite2edgetpu import tflite2edgetpu

            log("TFLite int8 -> Edge TPU")
            try:
                made["edgetpu"] = tflite2edgetpu(tflite_paths["int8"], out_dir / "edgetpu")
                ops_report["edgetpu_compiled"] = json.loads((out_dir / "edgetpu" / "edgetpu_coverage.json").read_text())
            except MissingDependencyError as exc:
                deferred.append(exc)  # everything else is written first; the stage then fails with it

        ledger.write(out_dir / PARITY_FILE)
        eval_path = write_eval_set(out_dir, held_out, io, made, plan)
        sd.add_output("eval", eval_path)
        from edgekd.artifacts import atomic_write_json

        atomic_write_json(out_dir / OPS_FILE, ops_report)
        if deferred:
            raise deferred[0]
        for name in (PARITY_FILE, OPS_FILE, IO_FILE, "node_modules.json"):
            sd.add_output(name, out_dir / name)
        for fmt, p in made.items():
            sd.add_output(fmt, p)
        sd.add_output("model.onnx", onnx_path)  # every chain starts here, asked for or not
        for mode, p in tflite_paths.items():
            if f"tflite-{mode}" not in made:
                sd.add_output(p.name, p)  # an intermediate of the ledger (e.g. fp32 on the way to C)
        sizes = {fmt: _size(p) for fmt, p in made.items()}
        versions = converter_versions()
        notes += [f"{pkg} {v['installed']} is installed but constraints.txt pins {v['pinned']}: results may differ"
                  for pkg, v in versions.items() if not v["matches_pin"]]
        sd.set_metrics(
            ledger=ledger.table(), sizes_bytes=sizes, seconds=seconds, notes=notes,
            parity_ok=ledger.ok, io=io.to_dict(), converters=versions,
            ops={k: v.get("op_counts") for k, v in ops_report.get("files", {}).items()},
            int8_exact=int8_exact,  # the firmware's flavour follows it (tflite2c.reference_for)
        )
    return ConvertResult(out_dir, made, ledger, io, ops_report, seconds, notes)


# Which made format a deploy runs on each engine, first found (edgekd.runners.deploy's preference).
DEPLOY_PREFERENCE = {
    "tflite": ("tflite-int8", "tflite-fp16", "tflite-fp32", "tflite-dynamic-int8"),
    "edgetpu": ("edgetpu", "tflite-int8"),
    "tensorrt": ("onnx", "tflite-int8", "tflite-fp16"),
    "onnxruntime": ("onnx",),
    "firmware": ("c-int8",),
}


def write_eval_set(out_dir: Path, held_out: HeldOut, io: ModelIO, made: Mapping[str, Path], plan: Plan) -> Path:
    """eval.npz: the held-out samples in the input layout of the format a deploy will run
    (TFLite and C models: channel-last; ONNX: the model's own), plus the labels.

    One input: 'x'. Several inputs: 'x_<name>' each, with 'input_names' giving their order."""
    from edgekd.artifacts import atomic_write_bytes
    from edgekd.convert.layout import to_tflite_layout

    deployed = next((f for f in DEPLOY_PREFERENCE.get(plan.engine, ()) if f in made), next(iter(made), "onnx"))
    channel_last = deployed != "onnx"
    arrays: dict[str, np.ndarray] = {}
    for sig in io.inputs:
        x = held_out.inputs[sig.name].astype(np.float32)
        arrays[sig.name] = to_tflite_layout(x, sig.tflite_perm) if channel_last and sig.tflite_perm else x
    payload: dict[str, Any] = {}
    if len(arrays) == 1:
        payload["x"] = next(iter(arrays.values()))
    else:
        payload.update({f"x_{k}": v for k, v in arrays.items()})
        payload["input_names"] = np.array(list(arrays))
    if held_out.labels is not None:
        payload["y"] = np.asarray(held_out.labels, np.int64)
    payload["layout"] = np.array("tflite (channel-last)" if channel_last else "model (channel-first)")
    payload["format"] = np.array(deployed)
    import io as _io

    buf = _io.BytesIO()
    np.savez_compressed(buf, **payload)
    return atomic_write_bytes(out_dir / "eval.npz", buf.getvalue())


def _name_module_classes(model: Any, layers: Mapping[str, Any] | None) -> None:
    for row in (layers or {}).get("top", []):
        path = row.get("torch_module")
        if path:
            try:
                row["torch_module"] = f"{path} ({type(model.get_submodule(path)).__name__})"
            except AttributeError:
                pass


def _size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def _stop_if_failed(hop: HopResult, ledger: Ledger, out_dir: Path, options: ConvertOptions) -> None:
    if hop.ok or not options.check_parity:
        return
    path = ledger.write(out_dir / PARITY_FILE)
    raise failure_error(hop, path)


def resolve_layout(io: ModelIO, fp32_tflite: Path) -> None:
    """Record, per input, the axis order of the TFLite model (onnx2tf moves channels last)."""
    from edgekd.convert.runtime import litert_interpreter, match_inputs

    interp = litert_interpreter(fp32_tflite)
    details = interp.get_input_details()
    for sig in io.inputs:
        sig.tflite_perm = None
    by_shape: dict[str, Any] = {}
    for sig in io.inputs:
        names = [d for d in details if d["name"].removeprefix("serving_default_").split(":")[0] == sig.name]
        if names:
            by_shape[sig.name] = names[0]
    for sig in io.inputs:
        d = by_shape.get(sig.name)
        shapes = [tuple(d["shape"])] if d is not None else [tuple(x["shape"]) for x in details]
        perms = [p for s in shapes for p in candidate_perms(sig.shape, s)]
        if not perms:
            raise ConversionError(
                f"cannot relate TFLite input shapes {[list(s) for s in shapes]} to model input '{sig.name}' {list(sig.shape)}",
                hint="onnx2tf changed the input layout in an unexpected way; see onnx2tf.log")
        sig.tflite_perm = perms[0]  # channel-last first: onnx2tf's rule
    match_inputs(details, io)  # every input must now be identifiable
    io.notes.append("TFLite inputs are channel-last: tflite = model_layout.transpose(tflite_perm)")


def inventory_all(tflite_paths: Mapping[str, Path], plan: Plan, target: Any) -> dict[str, Any]:
    """ops.json: every .tflite's inventory, checked against the engine that would run it."""
    from edgekd.convert.ops import check_limits, check_runtime, inventory

    report: dict[str, Any] = {"target": target.name, "engine": plan.engine, "files": {}}
    problems: list[str] = []
    for mode, path in tflite_paths.items():
        fmt = f"tflite-{mode}"
        inv = inventory(path)
        entry = inv.summary()
        engines = []
        if plan.engine == "edgetpu" and mode == "int8":
            engines = ["edgetpu", "tflite"]
        elif plan.engine == "firmware" and mode == "int8":
            engines = ["firmware"]
        elif fmt in plan.formats:
            engines = ["tflite"]
        entry["checks"] = {}
        for engine in engines:
            check = check_runtime(inv, engine)
            entry["checks"][engine] = check.to_dict()
            report.setdefault("warnings", []).extend(f"{path.name}: {w}" for w in check.warnings
                                                     if f"{path.name}: {w}" not in report.get("warnings", []))
            if not check.ok and engine != "edgetpu":
                problems.append(f"{path.name} on {engine}: {'; '.join(check.problems)}")
        deployed = fmt in plan.formats or (mode == "int8" and plan.engine in ("edgetpu", "firmware"))
        if deployed:
            lim = check_limits(inv, target.limits.model_dump(), target.kind)
            entry["limits"] = {"ok": lim.ok, "problems": lim.problems, **lim.figures}
            problems += [f"{path.name}: {p}" for p in lim.problems]
        entry["deployed"] = deployed
        report["files"][fmt] = entry
    if problems:
        raise ConversionError(
            f"converted models do not fit target '{target.name}': " + "; ".join(problems),
            hint="see the op inventory in ops.json; choose another target or change the model",
        )
    return report


def check_size_before(model: Any, shapes: Mapping[str, Sequence[int]], plan: Plan, target: Any) -> None:
    """Fail before converting when a lower bound of the model's size already exceeds the
    target's limits: weight bytes (1 per conv/linear weight in int8, 4 in float) and the
    largest single layer's input+output activations."""
    import torch

    limits = target.limits
    if not any((limits.model_kb, limits.flash_kb, limits.ram_kb)):
        return
    int8_only = all(f in ("tflite-int8", "edgetpu", "c-int8", "tflite-dynamic-int8", "tensorrt") for f in plan.formats)
    per_weight = 1 if int8_only else (2 if all(f in ("tflite-fp16",) for f in plan.formats) else 4)
    weights = sum(m.weight.numel() for m in model.modules()
                  if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)))
    weight_kb = weights * per_weight / 1024
    largest = [0]

    def hook(_m: Any, inputs: Any, output: Any) -> None:
        size = sum(t.numel() for t in inputs if isinstance(t, torch.Tensor))
        size += output.numel() if isinstance(output, torch.Tensor) else 0
        largest[0] = max(largest[0], size)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()
            model(*[torch.zeros(tuple(s)) for s in shapes.values()])
    finally:
        for h in handles:
            h.remove()
    act_kb = largest[0] * per_weight / 1024
    problems = []
    if limits.model_kb and weight_kb > limits.model_kb:
        problems.append(f"its weights alone need {weight_kb:.1f} KiB > limits.model_kb {limits.model_kb}")
    if target.kind == "mcu" and limits.flash_kb and weight_kb > limits.flash_kb:
        problems.append(f"its weights alone need {weight_kb:.1f} KiB > limits.flash_kb {limits.flash_kb}")
    if limits.ram_kb and act_kb > limits.ram_kb:
        problems.append(f"its largest layer needs {act_kb:.1f} KiB of activations > limits.ram_kb {limits.ram_kb}")
    if problems:
        raise ConversionError(
            f"the model does not fit target '{target.name}' ({weights} conv/linear weights, "
            f"{'int8' if per_weight == 1 else 'float'}): " + "; ".join(problems),
            hint="use a smaller model (e.g. the 'tiny' size) or a target with more memory",
        )


def to_c(int8_path: Path, out_dir: Path, io: ModelIO, held_out: HeldOut, ledger: Ledger,
         options: ConvertOptions, log: Log, int8_exact: bool = False) -> tuple[Path, dict[str, Any]]:
    """The int8 model as C source (tflite2c, owned by the firmware side; an int8_exact model's in
    the flavour that keeps it exact) and the TFLite Micro view: its arena size, and its outputs
    against the TFLite interpreter's (a ledger hop)."""
    try:
        from edgekd.convert import tflite2c
    except ImportError:
        raise MissingDependencyError("the C generator (edgekd.convert.tflite2c) is not available",
                                     hint="c-int8 needs the firmware tools of edgekd") from None
    from edgekd.convert.runtime import TFLiteRunner

    from edgekd.convert.logs import capture_native_output

    reference = tflite2c.reference_for(int8_exact)
    log(f"TFLite int8 -> C source ({reference} flavour); TFLite Micro view")
    c_dir = out_dir / "c"
    meta = tflite2c.write_model_sources(int8_path, c_dir, reference=reference)
    extra: dict[str, Any] = {"c_metadata": {k: v for k, v in meta.items() if k != "tensor_offsets"}}
    tflm_log = out_dir / "logs" / "tflite_micro.log"  # TFLite Micro prints every failed allocation
    try:
        with capture_native_output(tflm_log):
            arena = tflite2c.tflm_arena_bytes(int8_path)
    except MissingDependencyError as exc:
        extra["tflm"] = {"skipped": str(exc)}
        return c_dir, extra
    except ConversionError as exc:
        # TFLite Micro is a view next to the C runtime: its limits do not stop the C model
        reason = tflm_limits(int8_path) or exc.message
        extra["tflm"] = {"error": reason}
        log(f"TFLite Micro cannot run this model: {reason}")
        extra["note"] = f"TFLite Micro cannot run the int8 model ({reason}); the C source was generated"
        return c_dir, extra
    extra["tflm"] = {"arena_bytes": arena}
    # against TFLite's reference kernels: TFLite Micro (and the C runtime) implement those;
    # the optimized kernels and XNNPACK round some int8 ops differently, and a spiking
    # student turns a one-step difference into flipped spikes
    runner = TFLiteRunner(int8_path, io, reference_kernels=True)
    n = len(next(iter(held_out.inputs.values())))
    raw_litert, raw_tflm = [], []
    with capture_native_output(tflm_log):
        interp = tflite2c.tflm_interpreter(int8_path.read_bytes(), arena)
    order = _tflm_input_order(runner)
    from edgekd.convert.layout import to_tflite_layout
    from edgekd.convert.runtime import dequantize, quantize

    for i in range(n):
        sample = {k: v[i] for k, v in held_out.inputs.items()}
        runner.run_one(sample)
        raw_litert.append(runner.interp.get_tensor(runner.output["index"]).copy())
        for pos, sig in order:
            x = to_tflite_layout(np.asarray(sample[sig.name], np.float32)[None], sig.tflite_perm)
            interp.set_input(quantize(x, runner.inputs[sig.name]), pos)
        interp.invoke()
        raw_tflm.append(np.asarray(interp.get_output(0)).copy())
    litert = np.stack([dequantize(r, runner.output)[0] for r in raw_litert])
    tflm = np.stack([dequantize(r, runner.output)[0] for r in raw_tflm])
    identical = float(np.mean([np.array_equal(a, b) for a, b in zip(raw_litert, raw_tflm)]))
    extra["tflm"]["identical_outputs"] = identical
    hop = ledger.add(compare("tflite-int8 (reference kernels)", "tflite-micro", litert, tflm, held_out.labels,
                             held_out.classes, "quantized", options.limits))
    hop.data = (f"TFLite Micro arena {arena} bytes; int8 outputs identical to the TFLite interpreter's (reference "
                f"kernels) on {100 * identical:.1f} % of samples")
    log(hop.line() + f"; arena {arena} B; identical outputs {100 * identical:.1f} %")
    _stop_if_failed(hop, ledger, out_dir, options)
    return c_dir, extra


TFLM_MAX_CONCAT_INPUTS = 10  # tensorflow/lite/micro/kernels/concatenation.cc: kMaxInputNum


def tflm_limits(tflite: Path) -> str | None:
    """Known TFLite Micro kernel limits the model exceeds (its interpreter only says that
    allocation failed)."""
    from edgekd.convert.ops import inventory

    inv = inventory(tflite)
    wide = [op for op in inv.ops if op.op == "CONCATENATION" and len(op.inputs) > TFLM_MAX_CONCAT_INPUTS]
    if wide:
        return (f"{len(wide)} CONCATENATION ops join up to {max(len(op.inputs) for op in wide)} tensors; TFLite Micro's "
                f"kernel takes at most {TFLM_MAX_CONCAT_INPUTS} (a spiking student stacking more time steps than that)")
    return None


def _tflm_input_order(runner: Any) -> list[tuple[int, Any]]:
    details = runner.interp.get_input_details()
    position = {d["index"]: pos for pos, d in enumerate(details)}
    return [(position[runner.inputs[sig.name]["index"]], sig) for sig in runner.io.inputs]


def to_tensorrt(onnx_path: Path, onnx_scores: np.ndarray, out_dir: Path, held_out: HeldOut, calibration: Any,
                target: Any, plan: Plan, ledger: Ledger, options: ConvertOptions, log: Log) -> Path:
    from edgekd.convert.onnx2trt import QDQ_FILE, TrtOptions, onnx2trt
    from edgekd.convert.runtime import predict_onnx

    log("ONNX -> QDQ int8 ONNX + TensorRT calibration cache + trtexec commands")
    trt_dir = out_dir / "tensorrt"
    onnx2trt(onnx_path, trt_dir, TrtOptions(calibration=calibration.inputs, per_channel=plan.per_channel,
                                            tensorrt_version=target.runtime.version))
    shutil.copyfile(onnx_path, trt_dir / onnx_path.name)  # the device builds from this folder alone
    scores = predict_onnx(trt_dir / QDQ_FILE, held_out.inputs)
    hop = ledger.add(compare("onnx", "onnx-qdq-int8", onnx_scores, scores, held_out.labels, held_out.classes,
                             "quantized", options.limits))
    hop.data = "onnxruntime CPU on the QDQ model (the int8 arithmetic TensorRT builds from)"
    log(hop.line())
    _stop_if_failed(hop, ledger, out_dir, options)
    return trt_dir


def converter_versions() -> dict[str, Any]:
    """Installed onnx2tf/TensorFlow/... versions against the pins in constraints.txt."""
    from importlib import metadata

    pins: dict[str, str] = {}
    constraints = Path(__file__).resolve().parents[2] / "constraints.txt"
    if constraints.exists():
        for line in constraints.read_text().splitlines():
            m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
            if m:
                pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    out: dict[str, Any] = {}
    for pkg in ("onnx2tf", "tensorflow", "onnx", "onnxruntime", "ai-edge-litert", "tflite-micro", "torch"):
        try:
            installed = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
        pin = pins.get(pkg)
        out[pkg] = {"installed": installed, "pinned": pin, "matches_pin": pin is None or installed.split("+")[0] == pin}
    return out


# ---------------------------------------------------------------- run directories


@dataclass
class RunModel:
    model_dir: Path
    manifest: Any  # edgekd.artifacts.Manifest or None
    recipe: Any  # edgekd.config.Recipe or None


def find_model_dir(run_dir: str | Path) -> RunModel:
    """The trained model in `run_dir`: a stage directory holding arch.json + model.pt, or a run
    folder whose latest such stage (by its NN- prefix) is used."""
    from edgekd.artifacts import MANIFEST_NAME, read_manifest
    from edgekd.config import Recipe, validate

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise NotFoundError(f"no run directory '{run_dir}'", hint="give a directory written by `edgekd train` or `edgekd distill`")
    candidates = [run_dir] if (run_dir / "arch.json").exists() else sorted(
        (d for d in run_dir.iterdir() if d.is_dir() and (d / "arch.json").exists() and (d / "model.pt").exists()),
        key=lambda d: d.name,
    )
    if not candidates:
        raise NotFoundError(f"'{run_dir}' holds no trained model (arch.json + model.pt)",
                            hint="train or distill first, e.g. `edgekd distill --recipe eye-mskd --teacher runs/eye-mskd/01-train`")
    model_dir = candidates[-1]
    manifest = read_manifest(model_dir) if (model_dir / MANIFEST_NAME).exists() else None
    recipe = None
    if manifest is not None and isinstance(manifest.params.get("recipe"), dict):
        recipe = validate(Recipe, manifest.params["recipe"], f"{model_dir / MANIFEST_NAME} (params.recipe)")
    return RunModel(model_dir, manifest, recipe)


def default_out_dir(model_dir: Path, target: str) -> Path:
    """runs/<run>/02-distill -> runs/<run>/03-convert-<target>."""
    m = re.match(r"^(\d+)-", model_dir.name)
    if m:
        return model_dir.parent / f"{int(m.group(1)) + 1:02d}-convert-{target}"
    return model_dir.parent / f"{model_dir.name}-convert-{target}"


def held_out_from(dataset: Any, names: Sequence[str], limit: int, seed: int = 0) -> HeldOut:
    """Up to `limit` held-out samples (a class-stratified subset when there are more)."""
    from edgekd.distill.trainer import tensors_for

    n = len(dataset)
    if n > limit:
        from edgekd.data.calibration import balanced_indices

        idx = balanced_indices(dataset.y, limit, len(dataset.classes), np.random.default_rng(seed + 1))
        dataset = dataset.subset(idx)
    data = tensors_for(dataset, names)
    desc = {"task": dataset.task, "source": dataset.source, "split": "validation", "samples": len(dataset),
            "of": n, "note": "held-out samples cut from the training side (edgekd.data.api), never used to calibrate"}
    return HeldOut({k: v.numpy() for k, v in data.inputs.items()}, np.asarray(dataset.y), list(dataset.classes), desc)


def convert_run(run_dir: str | Path, target: str, formats: Sequence[str] | None = None, out: str | Path | None = None,
                targets_dir: Sequence[str | Path] = (), calibration: str | Path | None = None,
                per_channel: bool | None = None, quantizer: str | None = None, eval_samples: int | None = None,
                max_accuracy_drop: float | None = None, min_agreement: float | None = None,
                force: bool = False, log: Log | None = None) -> dict[str, Any]:
    """`edgekd convert RUN_DIR --target NAME`: the chain for the target on the run's model.

    Returns a summary (out dir, formats with sizes, the ledger table, notes); skipped=True when
    an up-to-date artifact directory was reused."""
    from edgekd.artifacts import is_up_to_date, read_manifest
    from edgekd.targets import get_target

    log = log or (lambda _m: None)
    spec = get_target(target, targets_dir)
    run = find_model_dir(run_dir)
    if run.recipe is None:
        raise UsageError(f"'{run.model_dir}' has no recipe in its manifest, so its task and data are unknown",
                         hint="convert a directory written by `edgekd train`/`edgekd distill`")
    recipe = run.recipe
    cfg = recipe.convert
    quantizer = quantizer or "tensorflow"
    if quantizer not in ("onnx2tf", "tensorflow"):
        raise UsageError(f"unknown quantizer '{quantizer}'{did_you_mean(quantizer, ['onnx2tf', 'tensorflow'])}",
                         hint="tensorflow (TFLiteConverter on onnx2tf's SavedModel) or onnx2tf (its own -oiqt output)")
    options = ConvertOptions(
        per_channel=per_channel, quantizer=quantizer, calibration_samples=cfg.calibration_samples,
        eval_samples=eval_samples or 1000, seed=recipe.seed,
        limits=ParityLimits(max_accuracy_drop=cfg.max_accuracy_drop if max_accuracy_drop is None else max_accuracy_drop,
                            min_agreement=cfg.min_agreement if min_agreement is None else min_agreement,
                            float_min_within=cfg.float_min_within),
    )
    arch = json.loads((run.model_dir / "arch.json").read_text())  # plan before loading the model (skip check)
    plan = plan_chain(spec, formats, per_channel, recipe_per_channel=cfg.per_channel,
                      int8_exact=bool(arch.get("params", {}).get("int8_exact")))
    options.per_channel = plan.per_channel  # resolved once, so convert_model plans the same chain
    out_dir = Path(out) if out else default_out_dir(run.model_dir, spec.name)
    inputs: dict[str, str | Path] = {"model": run.model_dir / "model.pt", "arch": run.model_dir / "arch.json"}
    if calibration:
        inputs["calibration"] = Path(calibration) / "calibration.npz"
    stage_params = {"run": str(run.model_dir.resolve()), "target_spec": spec.model_dump(mode="json"),
                    "calibration_dir": str(Path(calibration).resolve()) if calibration else None}
    params_probe = _params_for_skip(spec, plan, options, stage_params)
    if not force and is_up_to_date(out_dir, params_probe, inputs):
        manifest = read_manifest(out_dir)
        log(f"up to date: {out_dir} (use --force to convert again)")
        return {"out": str(out_dir), "skipped": True, "target": spec.name, **_summary_from_manifest(manifest, out_dir)}

    from edgekd.data.api import load_dataset
    from edgekd.models import load_model

    model = load_model(run.model_dir)
    names = list(getattr(model, "input_names", ()) or ["input"])
    common = dict(task=recipe.task, source=recipe.data.source, path=recipe.data.path, seed=recipe.seed,
                  validation_fraction=recipe.data.validation_fraction, **recipe.data.options)
    log(f"loading {recipe.task} data ({recipe.data.source}): validation split for the ledger")
    validation = load_dataset(split="validation", **common)
    held_out = held_out_from(validation, names, options.eval_samples, recipe.seed)
    representative = None
    if "int8" in plan.tflite_modes or "tensorrt" in plan.formats:
        from edgekd.convert import representative as rep

        if calibration:
            representative = rep.from_directory(calibration, names, recipe.task)
        else:
            log("calibration: a class-balanced sample of the training split")
            representative = rep.from_training_split(load_dataset(split="train", **common), names,
                                                     options.calibration_samples, recipe.seed)
    result = convert_model(model, held_out, representative, spec, out_dir, formats, options, log=log,
                           stage_params=stage_params, stage_inputs=inputs)
    return {"out": str(out_dir), "skipped": False, "target": spec.name, **_summary(result)}


def _params_for_skip(spec: Any, plan: Plan, options: ConvertOptions, stage_params: Mapping[str, Any]) -> dict[str, Any]:
    # the same dict convert_model records, so is_up_to_date compares like with like
    return {"chain_revision": CHAIN_REVISION, "target": spec.name, "engine": plan.engine, "kind": spec.kind,
            "formats": plan.formats,
            "tflite_modes": plan.tflite_modes, "per_channel_resolved": plan.per_channel, **options.to_params(),
            "limits_target": spec.limits.model_dump(mode="json"), **dict(stage_params)}


def _summary(result: ConvertResult) -> dict[str, Any]:
    return {
        "formats": {f: {"path": str(p), "bytes": _size(p)} for f, p in result.formats.items()},
        "ledger": result.ledger.table(),
        "parity_ok": result.ledger.ok,
        "notes": result.notes,
        "seconds": result.seconds,
        "io": result.io.to_dict(),
    }


def _summary_from_manifest(manifest: Any, out_dir: Path) -> dict[str, Any]:
    m = manifest.metrics
    formats = {f: {"path": str(out_dir / o["path"]), "bytes": m.get("sizes_bytes", {}).get(f)}
               for f, o in manifest.outputs.items() if f in FORMATS}
    return {"formats": formats, "ledger": m.get("ledger", []), "parity_ok": m.get("parity_ok"), "notes": m.get("notes", []),
            "seconds": m.get("seconds", {}), "io": m.get("io")}
