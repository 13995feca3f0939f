"""Where the demo's model runs: in this process (PyTorch run directory, or .tflite/.onnx through
the device agent's own engine classes), or on a target through the agent's `stream` command
(the model deployed with edgekd.runners.deploy, frames streamed to the device, outputs back).

Every backend takes the rolling buffer of preprocessed frames and returns class probabilities
and the model's own latency (the engine's invoke, or torch's forward, in ms).
"""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ArtifactError, DeviceError, NotFoundError, UsageError
from edgekd.tasks.eye import CLASSES

EYE_ARCHS = {"eye-snn": "frame-only spiking student", "eye-hybrid": "event+frame teacher"}
EXPECTS = ("an eye-task model: a run directory of an eye-snn student or eye-hybrid teacher "
           "(`edgekd distill --recipe eye-mskd`), a .tflite/.onnx converted from one, or its `edgekd convert` directory")
MODEL_FILES = (".tflite", ".onnx")
# In-process inference uses one thread by default: a batch-1 eye model gains little from more,
# and the capture/draw loop needs the other core.
IN_PROCESS_THREADS = 1


@dataclass
class ModelInfo:
    kind: str  # torch | tflite | onnx
    path: Path  # run directory or model file
    frames: int  # T
    height: int
    width: int
    needs_events: bool = False
    arch: str | None = None
    fmt: str = ""
    where: str = "this host"
    tflite_perm: tuple[int, ...] | None = None  # frames (N, T, 1, H, W) -> the model file's layout
    first_ms: float | None = None  # the first inference (one-off set-up included)
    threads: int | None = None
    power: dict[str, Any] | None = None  # the target's power source: {"available", "source"} or the reasons
    classes: list[str] = field(default_factory=lambda: list(CLASSES))

    def describe(self) -> str:
        what = self.arch or self.path.name
        fmt = f" {self.fmt}" if self.fmt else ""
        return f"{what} ({self.kind}{fmt}) on {self.where}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "arch": self.arch, "format": self.fmt, "where": self.where,
                "frames": self.frames, "size": [self.height, self.width], "needs_events": self.needs_events,
                "first_ms": self.first_ms, "threads": self.threads, "power": self.power}


@dataclass
class Prediction:
    probs: np.ndarray  # (K,) softmax of the model's scores
    model_ms: float  # the model alone (invoke / forward)
    power_w: float | None = None  # the board's newest power sample (targets with a power source)


def softmax(scores: np.ndarray) -> np.ndarray:
    z = np.asarray(scores, dtype=np.float64).reshape(-1)
    z = np.exp(z - z.max())
    return (z / z.sum()).astype(np.float32)


def model_inputs(history: np.ndarray, info: ModelInfo) -> dict[str, np.ndarray]:
    """The last T frames as (1, T, 1, H, W); events (1, T, 2, H, W) synthesised from the last T+1
    frames when the model wants them (edgekd.data.events: the same pixel model as the data)."""
    frames = np.ascontiguousarray(history[-info.frames:][None, :, None], dtype=np.float32)
    out = {"frames": frames}
    if info.needs_events:
        from edgekd.data.events import event_frames

        out["events"] = event_frames(history[-(info.frames + 1):])[1:][None].astype(np.float32)
    return out


def history_length(info: ModelInfo) -> int:
    return info.frames + (1 if info.needs_events else 0)


class Backend:
    info: ModelInfo

    def predict(self, history: np.ndarray) -> Prediction:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def warm_up(self) -> None:
        """One inference on a blank buffer: checks the output size and keeps the one-off set-up
        (allocation, delegate compile, the device link) out of the measured latency."""
        t0 = time.perf_counter()
        pred = self.predict(np.zeros((history_length(self.info), self.info.height, self.info.width), np.float32))
        self.info.first_ms = (time.perf_counter() - t0) * 1e3
        if pred.probs.size != len(CLASSES):
            raise UsageError(f"'{self.info.path}' gives {pred.probs.size} scores, but the eye task has {len(CLASSES)} "
                             f"classes ({', '.join(CLASSES)})", hint=f"the eye-camera demo needs {EXPECTS}")


# ---------------------------------------------------------------- in-process


class TorchBackend(Backend):
    def __init__(self, model: Any, info: ModelInfo, threads: int):
        import torch

        self._threads_before = torch.get_num_threads()  # restored on close: the process's setting
        torch.set_num_threads(threads)
        info.threads = threads
        self.torch = torch
        self.model = model.eval()
        self.info = info

    def predict(self, history: np.ndarray) -> Prediction:
        inputs = model_inputs(history, self.info)
        tensors = [self.torch.from_numpy(inputs[name]) for name in self.model.input_names]
        t0 = time.perf_counter()
        with self.torch.no_grad():
            scores = self.model(*tensors)
        ms = (time.perf_counter() - t0) * 1e3
        return Prediction(softmax(scores.numpy()), ms)

    def close(self) -> None:
        self.torch.set_num_threads(self._threads_before)


class EngineBackend(Backend):
    """A .tflite/.onnx run by the agent's engine classes (the code the device runs), in-process."""

    def __init__(self, path: Path, info: ModelInfo, threads: int):
        from edgekd.agent import edgekd_agent as agent

        try:
            self.engine = agent.open_model(str(path), "tflite", threads)
        except agent.AgentError as exc:
            raise DeviceError(f"cannot run {path.name} on this host: {exc.message}", hint=exc.hint) from None
        except ValueError as exc:  # the runtime rejects the file
            raise ArtifactError(f"'{path}' is not a model the TFLite runtime can load ({exc})",
                                hint=f"the eye-camera demo needs {EXPECTS}") from None
        self.info = info
        info.threads = threads
        _fill_layout(info, [int(d) for d in self.engine.input_shape])

    def predict(self, history: np.ndarray) -> Prediction:
        from edgekd.convert.layout import to_tflite_layout

        x = to_tflite_layout(model_inputs(history, self.info)["frames"], self.info.tflite_perm)
        tensor = self.engine.prepare(x)
        t0 = time.perf_counter()
        self.engine.invoke(tensor)
        ms = (time.perf_counter() - t0) * 1e3
        return Prediction(softmax(self.engine.output()), ms)


# ---------------------------------------------------------------- on a target


class AgentStreamBackend(Backend):
    """The model on a target: deployed once, then one JSON line per window to the agent's
    `stream` command and one line back. model_ms is the device's own invoke time."""

    def __init__(self, model_file: Path, info: ModelInfo, target: str, targets_dirs: Any, threads: int | None,
                 idle_timeout_s: float = 60.0):
        from edgekd.runners import open_transport
        from edgekd.runners.deploy import ModelBundle, deploy_bundle
        from edgekd.targets import get_target

        self.spec = get_target(target, targets_dirs)
        self.info = info
        info.threads = threads or self.spec.runtime.threads
        self.idle_timeout_s = idle_timeout_s
        self.transport = open_transport(self.spec)
        self.process = None
        try:
            deployment = deploy_bundle(self.transport, self.spec, ModelBundle(model=model_file, fmt=info.fmt))
            argv = [self.transport.python(), deployment.agent, "stream", "--model", deployment.model,
                    "--engine", self.spec.runtime.engine, "--threads", str(info.threads)]
            if [s for s in self.spec.power.sources if s != "none"]:
                from edgekd.measure.api import _power_args  # the same power options `edgekd profile --power` passes

                argv += [str(a) for a in _power_args(self.spec)]
            self.process = self.transport.start(argv)
            self._lines = self.process.lines(idle_timeout_s)
            ready = self._next_line(("ready",))
            _fill_layout(info, [int(d) for d in ready["input_shape"]])
        except BaseException:
            self.close()
            raise
        self._sent = 0

    def _next_line(self, kinds: tuple[str, ...]) -> dict[str, Any]:
        for line in self._lines:
            if not line.startswith("{"):
                continue
            obj = json.loads(line)
            if obj.get("type") in kinds:
                return obj
            if obj.get("type") == "power":
                self.info.power = {k: v for k, v in obj.items() if k != "type"}
            if obj.get("type") == "error" and obj.get("i") is None:
                raise DeviceError(f"{self.spec.name}: {obj.get('message')}", hint=obj.get("hint"))
            if obj.get("type") == "error":
                raise DeviceError(f"{self.spec.name}: inference {obj.get('i')} failed: {obj.get('message')}")
        tail = (self.process.stderr.strip().splitlines() or ["(no message)"])[-1] if self.process else ""
        raise DeviceError(f"{self.spec.name}: the agent's stream ended: {tail}",
                          hint=f"run `edgekd targets check {self.spec.name}`")

    def predict(self, history: np.ndarray) -> Prediction:
        from edgekd.convert.layout import to_tflite_layout

        x = to_tflite_layout(model_inputs(history, self.info)["frames"], self.info.tflite_perm)
        buf = io.BytesIO()
        np.save(buf, x, allow_pickle=False)
        self._sent += 1
        request = json.dumps({"i": self._sent, "npy": base64.b64encode(buf.getvalue()).decode("ascii")}) + "\n"
        assert self.process is not None and self.process.proc.stdin is not None
        try:
            self.process.proc.stdin.write(request.encode())
            self.process.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise DeviceError(f"{self.spec.name}: the agent's stream closed ({exc}): {self.process.stderr.strip()[-300:]}") from None
        while True:
            out = self._next_line(("output",))
            if out.get("i") == self._sent:
                return Prediction(softmax(np.asarray(out["output"], np.float32)), float(out["invoke_ms"]), out.get("power_w"))

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process = None
        self.transport.close()


# ---------------------------------------------------------------- opening a model


def _fill_layout(info: ModelInfo, model_shape: list[int]) -> None:
    """T, H, W and the axis order from the model file's input shape, unless io.json gave them."""
    if info.tflite_perm is not None:
        expected = tuple((1, info.frames, 1, info.height, info.width)[p] for p in info.tflite_perm)
        if tuple(model_shape) != expected:
            raise ArtifactError(f"'{info.path}' takes input {model_shape}, but its io.json says {list(expected)}",
                                hint="reconvert the model; the recorded layout does not belong to it")
        return
    shape = tuple(model_shape)
    if len(shape) == 5 and shape[0] == 1 and shape[2] == 1 and shape[1] > 1:  # (1, T, 1, H, W): as in torch
        info.frames, info.height, info.width, info.tflite_perm = shape[1], shape[3], shape[4], (0, 1, 2, 3, 4)
    elif len(shape) == 5 and shape[0] == 1 and shape[1] == 1 and shape[4] > 1:  # (1, 1, H, W, T): onnx2tf's channel-last
        info.frames, info.height, info.width, info.tflite_perm = shape[4], shape[2], shape[3], (0, 2, 3, 4, 1)
    else:
        raise UsageError(f"'{info.path}' takes an input of shape {list(shape)}, not T eye frames "
                         "((1, T, 1, H, W) or onnx2tf's (1, 1, H, W, T))", hint=f"the eye-camera demo needs {EXPECTS}")


def _check_io(info: ModelInfo, io_path: Path) -> None:
    from edgekd.convert.layout import ModelIO

    model_io = ModelIO.load(io_path)
    names = model_io.input_names
    if "frames" not in names:
        raise UsageError(f"'{info.path}' takes inputs {names}, not eye frames", hint=f"the eye-camera demo needs {EXPECTS}")
    if names != ["frames"]:
        raise UsageError(f"'{info.path}' takes inputs {names}; converted models with event inputs (the teacher) "
                         "are not supported by the demo", hint="use the frame-only student, or the teacher's run directory (PyTorch)")
    sig = model_io.input("frames")
    if len(sig.shape) != 5 or sig.shape[2] != 1:
        raise UsageError(f"'{info.path}': frames input of shape {list(sig.shape)}, not (1, T, 1, H, W)",
                         hint=f"the eye-camera demo needs {EXPECTS}")
    info.frames, info.height, info.width = sig.shape[1], sig.shape[3], sig.shape[4]
    info.tflite_perm = tuple(sig.tflite_perm) if sig.tflite_perm is not None else tuple(range(5))


def _is_torch_run(path: Path) -> bool:
    if (path / "arch.json").is_file():
        return True
    return any((d / "arch.json").is_file() for d in path.iterdir() if d.is_dir())


def _torch_info(path: Path) -> tuple[Path, ModelInfo]:
    from edgekd.convert.api import find_model_dir
    from edgekd.tasks.eye import spec

    run = find_model_dir(path)
    try:
        arch = json.loads((run.model_dir / "arch.json").read_text()).get("arch")
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{run.model_dir / 'arch.json'}: not an edgekd architecture description ({exc})") from None
    if arch not in EYE_ARCHS:
        raise UsageError(f"'{run.model_dir}' holds a '{arch}' model, not an eye-task one", hint=f"the eye-camera demo needs {EXPECTS}")
    if run.recipe is not None and run.recipe.task != "eye":
        raise UsageError(f"'{run.model_dir}' was trained on the '{run.recipe.task}' task", hint=f"the eye-camera demo needs {EXPECTS}")
    default = spec().modalities["frames"].shape  # (T, 1, H, W)
    options = dict(run.recipe.data.options) if run.recipe is not None else {}
    frames, size = int(options.get("frames", default[0])), int(options.get("size", default[2]))
    info = ModelInfo("torch", run.model_dir, frames, size, size, needs_events=arch == "eye-hybrid", arch=arch, fmt="fp32")
    return run.model_dir, info


def _file_info(model_file: Path, fmt: str, io_path: Path | None) -> ModelInfo:
    kind = "onnx" if model_file.suffix == ".onnx" else "tflite"
    info = ModelInfo(kind, model_file, 0, 0, 0, fmt=fmt)
    if io_path is not None and io_path.is_file():
        _check_io(info, io_path)
    return info


def _io_beside(model_file: Path) -> Path | None:
    from edgekd.convert.layout import IO_FILE

    for folder in (model_file.parent, model_file.parent.parent):
        if (folder / IO_FILE).is_file():
            return folder / IO_FILE
    return None


def open_backend(model: str | Path, target: str | None = None, targets_dirs: Any = (), threads: int | None = None) -> Backend:
    """The model behind `--model` (a training run directory, a .tflite/.onnx, or a convert
    directory), run in-process (target None) or on `target` through the agent, warmed up."""
    from edgekd.targets import get_target

    path = Path(model)
    if not path.exists():
        raise NotFoundError(f"no model '{path}'", hint=f"the eye-camera demo needs {EXPECTS}")
    spec = get_target(target or "local", targets_dirs)
    if spec.kind == "mcu":
        raise UsageError(f"'{spec.name}' is a microcontroller target; the live demo streams frames to Linux/host targets",
                         hint="use a Linux board's target, or leave out --target to run on this host")
    if path.is_dir() and _is_torch_run(path):
        model_dir, info = _torch_info(path)
        if target is not None:
            raise UsageError(f"'{model_dir}' is a PyTorch run directory; a target runs converted models",
                             hint=f"convert it first: edgekd convert {model_dir} --target {spec.name}, then pass the convert directory")
        from edgekd.models import load_model

        backend: Backend = TorchBackend(load_model(model_dir), info, threads or IN_PROCESS_THREADS)
    else:
        if path.is_file() and path.suffix not in MODEL_FILES:
            raise UsageError(f"'{path}' is not a model file or run directory", hint=f"the eye-camera demo needs {EXPECTS}")
        from edgekd.runners.deploy import resolve_bundle

        bundle = resolve_bundle(path, spec)  # a file, or the format the target runs from a convert directory
        if path.is_dir():
            from edgekd.artifacts import read_manifest
            from edgekd.convert.layout import IO_FILE

            outputs = read_manifest(path).outputs
            io_path = path / outputs[IO_FILE]["path"] if IO_FILE in outputs else None
        else:
            io_path = _io_beside(path)
        info = _file_info(bundle.model, bundle.fmt, io_path)
        if target is None:
            backend = EngineBackend(bundle.model, info, threads or IN_PROCESS_THREADS)
        else:
            info.where = f"target {spec.name}"
            backend = AgentStreamBackend(bundle.model, info, target, targets_dirs, threads)
    try:
        backend.warm_up()
    except BaseException:
        backend.close()
        raise
    return backend
