"""Deploy: put the agent, a model and its evaluation inputs into a target's workdir.

Only what changed is sent (sha256 on both sides). Before anything is sent, the evaluation arrays
are matched to the model's inputs (the agent's rule: by name, else a shape only they share; a
mismatch is a DataError) and the device is checked for what the agent needs: a missing piece
fails with the exact install command.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import atomic_write_bytes, read_manifest, sha256_file
from edgekd.errors import DataError, DeviceError, NotFoundError, UsageError
from edgekd.runners.base import Transport
from edgekd.runners.checks import AGENT_PATH, parse_agent_checks
from edgekd.targets import TargetSpec

MODEL_SUFFIXES = (".tflite", ".onnx")
# Which manifest output to deploy, in order of preference per engine.
FORMAT_PREFERENCE = {
    "tflite": ("tflite-int8", "tflite-fp16", "tflite-fp32", "tflite-dynamic-int8"),
    "edgetpu": ("edgetpu", "tflite-int8"),
    "tensorrt": ("onnx", "tflite-int8", "tflite-fp16"),
    "onnxruntime": ("onnx",),
}


@dataclass
class ModelBundle:
    """What a deploy sends: one model file and, optionally, an evaluation set: one float32 array
    (N, ...) per model input, by name, in the model file's input layout."""

    model: Path
    eval_inputs: dict[str, np.ndarray] | None = None
    eval_y: np.ndarray | None = None
    fmt: str = ""

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def samples(self) -> int:
        return len(next(iter(self.eval_inputs.values()))) if self.eval_inputs else 0


@dataclass
class Deployment:
    target: str
    workdir: str
    agent: str
    model: str
    inputs: dict[str, str] = field(default_factory=dict)  # evaluation array name -> path on the device
    inputs_check: str = ""
    sent: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def agent_input_args(self) -> list[str]:
        """The agent's `run` arguments naming the evaluation arrays."""
        return [a for name, path in self.inputs.items() for a in ("--input", name, path)]


def load_eval_set(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """An .npz as `edgekd convert` writes it: x (N, ...) for a single-input model, or x_<name> per
    input with input_names giving them; optional y (N,) labels. Returns ({name: float32 array}, y)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no evaluation set '{path}'")
    try:
        data = np.load(path, allow_pickle=False)
        files = list(data.files)
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})", hint="save it with numpy.savez(path, x=..., y=...)") from None
    hint = "save the inputs as x (N, ...) and labels as y (N,); several inputs as x_<name> each plus input_names"
    if "input_names" in files:
        names = [str(n) for n in np.atleast_1d(data["input_names"])]
        missing = [f"x_{n}" for n in names if f"x_{n}" not in files]
        if missing or not names:
            raise DataError(f"{path}: input_names lists {names} but {', '.join(missing) or 'nothing'} is missing "
                            f"(has {', '.join(files)})", hint=hint)
        inputs = {n: np.asarray(data[f"x_{n}"], dtype=np.float32) for n in names}
    elif "x" in files:
        inputs = {"x": np.asarray(data["x"], dtype=np.float32)}
    else:
        raise DataError(f"{path}: no array 'x' and no input_names (has {', '.join(files) or 'nothing'})", hint=hint)
    counts = {name: len(x) for name, x in inputs.items()}
    if len(set(counts.values())) != 1:
        raise DataError(f"{path}: the inputs disagree on the number of samples: {counts}")
    n = next(iter(counts.values()))
    y = np.asarray(data["y"]).astype(np.int64) if "y" in files else None
    if y is not None and len(y) != n:
        raise DataError(f"{path}: the inputs have {n} samples but y has {len(y)}")
    if n == 0:
        raise DataError(f"{path}: the evaluation set is empty")
    return inputs, y


def check_inputs(bundle: ModelBundle) -> str:
    """Before anything is sent or run: does the model take exactly the evaluation arrays?

    Matched as the device's agent will match them (by name, else by a shape only they share),
    with this host's runtime. A mismatch is a DataError. Returns what was checked; a model this
    host cannot open (an Edge TPU-compiled file, no runtime here) is left to the agent, which
    checks the same way on the device before running."""
    if bundle.eval_inputs is None:
        return "no evaluation inputs"
    from edgekd.agent import edgekd_agent as agent

    try:
        engine = agent.open_model(str(bundle.model), "tflite", 1)
    except (agent.AgentError, ValueError, RuntimeError) as exc:
        reason = exc.message if isinstance(exc, agent.AgentError) else str(exc).splitlines()[0]
        return f"not checked on this host ({reason}); the agent checks before running"
    bound = bind_eval_inputs(engine, bundle.model, bundle.eval_inputs)
    return "matched on this host: " + ", ".join(f"{m} <- {a}" for m, a in bound)


def bind_eval_inputs(engine: Any, model: Path, inputs: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """Bind evaluation arrays to an agent engine's inputs ([(model input, array)]); DataError if they do not fit."""
    from edgekd.agent import edgekd_agent as agent

    try:
        return engine.bind([(name, x.shape[1:]) for name, x in inputs.items()])
    except agent.AgentError as exc:
        raise DataError(f"{model.name} does not take this evaluation data: {exc.message}", hint=exc.hint) from None


def resolve_bundle(artifact: str | os.PathLike, spec: TargetSpec, eval_set: str | os.PathLike | None = None) -> ModelBundle:
    """A model file, or a convert artifact directory (the format the target prefers)."""
    artifact = Path(artifact)
    if artifact.is_file():
        if artifact.suffix not in MODEL_SUFFIXES:
            raise UsageError(f"'{artifact}' is not a model file ({', '.join(MODEL_SUFFIXES)})",
                             hint="pass a .tflite/.onnx file or a directory written by `edgekd convert`")
        model, fmt = artifact, ""
        if eval_set is None and (artifact.parent / "eval.npz").is_file():
            eval_set = artifact.parent / "eval.npz"
    elif artifact.is_dir():
        manifest = read_manifest(artifact)
        outputs = manifest.outputs
        allowed = [f for f in FORMAT_PREFERENCE.get(spec.runtime.engine, ()) if f in spec.runtime.formats]
        for fmt in allowed:
            if fmt in outputs:
                model = artifact / outputs[fmt]["path"]
                break
        else:
            raise UsageError(
                f"'{artifact}' has no model the target '{spec.name}' runs (it has {', '.join(outputs) or 'none'}; "
                f"the target runs {', '.join(allowed) or 'none of these'})",
                hint=f"convert for this target: edgekd convert ... --target {spec.name}",
            )
        if eval_set is None and "eval" in outputs:
            eval_set = artifact / outputs["eval"]["path"]
    else:
        raise NotFoundError(f"no model or artifact directory '{artifact}'")
    inputs = y = None
    if eval_set is not None:
        inputs, y = load_eval_set(eval_set)
    return ModelBundle(model=model, eval_inputs=inputs, eval_y=y, fmt=fmt)


def default_workdir(spec: TargetSpec) -> str:
    workdir = getattr(spec.transport, "workdir", None)
    if workdir:
        return workdir
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgekd" / "local-device"
    return str(cache)


def device_check(transport: Transport, spec: TargetSpec) -> None:
    """Fail with the device's own hint (the exact install command) when it lacks what we need."""
    res = transport.run([transport.python(), "-", "check"], timeout_s=120, stdin=AGENT_PATH.read_bytes())
    checks = parse_agent_checks(res.stdout)
    if not checks:
        detail = (res.stderr.strip() or res.stdout.strip() or f"exit {res.returncode}").splitlines()[-1]
        raise DeviceError(
            f"{spec.name}: the device agent did not start: {detail}",
            hint=f"install Python 3 on the device or set transport.python (now '{transport.python()}')",
        )
    failed = [c for c in checks if not c.ok]
    if failed:
        c = failed[0]
        raise DeviceError(f"{spec.name}: {c.name}: {c.detail}", hint=c.hint)


def remote_hashes(transport: Transport, paths: Sequence[str]) -> dict[str, str | None]:
    import json

    res = transport.run([transport.python(), "-", "hashes", *paths], timeout_s=120, stdin=AGENT_PATH.read_bytes())
    for line in res.stdout.splitlines():
        if line.startswith("{"):
            obj = json.loads(line)
            if obj.get("type") == "hashes":
                return obj["files"]
    raise DeviceError(f"{transport.describe()}: could not read file hashes: {res.stderr.strip()[-300:]}")


def inputs_file(x: np.ndarray, cache_dir: Path) -> Path:
    """The evaluation inputs as an .npy (the agent memory-maps it), named by content."""
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes() + str(x.shape).encode()).hexdigest()[:16]
    path = cache_dir / f"inputs-{digest}.npy"
    if not path.exists():
        # a temporary file of its own per writer: targets profiled in parallel write the same inputs
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(x, dtype=np.float32))
        atomic_write_bytes(path, buf.getvalue())
    return path


def deploy_bundle(transport: Transport, spec: TargetSpec, bundle: ModelBundle, check: bool = True) -> Deployment:
    inputs_check = check_inputs(bundle)  # a model that does not take the data fails before anything is sent
    if check:
        device_check(transport, spec)
    workdir = transport.expand(default_workdir(spec))
    model_sha = sha256_file(bundle.model)
    files: dict[str, Path] = {
        f"{workdir}/edgekd_agent.py": AGENT_PATH,
        f"{workdir}/device_power.py": AGENT_PATH.with_name("device_power.py"),
        f"{workdir}/models/{model_sha[:12]}-{bundle.model.name}": bundle.model,
    }
    inputs_remote: dict[str, str] = {}
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgekd" / "inputs"
    for name, x in (bundle.eval_inputs or {}).items():
        local_inputs = inputs_file(x, cache)
        inputs_remote[name] = f"{workdir}/data/{local_inputs.name}"
        files[inputs_remote[name]] = local_inputs
    remote = remote_hashes(transport, list(files))
    deployment = Deployment(
        target=spec.name, workdir=workdir, agent=f"{workdir}/edgekd_agent.py",
        model=f"{workdir}/models/{model_sha[:12]}-{bundle.model.name}", inputs=inputs_remote,
        inputs_check=inputs_check,
    )
    for dest, local in files.items():
        if remote.get(dest) == sha256_file(local):
            deployment.unchanged.append(dest)
        else:
            transport.put(local, dest)
            deployment.sent.append(dest)
    return deployment


def deploy(artifact: str | os.PathLike, target: str, targets_dirs: Sequence[str | os.PathLike] = (),
           eval_set: str | os.PathLike | None = None) -> Deployment:
    """`edgekd deploy`: check the device, then send agent, model and evaluation inputs."""
    from edgekd.runners import open_transport
    from edgekd.targets import get_target

    spec = get_target(target, targets_dirs)
    if spec.kind == "mcu":
        raise UsageError(f"'{spec.name}' is a microcontroller target: it is deployed as firmware",
                         hint="microcontroller deploys go through the firmware builder")
    bundle = resolve_bundle(artifact, spec, eval_set)
    with open_transport(spec) as transport:
        return deploy_bundle(transport, spec, bundle)
