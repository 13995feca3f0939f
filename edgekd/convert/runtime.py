"""Run a model in each of its formats on the same samples, for the parity checks.

Inputs are always given in the model's own layout as {input name: (N, *shape[1:])} float32
arrays; each runner puts them in the layout and dtype its format expects (TFLite: the
channel-last order recorded in ModelIO, int8 quantization with the model's own scale/zero
point) and returns float32 scores (N, K). Models have static batch-1 shapes, so samples run
one at a time, as on the device.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.convert.layout import ModelIO, to_tflite_layout
from edgekd.errors import ConversionError, MissingDependencyError

Inputs = Mapping[str, np.ndarray]
Progress = Callable[[int], None] | None


def num_samples(inputs: Inputs) -> int:
    counts = {len(v) for v in inputs.values()}
    if len(counts) != 1:
        raise ConversionError(f"inputs disagree on the number of samples: {sorted(counts)}")
    return counts.pop()


def subset(inputs: Inputs, idx: Any) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in inputs.items()}


# ---------------------------------------------------------------- torch


def predict_torch(model: Any, inputs: Inputs, names: Sequence[str], batch_size: int = 32,
                  progress: Progress = None) -> np.ndarray:
    import torch

    n = num_samples(inputs)
    outs = []
    model.eval()
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = [torch.from_numpy(np.ascontiguousarray(inputs[k][start : start + batch_size])) for k in names]
            y = model(*batch)
            outs.append(single_output(y).float().cpu().numpy())
            if progress:
                progress(len(batch[0]))
    return np.concatenate(outs).astype(np.float32)


def single_output(y: Any) -> Any:
    if isinstance(y, (tuple, list)):
        if len(y) != 1:
            raise ConversionError(
                f"the model returns {len(y)} outputs; the conversion chain expects one score tensor",
                hint="export a wrapper whose forward returns only the class scores (N, K)",
            )
        return y[0]
    if isinstance(y, dict):
        raise ConversionError("the model returns a dict; the conversion chain expects one score tensor (N, K)")
    return y


# ---------------------------------------------------------------- onnxruntime


def onnx_session(path: str | Path, threads: int = 1) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError("onnxruntime is not installed", hint="pip install 'edgekd[convert]'") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def predict_onnx(path: str | Path, inputs: Inputs, progress: Progress = None, threads: int = 1) -> np.ndarray:
    sess = onnx_session(path, threads)
    names = [i.name for i in sess.get_inputs()]
    missing = [k for k in names if k not in inputs]
    if missing:
        raise ConversionError(f"{path}: no data for ONNX input(s) {missing} (have {sorted(inputs)})")
    batch = sess.get_inputs()[0].shape[0]
    step = batch if isinstance(batch, int) and batch > 0 else 1
    n = num_samples(inputs)
    outs = []
    for start in range(0, n, step):
        feed = {k: np.ascontiguousarray(inputs[k][start : start + step], dtype=np.float32) for k in names}
        outs.append(sess.run(None, feed)[0])
        if progress:
            progress(step)
    return np.concatenate(outs).astype(np.float32)


class OnnxIntermediates:
    """An ONNX model with every node output exposed, to read intermediate activations
    (per-layer parity, TensorRT calibration ranges). Built in memory; the file is unchanged."""

    def __init__(self, path: str | Path, threads: int = 1):
        import onnx

        proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
        typed = {v.name: v for v in list(proto.graph.value_info) + list(proto.graph.output)}
        existing = {o.name for o in proto.graph.output}
        self.producers: dict[str, tuple[str, str]] = {}  # tensor -> (node name, op type)
        for node in proto.graph.node:
            for out in node.output:
                self.producers[out] = (node.name, node.op_type)
                if out in typed and out not in existing and node.op_type != "Constant":
                    proto.graph.output.append(typed[out])
                    existing.add(out)
        self.session = onnx_session_from_bytes(proto.SerializeToString(), threads)
        self.names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run_one(self, sample: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{tensor name: value} for one sample given with its batch axis (1, ...)."""
        feed = {k: np.ascontiguousarray(sample[k], dtype=np.float32) for k in self.input_names}
        return dict(zip(self.names, self.session.run(None, feed)))


def onnx_session_from_bytes(model: bytes, threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- TFLite (ai-edge-litert)


def litert_interpreter(path: str | Path, threads: int = 1, preserve_all_tensors: bool = False,
                       reference_kernels: bool = False, delegates: bool = True) -> Any:
    """ai-edge-litert's Interpreter, allocated. delegates=False: TFLite's built-in kernels
    only (no XNNPACK), whose int8 arithmetic TFLite Micro and the firmware reproduce."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise MissingDependencyError(
            "ai-edge-litert (the TFLite runtime) is not installed", hint="pip install 'edgekd[convert]'"
        ) from None
    resolver = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
    if (preserve_all_tensors or not delegates) and not reference_kernels:
        # a delegate (XNNPACK) would compute its partition's intermediates out of sight
        resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    from edgekd.convert.logs import capture_native_output

    # the runtime announces its delegate on stderr; the debug-only warning of preserve_all_tensors
    with warnings.catch_warnings(), capture_native_output(None):
        warnings.simplefilter("ignore")
        try:
            interp = Interpreter(
                model_path=str(path), num_threads=threads,
                experimental_op_resolver_type=resolver,
                experimental_preserve_all_tensors=preserve_all_tensors,
            )
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ConversionError(f"{path}: the TFLite runtime cannot load this model: {exc}",
                                  hint="check the op inventory (ops.json) for ops the runtime lacks") from None
    return interp


def tflite_name(name: str) -> str:
    """'serving_default_frames:0' -> 'frames' (the SavedModel signature prefix and port)."""
    from edgekd.agent.edgekd_agent import tensor_name

    return tensor_name(name)


def match_inputs(details: Sequence[Mapping[str, Any]], io: ModelIO) -> dict[str, Mapping[str, Any]]:
    """Our input name -> the TFLite input detail: by name, else by a shape only they share (the
    device agent's rule, so the host and the device bind inputs alike)."""
    from edgekd.agent import edgekd_agent as agent

    try:
        feed = agent.match_inputs([(d["name"], d["shape"]) for d in details],
                                  [(s.name, s.tflite_shape[1:]) for s in io.inputs])
    except agent.AgentError as exc:
        raise ConversionError(
            f"cannot tell which TFLite input is which: {exc.message}; TFLite inputs are "
            f"{[(d['name'], list(d['shape'])) for d in details]}",
            hint="give the model's inputs distinct names and shapes",
        ) from None
    return {io.inputs[j].name: details[k] for k, j in enumerate(feed)}


def quantize(x: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype in (np.float32, np.float16):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    if not scale:
        raise ConversionError(f"TFLite input {detail['name']} is {np.dtype(dtype).name} without quantization parameters")
    from edgekd.agent.edgekd_agent import quantize as tflite_quantize  # one rule on the host and the device

    return tflite_quantize(x, scale, zero, dtype)


def dequantize(q: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    if q.dtype in (np.float32, np.float16, np.float64):
        return q.astype(np.float32)
    if q.dtype == np.bool_:
        return q.astype(np.float32)
    scale, zero = detail.get("quantization", (0.0, 0))
    if not scale:
        return q.astype(np.float32)
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


class TFLiteRunner:
    """One TFLite model in ai-edge-litert, fed in model layout, answering float scores."""

    def __init__(self, path: str | Path, io: ModelIO, threads: int = 1, preserve_all_tensors: bool = False,
                 reference_kernels: bool = False, delegates: bool = True):
        self.path = Path(path)
        self.io = io
        self.delegate_error: str | None = None
        try:
            self.interp = litert_interpreter(path, threads, preserve_all_tensors, reference_kernels, delegates)
        except ConversionError as exc:
            if not delegates or reference_kernels or preserve_all_tensors or "XNNPACK" not in exc.message:
                raise
            # XNNPACK refuses some int8 graphs at prepare time; the built-in kernels run them
            self.delegate_error = exc.message.rsplit("cannot load this model: ", 1)[-1]
            self.interp = litert_interpreter(path, threads, delegates=False)
        self.inputs = match_inputs(self.interp.get_input_details(), io)
        outs = self.interp.get_output_details()
        if len(outs) != 1:
            raise ConversionError(f"{path}: {len(outs)} outputs; expected one score tensor")
        self.output = outs[0]
        for sig in io.inputs:
            got = tuple(self.inputs[sig.name]["shape"])
            if got != sig.tflite_shape:
                raise ConversionError(
                    f"{path}: input '{sig.name}' has shape {list(got)} but the signature says "
                    f"{list(sig.tflite_shape)} (model layout {list(sig.shape)}, perm {sig.tflite_perm})",
                    hint="reconvert; the recorded layout does not belong to this model",
                )

    @property
    def input_dtypes(self) -> dict[str, str]:
        return {k: np.dtype(d["dtype"]).name for k, d in self.inputs.items()}

    @property
    def output_dtype(self) -> str:
        return np.dtype(self.output["dtype"]).name

    def output_step(self) -> float | None:
        """The quantization step of an integer output (None for float outputs)."""
        scale, _zero = self.output.get("quantization", (0.0, 0))
        return float(scale) if np.dtype(self.output["dtype"]).kind in "iu" and scale else None

    def run_one(self, sample: Mapping[str, np.ndarray]) -> np.ndarray:
        """`sample`: {name: one sample in model layout, without the batch axis}."""
        for sig in self.io.inputs:
            x = to_tflite_layout(np.asarray(sample[sig.name], dtype=np.float32)[None], sig.tflite_perm)
            self.interp.set_tensor(self.inputs[sig.name]["index"], quantize(x, self.inputs[sig.name]))
        self.interp.invoke()
        return dequantize(self.interp.get_tensor(self.output["index"]), self.output)[0]

    def predict(self, inputs: Inputs, progress: Progress = None) -> np.ndarray:
        n = num_samples(inputs)
        outs = np.empty((n, *self.output["shape"][1:]), dtype=np.float32)
        for i in range(n):
            outs[i] = self.run_one({k: v[i] for k, v in inputs.items()})
            if progress:
                progress(1)
        return outs


def predict_tflite(path: str | Path, io: ModelIO, inputs: Inputs, progress: Progress = None, threads: int = 1) -> np.ndarray:
    return TFLiteRunner(path, io, threads=threads).predict(inputs, progress)
