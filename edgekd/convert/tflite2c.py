"""An int8 .tflite as C source for the edgekd firmware runtime (firmware/src).

What comes out: `model.c` (weights as const arrays, one static call per kernel in graph order,
a statically planned activation arena) and `model.json` (inputs/outputs, arena and weight
sizes, op counts). Everything TFLite computes in its kernels' Prepare() — fixed-point
multipliers, paddings, activation ranges, broadcast strides, slice geometry — is computed
here, in the same precision TFLite uses (float32 where TFLite uses float, double where it uses
double), so the C kernels reproduce TFLite's int8 reference kernels bit for bit.

Constants are emitted once per distinct content: weights, biases, multipliers, shifts, tables
and kernel parameter blocks with the same C type and bytes share one const array, so an SNN
unrolled over T time steps keeps each layer's weights once in flash, not T times.

Elementwise int8 -> int8 functions run as 256-entry tables that the reproduced interpreter
itself computes (one table per op, or per DEQUANTIZE -> FLOOR -> QUANTIZE chain: the spiking
students' exported spike, which would otherwise need float kernels and two float buffers).

Also here: `load_graph` (a dependency-light reader of .tflite flatbuffers, reusable by any
op inventory), `check_ops` (which ops/types this runtime cannot run, before anything is built)
and `tflm_arena_bytes` (the TFLite Micro view: the smallest arena its interpreter accepts).

Where TFLite's reference kernels and TFLite Micro differ (FULLY_CONNECTED rescales with
round(double(acc) * scale) in TFLite's reference kernel and with the fixed-point multiplier in
TFLite Micro; MUL's multiplier is a float product in TFLite and a double product in TFLite
Micro), `reference="tflite"` (default) or `"tflm"` picks whose result to reproduce.
`reference="tflite-cpu"` follows TFLite's default CPU kernels instead (XNNPACK: what
`edgekd convert`'s ledger and the Linux targets run), which round each requantization once:
convolutions, fully connected layers and MUL rescale in float32 as XNNPACK does
(`ekd_requant_f32`, scales computed in float32 as XNNPACK computes them), ADD and SUB use
XNNPACK's 21-bit multipliers on a common shift, an int8 -> int8 QUANTIZE is a table (XNNPACK
requantizes with an 8-bit multiplier), every other fixed-point multiplier rounds once as in
TFLite's TFLITE_SINGLE_ROUNDING build (the runtime compiled with -DEKD_SINGLE_ROUNDING=1, see
`runtime_cflags`), and elementwise tables come from the default interpreter. Measured, op by op
(firmware.host.compare_ops): every op the students use gives the default interpreter's result
except MEAN (XNNPACK's int8 mean is a step off on some values; not reproduced) and BATCH_MATMUL.
The int8_exact students, whose means are exact, give that interpreter's outputs bit for bit,
which keeps them exact on a microcontroller.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekd.errors import ConversionError, MissingDependencyError, NotFoundError

Reference = Literal["tflite", "tflite-cpu", "tflm"]
# each reference flavour -> the interpreter its results are compared with
REFERENCE_INTERPRETERS = {"tflite": "TFLite reference kernels",
                          "tflite-cpu": "TFLite default CPU kernels (XNNPACK)",
                          "tflm": "TFLite Micro"}
REFERENCES: tuple[str, ...] = tuple(REFERENCE_INTERPRETERS)


def check_reference(reference: str) -> None:
    """UsageError for an interpreter the generated C cannot reproduce."""
    if reference not in REFERENCES:
        from edgekd.errors import UsageError

        raise UsageError(f"unknown reference '{reference}'",
                         hint="tflite (TFLite's reference kernels), tflite-cpu (its default CPU kernels, "
                              "XNNPACK: one rounding) or tflm (TFLite Micro)")


def reference_for(int8_exact: bool) -> str:
    """The flavour a model is built in by default: an int8_exact student computes its float model
    exactly where requantization rounds once, as TFLite's CPU kernels do."""
    return "tflite-cpu" if int8_exact else "tflite"


def runtime_cflags(reference: str) -> list[str]:
    """Compiler flags the C runtime needs to reproduce this reference's arithmetic."""
    check_reference(reference)
    return ["-DEKD_SINGLE_ROUNDING=1"] if reference == "tflite-cpu" else []

# TFLite TensorType codes -> our names
TFLITE_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
                 7: "int16", 9: "int8", 10: "float64"}
ITEMSIZE = {"float32": 4, "int32": 4, "uint8": 1, "bool": 1, "int16": 2, "int8": 1}
C_TYPE = {"float32": "float", "int32": "int32_t", "uint8": "uint8_t", "bool": "uint8_t", "int16": "int16_t", "int8": "int8_t"}
EKD_DTYPE = {"float32": 0, "int8": 1, "bool": 2, "int32": 3, "uint8": 4, "int16": 5}
NP_DTYPE = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "bool": np.bool_, "int16": np.int16,
            "int8": np.int8, "int64": np.int64, "float16": np.float16, "float64": np.float64}
MAX_DIMS = 6
ARENA_ALIGN = 8

ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6 = 0, 1, 2, 3
PADDING_SAME, PADDING_VALID = 0, 1


# ====================================================================== reading .tflite


@dataclass
class Tensor:
    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scales: np.ndarray  # float32, empty when not quantized
    zero_points: np.ndarray  # int64
    quantized_dim: int
    data: np.ndarray | None  # constant data, shaped

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * ITEMSIZE.get(self.dtype, 8)

    @property
    def scale(self) -> np.float32:
        return np.float32(self.scales[0]) if len(self.scales) else np.float32(0.0)

    @property
    def zero_point(self) -> int:
        return int(self.zero_points[0]) if len(self.zero_points) else 0

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1

    def describe(self) -> str:
        q = f" scale={float(self.scale):.6g} zp={self.zero_point}" if len(self.scales) == 1 else (
            f" per-channel({len(self.scales)})" if len(self.scales) > 1 else "")
        return f"{self.dtype}{list(self.shape)}{q}"


@dataclass
class Operator:
    index: int
    op: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any]


@dataclass
class Graph:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    sha256: str
    source: str
    raw: bytes = field(default=b"", repr=False)

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.op] = counts.get(op.op, 0) + 1
        return dict(sorted(counts.items()))


def _schema():
    try:
        import ai_edge_litert.schema_py_generated as schema  # flatbuffers object API, light import
    except ImportError:  # pragma: no cover - depends on the install
        try:
            from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema  # type: ignore
        except ImportError:
            raise MissingDependencyError(
                "reading .tflite files needs the flatbuffers schema from ai-edge-litert or tflite-micro",
                hint="pip install -c constraints.txt 'edgekd[convert]'",
            ) from None
    return schema


def _opcode_names(schema) -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def load_graph(model: str | os.PathLike | bytes) -> Graph:
    """Read the first subgraph of a .tflite file (path or bytes) into plain Python objects."""
    if isinstance(model, (bytes, bytearray)):
        raw, source = bytes(model), "<bytes>"
    else:
        path = Path(model)
        if not path.is_file():
            raise NotFoundError(f"no model file '{path}'", hint="give the path of an int8 .tflite file")
        raw, source = path.read_bytes(), str(path)
    schema = _schema()
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise ConversionError(f"{source} is not a TFLite flatbuffer (no 'TFL3' identifier)",
                              hint="pass the .tflite written by the converter")
    model_t = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))
    if not model_t.subgraphs:
        raise ConversionError(f"{source} has no subgraph")
    if len(model_t.subgraphs) > 1:
        raise ConversionError(
            f"{source} has {len(model_t.subgraphs)} subgraphs; the firmware runtime runs one",
            hint="control flow (WHILE/IF) is not supported on microcontrollers; unroll it before conversion")
    names = _opcode_names(schema)
    sg = model_t.subgraphs[0]
    tensors = []
    for i, t in enumerate(sg.tensors or []):
        dtype = TFLITE_DTYPES.get(t.type, f"type{t.type}")
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        q = t.quantization
        scales = np.asarray(q.scale if q is not None and q.scale is not None else [], dtype=np.float32)
        zps = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], dtype=np.int64)
        qdim = int(q.quantizedDimension) if q is not None else 0
        data = None
        buf = model_t.buffers[t.buffer] if t.buffer < len(model_t.buffers) else None
        blob = None
        if buf is not None:
            if buf.data is not None and len(buf.data):
                blob = np.asarray(buf.data, dtype=np.uint8).tobytes()
            elif getattr(buf, "offset", 0) and buf.offset > 1:
                blob = raw[buf.offset: buf.offset + buf.size]
        if blob is not None and dtype in NP_DTYPE:
            arr = np.frombuffer(blob, dtype=np.dtype(NP_DTYPE[dtype]).newbyteorder("<"))
            data = arr.reshape(shape) if shape else arr.reshape(())
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        tensors.append(Tensor(i, name, dtype, shape, scales, zps, qdim, data))
    ops = []
    for i, o in enumerate(sg.operators or []):
        oc = model_t.operatorCodes[o.opcodeIndex]
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        op_name = names.get(code, f"BUILTIN_{code}")
        if op_name == "CUSTOM":
            custom = oc.customCode.decode() if isinstance(oc.customCode, bytes) else str(oc.customCode)
            op_name = f"CUSTOM:{custom}"
        opts = {k: v for k, v in vars(o.builtinOptions).items()} if o.builtinOptions is not None else {}
        ops.append(Operator(i, op_name, [int(x) for x in (o.inputs if o.inputs is not None else [])],
                            [int(x) for x in (o.outputs if o.outputs is not None else [])], opts))
    return Graph(tensors, ops, [int(x) for x in sg.inputs], [int(x) for x in sg.outputs],
                 hashlib.sha256(raw).hexdigest(), source, raw)


# ====================================================================== TFLite's arithmetic


def round_half_away(x: float) -> int:
    """TfLiteRound / std::round on a double (exact: no x + 0.5 rounding step)."""
    t = math.trunc(x)
    frac = x - t  # exact for doubles
    return int(t + 1 if frac >= 0.5 else t - 1 if frac <= -0.5 else t)


def quantize_multiplier(m: float) -> tuple[int, int]:
    """tflite::QuantizeMultiplier (frexp, round to 31 bits, flush tiny ones to zero)."""
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = round_half_away(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return int(q_fixed), int(shift)


def quantize_multiplier_smaller_than_one(m: float, what: str) -> tuple[int, int]:
    if not (0.0 < m < 1.0):
        raise ConversionError(f"{what}: rescale factor {m:.6g} is outside (0, 1), which TFLite's int8 kernel rejects")
    return quantize_multiplier(m)


def f32(x: Any) -> np.float32:
    return np.float32(x)


def act_range_int8(act: int, out: Tensor, what: str) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: TfLiteRound(f / scale) in float32."""
    scale, zp = out.scale, out.zero_point

    def q(f: float) -> int:
        return zp + round_half_away(float(np.float32(f) / scale))

    if act == ACT_NONE:
        return -128, 127
    if act == ACT_RELU:
        return max(-128, q(0.0)), 127
    if act == ACT_RELU6:
        return max(-128, q(0.0)), min(127, q(6.0))
    if act == ACT_RELU_N1_TO_1:
        return max(-128, q(-1.0)), min(127, q(1.0))
    raise ConversionError(f"{what}: fused activation {act} is not supported on int8 tensors")


def act_range_f32(act: int, what: str) -> tuple[float, float]:
    big = float(np.finfo(np.float32).max)
    return {ACT_NONE: (-big, big), ACT_RELU: (0.0, big), ACT_RELU6: (0.0, 6.0), ACT_RELU_N1_TO_1: (-1.0, 1.0)}.get(
        act) or _raise(ConversionError(f"{what}: fused activation {act} is not supported"))


def _raise(exc: Exception):
    raise exc


def compute_padding(stride: int, dilation: int, in_size: int, k: int, out_size: int) -> int:
    """ComputePaddingWithOffset: the leading padding (the odd one goes to the end)."""
    eff = (k - 1) * dilation + 1
    total = max(0, (out_size - 1) * stride + eff - in_size)
    return total // 2


def compute_out_size(padding: int, in_size: int, k: int, stride: int, dilation: int) -> int:
    eff = (k - 1) * dilation + 1
    if padding == PADDING_SAME:
        return (in_size + stride - 1) // stride
    return (in_size + stride - eff) // stride


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    strides, acc = [], 1
    for d in reversed(list(shape)):
        strides.append(acc)
        acc *= int(d)
    return list(reversed(strides))


# ====================================================================== lowering to kernel calls

SUPPORTED_OPS = (
    "ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM",
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
    "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN",
    "GREATER_EQUAL", "GREATER", "LESS", "LESS_EQUAL", "EQUAL", "NOT_EQUAL",
    "CAST", "QUANTIZE", "DEQUANTIZE", "RELU", "RELU6", "RELU_N1_TO_1",
    "RESHAPE", "SQUEEZE", "EXPAND_DIMS",
    "CONCATENATION", "PACK", "UNPACK", "SPLIT", "SPLIT_V", "TRANSPOSE", "STRIDED_SLICE", "SLICE",
    "GATHER", "PAD", "PADV2", "BATCH_MATMUL",
    # int8 -> int8 elementwise functions, run as 256-entry tables computed by the interpreter itself
    "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU", "ELU", "GELU", "ABS", "NEG", "RSQRT", "SQRT", "EXP", "LOG",
)
# float32 elementwise ops run only inside an int8 chain, DEQUANTIZE -> ops -> QUANTIZE, as one table
# (TFLite has no int8 FLOOR: the converter leaves the spiking neurons' FLOOR in such a chain)
INT8_CHAIN_FLOAT_OPS = ("FLOOR",)
LUT_OPS = ("RELU", "RELU6", "RELU_N1_TO_1", "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU", "ELU", "GELU", "ABS",
           "NEG", "RSQRT", "SQRT", "EXP", "LOG")
ALIAS_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")


@dataclass
class Call:
    """One kernel call: C text with @T<n>@ placeholders for tensor pointers."""

    op_index: int
    op: str
    text: str
    reads: list[int]
    writes: list[int]


class _Lowering:
    def __init__(self, graph: Graph, reference: Reference):
        self.g = graph
        self.reference = reference
        self.calls: list[Call] = []
        self.alias: dict[int, int] = {}
        self.const_used: set[int] = set()
        self.decls: list[str] = []  # every constant declaration, once, in order of first use
        self._const_pool: dict[tuple, str] = {}
        self.weight_bytes = 0  # bytes of the const arrays emitted (each distinct array once)
        self.shared_bytes = 0  # bytes of arrays that were not emitted again because an equal one was
        self._tables: dict[tuple, np.ndarray] = {}  # int8 -> int8 tables by what sets them
        self.n = 0

    # ---------------------------------------------------------------- helpers

    def t(self, i: int) -> Tensor:
        return self.g.tensors[i]

    def root(self, i: int) -> int:
        while i in self.alias:
            i = self.alias[i]
        return i

    def uid(self) -> int:
        self.n += 1
        return self.n

    def const_array(self, ctype: str, name: str, values: np.ndarray, align: int = 4) -> str:
        """Declare `static const ctype name[] = values` and return the name to use.

        An array with the same C type and the same bytes as one declared before is not emitted
        again: the earlier name comes back. The unrolled time steps of a spiking network run the
        same layer T times; its weights, biases, multipliers and shifts are one array in flash."""
        flat = np.ascontiguousarray(np.asarray(values).reshape(-1))
        nbytes = flat.size * flat.dtype.itemsize
        key = ("array", ctype, align, flat.dtype.str, flat.size, hashlib.sha256(flat.tobytes()).digest())
        known = self._const_pool.get(key)
        if known is not None:
            self.shared_bytes += nbytes
            return known
        self.weight_bytes += nbytes
        if ctype in ("float", "double"):
            items = [_c_float(v) if ctype == "float" else repr(float(v)) for v in flat]
        else:
            items = [str(int(v)) for v in flat]
        if not items:
            items = ["0"]
        body = ",\n".join(", ".join(items[i:i + 24]) for i in range(0, len(items), 24))
        self.decls.append(f"static const {ctype} {name}[{max(1, flat.size)}] __attribute__((aligned({align}))) = "
                          f"{{\n{body}\n}};")
        self._const_pool[key] = name
        return name

    def const_struct(self, ctype: str, k: int, body: str) -> str:
        """Declare `static const ctype p<k> = { body }` and return its name; an identical
        parameter block declared before (the same layer at another time step) is reused."""
        key = ("struct", ctype, body)
        known = self._const_pool.get(key)
        if known is not None:
            return known
        name = f"p{k}"
        self.decls.append(f"static const {ctype} {name} = {{ {body} }};")
        self._const_pool[key] = name
        return name

    def emit(self, op: Operator, text: str, reads: list[int], writes: list[int], name: str | None = None) -> None:
        for r in reads:
            if self.t(self.root(r)).is_const:
                self.const_used.add(self.root(r))
        self.calls.append(Call(op.index, name or op.op, text, reads, writes))

    def ptr(self, i: int, ctype: str) -> str:
        return f"(({ctype} *)@T{i}@)"

    def cptr(self, i: int, ctype: str) -> str:
        return f"((const {ctype} *)@T{i}@)"

    def need(self, cond: bool, op: Operator, msg: str) -> None:
        if not cond:
            raise ConversionError(f"op #{op.index} {op.op}: {msg}")

    def need_dtype(self, op: Operator, i: int, allowed: Sequence[str]) -> Tensor:
        t = self.t(i)
        self.need(t.dtype in allowed, op, f"tensor '{t.name}' is {t.dtype}; this runtime runs {op.op} on {'/'.join(allowed)}")
        return t

    def per_tensor(self, op: Operator, t: Tensor) -> None:
        self.need(len(t.scales) <= 1, op, f"tensor '{t.name}' is quantized per channel, which {op.op} does not support")

    def bcast(self, op: Operator, a: Tensor, b: Tensor, out: Tensor) -> str:
        rank = max(len(a.shape), len(b.shape), len(out.shape), 1)
        self.need(rank <= MAX_DIMS, op, f"rank {rank} > {MAX_DIMS}")
        osh = [1] * (rank - len(out.shape)) + list(out.shape)
        ash = [1] * (rank - len(a.shape)) + list(a.shape)
        bsh = [1] * (rank - len(b.shape)) + list(b.shape)
        sa, sb = contiguous_strides(ash), contiguous_strides(bsh)
        for d in range(rank):
            for sh in (ash, bsh):
                self.need(sh[d] in (1, osh[d]), op, f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast to {list(out.shape)}")
        s1 = [0 if ash[d] == 1 else sa[d] for d in range(rank)]
        s2 = [0 if bsh[d] == 1 else sb[d] for d in range(rank)]
        return f".b = {{ .rank = {rank}, .dims = {_ci(osh)}, .stride1 = {_ci(s1)}, .stride2 = {_ci(s2)} }}"

    # ---------------------------------------------------------------- dispatch

    def calls_plan(self) -> list[list[Operator]]:
        """The graph's ops in order, grouped by kernel call: one op, or an int8 chain (`_int8_chain`)."""
        consumers: dict[int, list[Operator]] = {}
        for op in self.g.operators:
            for i in op.inputs:
                consumers.setdefault(i, []).append(op)
        plan: list[list[Operator]] = []
        done: set[int] = set()
        for op in self.g.operators:
            if op.index not in done:
                unit = self._int8_chain(op, consumers) or [op]
                done.update(c.index for c in unit)
                plan.append(unit)
        return plan

    def lower_unit(self, unit: list[Operator]) -> None:
        if len(unit) > 1:
            self._lut_chain(unit)
            return
        op = unit[0]
        fn: Callable[[Operator], None] | None = getattr(self, f"op_{op.op.lower()}", None)
        if fn is None or op.op not in SUPPORTED_OPS:
            raise ConversionError(f"op #{op.index} {op.op} is not supported by the firmware runtime")
        fn(op)

    def lower(self) -> None:
        for unit in self.calls_plan():
            self.lower_unit(unit)

    def _int8_chain(self, op: Operator, consumers: dict[int, list[Operator]]) -> list[Operator] | None:
        """DEQUANTIZE -> elementwise float ops -> QUANTIZE, int8 to int8, the float tensors read by
        nothing else: the spiking neurons' exported Heaviside (FLOOR, see edgekd.models.neurons).
        Run as one 256-entry table instead of three float kernels and two float buffers."""
        if op.op != "DEQUANTIZE" or len(op.inputs) != 1 or self.t(op.inputs[0]).dtype != "int8":
            return None
        chain = [op]
        while True:
            out = chain[-1].outputs[0]
            users = consumers.get(out, [])
            if out in self.g.outputs or len(users) != 1 or len(users[0].inputs) != 1:
                return None
            nxt = users[0]
            if nxt.op == "QUANTIZE" and self.t(nxt.outputs[0]).dtype == "int8":
                chain.append(nxt)
                return chain if len(chain) > 2 else None
            if nxt.op not in INT8_CHAIN_FLOAT_OPS:
                return None
            chain.append(nxt)

    def _lut_chain(self, chain: list[Operator]) -> None:
        """One table call for an int8 -> int8 op or chain of ops (`_int8_chain`)."""
        first, last = chain[0], chain[-1]
        x = self.need_dtype(first, first.inputs[0], ["int8"])
        out = self.need_dtype(last, last.outputs[0], ["int8"])
        self.per_tensor(first, x)
        self.per_tensor(last, out)
        self.need(x.shape == out.shape, first, "input and output shapes differ")
        # the table depends on the ops, their options and the tensors' types and quantization only
        key = tuple((c.op, repr(sorted(c.options.items()))) for c in chain) + tuple(
            (self.t(i).dtype, self.t(i).scales.tobytes(), np.asarray(self.t(i).zero_points).tobytes())
            for i in [first.inputs[0]] + [c.outputs[0] for c in chain])
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = chain_lut(self.g, chain, self.reference)
        k = self.uid()
        tn = self.const_array("int8_t", f"t{k}", table)
        text = f"ekd_lut_s8({x.size}, {tn}, {self.cptr(first.inputs[0], 'int8_t')}, {self.ptr(last.outputs[0], 'int8_t')});"
        self.emit(first, text, [first.inputs[0]], [last.outputs[0]], name="+".join(c.op for c in chain))

    # ---------------------------------------------------------------- conv / fc

    def _conv_common(self, op: Operator, depthwise: bool) -> None:
        x = self.need_dtype(op, op.inputs[0], ["int8"])
        w = self.need_dtype(op, op.inputs[1], ["int8"])
        out = self.need_dtype(op, op.outputs[0], ["int8"])
        self.per_tensor(op, x)
        self.per_tensor(op, out)
        self.need(w.is_const, op, "the filter must be a constant tensor")
        self.need(len(x.shape) == 4 and len(out.shape) == 4 and len(w.shape) == 4, op, "needs 4-D NHWC tensors")
        self.need(not np.any(w.zero_points), op, "filter zero points must be 0 (symmetric int8 weights)")
        bias = self.t(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        if bias is not None:
            self.need(bias.is_const and bias.dtype == "int32", op, "the bias must be a constant int32 tensor")
        o = op.options
        n, ih, iw, ic = x.shape
        _, oh, ow, oc = out.shape
        kh, kw = (w.shape[1], w.shape[2])
        sh, sw = o.get("strideH", 1), o.get("strideW", 1)
        dh, dw = o.get("dilationHFactor", 1), o.get("dilationWFactor", 1)
        pad = o.get("padding", PADDING_VALID)
        self.need(compute_out_size(pad, ih, kh, sh, dh) == oh and compute_out_size(pad, iw, kw, sw, dw) == ow, op,
                  f"output {list(out.shape)} does not match the padding/stride of input {list(x.shape)}")
        ph = compute_padding(sh, dh, ih, kh, oh) if pad == PADDING_SAME else 0
        pw = compute_padding(sw, dw, iw, kw, ow) if pad == PADDING_SAME else 0
        scales = w.scales if len(w.scales) == oc else np.full(oc, w.scale, dtype=np.float32)
        mults, shifts = [], []
        for ch in range(oc):
            eff = float(x.scale) * float(scales[ch]) / float(out.scale)
            m, s = quantize_multiplier(eff)
            mults.append(m)
            shifts.append(s)
        lo, hi = act_range_int8(o.get("fusedActivationFunction", 0), out, f"op #{op.index} {op.op}")
        k = self.uid()
        wn = self.const_array("int8_t", f"w{k}", w.data)
        mn = self.const_array("int32_t", f"m{k}", np.array(mults, dtype=np.int32))
        sn = self.const_array("int8_t", f"s{k}", np.array(shifts, dtype=np.int8))
        bn = self.const_array("int32_t", f"b{k}", bias.data) if bias is not None else "NULL"
        common = (f".batches = {n}, .in_h = {ih}, .in_w = {iw}, .in_c = {ic}, .out_h = {oh}, .out_w = {ow}, .out_c = {oc}, "
                  f".k_h = {kh}, .k_w = {kw}, .stride_h = {sh}, .stride_w = {sw}, .dil_h = {dh}, .dil_w = {dw}, "
                  f".pad_h = {ph}, .pad_w = {pw}, .input_offset = {-x.zero_point}, .output_offset = {out.zero_point}, "
                  f".act_min = {lo}, .act_max = {hi}, .filter = {wn}, .bias = {bn}, .mult = {mn}, .shift = {sn}"
                  f"{self.xnnpack_scales(k, x, scales, out)}")
        if depthwise:
            self.need(w.shape[0] == 1 and w.shape[3] == oc, op, f"unexpected depthwise filter shape {list(w.shape)}")
            mult_d = o.get("depthMultiplier", 0) or (oc // ic)
            self.need(ic * mult_d == oc, op, f"depth multiplier {mult_d} x {ic} input channels != {oc} outputs")
            pn = self.const_struct("ekd_dwconv_params_t", k, f"{common}, .depth_multiplier = {mult_d}")
            text = f"ekd_depthwise_conv2d_s8(&{pn}, {self.cptr(op.inputs[0], 'int8_t')}, {self.ptr(op.outputs[0], 'int8_t')});"
        else:
            self.need(w.shape[0] == oc, op, f"filter has {w.shape[0]} outputs, the output tensor {oc}")
            self.need(ic % w.shape[3] == 0 and oc % (ic // w.shape[3]) == 0, op,
                      f"input channels {ic} are not a multiple of the filter's {w.shape[3]}")
            pn = self.const_struct("ekd_conv_params_t", k, f"{common}, .filter_in_c = {w.shape[3]}")
            text = f"ekd_conv2d_s8(&{pn}, {self.cptr(op.inputs[0], 'int8_t')}, {self.ptr(op.outputs[0], 'int8_t')});"
        self.emit(op, text, [op.inputs[0]], [op.outputs[0]])

    def xnnpack_scales(self, k: int, x: Tensor, w_scales: np.ndarray, out: Tensor) -> str:
        """", .fscale = ..." for the tflite-cpu flavour: the per-channel requantization scales as
        XNNPACK computes them, input_scale * kernel_scale / output_scale in float32; "" otherwise."""
        if self.reference != "tflite-cpu":
            return ""
        f32 = np.float32
        scales = (f32(x.scale) * np.asarray(w_scales, dtype=f32)) / f32(out.scale)  # float32 throughout
        return f", .fscale = {self.const_array('float', f'f{k}', scales)}"

    def op_conv_2d(self, op: Operator) -> None:
        self._conv_common(op, depthwise=False)

    def op_depthwise_conv_2d(self, op: Operator) -> None:
        self._conv_common(op, depthwise=True)

    def op_fully_connected(self, op: Operator) -> None:
        x = self.need_dtype(op, op.inputs[0], ["int8"])
        w = self.need_dtype(op, op.inputs[1], ["int8"])
        out = self.need_dtype(op, op.outputs[0], ["int8"])
        self.per_tensor(op, x)
        self.per_tensor(op, out)
        self.need(w.is_const and len(w.shape) == 2, op, "the weights must be a constant 2-D tensor")
        self.need(op.options.get("weightsFormat", 0) == 0, op, "shuffled weight formats are not supported")
        bias = self.t(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        if bias is not None:
            self.need(bias.is_const and bias.dtype == "int32", op, "the bias must be a constant int32 tensor")
        out_depth, accum = w.shape
        self.need(x.size % accum == 0, op, f"input of {x.size} elements is not a multiple of {accum}")
        batches = x.size // accum
        self.need(out.size == batches * out_depth, op, f"output {list(out.shape)} != {batches} x {out_depth}")
        per_channel = len(w.scales) > 1
        scales = w.scales if per_channel else np.array([w.scale], dtype=np.float32)
        mults, shifts = zip(*(quantize_multiplier(float(x.scale) * float(s) / float(out.scale)) for s in scales))
        lo, hi = act_range_int8(op.options.get("fusedActivationFunction", 0), out, f"op #{op.index} {op.op}")
        k = self.uid()
        wn = self.const_array("int8_t", f"w{k}", w.data)
        mn = self.const_array("int32_t", f"m{k}", np.array(mults, dtype=np.int32))
        sn = self.const_array("int8_t", f"s{k}", np.array(shifts, dtype=np.int8))
        bn = self.const_array("int32_t", f"b{k}", bias.data) if bias is not None else "NULL"
        scale_ref = "NULL"
        if self.reference == "tflite":
            # TFLite's reference FULLY_CONNECTED rescales with round(double(acc) * effective_scale)
            eff = [float(x.scale) * float(s) / float(out.scale) for s in scales]
            scale_ref = self.const_array("double", f"d{k}", np.array(eff, dtype=np.float64), align=8)
        pn = self.const_struct(
            "ekd_fc_params_t", k,
            f".batches = {batches}, .accum_depth = {accum}, .out_depth = {out_depth}, "
            f".input_offset = {-x.zero_point}, .filter_offset = {-w.zero_point}, .output_offset = {out.zero_point}, "
            f".act_min = {lo}, .act_max = {hi}, .per_channel = {int(per_channel)}, .filter = {wn}, "
            f".bias = {bn}, .mult = {mn}, .shift = {sn}, .scale = {scale_ref}{self.xnnpack_scales(k, x, scales, out)}")
        text = f"ekd_fully_connected_s8(&{pn}, {self.cptr(op.inputs[0], 'int8_t')}, {self.ptr(op.outputs[0], 'int8_t')});"
        self.emit(op, text, [op.inputs[0]], [op.outputs[0]])

    # ---------------------------------------------------------------- pooling

    def _pool(self, op: Operator, kind: str) -> None:
        x = self.need_dtype(op, op.inputs[0], ["int8"])
        out = self.need_dtype(op, op.outputs[0], ["int8"])
        self.need(len(x.shape) == 4, op, "needs a 4-D NHWC input")
        self.need(x.scale == out.scale and x.zero_point == out.zero_point, op,
                  "input and output quantization differ (TFLite requires them equal for int8 pooling)")
        o = op.options
        n, ih, iw, c = x.shape
        _, oh, ow, _ = out.shape
        kh, kw, sh, sw = o["filterHeight"], o["filterWidth"], o["strideH"], o["strideW"]
        pad = o.get("padding", PADDING_VALID)
        self.need(compute_out_size(pad, ih, kh, sh, 1) == oh and compute_out_size(pad, iw, kw, sw, 1) == ow, op,
                  "output shape does not match the padding/stride")
        ph = compute_padding(sh, 1, ih, kh, oh) if pad == PADDING_SAME else 0
        pw = compute_padding(sw, 1, iw, kw, ow) if pad == PADDING_SAME else 0
        lo, hi = act_range_int8(o.get("fusedActivationFunction", 0), out, f"op #{op.index} {op.op}")
        k = self.uid()
        pn = self.const_struct("ekd_pool_params_t", k,
                               f".batches = {n}, .in_h = {ih}, .in_w = {iw}, .channels = {c}, "
                               f".out_h = {oh}, .out_w = {ow}, .k_h = {kh}, .k_w = {kw}, .stride_h = {sh}, .stride_w = {sw}, "
                               f".pad_h = {ph}, .pad_w = {pw}, .act_min = {lo}, .act_max = {hi}")
        text = f"ekd_{kind}_pool_s8(&{pn}, {self.cptr(op.inputs[0], 'int8_t')}, {self.ptr(op.outputs[0], 'int8_t')});"
        self.emit(op, text, [op.inputs[0]], [op.outputs[0]])

    def op_average_pool_2d(self, op: Operator) -> None:
        self._pool(op, "avg")

    def op_max_pool_2d(self, op: Operator) -> None:
        self._pool(op, "max")

    # ---------------------------------------------------------------- elementwise

    def _binary_inputs(self, op: Operator) -> tuple[Tensor, Tensor, Tensor]:
        a, b, out = self.t(op.inputs[0]), self.t(op.inputs[1]), self.t(op.outputs[0])
        self.need(a.dtype == b.dtype, op, f"input types differ ({a.dtype}, {b.dtype})")
        for t in (a, b, out):
            self.per_tensor(op, t)
        return a, b, out

    def _addsub(self, op: Operator, sub: bool) -> None:
        a, b, out = self._binary_inputs(op)
        act = op.options.get("fusedActivationFunction", 0)
        if a.dtype == "float32":
            return self._arith_f32(op, 1 if sub else 0, act)
        self.need_dtype(op, op.inputs[0], ["int8"])
        self.need(out.dtype == "int8", op, f"output is {out.dtype}")
        left_shift = 20
        twice_max = 2.0 * float(max(a.scale, b.scale))
        r1 = float(a.scale) / twice_max
        r2 = float(b.scale) / twice_max
        ro = twice_max / (float(1 << left_shift) * float(out.scale))
        what = f"op #{op.index} {op.op}"
        m1, s1 = quantize_multiplier_smaller_than_one(r1, what) if r1 < 1 else quantize_multiplier(r1)
        m2, s2 = quantize_multiplier_smaller_than_one(r2, what) if r2 < 1 else quantize_multiplier(r2)
        mo, so = quantize_multiplier_smaller_than_one(ro, what)
        lo, hi = act_range_int8(act, out, what)
        k = self.uid()
        pn = self.const_struct("ekd_addsub_params_t", k,
                               f"{self.bcast(op, a, b, out)}, .left_shift = {left_shift}, "
                               f".in1_offset = {-a.zero_point}, .in1_mult = {m1}, .in1_shift = {s1}, "
                               f".in2_offset = {-b.zero_point}, .in2_mult = {m2}, .in2_shift = {s2}, "
                               f".out_offset = {out.zero_point}, .out_mult = {mo}, .out_shift = {so}, "
                               f".act_min = {lo}, .act_max = {hi}{self.xnnpack_add(a, b, out, sub)}")
        fn = "ekd_sub_s8" if sub else "ekd_add_s8"
        text = (f"{fn}(&{pn}, {self.cptr(op.inputs[0], 'int8_t')}, {self.cptr(op.inputs[1], 'int8_t')}, "
                f"{self.ptr(op.outputs[0], 'int8_t')});")
        self.emit(op, text, [op.inputs[0], op.inputs[1]], [op.outputs[0]])

    def xnnpack_add(self, a: Tensor, b: Tensor, out: Tensor, sub: bool) -> str:
        """XNNPACK's add parameters for the tflite-cpu flavour ("" otherwise, or where XNNPACK
        would not take the op): each input's scale over the output's in float32, as multipliers of
        up to 21 bits on one shift, the zero points folded into a bias with the rounding; a
        subtraction negates b's multiplier."""
        if self.reference != "tflite-cpu":
            return ""
        f32 = np.float32
        ra, rb = f32(a.scale) / f32(out.scale), f32(b.scale) / f32(out.scale)
        rb = -rb if sub else rb
        top = max(abs(ra), abs(rb))
        shift = 20 - ((int(np.array(top, dtype=f32).view(np.uint32)) >> 23) - 127)
        if not (12 <= shift <= 30 and min(abs(ra), abs(rb)) >= 2.0 ** -10):
            return ""  # outside XNNPACK's range: TFLite runs its own kernel
        ma = int(np.rint(ra * f32(2.0 ** shift)))  # exact power-of-two scaling, then round half to even
        mb = int(np.rint(rb * f32(2.0 ** shift)))
        bias = (1 << (shift - 1)) - ma * a.zero_point - mb * b.zero_point
        return f", .xnn_shift = {shift}, .xnn_a_mult = {ma}, .xnn_b_mult = {mb}, .xnn_bias = {bias}"

    def _arith_f32(self, op: Operator, code: int, act: int) -> None:
        a, b, out = self._binary_inputs(op)
        self.need(out.dtype == "float32", op, f"output is {out.dtype}")
        lo, hi = act_range_f32(act, f"op #{op.index} {op.op}")
        k = self.uid()
        pn = self.const_struct("ekd_arith_f32_params_t", k, f"{self.bcast(op, a, b, out)}, .op = {code}, "
                                                            f".act_min = {_c_float(lo)}, .act_max = {_c_float(hi)}")
        text = (f"ekd_arith_f32(&{pn}, {self.cptr(op.inputs[0], 'float')}, {self.cptr(op.inputs[1], 'float')}, "
                f"{self.ptr(op.outputs[0], 'float')});")
        self.emit(op, text, [op.inputs[0], op.inputs[1]], [op.outputs[0]])

    def op_add(self, op: Operator) -> None:
        self._addsub(op, sub=False)

    def op_sub(self, op: Operator) -> None:
        self._addsub(op, sub=True)

    def op_mul(self, op: Operator) -> None:
        a, b, out = self._binary_inputs(op)
        act = op.options.get("fusedActivationFunction", 0)
        if a.dtype == "float32":
            return self._arith_f32(op, 2, act)
        self.need_dtype(op, op.inputs[0], ["int8"])
        self.need(out.dtype == "int8", op, f"output is {out.dtype}")
        if self.reference != "tflm":
            # TFLite computes input1_scale * input2_scale / output_scale in float, then widens
            real = float(np.float32(np.float32(a.scale * b.scale) / out.scale))
        else:
            real = float(a.scale) * float(b.scale) / float(out.scale)
        m, s = quantize_multiplier(real)
        lo, hi = act_range_int8(act, out, f"op #{op.index} {op.op}")
        k = self.uid()
        xnn = ""
        if self.reference == "tflite-cpu":  # XNNPACK: float32(a * b) x (a_scale * b_scale / out_scale in float32)
            f32 = np.float32
            xnn = f", .fscale = {_c_float(f32(f32(a.scale) * f32(b.scale)) / f32(out.scale))}"
        pn = self.const_struct("ekd_mul_params_t", k,
                               f"{self.bcast(op, a, b, out)}, .in1_offset = {-a.zero_point}, "
                               f".in2_offset = {-b.zero_point}, .out_offset = {out.zero_point}, .out_mult = {m}, "
                               f".out_shift = {s}, .act_min = {lo}, .act_max = {hi}{xnn}")
        text = (f"ekd_mul_s8(&{pn}, {self.cptr(op.inputs[0], 'int8_t')}, {self.cptr(op.inputs[1], 'int8_t')}, "
                f"{self.ptr(op.outputs[0], 'int8_t')});")
        self.emit(op, text, [op.inputs[0], op.inputs[1]], [op.outputs[0]])

    def _minmax(self, op: Operator, is_max: bool) -> None:
        a, b, out = self._binary_inputs(op)
        if a.dtype == "float32":
            return self._arith_f32(op, 4 if is_max else 3, ACT_NONE)
        self.need_dtype(op, op.inputs[0], ["int8"])
        self.need(a.scale == b.scale == out.scale and a.zero_point == b.zero_point == out.zero_point, op,
                  "int8 MAXIMUM/MINIMUM needs equal quantization on inputs and output")
        k = self.uid()
        bc = self.bcast(op, a, b, out)[len(".b = { "):-len(" }")]
        pn = self.const_struct("ekd_bcast_t", k, bc)
        text = (f"ekd_minmax_s8(&{pn}, {int(is_max)}, {self.cptr(op.inputs[0], 'int8_t')}, "
                f"{self.cptr(op.inputs[1], 'int8_t')}, {self.ptr(op.outputs[0], 'int8_t')});")
        self.emit(op, text, [op.inputs[0], op.inputs[1]], [op.outputs[0]])

    def op_maximum(self, op: Operator) -> None:
        self._minmax(op, True)

    def op_minimum(self, op: Operator) -> None:
        self._minmax(op, False)

    def _compare(self, op: Operator, code: int) -> None:
        a, b, out = self._binary_inputs(op)
        self.need(out.dtype == "bool", op, f"output is {out.dtype}")
        k = self.uid()
        what = f"op #{op.index} {op.op}"
        if a.dtype == "int8":
            m1, s1 = quantize_multiplier_smaller_than_one(float(a.scale), what)
            m2, s2 = quantize_multiplier_smaller_than_one(float(b.scale), what)
            body = (f".left_shift = 8, .in1_offset = {-a.zero_point}, .in1_mult = {m1}, .in1_shift = {s1}, "
                    f".in2_offset = {-b.zero_point}, .in2_mult = {m2}, .in2_shift = {s2}")
            fn, ctype = "ekd_compare_s8", "int8_t"
        elif a.dtype in ("float32", "int32"):
            body = ".left_shift = 0"
            fn, ctype = ("ekd_compare_f32", "float") if a.dtype == "float32" else ("ekd_compare_i32", "int32_t")
        else:
            raise ConversionError(f"{what}: comparisons of {a.dtype} tensors are not supported")
        pn = self.const_struct("ekd_cmp_params_t", k, f"{self.bcast(op, a, b, out)}, .op = {code}, {body}")
        text = (f"{fn}(&{pn}, {self.cptr(op.inputs[0], ctype)}, {self.cptr(op.inputs[1], ctype)}, "
                f"{self.ptr(op.outputs[0], 'uint8_t')});")
        self.emit(op, text, [op.inputs[0], op.inputs[1]], [op.outputs[0]])

    def op_greater_equal(self, op: Operator) -> None:
        self._compare(op, 0)

    def op_greater(self, op: Operator) -> None:
        self._compare(op, 1)

    def op_less_equal(self, op: Operator) -> None:
        self._compare(op, 2)

    def op_less(self, op: Operator) -> None:
        self._compare(op, 3)

    def op_equal(self, op: Operator) -> None:
        self._compare(op, 4)

    def op_not_equal(self, op: Operator) -> None:
        self._compare(op, 5)

    # ---------------------------------------------------------------- types and quantization

    def op_cast(self, op: Operator) -> None:
        x, out = self.t(op.inputs[0]), self.t(op.outputs[0])
        for t in (x, out):
            self.need(t.dtype in EKD_DTYPE, op, f"casts from/to {t.dtype} are not supported")
        text = (f"ekd_cast({x.size}, {EKD_DTYPE[x.dtype]}, {EKD_DTYPE[out.dtype]}, (const void *)@T{op.inputs[0]}@, "
                f"(void *)@T{op.outputs[0]}@);")
        self.emit(op, text, [op.inputs[0]], [op.outputs[0]])

    def op_quantize(self, op: Operator) -> None:
        x, out = self.t(op.inputs[0]), self.need_dtype(op, op.outputs[0], ["int8"])
        self.per_tensor(op, out)
        if x.dtype == "float32":
            text = (f"ekd_quantize_f32_s8({x.size}, {_c_float(out.scale)}, {out.zero_point}, {self.cptr(op.inputs[0], 'float')}, "
                    f"{self.ptr(op.outputs[0], 'int8_t')});")
        elif x.dtype == "int8" and self.reference == "tflite-cpu":
            return self._lut(op)  # XNNPACK requantizes with an 8-bit multiplier: its own table
        elif x.dtype == "int8":
            self.per_tensor(op, x)
            m, s = quantize_multiplier(float(x.scale) / float(out.scale))
            text = (f"ekd_requantize_s8({x.size}, {x.zero_point}, {m}, {s}, {out.zero_point}, -128, 127, "
                    f"{self.cptr(op.inputs[0], 'int8_t')}, {self.ptr(op.outputs[0], 'int8_t')});")
        else:
            raise ConversionError(f"op #{op.index} QUANTIZE from {x.dtype} is not supported")
        self.emit(op, text, [op.inputs[0]], [op.outputs[0]])

    def op_dequantize(self, op: Operator) -> None:
        x = self.need_dtype(op, op.inputs[0], ["int8"])
        self.need_dtype(op, op.outputs[0], ["float32"])
        self.per_tensor(op, x)
        text = (f"ekd_dequantize_s8_f32({x.size}, {_c_float(x.scale)}, {x.zero_point}, {self.cptr(op.inputs[0], 'int8_t')}, "
                f"{self.ptr(op.outputs[0], 'float')});")
        self.emit(op, text, [op.inputs[0]], [op.outputs[0]])

    def _lut(self, op: Operator) -> None:
        self._lut_chain([op])

    op_relu = op_relu6 = op_relu_n1_to_1 = op_logistic = op_tanh = op_hard_swish = op_leaky_relu = _lut
    op_elu = op_gelu = op_abs = op_neg = op_rsqrt = op_sqrt = op_exp = op_log = _lut

    def op_batch_matmul(self, op: Operator) -> None:
        lhs = self.need_dtype(op, op.inputs[0], ["int8"])
        rhs = self.need_dtype(op, op.inputs[1], ["int8"])
        out = self.need_dtype(op, op.outputs[0], ["int8"])
        for t in (lhs, rhs, out):
            self.per_tensor(op, t)
        self.need(len(lhs.shape) >= 2 and len(rhs.shape) >= 2, op, "needs matrices of rank >= 2")
        adj_x, adj_y = bool(op.options.get("adjX", False)), bool(op.options.get("adjY", False))
        lr, lc = lhs.shape[-2:]
        rr, rc = rhs.shape[-2:]
        rows, depth = (lc, lr) if adj_x else (lr, lc)
        depth_r, cols = (rc, rr) if adj_y else (rr, rc)
        self.need(depth == depth_r, op, f"inner dimensions differ ({depth} vs {depth_r})")
        self.need(tuple(out.shape[-2:]) == (rows, cols), op, f"output {list(out.shape)} is not [..., {rows}, {cols}]")
        bo = list(out.shape[:-2]) or [1]
        bl = list(lhs.shape[:-2]) or [1]
        br = list(rhs.shape[:-2]) or [1]
        rank = max(len(bo), len(bl), len(br))
        self.need(rank <= MAX_DIMS, op, f"batch rank {rank} > {MAX_DIMS}")
        bo, bl, br = ([1] * (rank - len(v)) + v for v in (bo, bl, br))
        ml, mr = lr * lc, rr * rc
        sl = [v * ml for v in contiguous_strides(bl)]
        sr = [v * mr for v in contiguous_strides(br)]
        for d in range(rank):
            self.need(bl[d] in (1, bo[d]) and br[d] in (1, bo[d]), op, "batch dimensions do not broadcast")
        s1 = [0 if bl[d] == 1 else sl[d] for d in range(rank)]
        s2 = [0 if br[d] == 1 else sr[d] for d in range(rank)]
        l_row, l_depth = (1, lc) if adj_x else (lc, 1)
        r_depth, r_col = (1, rc) if adj_y else (rc, 1)
        m, s_ = quantize_multiplier(float(lhs.scale) * float(rhs.scale) / float(out.scale))
        k = self.uid()
        pn = self.const_struct(
            "ekd_bmm_params_t", k,
            f".batch = {{ .rank = {rank}, .dims = {_ci(bo)}, "
            f".stride1 = {_ci(s1)}, .stride2 = {_ci(s2)} }}, .rows = {rows}, .cols = {cols}, .depth = {depth}, "
            f".l_row_stride = {l_row}, .l_depth_stride = {l_depth}, .r_depth_stride = {r_depth}, .r_col_stride = {r_col}, "
            f".lhs_offset = {-lhs.zero_point}, .rhs_offset = {-rhs.zero_point}, .out_offset = {out.zero_point}, "
            f".mult = {m}, .shift = {s_}, .act_min = -128, .act_max = 127")
        text = (f"ekd_batch_matmul_s8(&{pn}, {self.cptr(op.inputs[0], 'int8_t')}, {self.cptr(op.inputs[1], 'int8_t')}, "
                f"{self.ptr(op.outputs[0], 'int8_t')});")
        self.emit(op, text, [op.inputs[0], op.inputs[1]], [op.outputs[0]])

    # ---------------------------------------------------------------- shapes and data movement

    def _alias(self, op: Operator) -> None:
        x, out = self.t(op.inputs[0]), self.t(op.outputs[0])
        self.need(x.size == out.size and x.dtype == out.dtype, op, "input and output sizes differ")
        self.need(out.index not in self.g.inputs, op, "a graph input cannot be the output of a reshape")
        self.alias[op.outputs[0]] = op.inputs[0]

    op_reshape = _alias
    op_squeeze = _alias
    op_expand_dims = _alias

    def _const_int(self, op: Operator, i: int, what: str) -> np.ndarray:
        t = self.t(i)
        self.need(t.is_const, op, f"{what} must be a constant tensor (dynamic shapes are not supported)")
        return np.asarray(t.data).astype(np.int64)

    def _movement(self, op: Operator, src: int, dst: int, index: np.ndarray) -> None:
        """Copy src -> dst where dst element j (row-major) is src element index[j]."""
        x, out = self.t(src), self.t(dst)
        self.need(x.dtype == out.dtype and x.dtype in ITEMSIZE, op, f"unsupported types {x.dtype} -> {out.dtype}")
        self.need(index.size == out.size, op, f"computed {index.size} elements, the output tensor has {out.size}")
        self._quant_equal(op, x, out)
        es = ITEMSIZE[x.dtype]
        idx = index.reshape(out.shape if out.shape else ())
        affine = _affine(idx)
        k = self.uid()
        if affine is not None:
            base, strides, dims = affine
            pn = self.const_struct("ekd_copy_params_t", k,
                                   f".rank = {len(dims)}, .elem_size = {es}, .dims = {_ci(dims)}, "
                                   f".in_strides = {_ci(strides)}, .out_strides = {_ci(contiguous_strides(dims))}, "
                                   f".in_base = {base}, .out_base = 0")
            text = f"ekd_copy_nd(&{pn}, (const void *)@T{src}@, (void *)@T{dst}@);"
        else:
            gn = self.const_array("int32_t", f"g{k}", index.reshape(-1).astype(np.int32))
            text = f"ekd_gather_table({out.size}, {es}, {gn}, (const void *)@T{src}@, (void *)@T{dst}@);"
        self.emit(op, text, [src], [dst])

    def _quant_equal(self, op: Operator, x: Tensor, out: Tensor) -> None:
        if x.dtype == "int8":
            self.need(len(x.scales) == len(out.scales) and np.array_equal(x.scales, out.scales)
                      and np.array_equal(x.zero_points, out.zero_points), op,
                      f"input '{x.name}' and output '{out.name}' are quantized differently ({x.describe()} vs {out.describe()})")

    def _index_of(self, t: Tensor) -> np.ndarray:
        return np.arange(t.size, dtype=np.int64).reshape(t.shape if t.shape else ())

    def op_transpose(self, op: Operator) -> None:
        x = self.t(op.inputs[0])
        perm = self._const_int(op, op.inputs[1], "the permutation")
        self.need(len(x.shape) <= MAX_DIMS, op, f"rank {len(x.shape)} > {MAX_DIMS}")
        self._movement(op, op.inputs[0], op.outputs[0], np.transpose(self._index_of(x), [int(p) for p in perm]))

    def op_strided_slice(self, op: Operator) -> None:
        x = self.t(op.inputs[0])
        begin = self._const_int(op, op.inputs[1], "begin")
        end = self._const_int(op, op.inputs[2], "end")
        strides = self._const_int(op, op.inputs[3], "strides") if len(op.inputs) > 3 else np.ones_like(begin)
        o = op.options
        self.need(not o.get("ellipsisMask", 0), op, "ellipsis masks are not supported")
        key: list[Any] = []
        for d in range(len(begin)):
            bit = 1 << d
            if o.get("newAxisMask", 0) & bit:
                key.append(np.newaxis)
                continue
            b, e, s = int(begin[d]), int(end[d]), int(strides[d])
            if o.get("offset", False):
                e = b + e
            if o.get("shrinkAxisMask", 0) & bit:
                key.append(b)
                continue
            key.append(slice(None if o.get("beginMask", 0) & bit else b, None if o.get("endMask", 0) & bit else e, s))
        self._movement(op, op.inputs[0], op.outputs[0], self._index_of(x)[tuple(key)])

    def op_slice(self, op: Operator) -> None:
        x = self.t(op.inputs[0])
        begin = self._const_int(op, op.inputs[1], "begin")
        size = self._const_int(op, op.inputs[2], "size")
        key = tuple(slice(int(b), None if int(s) < 0 else int(b) + int(s)) for b, s in zip(begin, size))
        self._movement(op, op.inputs[0], op.outputs[0], self._index_of(x)[key])

    def op_gather(self, op: Operator) -> None:
        x = self.t(op.inputs[0])
        idx = self._const_int(op, op.inputs[1], "the indices")
        self.need(op.options.get("batchDims", 0) == 0, op, "batch_dims != 0 is not supported")
        axis = op.options.get("axis", 0)
        self._movement(op, op.inputs[0], op.outputs[0], np.take(self._index_of(x), idx, axis=axis))

    def _split_into(self, op: Operator, src: int, axis: int, sizes: Sequence[int], squeeze: bool) -> None:
        x = self.t(src)
        axis = axis % len(x.shape)
        start = 0
        for out_i, n in zip(op.outputs, sizes):
            key = [slice(None)] * len(x.shape)
            key[axis] = start if squeeze else slice(start, start + n)
            self._movement(op, src, out_i, self._index_of(x)[tuple(key)])
            start += n

    def op_split(self, op: Operator) -> None:
        axis = int(self._const_int(op, op.inputs[0], "the axis").reshape(-1)[0])
        x = self.t(op.inputs[1])
        n = len(op.outputs)
        self.need(x.shape[axis] % n == 0, op, f"dimension {x.shape[axis]} does not split in {n}")
        self._split_into(op, op.inputs[1], axis, [x.shape[axis] // n] * n, squeeze=False)

    def op_split_v(self, op: Operator) -> None:
        x = self.t(op.inputs[0])
        sizes = [int(s) for s in self._const_int(op, op.inputs[1], "the split sizes").reshape(-1)]
        axis = int(self._const_int(op, op.inputs[2], "the axis").reshape(-1)[0]) % len(x.shape)
        if -1 in sizes:
            sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
        self._split_into(op, op.inputs[0], axis, sizes, squeeze=False)

    def op_unpack(self, op: Operator) -> None:
        x = self.t(op.inputs[0])
        axis = op.options.get("axis", 0) % len(x.shape)
        self._split_into(op, op.inputs[0], axis, [1] * x.shape[axis], squeeze=True)

    def _join(self, op: Operator, axis: int, stack: bool) -> None:
        out = self.t(op.outputs[0])
        self.need(op.options.get("fusedActivationFunction", 0) == 0, op, "fused activations on concatenation are not supported")
        axis = axis % len(out.shape)
        out_strides = contiguous_strides(out.shape)
        start = 0
        for i in op.inputs:
            x = self.t(i)
            self.need(x.dtype == out.dtype and x.dtype in ITEMSIZE, op, f"input '{x.name}' is {x.dtype}, output {out.dtype}")
            self._quant_equal(op, x, out)
            dims = list(x.shape[:axis]) + [1] + list(x.shape[axis:]) if stack else list(x.shape)
            self.need(len(dims) <= MAX_DIMS, op, f"rank {len(dims)} > {MAX_DIMS}")
            k = self.uid()
            pn = self.const_struct("ekd_copy_params_t", k,
                                   f".rank = {len(dims)}, .elem_size = {ITEMSIZE[x.dtype]}, .dims = {_ci(dims)}, "
                                   f".in_strides = {_ci(contiguous_strides(dims))}, .out_strides = {_ci(out_strides)}, "
                                   f".in_base = 0, .out_base = {start * out_strides[axis]}")
            text = f"ekd_copy_nd(&{pn}, (const void *)@T{i}@, (void *)@T{op.outputs[0]}@);"
            self.emit(op, text, [i], [op.outputs[0]])
            start += dims[axis]
        self.need(start == out.shape[axis], op, f"inputs fill {start} of the output's {out.shape[axis]} along axis {axis}")

    def op_concatenation(self, op: Operator) -> None:
        self._join(op, op.options.get("axis", 0), stack=False)

    def op_pack(self, op: Operator) -> None:
        self._join(op, op.options.get("axis", 0), stack=True)

    def _pad(self, op: Operator, value_tensor: int | None) -> None:
        x, out = self.t(op.inputs[0]), self.t(op.outputs[0])
        self.need(x.dtype == out.dtype and x.dtype in ITEMSIZE, op, f"unsupported type {x.dtype}")
        self._quant_equal(op, x, out)
        pads = self._const_int(op, op.inputs[1], "the paddings").reshape(-1, 2)
        self.need(len(x.shape) <= MAX_DIMS and pads.shape[0] == len(x.shape), op, "paddings do not match the input rank")
        self.need(bool(np.all(pads >= 0)), op, "negative paddings are not supported")
        if value_tensor is not None:
            v = self.t(value_tensor)
            self.need(v.is_const, op, "the pad value must be constant")
            value = np.asarray(v.data).reshape(-1)[:1].astype(NP_DTYPE[x.dtype])
        else:
            value = np.array([x.zero_point if x.dtype == "int8" else 0], dtype=NP_DTYPE[x.dtype])
        dims = list(x.shape)
        out_strides = contiguous_strides(out.shape)
        base = int(sum(int(pads[d][0]) * out_strides[d] for d in range(len(dims))))
        k = self.uid()
        ctype = C_TYPE[x.dtype]
        vn = self.const_array(ctype, f"v{k}", value)
        pn = self.const_struct("ekd_copy_params_t", k,
                               f".rank = {len(dims)}, .elem_size = {ITEMSIZE[x.dtype]}, .dims = {_ci(dims)}, "
                               f".in_strides = {_ci(contiguous_strides(dims))}, .out_strides = {_ci(out_strides)}, "
                               f".in_base = 0, .out_base = {base}")
        text = (f"ekd_pad({out.size}, {ITEMSIZE[x.dtype]}, {vn}, &{pn}, (const void *)@T{op.inputs[0]}@, "
                f"(void *)@T{op.outputs[0]}@);")
        self.emit(op, text, [op.inputs[0]], [op.outputs[0]])

    def op_pad(self, op: Operator) -> None:
        self._pad(op, None)

    def op_padv2(self, op: Operator) -> None:
        self._pad(op, op.inputs[2] if len(op.inputs) > 2 else None)

    # ---------------------------------------------------------------- reductions

    def op_mean(self, op: Operator) -> None:
        x = self.need_dtype(op, op.inputs[0], ["int8"])
        out = self.need_dtype(op, op.outputs[0], ["int8"])
        self.per_tensor(op, x)
        self.per_tensor(op, out)
        axes = self._const_int(op, op.inputs[1], "the axes").reshape(-1)
        rank = len(x.shape)
        self.need(rank <= MAX_DIMS, op, f"rank {rank} > {MAX_DIMS}")
        red = sorted({int(a) % rank for a in axes})
        kept = [d for d in range(rank) if d not in red]
        st = contiguous_strides(x.shape)
        num = int(np.prod([x.shape[d] for d in red], dtype=np.int64)) if red else 1
        self.need(num > 0, op, "reduces an empty dimension")
        mult, shift = quantize_multiplier(float(x.scale) / float(out.scale))
        # reference_ops::QuantizedMeanOrSum folds 1/num into the multiplier
        sh = min(63 - _clz64(num), 32, 31 + shift)
        mult = int((mult << sh) // num) if mult >= 0 else -int(((-mult) << sh) // num)
        shift -= sh
        k = self.uid()
        pn = self.const_struct("ekd_mean_params_t", k,
                               f".kept_rank = {len(kept)}, .red_rank = {len(red)}, "
                               f".kept_dims = {_ci([x.shape[d] for d in kept])}, .kept_strides = {_ci([st[d] for d in kept])}, "
                               f".red_dims = {_ci([x.shape[d] for d in red])}, .red_strides = {_ci([st[d] for d in red])}, "
                               f".num_reduced = {num}, .in_zp = {x.zero_point}, .out_zp = {out.zero_point}, "
                               f".mult = {mult}, .shift = {shift}")
        text = f"ekd_mean_s8(&{pn}, {self.cptr(op.inputs[0], 'int8_t')}, {self.ptr(op.outputs[0], 'int8_t')});"
        self.emit(op, text, [op.inputs[0]], [op.outputs[0]])


def _clz64(v: int) -> int:
    return 64 - int(v).bit_length()


def _affine(idx: np.ndarray) -> tuple[int, list[int], list[int]] | None:
    """(base, strides, dims) when idx[i] == base + sum(i_d * stride_d), else None."""
    dims = list(idx.shape) if idx.ndim else [1]
    flat = idx.reshape(dims)
    if flat.size == 0:
        return 0, [0] * len(dims), dims
    base = int(flat.reshape(-1)[0])
    strides = []
    for d, n in enumerate(dims):
        if n > 1:
            unit = [0] * len(dims)
            unit[d] = 1
            strides.append(int(flat[tuple(unit)]) - base)
        else:
            strides.append(0)
    grid = np.indices(dims).reshape(len(dims), -1)
    predicted = base + np.tensordot(np.array(strides, dtype=np.int64), grid, axes=1)
    if not np.array_equal(predicted, flat.reshape(-1)):
        return None
    if len(dims) > MAX_DIMS:
        return None
    return base, strides, dims


def _ci(values: Sequence[int]) -> str:
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


def _c_float(v: Any) -> str:
    """A C float literal that parses back to exactly this float32 value."""
    f = float(np.float32(v))
    if math.isnan(f):
        return "NAN"
    if math.isinf(f):
        return "INFINITY" if f > 0 else "-INFINITY"
    text = repr(f)
    if "." not in text and "e" not in text:
        text += ".0"
    return text + "f"


@functools.lru_cache(maxsize=2)
def _unpacked_model(raw: bytes) -> Any:
    """The flatbuffers object tree of a model (read only): unpacking a whole model takes ~0.2 s,
    and a spiking student has a table per LIF layer and step."""
    schema = _schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))


def isolated_model(graph: Graph, ops: Sequence[Operator], shape: Sequence[int] | None = None) -> tuple[bytes, list[int]]:
    """A .tflite holding only `ops` (one op, or a chain each reading the one before) with the
    tensors they use: constants keep their data, the other tensors the ops read from outside
    become the model's inputs (returned, in order), the last op's first output its output.
    `shape` replaces every non-constant tensor's shape (a 256-entry table of an elementwise chain)."""
    import flatbuffers

    schema = _schema()
    src = _unpacked_model(graph.raw)
    tensors = src.subgraphs[0].tensors
    one = schema.ModelT()
    one.version = 3
    one.description = b"edgekd isolated ops"
    one.operatorCodes = []
    one.buffers = [schema.BufferT()]
    sg = schema.SubGraphT()
    sg.tensors, sg.operators = [], []
    new_id: dict[int, int] = {}
    inputs: list[int] = []
    produced = {o for op in ops for o in op.outputs}

    def tensor(i: int) -> int:
        if i in new_id:
            return new_id[i]
        t = schema.TensorT()
        t.type, t.quantization, t.name = tensors[i].type, tensors[i].quantization, f"t{i}".encode()
        if graph.tensors[i].is_const:
            b = schema.BufferT()
            b.data = src.buffers[tensors[i].buffer].data
            one.buffers.append(b)
            t.buffer, t.shape = len(one.buffers) - 1, list(tensors[i].shape)
        else:
            t.buffer, t.shape = 0, list(shape) if shape is not None else list(tensors[i].shape)
            if i not in produced:
                inputs.append(i)
        new_id[i] = len(sg.tensors)
        sg.tensors.append(t)
        return new_id[i]

    for k, op in enumerate(ops):
        src_op = src.subgraphs[0].operators[op.index]
        one.operatorCodes.append(src.operatorCodes[src_op.opcodeIndex])
        o = schema.OperatorT()
        o.opcodeIndex = k
        o.inputs = [tensor(i) if i >= 0 else -1 for i in op.inputs]
        o.outputs = [tensor(i) for i in op.outputs]
        o.builtinOptionsType, o.builtinOptions = src_op.builtinOptionsType, src_op.builtinOptions
        sg.operators.append(o)
    sg.inputs, sg.outputs = [new_id[i] for i in inputs], [new_id[ops[-1].outputs[0]]]
    one.subgraphs = [sg]
    builder = flatbuffers.Builder(1024)
    builder.Finish(one.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), inputs


def interpreter_runner(model_bytes: bytes, reference: str, what: str) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """run(inputs) -> the first output, one sample at a time, in the interpreter a reference
    flavour is compared with (REFERENCE_INTERPRETERS); inputs in the model's input order."""
    check_reference(reference)
    if reference == "tflm":
        interp = tflm_interpreter(model_bytes, 16 << 20)

        def run_tflm(inputs: Sequence[np.ndarray]) -> np.ndarray:
            for pos, x in enumerate(inputs):
                interp.set_input(x, pos)
            interp.invoke()
            return np.asarray(interp.get_output(0)).copy()
        return run_tflm
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise MissingDependencyError(f"{what} is run with the TFLite interpreter (ai-edge-litert)",
                                     hint="pip install -c constraints.txt 'edgekd[convert]'") from None
    # the default CPU kernels (XNNPACK where it takes the op) for tflite-cpu
    resolver = OpResolverType.BUILTIN if reference == "tflite-cpu" else OpResolverType.BUILTIN_REF
    interp = Interpreter(model_content=model_bytes, experimental_op_resolver_type=resolver)
    try:
        interp.allocate_tensors()
    except RuntimeError as exc:  # XNNPACK refuses some graphs outright
        raise ConversionError(f"{REFERENCE_INTERPRETERS[reference]} could not prepare {what}: {exc}",
                              hint="compare with --reference tflite (TFLite's reference kernels) instead") from None
    details = interp.get_input_details()
    out_index = interp.get_output_details()[0]["index"]

    def run_litert(inputs: Sequence[np.ndarray]) -> np.ndarray:
        for d, x in zip(details, inputs):
            interp.set_tensor(d["index"], np.asarray(x).reshape(d["shape"]))
        interp.invoke()
        return interp.get_tensor(out_index).copy()
    return run_litert


def chain_lut(graph: Graph, chain: Sequence[Operator], reference: Reference) -> np.ndarray:
    """The int8 -> int8 table of an elementwise op, or of a chain of single-input elementwise ops
    (each reading the one before), computed by running it alone in the interpreter being
    reproduced (TFLite's reference or default CPU kernels, or TFLite Micro) on all 256 inputs: the
    values its kernels give, intermediate float rounding included."""
    model_bytes, _ = isolated_model(graph, chain, shape=[256])
    x = np.arange(-128, 128, dtype=np.int8)
    y = interpreter_runner(model_bytes, reference, f"op #{chain[0].index} {chain[0].op}'s table")([x]).reshape(-1)
    table = np.empty(256, dtype=np.int8)
    table[x.view(np.uint8)] = y.astype(np.int8)
    return table


# ====================================================================== checking


@dataclass
class OpProblem:
    op_index: int
    op: str
    message: str


def check_ops(graph: Graph, reference: Reference = "tflite") -> list[OpProblem]:
    """Every op the runtime cannot run (name, index, why); empty when the model is runnable."""
    problems: list[OpProblem] = []
    low = _Lowering(graph, reference)
    for unit in low.calls_plan():
        op = unit[0]
        if len(unit) == 1 and op.op in INT8_CHAIN_FLOAT_OPS:
            problems.append(OpProblem(op.index, op.op, "runs only between DEQUANTIZE and QUANTIZE (as one int8 table)"))
            continue
        if len(unit) == 1 and op.op not in SUPPORTED_OPS:
            problems.append(OpProblem(op.index, op.op, "not implemented in the firmware runtime"))
            continue
        try:
            low.lower_unit(unit)
        except ConversionError as exc:
            problems.append(OpProblem(op.index, op.op, exc.message))
    for i in graph.inputs + graph.outputs:
        t = graph.tensors[i]
        if t.dtype not in ("int8", "uint8", "int16", "int32", "bool"):
            problems.append(OpProblem(-1, "IO", f"model {'input' if i in graph.inputs else 'output'} '{t.name}' is "
                                                f"{t.dtype}; the firmware exchanges integer tensors (convert with int8 "
                                                f"inference_input_type/inference_output_type)"))
    return problems


def raise_for_problems(graph: Graph, problems: list[OpProblem]) -> None:
    if not problems:
        return
    unsupported = sorted({p.op for p in problems if p.message == "not implemented in the firmware runtime"})
    lines = [f"  op #{p.op_index} {p.op}: {p.message}" if p.op_index >= 0 else f"  {p.message}" for p in problems[:12]]
    more = f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else ""
    head = (f"the firmware runtime cannot run {Path(graph.source).name}: "
            + (f"unsupported op(s) {', '.join(unsupported)}" if unsupported else f"{len(problems)} op(s) with unsupported parameters"))
    raise ConversionError(
        head + "\n" + "\n".join(lines) + more,
        hint=f"supported ops: {', '.join(SUPPORTED_OPS)}; change the model (e.g. drop a final softmax, "
             f"use ReLU instead of other activations) or run it on a Linux target",
    )


# ====================================================================== planning the arena


@dataclass
class Buffer:
    tensor: int
    size: int
    first: int
    last: int
    offset: int = -1


def plan_arena(graph: Graph, calls: list[Call], root: Callable[[int], int],
               reuse: bool = True) -> tuple[dict[int, Buffer], int]:
    """Greedy by size: each activation buffer at the lowest offset free during its lifetime.

    Graph inputs live for the whole run (the protocol loads them once and infers N times),
    outputs until the end; an aliased tensor (reshape) extends its root's lifetime.
    """
    end = len(calls)
    bufs: dict[int, Buffer] = {}

    def touch(t: int, when: int) -> None:
        r = root(t)
        tensor = graph.tensors[r]
        if tensor.is_const:
            return
        size = -(-tensor.nbytes // ARENA_ALIGN) * ARENA_ALIGN
        b = bufs.get(r)
        if b is None:
            bufs[r] = Buffer(r, size, when, when)
        else:
            b.first, b.last = min(b.first, when), max(b.last, when)

    for i in graph.inputs:
        touch(i, -1)
        touch(i, end)
    for ci, c in enumerate(calls):
        for t in c.reads + c.writes:
            touch(t, ci)
    for o in graph.outputs:
        touch(o, end)
    placed: list[Buffer] = []
    for b in sorted(bufs.values(), key=lambda b: (-b.size, b.first, b.tensor)):
        overlapping = sorted((p for p in placed if not reuse or not (p.last < b.first or b.last < p.first)),
                             key=lambda p: p.offset)
        offset = 0
        for p in overlapping:
            if offset + b.size <= p.offset:
                break
            offset = max(offset, p.offset + p.size)
        b.offset = offset
        placed.append(b)
    total = max((b.offset + b.size for b in placed), default=0)
    return bufs, max(total, ARENA_ALIGN)


# ====================================================================== emitting C


@dataclass
class GeneratedModel:
    model_c: str
    metadata: dict[str, Any]


def _io_entry(t: Tensor, buf: Buffer) -> str:
    dims = list(t.shape) + [0] * (MAX_DIMS - len(t.shape))
    name = re.sub(r'[^A-Za-z0-9_.:/-]', '_', t.name)[:48]
    return (f"  {{ \"{name}\", {EKD_DTYPE[t.dtype]}, {buf.offset}, {t.nbytes}, {len(t.shape)}, {_ci(dims)}, "
            f"{_c_float(t.scale)}, {t.zero_point} }}")


def generate_c(graph: Graph, model_id: str | None = None, reference: Reference = "tflite",
               reuse_arena: bool = True) -> GeneratedModel:
    """Lower, plan and emit; raises ConversionError naming every unsupported op first.

    reuse_arena=False gives every tensor its own arena bytes, so all intermediate tensors can be
    read after a run (per-layer comparisons); the firmware always reuses."""
    check_reference(reference)
    raise_for_problems(graph, check_ops(graph, reference))
    low = _Lowering(graph, reference)
    low.lower()
    bufs, arena = plan_arena(graph, low.calls, low.root, reuse=reuse_arena)
    for i in graph.inputs + graph.outputs:
        if graph.tensors[low.root(i)].is_const:
            raise ConversionError(f"model input/output '{graph.tensors[i].name}' is a constant tensor")
    const_names: dict[int, str] = {}
    for t in sorted(low.const_used):
        tensor = graph.tensors[t]
        if tensor.dtype not in C_TYPE:
            raise ConversionError(f"constant tensor '{tensor.name}' has type {tensor.dtype}, which the runtime cannot read")
        const_names[t] = low.const_array(C_TYPE[tensor.dtype], f"c{t}", tensor.data)

    def pointer(m: re.Match) -> str:
        r = low.root(int(m.group(1)))
        if r in const_names:
            return f"{const_names[r]}"
        return f"(ekd_arena + {bufs[r].offset})"

    model_id = model_id or f"{Path(graph.source).stem}-{graph.sha256[:8]}"
    model_id = re.sub(r"[^A-Za-z0-9_.-]", "_", model_id)[:40]
    lines = [
        "/* Generated by edgekd (edgekd/convert/tflite2c.py) from "
        f"{Path(graph.source).name}, sha256 {graph.sha256[:16]}. Do not edit. */",
        "#include <float.h>",
        "#include <math.h>",
        "#include <stddef.h>",
        "#include \"ekd_kernels.h\"",
        "#include \"ekd_model.h\"",
        "",
        *_rounding_guard(reference),
        f"/* activation arena: {arena} bytes, planned statically ({len(bufs)} buffers) */",
        f"static uint8_t ekd_arena[{arena}] __attribute__((aligned({ARENA_ALIGN}))) __attribute__((section(\".bss.ekd_arena\")));",
        "",
        f"const char ekd_model_id[] = \"{model_id}\";",
        f"const int32_t ekd_model_num_inputs = {len(graph.inputs)};",
        f"const int32_t ekd_model_num_outputs = {len(graph.outputs)};",
        f"const uint32_t ekd_model_arena_bytes = {arena};",
        "const ekd_io_t ekd_model_inputs[] = {",
        ",\n".join(_io_entry(graph.tensors[i], bufs[low.root(i)]) for i in graph.inputs),
        "};",
        "const ekd_io_t ekd_model_outputs[] = {",
        ",\n".join(_io_entry(graph.tensors[i], bufs[low.root(i)]) for i in graph.outputs),
        "};",
        "",
        "uint8_t *ekd_model_arena(void) { return ekd_arena; }",
        "",
        f"/* constants: each distinct array once ({low.shared_bytes} bytes of repeats point at an earlier copy) */",
        *low.decls,
        "",
    ]
    lines.append(f"const uint32_t ekd_model_weight_bytes = {low.weight_bytes};")
    lines += ["", "void ekd_model_invoke(void) {"]
    for c in low.calls:
        lines.append(f"  /* op #{c.op_index} {c.op} */")
        lines.append("  " + re.sub(r"@T(\d+)@", pointer, c.text))
    lines += ["}", ""]

    def io_meta(i: int) -> dict[str, Any]:
        t = graph.tensors[i]
        return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes,
                "scale": float(t.scale), "zero_point": t.zero_point, "offset": bufs[low.root(i)].offset}

    metadata = {
        "model_id": model_id,
        "source": graph.source,
        "source_sha256": graph.sha256,
        "reference": reference,
        "arena_bytes": arena,
        "weight_bytes": low.weight_bytes,
        "shared_weight_bytes": low.shared_bytes,
        "activation_buffers": len(bufs),
        "ops": graph.op_counts(),
        "kernel_calls": len(low.calls),
        "inputs": [io_meta(i) for i in graph.inputs],
        "outputs": [io_meta(i) for i in graph.outputs],
        "tensor_offsets": {str(t): bufs[low.root(t)].offset for t in range(len(graph.tensors))
                           if low.root(t) in bufs},
    }
    return GeneratedModel("\n".join(lines), metadata)


def _rounding_guard(reference: str) -> list[str]:
    """An #error when the runtime is compiled with the other multiplier rounding than this model's."""
    single = reference == "tflite-cpu"
    return [f"#if {'!' if single else ''}EKD_SINGLE_ROUNDING",
            f"#error \"generated for reference '{reference}': compile the runtime with "
            f"{' '.join(runtime_cflags(reference)) or 'EKD_SINGLE_ROUNDING unset or 0'}\"",
            "#endif", ""]


def write_model_sources(model: str | os.PathLike | bytes, out_dir: str | os.PathLike, model_id: str | None = None,
                        reference: Reference = "tflite", reuse_arena: bool = True) -> dict[str, Any]:
    """Generate model.c + model.json into out_dir; returns the metadata."""
    from edgekd.artifacts import atomic_write_json, atomic_write_text

    graph = load_graph(model)
    gen = generate_c(graph, model_id=model_id, reference=reference, reuse_arena=reuse_arena)
    out = Path(out_dir)
    atomic_write_text(out / "model.c", gen.model_c)
    atomic_write_json(out / "model.json", gen.metadata)
    return gen.metadata


# ====================================================================== the TFLite Micro view


def tflm_interpreter(model_bytes: bytes, arena_bytes: int):
    try:
        from tflite_micro import runtime as tflm_runtime
    except ImportError:
        raise MissingDependencyError(
            "the TFLite Micro interpreter (package tflite-micro) is not installed",
            hint="pip install -c constraints.txt 'edgekd[firmware]'",
        ) from None
    return tflm_runtime.Interpreter.from_bytes(model_bytes, arena_size=int(arena_bytes))


_TFLM_PROBE = r"""
import sys, numpy as np
from tflite_micro import runtime
raw = open(sys.argv[1], "rb").read()
lo, hi = int(sys.argv[2]), int(sys.argv[3])

def fits(n):
    print("probe", n, flush=True)
    try:
        it = runtime.Interpreter.from_bytes(raw, arena_size=n)
        it.invoke()
    except Exception:
        return False
    return True

if not fits(hi):
    print("toosmall", hi, flush=True)
    sys.exit(0)
print("fits", hi, flush=True)
while hi - lo > 16:
    mid = (lo + hi) // 2 // 16 * 16
    if mid <= lo:
        break
    if fits(mid):
        hi = mid
        print("fits", mid, flush=True)
    else:
        lo = mid
        print("nofit", mid, flush=True)
print("done", hi, flush=True)
"""


def tflm_arena_bytes(model: str | os.PathLike | bytes, upper: int = 16 << 20) -> int:
    """The smallest tensor arena with which TFLite Micro's interpreter allocates and runs the model.

    Bisection on Interpreter(arena_size=n) + one invoke, granularity 16 bytes (TFLM aligns to 16).
    Probes run in a child process: TFLM crashes (segfaults) for some too-small arenas instead of
    failing cleanly, and a crash there counts as "does not fit" and the bisection goes on.
    """
    import subprocess
    import sys
    import tempfile

    try:
        import tflite_micro  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "the TFLite Micro interpreter (package tflite-micro) is not installed",
            hint="pip install -c constraints.txt 'edgekd[firmware]'",
        ) from None
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, (bytes, bytearray)):
            path = Path(tmp) / "model.tflite"
            path.write_bytes(bytes(model))
        else:
            path = Path(model)
        lo, hi = 0, upper
        for _ in range(64):
            proc = subprocess.run([sys.executable, "-c", _TFLM_PROBE, str(path), str(lo), str(hi)],
                                  capture_output=True, text=True, check=False, timeout=600)
            probing = None
            for line in proc.stdout.splitlines():
                word, _, num = line.partition(" ")
                if word == "probe":
                    probing = int(num)
                elif word == "fits":
                    hi, probing = int(num), None
                elif word == "nofit":
                    lo, probing = int(num), None
                elif word == "toosmall":
                    raise ConversionError(f"TFLite Micro cannot run the model even with a {upper} byte arena",
                                          hint="check the model with the tflite-micro interpreter directly")
                elif word == "done":
                    return int(num)
            if probing is None or proc.returncode == 0:
                raise ConversionError(f"the TFLite Micro probe failed: {proc.stderr.strip()[-300:]}")
            if probing == hi:
                raise ConversionError(f"TFLite Micro crashed running the model with a {hi} byte arena")
            lo = probing  # it crashed on this size: treat as too small and go on
    raise ConversionError("the TFLite Micro arena bisection did not converge")


def summary_json(metadata: dict[str, Any]) -> str:
    return json.dumps(metadata, indent=2)
