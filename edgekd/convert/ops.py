"""Op inventory of a .tflite file, checked against a target's runtime before any deploy.

The flatbuffer is read by `tflite2c.load_graph` (pure Python; no TensorFlow import): every operator (builtin name or custom code), the dtypes and shapes of its
tensors, the weight bytes, and a liveness estimate of the activation memory. `check_runtime`
then says which ops the target's engine cannot run:

- tflite (ai-edge-litert / tflite_runtime on a CPU): every builtin op; custom ops and Flex
  (TensorFlow) ops are not in those runtimes.
- edgetpu: the Edge TPU's op list (coral.ai "Supported operations"), int8/uint8 tensors only,
  and the compiler's rule that the first op it cannot map ends the Edge TPU subgraph: every op
  after it runs on the CPU. That gives the predicted coverage before compiling.
- firmware: the int8 C runtime's own check (`tflite2c.check_ops`: its op list and parameters).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


# Edge TPU compiler 16: ops it can map (with the limits the Coral docs list for some of them).
EDGETPU_OPS = frozenset({
    "ABS", "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE",
    "EXPAND_DIMS", "FULLY_CONNECTED", "GATHER", "HARD_SWISH", "L2_NORMALIZATION", "LOGISTIC",
    "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE",
    "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})


@dataclass
class TensorInfo:
    index: int
    name: str
    shape: list[int]
    dtype: str
    bytes: int
    constant: bool
    scale: list[float] = field(default_factory=list)
    zero_point: list[int] = field(default_factory=list)
    quantized_dimension: int = 0


@dataclass
class OpInfo:
    index: int
    op: str  # builtin name ('CONV_2D') or 'CUSTOM:<code>'
    version: int
    inputs: list[int]
    outputs: list[int]


@dataclass
class OpInventory:
    path: str
    file_bytes: int
    ops: list[OpInfo]
    tensors: list[TensorInfo]
    inputs: list[int]
    outputs: list[int]
    subgraphs: int

    @property
    def op_counts(self) -> dict[str, int]:
        return dict(Counter(op.op for op in self.ops))

    @property
    def weight_bytes(self) -> int:
        return sum(t.bytes for t in self.tensors if t.constant)

    @property
    def dtypes(self) -> dict[str, int]:
        return dict(Counter(t.dtype for t in self.tensors if not t.constant))

    def tensor(self, index: int) -> TensorInfo:
        return self.tensors[index]

    def activation_peak_bytes(self) -> int:
        """Peak bytes of live non-constant tensors over the op sequence (each tensor lives from
        the op that writes it to the last op that reads it; no in-place reuse): an estimate
        of the activation arena an interpreter needs."""
        n = len(self.ops)
        first: dict[int, int] = {i: 0 for i in self.inputs}
        last: dict[int, int] = {i: n for i in self.outputs}
        for k, op in enumerate(self.ops):
            for t in op.outputs:
                first.setdefault(t, k)
            for t in op.inputs:
                if t >= 0 and not self.tensors[t].constant:
                    last[t] = max(last.get(t, k), k)
        peak = 0
        for k in range(n + 1):
            live = sum(self.tensors[t].bytes for t, s in first.items()
                       if not self.tensors[t].constant and s <= k <= last.get(t, s))
            peak = max(peak, live)
        return peak

    def summary(self) -> dict[str, Any]:
        def io(idx: int) -> dict[str, Any]:
            t = self.tensors[idx]
            return {"name": t.name, "shape": t.shape, "dtype": t.dtype,
                    "scale": t.scale[:1], "zero_point": t.zero_point[:1]}

        return {
            "path": self.path,
            "file_bytes": self.file_bytes,
            "weight_bytes": self.weight_bytes,
            "activation_peak_bytes": self.activation_peak_bytes(),
            "subgraphs": self.subgraphs,
            "op_counts": self.op_counts,
            "activation_dtypes": self.dtypes,
            "inputs": [io(i) for i in self.inputs],
            "outputs": [io(i) for i in self.outputs],
        }

    def to_dict(self) -> dict[str, Any]:
        d = self.summary()
        d["ops"] = [asdict(op) for op in self.ops]
        d["tensors"] = [asdict(t) for t in self.tensors if not t.constant or t.bytes]
        return d


def inventory(path: str | Path) -> OpInventory:
    """Read a .tflite file's ops and tensors (main subgraph), with the firmware generator's
    flatbuffer reader (`tflite2c.load_graph`: one .tflite reader in the project)."""
    from edgekd.convert.tflite2c import load_graph

    path = Path(path)
    graph = load_graph(path)
    tensors = []
    for t in graph.tensors:
        nbytes = int(t.data.nbytes) if t.data is not None else int(t.nbytes)
        tensors.append(TensorInfo(t.index, t.name, list(t.shape), t.dtype, nbytes, t.data is not None,
                                  [float(x) for x in t.scales], [int(z) for z in t.zero_points], int(t.quantized_dim)))
    ops = [OpInfo(o.index, o.op, 1, list(o.inputs), list(o.outputs)) for o in graph.operators]
    return OpInventory(str(path), len(graph.raw) or path.stat().st_size, ops, tensors, list(graph.inputs),
                       list(graph.outputs), 1)


# ---------------------------------------------------------------- runtime checks


@dataclass
class RuntimeCheck:
    engine: str
    ok: bool
    unsupported: dict[str, int]  # op -> count the engine cannot run
    problems: list[str]
    coverage: dict[str, Any] | None = None  # edgetpu: predicted ops on the TPU / CPU
    warnings: list[str] = field(default_factory=list)  # runs, but not as asked (e.g. float ops in an int8 model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ops that legitimately touch float tensors in a full-int8 model: a spiking neuron's Heaviside
# (DEQUANTIZE -> FLOOR -> QUANTIZE, exact; TFLite has no int8 FLOOR; older exports: bool -> float
# CAST -> QUANTIZE) and shape-only ops on those
_FLOAT_OK = {"FLOOR", "CAST", "QUANTIZE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "CONCATENATION"}


def float_compute_ops(inv: OpInventory) -> dict[str, int]:
    """Ops of an int8 model that compute in float32 (after a DEQUANTIZE): the converter left
    them unquantized, so the model is not fully integer."""
    found: Counter[str] = Counter()
    for op in inv.ops:
        if op.op in _FLOAT_OK or op.op == "DEQUANTIZE":
            continue
        tensors = [inv.tensors[t] for t in [*op.inputs, *op.outputs] if t >= 0]
        if any(t.dtype == "float32" and not t.constant for t in tensors):
            found[op.op] += 1
    return dict(found)


def check_runtime(inv: OpInventory, engine: str) -> RuntimeCheck:
    """Can `engine` (a target's runtime.engine) run this .tflite? Never raises for a 'no'."""
    problems: list[str] = []
    warnings: list[str] = []
    integer_io = all(inv.tensors[i].dtype in ("int8", "uint8") for i in inv.inputs)
    floats = float_compute_ops(inv) if integer_io else {}
    if floats:
        warnings.append(f"not fully integer: {format_counts(floats)} compute in float32 between DEQUANTIZE and "
                        "QUANTIZE (the converter left them unquantized)")
    if engine in ("tflite", "edgetpu"):
        custom = {op: n for op, n in inv.op_counts.items() if op.startswith("CUSTOM:") or op.startswith("FLEX")}
        if custom:
            problems.append(f"custom/Flex ops {sorted(custom)} are not in ai-edge-litert or tflite_runtime")
        if engine == "tflite":
            return RuntimeCheck(engine, not custom, custom, problems, warnings=warnings)
        coverage = predict_edgetpu_coverage(inv)
        unsupported = dict(Counter(o["op"] for o in coverage["cpu_ops"]))
        if coverage["cpu"]:
            problems.append(
                f"{coverage['cpu']} of {coverage['total']} ops would run on the CPU, from op "
                f"#{coverage['first_unmapped']['index']} {coverage['first_unmapped']['op']} "
                f"({coverage['first_unmapped']['reason']})"
            )
        # an Edge TPU model whose ops fall back still runs (slower): ok means all on the TPU
        return RuntimeCheck(engine, coverage["cpu"] == 0, unsupported, problems, coverage, warnings)
    if engine == "firmware":
        # the firmware generator's own check: its op list and each op's parameters
        from edgekd.convert.tflite2c import check_ops, load_graph

        found = check_ops(load_graph(inv.path))
        unsupported = dict(Counter(p.op for p in found if p.op_index >= 0))
        problems += [p.message if p.op_index < 0 or p.message.startswith("op #") else f"op #{p.op_index} {p.op}: {p.message}"
                     for p in found]
        return RuntimeCheck(engine, not found, unsupported, problems, warnings=warnings)
    # onnxruntime / tensorrt run ONNX: a .tflite is for their CPU fallback through the tflite engine
    return check_runtime(inv, "tflite")


def predict_edgetpu_coverage(inv: OpInventory) -> dict[str, Any]:
    """Which ops the Edge TPU compiler would map, before compiling: ops in order until the
    first one it cannot map (unsupported op, non-int8 tensor, or a tensor with more than three
    non-1 innermost dimensions); that op and all after it run on the CPU."""
    on_tpu: list[dict[str, Any]] = []
    on_cpu: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None
    for op in inv.ops:
        reason = edgetpu_reason(inv, op)
        entry = {"index": op.index, "op": op.op}
        if first is None and reason is None:
            on_tpu.append(entry)
            continue
        if first is None:
            first = {**entry, "reason": reason}
        on_cpu.append({**entry, "reason": reason or "after the first unmapped op (one Edge TPU subgraph)"})
    return {
        "predicted": True,
        "rule": "ops map in order until the first unsupported one; that op and all after it run on the CPU",
        "total": len(inv.ops),
        "tpu": len(on_tpu),
        "cpu": len(on_cpu),
        "tpu_op_counts": dict(Counter(o["op"] for o in on_tpu)),
        "cpu_op_counts": dict(Counter(o["op"] for o in on_cpu)),
        "first_unmapped": first,
        "cpu_ops": on_cpu,
    }


def edgetpu_reason(inv: OpInventory, op: OpInfo) -> str | None:
    if op.op not in EDGETPU_OPS:
        return "op not supported by the Edge TPU"
    for t in [*op.inputs, *op.outputs]:
        if t < 0:
            continue
        info = inv.tensors[t]
        if info.constant:
            # weights: int8 (int32 biases, shape operands); float weights mean an unquantized op
            if info.dtype in ("float32", "float16"):
                return f"constant '{info.name}' is {info.dtype} (not quantized)"
            continue
        if info.dtype not in ("int8", "uint8"):
            return f"tensor '{info.name}' is {info.dtype} (the Edge TPU runs int8/uint8 tensors only)"
        if len(info.shape) > 3 and any(s > 1 for s in info.shape[:-3]):
            return f"tensor '{info.name}' {info.shape}: more than 3 non-1 innermost dimensions"
    return None


# ---------------------------------------------------------------- limits


@dataclass
class LimitCheck:
    ok: bool
    problems: list[str]
    figures: dict[str, float]


def check_limits(inv: OpInventory, limits: Mapping[str, int | None], kind: str) -> LimitCheck:
    """Model bytes against limits.model_kb (and flash_kb on microcontrollers, where the model
    lives in flash) and the activation estimate against limits.ram_kb."""
    problems: list[str] = []
    model_kb = inv.file_bytes / 1024
    arena_kb = inv.activation_peak_bytes() / 1024
    figures = {"model_kb": round(model_kb, 1), "activation_estimate_kb": round(arena_kb, 1)}
    if limits.get("model_kb") and model_kb > limits["model_kb"]:
        problems.append(f"model is {model_kb:.1f} KiB > limits.model_kb {limits['model_kb']}")
    if kind == "mcu" and limits.get("flash_kb") and model_kb > limits["flash_kb"]:
        problems.append(f"model is {model_kb:.1f} KiB > limits.flash_kb {limits['flash_kb']}")
    if limits.get("ram_kb") and arena_kb > limits["ram_kb"]:
        problems.append(f"activations need about {arena_kb:.1f} KiB > limits.ram_kb {limits['ram_kb']}")
    return LimitCheck(not problems, problems, figures)


def format_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{op} x{n}" for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def union_counts(items: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for c in items:
        total.update(c)
    return dict(total)


def op_sequence(inv: OpInventory) -> Sequence[str]:
    return [op.op for op in inv.ops]
