"""Deploy: put the agent, a model and its evaluation inputs into a target's workdir.

Only what changed is sent (sha256 on both sides). Before anything is sent, the device is checked
for what the agent needs, and a missing piece fails with the exact install command.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.artifacts import read_manifest, sha256_file
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
    """What a deploy sends: one model file and, optionally, an evaluation set."""

    model: Path
    eval_x: np.ndarray | None = None
    eval_y: np.ndarray | None = None
    fmt: str = ""

    @property
    def name(self) -> str:
        return self.model.name


@dataclass
class Deployment:
    target: str
    workdir: str
    agent: str
    model: str
    inputs: str | None
    sent: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def load_eval_set(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """An .npz with x (N, ...) float32 in the model's input layout and optional y (N,) labels."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no evaluation set '{path}'")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})", hint="save it with numpy.savez(path, x=..., y=...)") from None
    if "x" not in data:
        raise DataError(f"{path}: no array 'x' (has {', '.join(data.files) or 'nothing'})",
                        hint="save the inputs as x (N, ...) and labels as y (N,)")
    x = np.asarray(data["x"], dtype=np.float32)
    y = np.asarray(data["y"]).astype(np.int64) if "y" in data else None
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise DataError(f"{path}: the evaluation set is empty")
    return x, y


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
    x = y = None
    if eval_set is not None:
        x, y = load_eval_set(eval_set)
    return ModelBundle(model=model, eval_x=x, eval_y=y, fmt=fmt)


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
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part.npy")
        np.save(tmp, np.ascontiguousarray(x, dtype=np.float32))
        tmp.replace(path)
    return path


def deploy_bundle(transport: Transport, spec: TargetSpec, bundle: ModelBundle, check: bool = True) -> Deployment:
    if check:
        device_check(transport, spec)
    workdir = transport.expand(default_workdir(spec))
    model_sha = sha256_file(bundle.model)
    files: dict[str, Path] = {
        f"{workdir}/edgekd_agent.py": AGENT_PATH,
        f"{workdir}/device_power.py": AGENT_PATH.with_name("device_power.py"),
        f"{workdir}/models/{model_sha[:12]}-{bundle.model.name}": bundle.model,
    }
    inputs_remote = None
    if bundle.eval_x is not None:
        local_inputs = inputs_file(bundle.eval_x, Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgekd" / "inputs")
        inputs_remote = f"{workdir}/data/{local_inputs.name}"
        files[inputs_remote] = local_inputs
    remote = remote_hashes(transport, list(files))
    deployment = Deployment(
        target=spec.name, workdir=workdir, agent=f"{workdir}/edgekd_agent.py",
        model=f"{workdir}/models/{model_sha[:12]}-{bundle.model.name}", inputs=inputs_remote,
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
