"""Hop 1: torch -> ONNX with static shapes and named inputs/outputs.

Spiking students are switched to export mode first (`edgekd.models.neurons.set_export_mode`):
the spike becomes a plain comparison and a cast, and the network is unrolled over its T steps
with explicit state, so the graph holds only standard ONNX ops. The TorchScript-based exporter
is used (static shapes; it needs no onnxscript). Each ONNX node is mapped back to the torch
module it came from (`node_modules.json`), so later hops can name the module behind an op
that fails to convert or loses accuracy.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.artifacts import atomic_write_json
from edgekd.convert.layout import ModelIO, TensorSig
from edgekd.convert.logs import capture_native_output
from edgekd.errors import ConversionError, MissingDependencyError

ONNX_FILE = "model.onnx"
NODE_MODULES_FILE = "node_modules.json"
DEFAULT_OPSET = 17


@dataclass
class OnnxOptions:
    input_shapes: Mapping[str, Sequence[int]]  # name -> shape with batch 1, model layout (ordered as forward())
    output_name: str = "logits"
    opset: int = DEFAULT_OPSET
    log_path: Path | None = None  # exporter messages go here, never to our stdout
    file_name: str = ONNX_FILE
    # Fold constant subgraphs the exporter leaves (e.g. torch.eye on a traced size becomes
    # ConstantOfShape -> EyeLike, which onnx2tf cannot convert) with onnxruntime's basic,
    # hardware-independent graph optimizations: standard ONNX ops only.
    fold_constants: bool = True
    # A MatMul by a constant one-hot matrix only selects elements (spiking students pick time
    # steps that way so their graphs avoid slicing ops). In int8 such a fully connected layer
    # requantizes and can move a value by one step, which flips spikes downstream; a Slice or
    # Gather selects exactly. Both run on every engine edgekd targets (the C runtime included).
    exact_selection: bool = True
    # A BatchNormalization that follows no conv (e.g. after a spiking fusion sum) is written as
    # Mul + Add by per-channel constants shaped (1, C, 1, ...). onnx2tf then moves those
    # constants with the tensor's layout; its own BatchNormalization picked the wrong axis when
    # the channel count equalled another dimension (8 channels over 8 time steps), and its
    # strict mode checks Mul/Add broadcasts against onnxruntime.
    decompose_batchnorm: bool = True
    extra_notes: list[str] = field(default_factory=list)


def torch2onnx(model: Any, out_dir: str | os.PathLike, options: OnnxOptions) -> Path:
    """Export `model` (an nn.Module; switched to eval + export mode) to out_dir/model.onnx.

    Writes io.json-compatible info through `model_io_for` and node_modules.json; raises
    ConversionError naming the op and the module when an op has no ONNX form."""
    try:
        import onnx
        import torch
    except ImportError as exc:
        raise MissingDependencyError(f"{exc.name} is not installed", hint="pip install 'edgekd[convert,train]'") from None

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepare_for_export(model)
    names = list(options.input_shapes)
    args = tuple(torch.zeros(tuple(options.input_shapes[n]), dtype=torch.float32) for n in names)
    calls = module_call_order(model, args)
    path = out_dir / options.file_name
    tmp = out_dir / f".{options.file_name}.partial"
    log = options.log_path or out_dir / "torch2onnx.log"
    try:
        with capture_native_output(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, args, str(tmp), dynamo=False, opset_version=options.opset,
                input_names=names, output_names=[options.output_name],
                do_constant_folding=True, dynamic_axes=None, external_data=False,
            )
    except Exception as exc:  # the exporter raises RuntimeError subclasses with the aten op in the text
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise export_error(exc, model, args, options.opset) from None
    proto = onnx.load(str(tmp))
    check_graph(proto, model, calls)
    if options.fold_constants:
        proto = fold_constants(proto)
    if options.decompose_batchnorm:
        proto, n_bn = batchnorm_to_mul_add(proto)
        if n_bn:
            options.extra_notes.append(f"{n_bn} BatchNormalization nodes not folded into a conv became Mul + Add")
    if options.exact_selection:
        proto, replaced = one_hot_matmuls_to_slices(proto)
        if replaced:
            options.extra_notes.append(f"{replaced} one-hot MatMul step pickers became exact Slice/Gather ops")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"the exported ONNX model does not validate: {str(exc).splitlines()[0]}",
                              hint=f"see {log}") from None
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    module_names = [n for n, _ in model.named_modules() if n]
    mapping = {node.name: module_for_node(node.name, module_names, calls) for node in proto.graph.node if node.name}
    atomic_write_json(out_dir / NODE_MODULES_FILE, {k: v for k, v in mapping.items() if v})
    return path


def fold_constants(proto: Any) -> Any:
    """The model after onnxruntime's basic optimizations (constant folding, redundant-node
    elimination); other opset domains it declares but does not use are dropped."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgekd-fold-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        folded = onnx.load(opts.optimized_model_filepath)
    used = {n.domain for n in folded.graph.node}
    keep = [o for o in folded.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del folded.opset_import[:]
    folded.opset_import.extend(keep)
    if any(n.domain not in ("", "ai.onnx") for n in folded.graph.node):
        return proto  # never trade standard ops for runtime-specific ones
    return folded


def _rewrite_graph(proto: Any, nodes: list[Any], initializers: list[Any]) -> None:
    """Replace the graph's nodes, add `initializers`, and drop initializers no node reads."""
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.graph.initializer.extend(initializers)
    used = {i for n in proto.graph.node for i in n.input}
    keep = [i for i in proto.graph.initializer if i.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)


def one_hot_matmuls_to_slices(proto: Any) -> tuple[Any, int]:
    """Replace MatMul(A, W) with W a constant whose every column is one-hot (a single 1.0)
    by an exact selection of A's last axis: Slice for consecutive indices, else Gather."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    consts = {n.output[0]: n for n in proto.graph.node if n.op_type == "Constant"}
    new_nodes = []
    new_inits = []
    replaced = 0
    for node in proto.graph.node:
        w = None
        if node.op_type == "MatMul" and len(node.input) == 2:
            src = node.input[1]
            if src in inits:
                w = numpy_helper.to_array(inits[src])
            elif src in consts:
                w = numpy_helper.to_array(consts[src].attribute[0].t)
        picks = _one_hot_columns(w) if w is not None else None
        if picks is None:
            new_nodes.append(node)
            continue
        replaced += 1
        base = (node.name or node.output[0]).replace("/", "_").strip("_")
        if picks == list(range(picks[0], picks[0] + len(picks))):
            names = [f"{base}_starts", f"{base}_ends", f"{base}_axes"]
            for name, value in zip(names, ([picks[0]], [picks[-1] + 1], [-1])):
                new_inits.append(numpy_helper.from_array(np.asarray(value, np.int64), name))
            new_nodes.append(helper.make_node("Slice", [node.input[0], *names], list(node.output), name=node.name))
        else:
            idx = f"{base}_indices"
            new_inits.append(numpy_helper.from_array(np.asarray(picks, np.int64), idx))
            new_nodes.append(helper.make_node("Gather", [node.input[0], idx], list(node.output), name=node.name, axis=-1))
    if not replaced:
        return proto, 0
    _rewrite_graph(proto, new_nodes, new_inits)
    onnx.checker.check_model(proto)
    return proto, replaced


def batchnorm_to_mul_add(proto: Any) -> tuple[Any, int]:
    """Inference-mode BatchNormalization -> x * scale + shift with (1, C, 1, ..) constants."""
    import numpy as np
    from onnx import helper, numpy_helper, shape_inference

    inits = {i.name: i for i in proto.graph.initializer}
    inferred = shape_inference.infer_shapes(proto)
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    new_nodes, new_inits, done = [], [], 0
    for node in proto.graph.node:
        params = node.input[1:5]
        rank = ranks.get(node.input[0]) if node.input else None
        if node.op_type != "BatchNormalization" or len(node.output) != 1 or not rank or \
                not all(p in inits for p in params):
            new_nodes.append(node)
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[p]).astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        shape = (1, len(scale)) + (1,) * (rank - 2)
        base = (node.name or node.output[0]).replace("/", "_").strip("_")
        s_name, b_name, mid = f"{base}_scale", f"{base}_shift", f"{node.output[0]}_scaled"
        new_inits += [numpy_helper.from_array(scale.reshape(shape).astype(np.float32), s_name),
                      numpy_helper.from_array(shift.reshape(shape).astype(np.float32), b_name)]
        new_nodes += [helper.make_node("Mul", [node.input[0], s_name], [mid], name=f"{node.name}/Mul"),
                      helper.make_node("Add", [mid, b_name], list(node.output), name=f"{node.name}/Add")]
        done += 1
    if not done:
        return proto, 0
    _rewrite_graph(proto, new_nodes, new_inits)
    return proto, done


def _one_hot_columns(w: Any) -> list[int] | None:
    """Row index of the single 1.0 in each column of a 2-D matrix, or None."""
    import numpy as np

    if w.ndim != 2 or w.size == 0 or w.shape[0] < 2:
        return None
    if not np.all((w == 0) | (w == 1)) or not np.all(w.sum(axis=0) == 1):
        return None
    return [int(i) for i in w.argmax(axis=0)]


def prepare_for_export(model: Any) -> None:
    """eval() and export mode (spikes as comparisons) for every spiking layer."""
    model.eval()
    try:
        from edgekd.models.neurons import set_export_mode
    except ImportError:  # models package absent: honour a plain `export_mode` flag only
        for module in model.modules():
            if hasattr(module, "export_mode"):
                module.export_mode = True
        return
    set_export_mode(model, True)


def model_io_for(proto_path: str | os.PathLike, options: OnnxOptions) -> ModelIO:
    """The signature of the exported model, read back from the ONNX file (static shapes)."""
    import onnx

    proto = onnx.load(str(proto_path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}

    def sig(v: Any) -> TensorSig:
        dims = tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
        return TensorSig(v.name, dims, "float32")

    inputs = [sig(v) for v in proto.graph.input if v.name not in inits]
    outputs = [sig(v) for v in proto.graph.output]
    return ModelIO(inputs, outputs, notes=list(options.extra_notes))


# ---------------------------------------------------------------- errors that name the module


def export_error(exc: Exception, model: Any, args: tuple, opset: int) -> ConversionError:
    text = str(exc)
    match = re.search(r"operator '(aten::[\w.]+|prim::\w+)'", text) or re.search(r"\b(aten::\w+)", text)
    if not match:
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return ConversionError(f"torch -> ONNX export failed: {first}",
                               hint="run with --debug for the exporter's trace; every op must have an ONNX form")
    op = match.group(1)
    modules = modules_using_op(model, args, op)
    where = f" in module {', '.join(modules[:3])}" if modules else ""
    return ConversionError(
        f"op '{op}'{where} cannot be exported to ONNX opset {opset}",
        hint=f"replace {op.split('::')[-1]} in that module with standard ops (conv, linear, add, mul, "
        "comparison, pooling, reshape), or raise the opset if a newer one supports it",
    )


def modules_using_op(model: Any, args: tuple, op: str) -> list[str]:
    """Module paths (with class) whose traced graph calls `op`, e.g. 'features.1.1 (Odd)'."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, args, check_trace=False)
    except Exception:
        return []
    found: list[str] = []
    classes = {n: type(m).__name__ for n, m in model.named_modules()}
    for node in traced.inlined_graph.nodes():
        if node.kind() != op:
            continue
        scope = node.scopeName().split("/")[-1].removeprefix("__module.") if node.scopeName() else ""
        label = f"{scope} ({classes.get(scope, '?')})" if scope else f"(top level of {type(model).__name__}.forward)"
        if label not in found:
            found.append(label)
    return found


def check_graph(proto: Any, model: Any, calls: Sequence[str]) -> None:
    """No custom or Python ops may remain (a custom autograd Function without an ONNX form)."""
    module_names = [n for n, _ in model.named_modules() if n]
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in ("PythonOp", "ATen"):
            module = module_for_node(node.name, module_names, calls) or "?"
            raise ConversionError(
                f"the ONNX graph holds a non-standard op '{node.domain + '::' if node.domain else ''}{node.op_type}' "
                f"(node {node.name}, module {module})",
                hint="custom autograd Functions must not run in export mode: write the forward with standard ops",
            )


# ---------------------------------------------------------------- node -> module mapping


def module_call_order(model: Any, args: tuple) -> list[str]:
    """Names of the modules in the order their forward() is called on `args`."""
    import torch

    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(lambda _m, _i, name=name: order.append(name)))
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return order


def module_for_node(node_name: str, module_names: Sequence[str], calls: Sequence[str]) -> str | None:
    """The torch module an ONNX node came from, from its scoped name ('/features/conv_8/Conv').

    The exporter names scopes by a module's short name plus a call index ('conv_8' = the 9th
    call of a module called 'conv'); the call order recorded by `module_call_order` tells
    which of several same-named modules that call was."""
    parts = [p for p in node_name.split("/") if p][:-1]
    if not parts:
        return None
    last = parts[-1]
    names = set(module_names)
    # the innermost enclosing scope that is a full module path ('/units/units.2/tcn/Conv')
    prefix = next((p for p in reversed(parts[:-1]) if p in names), None)
    for short, idx in _scope_readings(last):
        candidates = [n for n in module_names if n == short or n.endswith("." + short)]
        if prefix is not None:
            candidates = [c for c in candidates if c.startswith(prefix + ".")] or candidates
        elif parts[0] != last:
            top = _scope_readings(parts[0])[-1][0]
            narrowed = [c for c in candidates if c == top or c.startswith(top + ".") or f".{top}." in f".{c}"]
            candidates = narrowed or candidates
        if not candidates:
            continue
        if len(candidates) == 1:
            return candidates[0]
        ordered = [c for c in calls if c in candidates]
        if idx < len(ordered):
            return ordered[idx]
        return candidates[0]
    return None


def _scope_readings(component: str) -> list[tuple[str, int]]:
    """'conv_8' -> [('conv_8', 0), ('conv', 8)]: a module may itself be named with a suffix."""
    readings = [(component, 0)]
    match = re.match(r"^(.*)_(\d+)$", component)
    if match:
        readings.append((match.group(1), int(match.group(2))))
    return readings
