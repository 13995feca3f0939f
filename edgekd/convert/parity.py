"""The accuracy ledger: every hop of the chain checked against the previous one.

Float hops (torch -> ONNX -> TFLite fp32) are judged by the error of the scores and the top-1
agreement; reduced-precision hops (-> fp16, dynamic-range int8, full int8, QDQ int8) by the
task metric (top-1 accuracy, in points) and the top-1 agreement, on held-out samples, with
their score errors reported alongside (fp16 flips spikes like int8 does, only less often).
A hop beyond its limit fails with the numbers and the classes that lost most. When an int8 hop fails,
`layer_report` compares fp32 and int8 activations layer by layer and names the TFLite op,
the ONNX node and the torch module where the error appears.

Spiking students make float hops discrete: a membrane potential a rounding error away from
the threshold flips a spike and moves that sample's scores by a whole spike's worth. So the
float limit is on the share of samples whose scores stay within the tolerance (and on the
agreement), with the maximum error reported alongside.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import atomic_write_json
from edgekd.errors import ParityError

PARITY_FILE = "parity.json"
SCHEMA = "edgekd.parity/1"


@dataclass
class ParityLimits:
    float_rtol: float = 1e-3  # of max(1, max |reference score|)
    fp16_rtol: float = 5e-2
    float_min_within: float = 0.99  # share of samples whose max-abs error is within the tolerance
    float_min_agreement: float = 0.99
    max_accuracy_drop: float = 1.0  # points (quantized hops)
    min_agreement: float = 0.98  # quantized hops

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class HopResult:
    hop: str  # "tflite-fp32 -> tflite-int8"
    source: str
    target: str
    kind: str  # "float" | "quantized"
    samples: int
    agreement: float
    max_abs: float
    p99_abs: float
    within_tolerance: float
    tolerance: float
    accuracy_source: float | None
    accuracy_target: float | None
    accuracy_delta: float | None  # points, target - source
    uar_source: float | None
    uar_target: float | None
    ok: bool
    failures: list[str]
    limits: dict[str, float]
    worst_classes: list[dict[str, Any]] = field(default_factory=list)
    layers: dict[str, Any] | None = None
    data: str = ""
    # int8 outputs: the output's quantization step, the share of samples whose source top-2
    # margin is below it (a tie the int8 output cannot resolve), and the agreement on the others.
    output_step: float | None = None
    near_ties: float | None = None
    agreement_beyond_ties: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        acc = ""
        if self.accuracy_target is not None and self.accuracy_source is not None:
            acc = f", accuracy {100 * self.accuracy_source:.2f} -> {100 * self.accuracy_target:.2f} % ({self.accuracy_delta:+.2f} pt)"
        return (f"{self.hop}: agreement {100 * self.agreement:.2f} %, max |err| {self.max_abs:.3g}"
                f"{acc} [{'ok' if self.ok else 'FAIL'}]")


def compare(hop_source: str, hop_target: str, reference: np.ndarray, candidate: np.ndarray,
            labels: np.ndarray | None, classes: Sequence[str] | None, kind: str, limits: ParityLimits,
            data: str = "", fp16: bool = False, output_step: float | None = None) -> HopResult:
    """Compare the scores of two formats of one model on the same samples.

    `output_step`: the quantization step of the candidate's scores (int8 outputs). Samples whose
    source top-2 margin is below one step are near-ties the candidate cannot tell apart; their
    share and the agreement on the other samples are reported beside the plain agreement."""
    reference = np.asarray(reference, np.float32)
    candidate = np.asarray(candidate, np.float32)
    if reference.shape != candidate.shape:
        raise ParityError(f"{hop_source} -> {hop_target}: score shapes differ {reference.shape} vs {candidate.shape}",
                          hint="the converted model's output does not match the source model")
    n = len(reference)
    err = np.abs(reference - candidate).reshape(n, -1).max(axis=1) if n else np.zeros(0)
    scale = max(1.0, float(np.abs(reference).max()) if n else 1.0)
    tol = (limits.fp16_rtol if fp16 else limits.float_rtol) * scale
    ref_top = reference.argmax(axis=1)
    cand_top = candidate.argmax(axis=1)
    agreement = float((ref_top == cand_top).mean()) if n else 1.0
    within = float((err <= tol).mean()) if n else 1.0
    acc_s = acc_t = delta = uar_s = uar_t = None
    worst: list[dict[str, Any]] = []
    if labels is not None and n:
        labels = np.asarray(labels)
        acc_s = float((ref_top == labels).mean())
        acc_t = float((cand_top == labels).mean())
        delta = round(100 * (acc_t - acc_s), 4)
        uar_s, uar_t = macro_recall(ref_top, labels), macro_recall(cand_top, labels)
        worst = worst_classes(ref_top, cand_top, labels, classes)
    near_ties = beyond = None
    if output_step and n and reference.shape[1] > 1:
        top2 = np.sort(reference, axis=1)[:, -2:]
        tie = (top2[:, 1] - top2[:, 0]) < output_step
        near_ties = float(tie.mean())
        beyond = float((ref_top == cand_top)[~tie].mean()) if (~tie).any() else None
    failures: list[str] = []
    if kind == "float":
        min_within, min_agree = limits.float_min_within, limits.float_min_agreement
        if within < min_within:
            failures.append(f"only {100 * within:.1f} % of samples have max |error| <= {tol:.3g} "
                            f"(limit {100 * min_within:.0f} %; max |error| {float(err.max()):.3g})")
        if agreement < min_agree:
            failures.append(f"top-1 agreement {100 * agreement:.2f} % < {100 * min_agree:.0f} %")
        hop_limits = {"tolerance": tol, "min_within": min_within, "min_agreement": min_agree}
    else:
        if delta is not None and -delta > limits.max_accuracy_drop + 1e-9:
            failures.append(f"accuracy drops {-delta:.2f} points ({100 * acc_s:.2f} -> {100 * acc_t:.2f} %) "
                            f"> {limits.max_accuracy_drop:g}")
        if agreement < limits.min_agreement:
            failures.append(f"top-1 agreement {100 * agreement:.2f} % < {100 * limits.min_agreement:.0f} %"
                            + (f" ({100 * near_ties:.1f} % of samples are within one int8 output step "
                               f"({output_step:.3g}) of a tie; agreement on the others "
                               f"{100 * beyond:.2f} %)" if near_ties and beyond is not None else ""))
        hop_limits = {"max_accuracy_drop": limits.max_accuracy_drop, "min_agreement": limits.min_agreement}
    return HopResult(
        hop=f"{hop_source} -> {hop_target}", source=hop_source, target=hop_target, kind=kind, samples=n,
        agreement=agreement, max_abs=float(err.max()) if n else 0.0, p99_abs=float(np.percentile(err, 99)) if n else 0.0,
        within_tolerance=within, tolerance=tol, accuracy_source=acc_s, accuracy_target=acc_t, accuracy_delta=delta,
        uar_source=uar_s, uar_target=uar_t, ok=not failures, failures=failures, limits=hop_limits,
        worst_classes=worst, data=data, output_step=output_step, near_ties=near_ties, agreement_beyond_ties=beyond,
    )


def macro_recall(pred: np.ndarray, labels: np.ndarray) -> float:
    recalls = [float((pred[labels == c] == c).mean()) for c in np.unique(labels)]
    return float(np.mean(recalls)) if recalls else math.nan


def worst_classes(ref_top: np.ndarray, cand_top: np.ndarray, labels: np.ndarray,
                  classes: Sequence[str] | None, k: int = 3) -> list[dict[str, Any]]:
    """The classes with the largest accuracy drop (then lowest agreement) from source to target."""
    rows = []
    for c in np.unique(labels):
        m = labels == c
        rows.append({
            "class": classes[int(c)] if classes is not None and int(c) < len(classes) else str(int(c)),
            "samples": int(m.sum()),
            "accuracy_source": round(float((ref_top[m] == c).mean()), 4),
            "accuracy_target": round(float((cand_top[m] == c).mean()), 4),
            "agreement": round(float((ref_top[m] == cand_top[m]).mean()), 4),
        })
    for r in rows:
        r["drop_points"] = round(100 * (r["accuracy_source"] - r["accuracy_target"]), 2)
    rows.sort(key=lambda r: (-r["drop_points"], r["agreement"]))
    return rows[:k]


# ---------------------------------------------------------------- the ledger


@dataclass
class Ledger:
    hops: list[HopResult] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # which samples: task, source, split, count

    def add(self, hop: HopResult) -> HopResult:
        self.hops.append(hop)
        return hop

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hops)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "ok": self.ok, "data": self.data, "hops": [h.to_dict() for h in self.hops]}

    def write(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    def table(self) -> list[dict[str, Any]]:
        """One row per format (the accuracy ledger as a table)."""
        rows = []
        if self.hops:
            first = self.hops[0]
            rows.append({"format": first.source, "accuracy": first.accuracy_source, "uar": first.uar_source,
                         "agreement_with_previous": None, "max_abs": None, "ok": True})
        for h in self.hops:
            rows.append({"format": h.target, "accuracy": h.accuracy_target, "uar": h.uar_target,
                         "agreement_with_previous": h.agreement, "max_abs": h.max_abs, "ok": h.ok, "from": h.source})
        return rows


def failure_error(hop: HopResult, parity_path: Path) -> ParityError:
    worst = "; ".join(
        f"{w['class']} {100 * w['accuracy_source']:.0f} -> {100 * w['accuracy_target']:.0f} % (n={w['samples']})"
        for w in hop.worst_classes if w["drop_points"] > 0
    )
    message = f"{hop.hop} is beyond its limit on {hop.samples} held-out samples: " + "; ".join(hop.failures)
    if worst:
        message += f". Worst classes: {worst}"
    divergence = (hop.layers or {}).get("float_divergence")
    if divergence:
        message += (f". The float model departs from ONNX at TFLite op #{divergence['index']} {divergence['op']} "
                    f"'{divergence['tensor']}' (its inputs match ONNX {', '.join(str(f) for f in divergence['inputs_match_onnx'][:2])}"
                    + (f"; ONNX consumers {', '.join(divergence['onnx_consumers'][:3])}" if divergence["onnx_consumers"] else "")
                    + (f"; torch module {', '.join(divergence['torch_modules'][:3])}" if divergence["torch_modules"] else "")
                    + ")")
    culprit = (hop.layers or {}).get("culprit")
    if culprit:
        message += (f". The error appears at {culprit['op']} '{culprit['tensor']}' "
                    f"(relative error {culprit['relative_error']:.3g}, +{culprit['added_error']:.3g} over its inputs)")
        if culprit.get("torch_module"):
            message += f", from torch module '{culprit['torch_module']}'"
        elif culprit.get("onnx_node"):
            message += f", ONNX node '{culprit['onnx_node']}'"
    flips = [f for f in (hop.layers or {}).get("spike_flips", []) if f["firing_rate"] > 0]
    if flips:
        worst_flip = max(flips, key=lambda f: f["flip_rate"])
        message += (f". Spikes moved by int8: {100 * worst_flip['flip_rate']:.1f} % of neurons at '{worst_flip['tensor']}' "
                    f"(firing {100 * worst_flip['firing_rate']:.1f} %), {100 * flips[0]['flip_rate']:.2f} % at the first spiking layer")
    hint = f"see {parity_path}"
    if flips:
        hint += ("; for spiking students (eye-snn, skeleton-sgn), train with int8_exact = true and an integer "
                 "membrane (lif.membrane_grid, reset 'subtract'; its int8 model then computes the float one), or with "
                 "lif.current_clamp and the 'logit_margin' loss term for near-ties, see docs/int8-spiking.md")
    if hop.kind == "quantized":
        hint += ("; more or more representative calibration samples, per-channel quantization, or keeping "
                 "that layer's activations in range (e.g. a clamp/BN before it) usually help; "
                 "--max-accuracy-drop/--min-agreement change the limits")
    return ParityError(message, hint)


# ---------------------------------------------------------------- per-layer comparison


def layer_report(fp32_tflite: str | Path, int8_tflite: str | Path, io: Any, inputs: Mapping[str, np.ndarray],
                 onnx_path: str | Path | None = None, node_modules: Mapping[str, str] | None = None,
                 top: int = 5) -> dict[str, Any]:
    """fp32 vs int8 activations op by op on a few samples.

    Tensors are paired by name (both models come from the same SavedModel), each int8 op gets
    the relative L2 error of its dequantized output and the error it adds over its inputs; the
    op adding the most is the culprit. Its fp32 output is found among the ONNX model's
    intermediate outputs by value (layout-free: sorted values), which names the ONNX node and,
    through node_modules.json, the torch module."""
    from edgekd.convert.ops import inventory
    from edgekd.convert.runtime import TFLiteRunner, dequantize

    inv_q = inventory(int8_tflite)
    fp = all_tensors(TFLiteRunner(fp32_tflite, io, preserve_all_tensors=True), inputs)
    q = all_tensors(TFLiteRunner(int8_tflite, io, preserve_all_tensors=True), inputs, dequantize_with=dequantize)
    fp_by_name = {name: arr for (name, arr) in fp.values()}
    errors: dict[int, float] = {}
    for idx, (name, arr) in q.items():
        ref = fp_by_name.get(name)
        if ref is None or ref.shape != arr.shape:
            continue
        errors[idx] = channel_relative_error(ref, arr)
    producer = {t: op for op in inv_q.ops for t in op.outputs}
    upstream: dict[int, float] = {}

    def known_error(t: int) -> float:
        """The error of tensor t, or (int8-only tensors such as QUANTIZE outputs, which have no
        float twin) the largest error among the tensors it was computed from."""
        if t in errors:
            return errors[t]
        if t not in upstream:
            upstream[t] = 0.0  # guards cycles; graph inputs stay at 0
            op = producer.get(t)
            if op is not None:
                upstream[t] = max([known_error(i) for i in op.inputs if i >= 0 and not inv_q.tensors[i].constant] or [0.0])
        return upstream[t]

    layers = []
    for op in inv_q.ops:
        outs = [t for t in op.outputs if t in errors]
        if not outs:
            continue
        out_err = max(errors[t] for t in outs)
        in_err = max([known_error(t) for t in op.inputs if t >= 0 and not inv_q.tensors[t].constant] or [0.0])
        t = outs[0]
        layers.append({"index": op.index, "op": op.op, "tensor": inv_q.tensors[t].name,
                       "relative_error": round(out_err, 6), "added_error": round(out_err - in_err, 6)})
    # Spiking layers: the share of spikes that int8 moved. A spike map is a FLOOR output (the
    # exported Heaviside minus 1: 0 where a neuron fires, -1 elsewhere; edgekd.models.neurons) or,
    # in older exports, the CAST of a comparison (1 where it fires). Flips grow from layer to
    # layer and from step to step; this is where to look.
    fires = {"FLOOR": lambda a: a > -0.5, "CAST": lambda a: a != 0}
    spikes = []
    for op in inv_q.ops:
        if op.op not in fires or not op.outputs or op.outputs[0] not in q:
            continue
        name, arr = q[op.outputs[0]]
        ref = fp_by_name.get(name)
        if ref is None or ref.shape != arr.shape:
            continue
        fired, fired_q = fires[op.op](ref), fires[op.op](arr)
        spikes.append({"index": op.index, "tensor": name, "firing_rate": round(float(np.mean(fired)), 6),
                       "flip_rate": round(float(np.mean(fired != fired_q)), 6)})
    ranked = sorted(layers, key=lambda r: -r["added_error"])[:top]
    if ranked and onnx_path is not None:
        graph = _OnnxValues(onnx_path, {k: v[:1] for k, v in inputs.items()})
        for r in ranked:
            ref = fp_by_name.get(r["tensor"])
            if ref is None:
                continue
            node = _match_by_values(ref[:1], graph.values)
            if node:
                r["onnx_node"] = node
                owner = graph.weighted_owner(node)
                if owner and owner != node:
                    r["onnx_weighted_node"] = owner
                for candidate in (owner, node):
                    if node_modules and candidate in node_modules:
                        r["torch_module"] = node_modules[candidate]
                        break
    return {"samples": int(next(iter(inputs.values())).shape[0]), "layers": layers, "top": ranked,
            "culprit": ranked[0] if ranked else None, "spike_flips": spikes}


def float_divergence(fp32_tflite: str | Path, onnx_path: str | Path, io: Any, inputs: Mapping[str, np.ndarray],
                     node_modules: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Where a float TFLite model first departs from its ONNX model, on one sample.

    Every TFLite op output is looked up among the ONNX intermediate values by its sorted
    values (layout-free); the first op whose output has no match while its inputs do is where
    the conversion went wrong (onnx2tf picks a wrong axis when two dimensions are equal, e.g.
    8 channels over 8 time steps). Its inputs' ONNX producers name the ONNX node that
    consumes them and the torch module it came from."""
    from edgekd.convert.ops import inventory
    from edgekd.convert.runtime import TFLiteRunner

    sample = {k: v[:1] for k, v in inputs.items()}
    graph = _OnnxValues(onnx_path, sample)
    by_size: dict[int, list[tuple[str, np.ndarray]]] = {}
    for node, _op, value in graph.values:
        by_size.setdefault(value.size, []).append((node, np.sort(value.ravel())))
    runner = TFLiteRunner(fp32_tflite, io, preserve_all_tensors=True)
    runner.run_one({k: v[0] for k, v in sample.items()})
    inv = inventory(fp32_tflite)
    matched: dict[int, str | None] = {}

    def match(t: int) -> str | None:
        if t not in matched:
            value = np.sort(runner.interp.get_tensor(t).astype(np.float32).ravel())
            tol = 1e-4 * (1.0 + float(np.abs(value).max()) if value.size else 1.0)
            matched[t] = next((node for node, ref in by_size.get(value.size, [])
                               if float(np.abs(ref - value).max()) <= tol), None)
        return matched[t]

    for t in inv.inputs:
        matched[t] = "(input)"
    consumers: dict[str, list[str]] = {}
    for node in graph.nodes.values():
        for i in node.input:
            consumers.setdefault(graph.producer.get(i, i), []).append(node.name)
    for op in inv.ops:
        ins = [t for t in op.inputs if t >= 0 and not inv.tensors[t].constant]
        if not ins or any(match(t) is None for t in ins) or match(op.outputs[0]) is not None:
            continue
        feeding = [matched[t] for t in ins]
        after = sorted({c for f in feeding for c in consumers.get(f or "", [])})
        modules = sorted({node_modules[c] for c in after if node_modules and c in node_modules})
        return {"index": op.index, "op": op.op, "tensor": inv.tensors[op.outputs[0]].name,
                "inputs_match_onnx": feeding, "onnx_consumers": after[:5], "torch_modules": modules[:5]}
    return {}


def all_tensors(runner: Any, inputs: Mapping[str, np.ndarray], dequantize_with: Any = None) -> dict[int, tuple[str, np.ndarray]]:
    """{tensor index: (name, stacked values over samples)} of every non-constant tensor."""
    details = [d for d in runner.interp.get_tensor_details()]
    n = len(next(iter(inputs.values())))
    collected: dict[int, list[np.ndarray]] = {}
    names: dict[int, str] = {}
    for i in range(n):
        runner.run_one({k: v[i] for k, v in inputs.items()})
        for d in details:
            try:
                value = runner.interp.get_tensor(d["index"])
            except ValueError:
                continue
            if value is None or value.size == 0 or d.get("sparsity_parameters"):
                continue
            arr = dequantize_with(value, d) if dequantize_with else value.astype(np.float32)
            collected.setdefault(d["index"], []).append(np.asarray(arr, np.float32))
            names[d["index"]] = d["name"]
    return {i: (names[i], np.stack(v)) for i, v in collected.items() if len(v) == n}


_LAYOUT_OPS = {"Reshape", "Transpose", "Identity", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Constant"}


class _OnnxValues:
    """Every node output of the ONNX model on one sample, and who produced what."""

    ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "BatchNormalization",
                   "Add", "Mul"}
    WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}

    def __init__(self, onnx_path: str | Path, inputs: Mapping[str, np.ndarray]):
        import onnx

        from edgekd.convert.runtime import OnnxIntermediates

        model = OnnxIntermediates(onnx_path)
        values = model.run_one(inputs)
        self.values = [(*model.producers[name], np.asarray(v, np.float32)) for name, v in values.items()
                       if name in model.producers]
        self.nodes = {n.name: n for n in onnx.load(str(onnx_path), load_external_data=False).graph.node}
        self.producer = {out: n.name for n in self.nodes.values() for out in n.output}

    def weighted_owner(self, node_name: str) -> str | None:
        """The conv/linear node an activation output belongs to (Relu after Conv: the Conv),
        walking back through element-wise ops for at most three steps."""
        name: str | None = node_name
        for _ in range(4):
            node = self.nodes.get(name or "")
            if node is None:
                return None
            if node.op_type in self.WEIGHTED:
                return node.name
            if node.op_type not in self.ACTIVATIONS or not node.input:
                return None
            name = self.producer.get(node.input[0])
        return None


def channel_relative_error(ref: np.ndarray, test: np.ndarray) -> float:
    """Mean over channels (last axis, channel-last) of ||test - ref|| / ||ref||: an outlier
    channel that squeezes the others' int8 resolution shows up at the layer that made it."""
    if ref.ndim < 2 or ref.shape[-1] == 1:
        return float(np.linalg.norm(test - ref)) / (float(np.linalg.norm(ref)) or 1.0)
    r = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    t = test.reshape(-1, test.shape[-1]).astype(np.float64)
    norms = np.linalg.norm(r, axis=0)
    live = norms > 1e-6 * max(float(norms.max()), 1e-12)
    if not live.any():
        return float(np.linalg.norm(t - r))
    return float(np.mean(np.linalg.norm(t - r, axis=0)[live] / norms[live]))


def _match_by_values(ref: np.ndarray, candidates: Sequence[tuple[str, str, np.ndarray]]) -> str | None:
    target = np.sort(ref.ravel())
    scale = 1e-3 * (1.0 + float(np.abs(target).max()) if target.size else 1.0)
    matches = []
    for node, op_type, value in candidates:
        if value.size != target.size:
            continue
        if float(np.abs(np.sort(value.ravel()) - target).max()) <= scale:
            matches.append((op_type in _LAYOUT_OPS, node))
    if not matches:
        return None
    compute = [m for m in matches if not m[0]]
    return (compute or matches)[0][1]
