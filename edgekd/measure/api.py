"""`edgekd profile`: deploy, run the agent on the device, and bring back accuracy and latency.

Per target the result is an artifact directory: results.json (summary), samples.jsonl (every
per-inference latency and output as the device reported it) and manifest.json. A run that is cut
short (the agent killed, the link dropped, Ctrl-C) keeps what arrived in results.json marked
"incomplete" and writes no manifest; the device keeps a progress file, so the rerun resumes.
"""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import atomic_write_json, atomic_write_text, sha256_file, stage_dir
from edgekd.errors import DeviceError, EdgekdError, UsageError
from edgekd.measure.latency import latency_stats
from edgekd.runners.base import StreamingProcess
from edgekd.runners.deploy import ModelBundle, bind_eval_inputs, deploy_bundle, resolve_bundle
from edgekd.targets import TargetSpec


@dataclass
class ProfileSettings:
    runs: int = 100
    warmup: int = 10
    min_time_s: float = 1.0
    idle_timeout_s: float = 120.0
    power: bool = False

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0 or self.min_time_s < 0:
            raise UsageError(f"runs must be >= 1, warmup and min-time >= 0 (got {self.runs}, {self.warmup}, {self.min_time_s})")


@dataclass
class TargetResult:
    target: str
    status: str                      # complete | incomplete | failed
    out_dir: str | None = None
    error: str | None = None
    hint: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---------------------------------------------------------------- host reference


def host_outputs(model: Path, inputs: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
    """The same model on this host's TFLite runtime (or onnxruntime), for on-device agreement.

    inputs: {name: (N, ...)} in the model file's layout (one array: a single-input model); they are
    bound to the model's inputs as the agent binds them on the device (by name, else shape)."""
    from edgekd.agent import edgekd_agent as agent

    if isinstance(inputs, np.ndarray):
        inputs = {"x": inputs}
    try:
        engine = agent.open_model(str(model), "tflite", 1)
    except agent.AgentError as exc:
        raise DeviceError(f"cannot run {model.name} on this host: {exc.message}", hint=exc.hint) from None
    bind_eval_inputs(engine, model, inputs)
    arrays = list(inputs.values())
    outs = []
    for i in range(len(arrays[0])):
        engine.invoke(engine.prepare([x[i:i + 1] for x in arrays]))
        outs.append(engine.output())
    return np.stack(outs)


# ---------------------------------------------------------------- one target


def _inputs_sha(inputs: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name, x in inputs.items():
        digest.update(f"{name}:{list(x.shape)}:".encode())
        digest.update(np.ascontiguousarray(x).tobytes())
    return digest.hexdigest()


def _run_key(model_sha: str, inputs_sha: str, spec: TargetSpec) -> str:
    text = f"{model_sha}:{inputs_sha}:{spec.runtime.engine}:{spec.runtime.threads}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def profile_target(spec: TargetSpec, bundle: ModelBundle, settings: ProfileSettings, out_dir: Path,
                   reference: np.ndarray | None, on_start: Callable[[StreamingProcess], None] | None = None) -> TargetResult:
    from edgekd.runners import open_transport

    if bundle.eval_inputs is None:
        raise UsageError("profile needs evaluation inputs", hint="pass --eval FILE.npz (x, y) or a convert artifact directory")
    model_sha = sha256_file(bundle.model)
    inputs_sha = _inputs_sha(bundle.eval_inputs)
    params = {
        "target": spec.name, "engine": spec.runtime.engine, "threads": spec.runtime.threads,
        "runs": settings.runs, "warmup": settings.warmup, "min_time_s": settings.min_time_s,
        "model": bundle.model.name, "format": bundle.fmt or bundle.model.suffix.lstrip("."),
        "model_bytes": bundle.model.stat().st_size, "samples": bundle.samples,
        "inputs": {name: list(x.shape[1:]) for name, x in bundle.eval_inputs.items()},
    }
    collected: dict[str, Any] = {"env": None, "first_ms": None, "samples": {}, "latency": [], "done": False,
                                 "resumed": 0, "error": None, "power": None, "power_idle": [],
                                 "power_samples": [], "markers": {}, "inferences_in_window": None,
                                 "power_error": None, "inputs_bound": None}
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("results.json", "samples.jsonl"):  # results of an earlier run must not pass for this one's
        (out_dir / stale).unlink(missing_ok=True)
    with stage_dir(out_dir, "profile", params=params, inputs={"model": bundle.model}) as sd:
        try:
            with open_transport(spec) as transport:
                deployment = deploy_bundle(transport, spec, bundle)
                run_key = _run_key(model_sha, inputs_sha, spec)
                argv = [
                    transport.python(), deployment.agent, "run", "--model", deployment.model,
                    *deployment.agent_input_args(), "--engine", spec.runtime.engine,
                    "--threads", spec.runtime.threads, "--warmup", settings.warmup, "--runs", settings.runs,
                    "--min-time", settings.min_time_s, "--progress", f"{deployment.workdir}/progress/{run_key}.jsonl",
                    "--run-key", run_key, "--watch-stdin",
                ] + (_power_args(spec) if settings.power else [])
                transport.run(["mkdir", "-p", f"{deployment.workdir}/progress"], timeout_s=60)
                process = transport.start(argv)
                if on_start is not None:
                    on_start(process)
                try:
                    for line in process.lines(settings.idle_timeout_s):
                        _collect(line, collected)
                    code = process.wait()
                except BaseException:
                    process.terminate()
                    raise
                if collected["error"]:
                    err = collected["error"]
                    raise DeviceError(f"{spec.name}: {err['message']}", hint=err.get("hint"))
                if not collected["done"]:
                    tail = process.stderr.strip().splitlines()[-1:] or [f"exit {code}"]
                    raise DeviceError(
                        f"{spec.name}: the agent stopped after {len(collected['samples'])} of {bundle.samples} samples ({tail[0]})",
                        hint="partial results are kept; run the same command again to resume",
                    )
        except (EdgekdError, KeyboardInterrupt):
            if collected["samples"] or collected["latency"]:
                summary = _summarise(collected, bundle, reference, complete=False)
                _write_results(sd.path, params, summary, collected, status="incomplete")
            raise
        summary = _summarise(collected, bundle, reference, complete=True)
        _write_results(sd.path, params, summary, collected, status="complete")
        sd.add_output("results.json", sd.path / "results.json")
        sd.add_output("samples.jsonl", sd.path / "samples.jsonl")
        sd.set_metrics(**{k: v for k, v in summary.items() if isinstance(v, (int, float)) or v is None})
    return TargetResult(spec.name, "complete", str(out_dir), summary=summary)


def _collect(line: str, collected: dict[str, Any]) -> None:
    if not line.startswith("{"):
        return
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return  # a line cut by a dying agent
    kind = obj.get("type")
    if kind == "env":
        collected["env"] = obj
    elif kind == "inputs":
        collected["inputs_bound"] = obj["bound"]
    elif kind == "first":
        collected["first_ms"] = obj["invoke_ms"]
    elif kind == "sample":
        collected["samples"][int(obj["i"])] = obj
    elif kind == "resume":
        collected["resumed"] = obj["already_done"]
    elif kind == "latency":
        collected["latency"].extend(obj["invoke_ms"])
    elif kind == "done":
        collected["done"] = True
    elif kind == "error":
        collected["error"] = obj
    elif kind == "power":
        collected["power"] = obj
    elif kind in ("power_idle", "power_samples"):
        collected[kind].extend(obj["samples"])
    elif kind == "marker":
        collected["markers"][obj["name"]] = obj["t"]
        if "inferences" in obj:
            collected["inferences_in_window"] = obj["inferences"]
    elif kind == "power_error":
        collected["power_error"] = obj["message"]


def _summarise(collected: dict[str, Any], bundle: ModelBundle, reference: np.ndarray | None, complete: bool) -> dict[str, Any]:
    samples = collected["samples"]
    idx = np.array(sorted(samples), dtype=np.int64)
    summary: dict[str, Any] = {"samples_done": int(len(idx)), "samples_total": bundle.samples,
                               "resumed_from_device": collected["resumed"]}
    if len(idx):
        outputs = np.stack([np.asarray(samples[i]["output"], dtype=np.float32) for i in idx])
        pred = outputs.argmax(axis=1)
        if bundle.eval_y is not None:
            labels = bundle.eval_y[idx]
            summary["accuracy"] = float((pred == labels).mean())
            classes = max(int(outputs.shape[1]), int(labels.max()) + 1)
            confusion = np.zeros((classes, classes), dtype=np.int64)
            np.add.at(confusion, (labels, pred), 1)
            summary["confusion"] = confusion.tolist()
        if reference is not None:
            ref = reference[idx]
            summary["agreement_with_host"] = float((pred == ref.argmax(axis=1)).mean())
            summary["max_abs_diff_vs_host"] = float(np.abs(outputs - ref).max())
        e2e = [samples[i]["e2e_ms"] for i in idx]
        summary["e2e_p50_ms"] = float(np.percentile(e2e, 50))
    stats = latency_stats(collected["latency"], collected["first_ms"])
    summary.update({f"latency_{k}" if not k.endswith("_ms") else k: v for k, v in stats.items()})
    summary.update(_energy_summary(collected))
    summary["complete"] = complete
    return summary


def _power_args(spec: TargetSpec) -> list[Any]:
    p = spec.power
    options = {k: v for k, v in {"i2c_bus": p.i2c_bus, "i2c_address": p.i2c_address,
                                  "shunt_ohms": p.shunt_ohms}.items() if v is not None}
    args: list[Any] = []
    for source in p.sources:
        args += ["--power", source]
    return args + ["--power-root", p.sysfs_root, "--power-rate", p.sample_hz, "--idle-s", p.idle_s,
                   "--power-options", json.dumps(options)]


def _energy_summary(collected: dict[str, Any]) -> dict[str, Any]:
    """Measured energy per inference, or why there is none."""
    from edgekd.errors import MeasurementError
    from edgekd.measure.power.base import PowerTrace
    from edgekd.measure.power.energy import energy_per_inference

    power = collected["power"]
    if power is None:
        return {}
    if not power.get("available"):
        return {"energy": None, "energy_note": "no power source: " + "; ".join(power.get("reasons", []))}
    if collected["power_error"]:
        return {"energy": None, "energy_note": f"the power source failed during the run: {collected['power_error']}"}
    trace = PowerTrace.from_pairs(collected["power_samples"], power["source"], collected["markers"])
    idle = PowerTrace.from_pairs(collected["power_idle"], power["source"]) if collected["power_idle"] else None
    try:
        result = energy_per_inference(trace, collected["inferences_in_window"] or 0, idle)
    except MeasurementError as exc:
        return {"energy": None, "energy_note": exc.message + (f" ({exc.hint})" if exc.hint else "")}
    return {"energy": result.to_dict(), "energy_mj": result.total_mj_per_inference,
            "dynamic_energy_mj": result.dynamic_mj_per_inference, "avg_power_w": result.avg_power_w}


def _write_results(path: Path, params: dict, summary: dict, collected: dict, status: str) -> None:
    atomic_write_json(path / "results.json", {"status": status, "params": params, "summary": summary,
                                              "env": collected["env"], "inputs_bound": collected["inputs_bound"]})
    if collected["power_samples"]:
        atomic_write_json(path / "power.json", {"source": (collected["power"] or {}).get("source"),
                                                "idle": collected["power_idle"], "samples": collected["power_samples"],
                                                "markers": collected["markers"]})
    lines = [json.dumps(collected["samples"][i]) for i in sorted(collected["samples"])]
    lines.append(json.dumps({"type": "latency", "invoke_ms": collected["latency"]}))
    atomic_write_text(path / "samples.jsonl", "\n".join(lines) + "\n")


# ---------------------------------------------------------------- several targets


def profile(artifact: str | os.PathLike, targets: Sequence[str], settings: ProfileSettings | None = None,
            eval_set: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
            targets_dirs: Sequence[str | os.PathLike] = ()) -> list[TargetResult]:
    """Profile one model on several targets in parallel; one TargetResult per target."""
    from edgekd.targets import get_target

    if not targets:
        raise UsageError("no target given", hint="add --target NAME (repeatable), e.g. --target local")
    if len(set(targets)) != len(targets):
        raise UsageError(f"a target is named twice: {', '.join(targets)}")
    settings = settings or ProfileSettings()
    specs = [get_target(t, targets_dirs) for t in targets]
    mcu = [s.name for s in specs if s.kind == "mcu"]
    if mcu:
        raise UsageError(f"{', '.join(mcu)}: microcontroller targets are profiled through their firmware",
                         hint="profile linux/host targets here")
    bundles = {s.name: resolve_bundle(artifact, s, eval_set) for s in specs}
    references: dict[Path, np.ndarray] = {}
    for b in bundles.values():
        if b.eval_inputs is not None and b.model.suffix == ".tflite" and b.model not in references:
            references[b.model] = host_outputs(b.model, b.eval_inputs)
    base = Path(out_dir) if out_dir else Path("runs") / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"

    running: list[StreamingProcess] = []

    def one(spec: TargetSpec) -> TargetResult:
        bundle = bundles[spec.name]
        try:
            return profile_target(spec, bundle, settings, base / spec.name, references.get(bundle.model), running.append)
        except EdgekdError as exc:
            status = "incomplete" if (base / spec.name / "results.json").exists() else "failed"
            summary = {}
            if status == "incomplete":
                summary = json.loads((base / spec.name / "results.json").read_text())["summary"]
            return TargetResult(spec.name, status, str(base / spec.name), exc.message, exc.hint, summary)

    if len(specs) == 1:
        return [one(specs[0])]
    # Ctrl-C reaches only this thread: stop every device run, let each worker keep its partial
    # results, then re-raise.
    pool = futures.ThreadPoolExecutor(max_workers=len(specs))
    jobs = [pool.submit(one, s) for s in specs]
    try:
        return [j.result() for j in jobs]
    except KeyboardInterrupt:
        for process in list(running):
            process.terminate()
        futures.wait(jobs, timeout=30)
        raise
    finally:
        pool.shutdown(wait=False)
