"""Spiking students in full int8: ranges set by the model, not by calibration.

Between TensorFlow's calibration and its quantization (tf_worker), the recorded ranges of a
spiking student's tensors are replaced where the model fixes them:

Spikes, every spiking student. The exported Heaviside is floor(u / 1024) + 1 (edgekd.models.
neurons): FLOOR gives -1 or 0. Calibration records [-1, 1] for it, whose int8 grid (2/255, zero
point -1) cannot hold -1: "no spike" became 1/255 instead of 0, every silent input added w/255
to the next layer's current, a per-channel offset of up to half a grid step measured on the eye
student. Pinned to [-1, 0] (scale 1/255, zero point 127), both values are exact, and the spike
map after the +1 is exactly 0 or 1.

Integer membranes. A student trained with `lif.membrane_grid = K` (edgekd.models.neurons) keeps
its membrane in whole grid steps: the exported graph per LIF step is

    current:  x -> [MINIMUM/MAXIMUM clamp] -> MUL(K / threshold) -> ROUND
    leak:     n -> MUL(beta) -> ROUND
    membrane: ADD(leak, current) [-> SUB(MUL(spike, K))]       (integers)
    spike:    SUB(n, K) -> MUL(1/1024) -> FLOOR ... (the export Heaviside)

Calibrated the usual way, every one of these tensors gets its own int8 grid and each step rounds
the membrane several times on grids that do not line up (docs/int8-spiking.md). Here the ranges
recorded by TensorFlow's calibration are replaced before quantization so that the integer
tensors get scale 1 and zero point 0 ([-128, 127]), the current (the tensor feeding the clamp and
the clamp's outputs) scale threshold / K, the reset product [0, K] and the Heaviside's MUL(1/1024)
scale 1/1024. Then the int8 ADD/SUB/MUL/ROUND on the path are exact, the leak rounds once as in
torch, and the current is rounded once, by the convolution's own requantization.

A model that computes what int8 computes end to end (`int8_exact` eye, skeleton and face
students, edgekd.models.int8; the face student has no spikes) adds more. Its input and the
activations it puts on a grid of its own (skeleton: the currents it adds, the graph mix; face:
every activation, on grids its training set; all: the logits) are rounded in the model as
x -> clamp -> MUL(levels) -> ROUND -> MUL(1 / levels), the same pattern as a current: the tensor
feeding the clamp is pinned to steps of 1 / levels (its producer's requantization rounds as torch
rounds) and the grid carried forward through shape ops, CONCATENATION, ADD/SUB of equal grids,
clamps to whole steps, MUL by a positive constant and MUL of a grid by spikes. The MEANs of spike
maps (the readout's spike rates, the attention's means over joints: k / n for n values) are
pinned to steps of 1 / n; spikes stay spikes through shape ops, max pooling, CONCATENATION, the
product of two spike maps and a CONV_2D that only copies channels (the attention's pairing).

The tensors are found from the graph's structure (FLOOR for spikes, ROUND ops mark the grid), and
checked with data: the float model is run on calibration samples and every tensor on a grid must
hold whole multiples of its step, every spike map -1 or 0; if not, the pattern was not what this
module expects and conversion stops. After quantization the DEQUANTIZE -> ROUND -> QUANTIZE
chains, which then map whole numbers to themselves, are removed (`drop_identity_rounds`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.errors import ConversionError

INT_RANGE = (-128.0, 127.0)
FLOOR_SPIKE_RANGE = (-1.0, 0.0)
CLAMP_OPS = ("MINIMUM", "MAXIMUM", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1")
SHAPE_OPS = ("RESHAPE", "TRANSPOSE", "STRIDED_SLICE", "SLICE", "GATHER", "SQUEEZE", "EXPAND_DIMS")
MEMBRANE_OPS = ("ADD", "SUB")
# A float that should be an integer may be off by float32 rounding of the unrolled graph only.
INTEGER_TOLERANCE = 1e-3


@dataclass
class PinReport:
    round_ops: int = 0
    spike_tensors: list[int] = field(default_factory=list)
    ranges: dict[int, tuple[float, float]] = field(default_factory=dict)  # tensor index -> (min, max)
    grid: dict[int, tuple[float, bool]] = field(default_factory=dict)  # tensor -> (step, signed)
    binary: set[int] = field(default_factory=set)  # spike maps after the Heaviside's + 1, and their copies
    max_non_integer: float = 0.0
    samples_checked: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"spike_maps": len(self.spike_tensors), "round_ops": self.round_ops, "pinned_tensors": len(self.ranges),
                "integer_tensors": sum(g == (1.0, True) for g in self.grid.values()), "grid_tensors": len(self.grid),
                "max_non_integer": self.max_non_integer,
                "samples_checked": self.samples_checked}


class _Graph:
    """Just enough of a .tflite model (flatbuffers object API) to walk and edit one subgraph."""

    def __init__(self, raw: bytes):
        from edgekd.convert.tflite2c import _opcode_names, _schema  # the one .tflite schema loader

        schema = self.schema = _schema()
        self.model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))
        self.sg = self.model.subgraphs[0]
        names = _opcode_names(schema)
        self.op_names = []
        for op in self.sg.operators:
            code = self.model.operatorCodes[op.opcodeIndex]
            self.op_names.append(names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?"))
        self.producer: dict[int, int] = {}
        self.consumers: dict[int, list[int]] = {}
        for i, op in enumerate(self.sg.operators):
            for t in op.outputs:
                self.producer[int(t)] = i
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(int(t), []).append(i)

    def constant(self, t: int) -> np.ndarray | None:
        tensor = self.sg.tensors[t]
        buf = self.model.buffers[tensor.buffer]
        if buf is None or buf.data is None or len(buf.data) == 0:
            return None
        if tensor.type != self.schema.TensorType.FLOAT32:
            return None
        return np.frombuffer(bytes(bytearray(buf.data)), dtype=np.float32)

    def scalar(self, t: int) -> float | None:
        value = self.constant(t)
        if value is None or value.size == 0 or not np.all(value == value.flat[0]):
            return None
        return float(value.flat[0])

    def op(self, i: int) -> Any:
        return self.sg.operators[i]

    def is_constant(self, t: int) -> bool:
        buf = self.model.buffers[self.sg.tensors[t].buffer]
        return buf is not None and buf.data is not None and len(buf.data) > 0

    def split_const(self, i: int) -> tuple[list[int], list[float]]:
        """(non-constant inputs, float scalar constants) of op i; other constants (shapes,
        permutations, slice bounds, weights) are left out of both."""
        tensors, scalars = [], []
        for t in self.op(i).inputs:
            if t < 0:
                continue
            if not self.is_constant(int(t)):
                tensors.append(int(t))
            elif (c := self.scalar(int(t))) is not None:
                scalars.append(c)
        return tensors, scalars

    def set_range(self, t: int, lo: float, hi: float) -> None:
        tensor = self.sg.tensors[t]
        q = tensor.quantization or self.schema.QuantizationParametersT()
        q.min, q.max = [float(lo)], [float(hi)]
        tensor.quantization = q

    def tensor_name(self, t: int) -> str:
        name = self.sg.tensors[t].name
        return name.decode() if isinstance(name, bytes) else str(name)

    def to_bytes(self) -> bytes:
        import flatbuffers

        builder = flatbuffers.Builder(1024)
        builder.Finish(self.model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def find_spiking_ranges(graph: _Graph, integer_membrane: bool, int8_exact: bool = False) -> PinReport:
    """The ranges to pin (module doc), from the structure of a calibrated float model.

    A tensor on a grid holds whole multiples of its step q: signed grids span [-128 q, 127 q],
    unsigned ones [0, 255 q]. Sources: ROUND outputs (q = 1), the spike maps (0/1) and, forward
    from them, what keeps values on a grid (shape ops, ADD/SUB of equal grids, MUL by a positive
    constant, the MEAN of a spike map). The current feeding a ROUND (x * c) is pinned backwards
    to step 1 / c through its clamp and shape ops, and is not itself on the grid (it is rounded)."""
    report = PinReport()
    ranges = report.ranges
    grid: dict[int, tuple[float, bool]] = {}  # tensor -> (step, signed)

    def put(t: int, q: float, signed: bool = True) -> None:
        grid[t] = (q, signed)
        ranges[t] = (INT_RANGE[0] * q, INT_RANGE[1] * q) if signed else (0.0, 255.0 * q)

    for i, name in enumerate(graph.op_names):
        if name == "FLOOR":  # the exported Heaviside: its users add 1 to make the spike map
            out = int(graph.op(i).outputs[0])
            report.spike_tensors.append(out)
            ranges[out] = FLOOR_SPIKE_RANGE
    if not integer_membrane:
        return report
    binary: set[int] = set()  # spike maps: FLOOR + 1, and max-pooled / reshaped spike maps
    for t in report.spike_tensors:
        for c in graph.consumers.get(t, []):
            inner, scalars = graph.split_const(c)
            if graph.op_names[c] == "ADD" and scalars == [1.0]:
                binary.add(int(graph.op(c).outputs[0]))
    rounds = [i for i, name in enumerate(graph.op_names) if name == "ROUND"]
    report.round_ops = len(rounds)
    for i in rounds:  # ROUND's input (beta * n, x * K / threshold) is rounded onto the grid by its own MUL
        ranges[int(graph.op(i).inputs[0])] = INT_RANGE
        put(int(graph.op(i).outputs[0]), 1.0)
    rounded = {int(graph.op(i).inputs[0]) for i in rounds}
    changed = True
    while changed:  # forward from the sources, to a fixpoint
        changed = False
        for i, name in enumerate(graph.op_names):
            out = int(graph.op(i).outputs[0])
            if out in grid or out in binary:
                continue
            tensors, scalars = graph.split_const(i)
            if not tensors:
                continue
            spikes_in = all(t in binary for t in tensors)
            if (spikes_in and name in SHAPE_OPS + ("MAX_POOL_2D", "CONCATENATION", "MUL")
                    and (name != "MUL" or len(tensors) == 2)) \
                    or (name == "CONV_2D" and tensors[0] in binary and _copies_channels(graph, i)):
                binary.add(out)
                ranges[out] = (0.0, 1.0)
                changed = True
            elif name == "MUL" and len(tensors) == 2 and not scalars and any(t in binary for t in tensors) \
                    and any(t in grid for t in tensors):
                put(out, *grid[next(t for t in tensors if t in grid)])  # spikes gate grid values
                changed = True
            elif name in CLAMP_OPS and len(tensors) == 1 and tensors[0] in grid and _on_grid(scalars, grid[tensors[0]][0]):
                put(out, *grid[tensors[0]])  # a clamp to whole steps keeps the grid
                changed = True
            elif name == "MEAN" and tensors[0] in binary and int8_exact:
                # int8_exact models only: on these exact values TFLite Micro's FULLY_CONNECTED rounds
                # some logits differently from the reference kernels (a plain integer membrane's
                # per-step FCs included), so other models keep the calibrated range
                size_in = int(np.prod(graph.sg.tensors[tensors[0]].shape))
                size_out = int(np.prod(graph.sg.tensors[out].shape))
                put(out, size_out / size_in, signed=False)  # k / n: n binary values averaged
                changed = True
            elif name in MEMBRANE_OPS and any(grid.get(t) == (1.0, True) for t in tensors):
                put(out, 1.0)  # the membrane: integers (reset and threshold constants included)
                for t in tensors:  # the reset: spike (0/1) * K
                    p = graph.producer.get(t)
                    if t not in grid and p is not None and graph.op_names[p] == "MUL":
                        _, k = graph.split_const(p)
                        if len(k) == 1:
                            ranges[t] = (min(0.0, k[0]), max(0.0, k[0]))
                changed = True
            elif name in MEMBRANE_OPS + ("CONCATENATION", "MAX_POOL_2D") + SHAPE_OPS and all(t in grid for t in tensors) \
                    and len({grid[t][0] for t in tensors}) == 1:
                q = grid[tensors[0]][0]
                signed = name == "SUB" or any(grid[t][1] for t in tensors)
                put(out, q, signed)
                changed = True
            elif name == "MUL" and len(tensors) == 1 and tensors[0] in grid and len(scalars) == 1 \
                    and scalars[0] > 0 and out not in rounded:
                q, signed = grid[tensors[0]]
                put(out, q * scalars[0], signed)  # e.g. the Heaviside's u / 1024
                changed = True
    for i in rounds:
        src = int(graph.op(i).inputs[0])
        p = graph.producer.get(src)
        if p is None or graph.op_names[p] != "MUL":
            raise ConversionError(f"int8 grid: ROUND at tensor '{graph.tensor_name(src)}' does not follow a MUL by a "
                                  "constant", hint="only LIF layers with membrane_grid should round in the exported graph")
        tensors, scalars = graph.split_const(p)
        if len(tensors) != 1 or len(scalars) != 1 or scalars[0] == 0:
            raise ConversionError(f"int8 grid: the MUL before ROUND '{graph.tensor_name(src)}' is not a tensor times "
                                  "a scalar")
        if tensors[0] in grid:
            continue  # the leak: beta * membrane
        # a current (x * K / threshold) or a model input (x * levels): step 1 / c, back through
        # its clamp and shape ops to whatever produced it
        q = 1.0 / abs(scalars[0])
        t = tensors[0]
        while True:
            ranges[t] = (INT_RANGE[0] * q, INT_RANGE[1] * q)
            p = graph.producer.get(t)
            if p is None or graph.op_names[p] not in CLAMP_OPS + SHAPE_OPS:
                break
            inner, bounds = graph.split_const(p)
            for b in bounds if graph.op_names[p] in CLAMP_OPS else []:
                if abs(b / q - round(b / q)) > 1e-4:
                    raise ConversionError(f"int8 grid: clamp {b:g} is not a whole number of grid steps ({q:g})",
                                          hint="choose current_clamp * membrane_grid / threshold to be an integer")
            if len(inner) != 1:
                break
            t = inner[0]
    report.grid = grid
    report.binary = binary
    return report


def _on_grid(values: Iterable[float], q: float) -> bool:
    return all(abs(v / q - round(v / q)) <= 1e-4 for v in values)


def _copies_channels(graph: _Graph, i: int) -> bool:
    """Op i (CONV_2D) only copies input channels: a 1x1 filter with one 1 per output channel, else
    zeros, and no bias (spiking attention's pairing of features): spikes in, spikes out."""
    op = graph.op(i)
    inputs = [int(t) for t in op.inputs]
    weight = graph.constant(inputs[1]) if len(inputs) > 1 else None
    if weight is None or tuple(graph.sg.tensors[inputs[1]].shape[1:3]) != (1, 1):
        return False
    rows = weight.reshape(int(graph.sg.tensors[inputs[1]].shape[0]), -1)
    if not np.all((rows == 0.0) | (rows == 1.0)) or not np.all(rows.sum(axis=1) == 1.0):
        return False
    bias = graph.constant(inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else None
    return bias is None or not np.any(bias)


def check_values(raw: bytes, report: PinReport, samples: Iterable[Mapping[str, np.ndarray]]) -> None:
    """Run the float model on samples: every tensor on a grid must hold whole multiples of its
    step, every spike map (FLOOR output) -1 or 0."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=raw, experimental_preserve_all_tensors=True)
    runner = interp.get_signature_runner()
    worst, worst_t = 0.0, -1
    n = 0
    for sample in samples:  # keyed by the signature's input names
        runner(**{k: np.asarray(v, np.float32) for k, v in sample.items()})
        n += 1
        for t in report.spike_tensors:
            v = interp.get_tensor(t)
            if v.size and not np.all((v == -1.0) | (v == 0.0)):
                raise ConversionError(f"spiking student: FLOOR output '{_Graph(raw).tensor_name(t)}' holds values other "
                                      f"than -1 and 0 (range {float(v.min()):g}..{float(v.max()):g})",
                                      hint="FLOOR should appear only in the exported Heaviside (edgekd.models.neurons)")
        for t in report.binary:
            v = interp.get_tensor(t)
            if v.size and not np.all((v == 0.0) | (v == 1.0)):
                raise ConversionError(f"spiking student: tensor '{_Graph(raw).tensor_name(t)}' should hold spikes (0 or 1) "
                                      f"but ranges {float(v.min()):g}..{float(v.max()):g} on calibration data",
                                      hint="the graph is not the pattern edgekd.convert.spiking_ranges expects; "
                                      "report the model")
        for t, (q, _) in report.grid.items():
            v = interp.get_tensor(t) / q
            dist = float(np.max(np.abs(v - np.round(v)))) if v.size else 0.0
            if dist > worst:
                worst, worst_t = dist, t
    report.samples_checked = n
    report.max_non_integer = worst
    if worst > INTEGER_TOLERANCE:
        name = _Graph(raw).tensor_name(worst_t)
        raise ConversionError(f"int8 grid: tensor '{name}' should hold whole grid steps but is {worst:.3g} steps "
                              f"away on calibration data", hint="the graph is not the pattern that "
                              "edgekd.convert.spiking_ranges pins; convert a model without membrane_grid/int8_exact, "
                              "or report the model")


def pin_spiking_ranges(calibrated: bytes, samples: Iterable[Mapping[str, np.ndarray]] = (),
                       integer_membrane: bool = False, int8_exact: bool = False) -> tuple[bytes, PinReport]:
    """The calibrated model with the spike maps' (for integer membranes also the membrane path's,
    and for int8_exact models the readout's) ranges pinned (module doc), and what was done."""
    graph = _Graph(calibrated)
    report = find_spiking_ranges(graph, integer_membrane, int8_exact)
    if integer_membrane and report.round_ops == 0:
        raise ConversionError("int8 grid: the model has no ROUND op, so no grid to pin",
                              hint="LIF layers need lif.membrane_grid > 0; an int8_exact model rounds in its graph")
    check_values(calibrated, report, samples)
    for t, (lo, hi) in report.ranges.items():
        graph.set_range(t, lo, hi)
    return graph.to_bytes(), report


def drop_identity_rounds(quantized: bytes) -> tuple[bytes, int]:
    """The int8 model without its DEQUANTIZE -> ROUND -> QUANTIZE chains whose ends both have
    scale 1 and zero point 0: with the grid pinned they get whole numbers and give them back
    unchanged (the rounding happened in the MUL before), so dropping them is exact; it spares
    two float conversions per ROUND, and TFLite's reference kernels and TFLite Micro, which
    have no ROUND, can run the model. Returns the model and the number of chains dropped."""
    graph = _Graph(quantized)
    sg, schema = graph.sg, graph.schema

    def unit_grid(t: int) -> bool:
        q = sg.tensors[t].quantization
        return (sg.tensors[t].type == schema.TensorType.INT8 and q is not None and q.scale is not None
                and len(q.scale) == 1 and float(q.scale[0]) == 1.0 and int(q.zeroPoint[0]) == 0)

    drop: set[int] = set()
    alias: dict[int, int] = {}
    for i, name in enumerate(graph.op_names):
        if name != "ROUND":
            continue
        src, dst = int(graph.op(i).inputs[0]), int(graph.op(i).outputs[0])
        deq, users = graph.producer.get(src), graph.consumers.get(dst, [])
        if deq is None or graph.op_names[deq] != "DEQUANTIZE" or len(users) != 1 or graph.op_names[users[0]] != "QUANTIZE":
            continue
        x, y = int(graph.op(deq).inputs[0]), int(graph.op(users[0]).outputs[0])
        if len(graph.consumers.get(src, [])) != 1 or not (unit_grid(x) and unit_grid(y)) or y in sg.outputs:
            continue
        drop.update((deq, i, users[0]))
        alias[y] = x
    if not drop:
        return quantized, 0
    for op in sg.operators:
        op.inputs = [alias.get(int(t), int(t)) for t in op.inputs]
    sg.operators = [op for k, op in enumerate(sg.operators) if k not in drop]
    # the chains' own tensors (two of them float32, full size) go too: planners may still place them
    keep = sorted({int(t) for op in sg.operators for t in [*op.inputs, *op.outputs] if t >= 0}
                  | {int(t) for t in [*sg.inputs, *sg.outputs]})
    index = {old: new for new, old in enumerate(keep)}
    sg.tensors = [sg.tensors[t] for t in keep]
    for op in sg.operators:
        op.inputs = [index[int(t)] if t >= 0 else int(t) for t in op.inputs]
        op.outputs = [index[int(t)] for t in op.outputs]
    sg.inputs = [index[int(t)] for t in sg.inputs]
    sg.outputs = [index[int(t)] for t in sg.outputs]
    for sig in graph.model.signatureDefs or []:
        for entry in [*(sig.inputs or []), *(sig.outputs or [])]:
            entry.tensorIndex = index[int(entry.tensorIndex)]
    # interpreters resolve every listed operator code when loading: list only the ones still used
    used = sorted({op.opcodeIndex for s in graph.model.subgraphs for op in s.operators})
    remap = {old: new for new, old in enumerate(used)}
    graph.model.operatorCodes = [graph.model.operatorCodes[k] for k in used]
    for s in graph.model.subgraphs:
        for op in s.operators:
            op.opcodeIndex = remap[op.opcodeIndex]
    return graph.to_bytes(), len(drop) // 3
