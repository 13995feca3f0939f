"""Library entry points for microcontroller targets; the CLI and `edgekd deploy/profile` call these.

- `check_model`   which ops the firmware runtime runs, and TFLite Micro's arena for the model
- `build_mcu`     firmware for a target, its flash/RAM, next to TFLite Micro's arena
- `deploy_mcu`    build, check the limits, flash (real board) or boot (qemu), handshake
- `profile_mcu`   run evaluation inputs on the board: outputs, agreement with the TFLite int8
                  result, accuracy, cycles (qemu: instructions) or microseconds, flash and RAM

Every function returns a plain dict (JSON-serialisable).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import DataError, DeviceError, EdgekdError, MissingDependencyError, UsageError
from edgekd.firmware.build import DEFAULT_STACK, FirmwareBuild, build_firmware, flash_firmware, resolve_target
from edgekd.firmware.host import packed_inputs
from edgekd.targets import TargetSpec


# how much slower qemu runs with -icount than without, for time-outs (measured: inference 1.2x, UART bytes up to 4x)
ICOUNT_SLOWDOWN = 10.0


def default_out_dir(model: str | os.PathLike, target: str) -> Path:
    return Path("runs") / "firmware" / f"{Path(model).stem}-{target}"


# ====================================================================== model checks and the TFLM view


def tflm_view(model: str | os.PathLike) -> dict[str, Any]:
    """TFLite Micro's arena for the model (what a TFLM firmware would reserve), or why not."""
    from importlib import metadata

    from edgekd.convert.tflite2c import tflm_arena_bytes

    try:
        arena = tflm_arena_bytes(model)
    except MissingDependencyError as exc:
        return {"available": False, "error": exc.message, "hint": exc.hint}
    except Exception as exc:  # noqa: BLE001 - TFLM refusing a model is a result, not a crash
        return {"available": False, "error": str(exc)}
    try:
        version = metadata.version("tflite-micro")
    except metadata.PackageNotFoundError:
        version = None
    return {"available": True, "arena_bytes": arena, "version": version}


def default_reference(model: str | os.PathLike) -> str:
    """The flavour to build a model in when none is asked for: "tflite-cpu" for a model
    that `edgekd convert` made from an int8_exact student (its manifest says so), else "tflite"."""
    from edgekd.artifacts import MANIFEST_NAME, read_manifest
    from edgekd.convert.tflite2c import reference_for

    folder = Path(model).parent
    if not (folder / MANIFEST_NAME).exists():
        return "tflite"
    try:
        exact = bool(read_manifest(folder).metrics.get("int8_exact"))
    except (OSError, ValueError, EdgekdError):
        return "tflite"  # not a convert directory's manifest
    return reference_for(exact)


def check_model(model: str | os.PathLike, reference: str | None = None, with_tflm: bool = True,
                inputs: np.ndarray | Mapping[str, np.ndarray] | None = None, samples: int = 5) -> dict[str, Any]:
    """Can the runtime run the model (ops, arena, TFLite Micro's view)? With inputs, also every op
    of the host build against the same op alone in the interpreter the flavour reproduces
    (host.compare_ops): where a model that is not bit-exact computes differently."""
    import tempfile

    from edgekd.convert.tflite2c import check_ops, generate_c, load_graph

    reference = reference or default_reference(model)
    graph = load_graph(model)
    problems = check_ops(graph, reference)  # type: ignore[arg-type]
    out: dict[str, Any] = {
        "model": str(model),
        "ops": graph.op_counts(),
        "supported": not problems,
        "problems": [{"op_index": p.op_index, "op": p.op, "message": p.message} for p in problems],
    }
    if not problems:
        meta = generate_c(graph, reference=reference).metadata  # type: ignore[arg-type]
        out.update(arena_bytes=meta["arena_bytes"], weight_bytes=meta["weight_bytes"],
                   inputs=meta["inputs"], outputs=meta["outputs"])
    if with_tflm:
        out["tflm"] = tflm_view(model)
    if inputs is not None and not problems:
        from edgekd.firmware.host import compare_ops

        arrays = input_arrays(inputs, out["inputs"])
        with tempfile.TemporaryDirectory(prefix="edgekd-ops-") as tmp:
            out["ops_vs_interpreter"] = compare_ops(model, arrays, tmp, reference=reference, samples=samples)
        out["compared_with"] = _compared_with(reference)
    out["reference"] = reference
    return out


# ====================================================================== build


def build_mcu(model: str | os.PathLike, target: str | TargetSpec, out_dir: str | os.PathLike | None = None, *,
              reference: str | None = None, stack_bytes: int = DEFAULT_STACK, with_tflm: bool = True,
              targets_dir: Sequence[str | os.PathLike] | None = None, force: bool = False) -> dict[str, Any]:
    reference = reference or default_reference(model)
    spec = resolve_target(target, list(targets_dir or []))
    out = Path(out_dir) if out_dir else default_out_dir(model, spec.name)
    build = build_firmware(model, spec, out, reference=reference, stack_bytes=stack_bytes, force=force)
    result = build.to_dict()
    result["limits"] = {"flash_bytes": (spec.limits.flash_kb or 0) * 1024 or None,
                        "ram_bytes": (spec.limits.ram_kb or 0) * 1024 or None}
    if with_tflm:
        result["tflm"] = tflm_view(model)
        if result["tflm"].get("available"):
            t = result["tflm"]["arena_bytes"]
            result["comparison"] = {
                "edgekd_arena_bytes": build.sizes["arena_bytes"],
                "edgekd_ram_bytes": build.sizes["ram_bytes"],
                "tflm_arena_bytes": t,
                "arena_ratio": build.sizes["arena_bytes"] / t if t else None,
            }
    return result


# ====================================================================== connecting


@contextlib.contextmanager
def connect(build: FirmwareBuild, spec: TargetSpec, *, traffic_path: str | os.PathLike | None = None,
            flash: bool = True, icount: bool = True) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A protocol client for the board running `build`: qemu boots the ELF; a serial board is
    flashed (unless flash=False) and opened without reset. Yields (client, info).

    icount=False boots qemu without -icount: results are the same, bytes move several times
    faster, but the clock is the host's (use it for bulk runs, not for timing)."""
    from edgekd.runners.qemu import QemuBoard
    from edgekd.runners.serial import open_dut

    t = spec.transport
    if t.type == "qemu":
        board = QemuBoard(build.elf, machine=t.machine, cpu=t.cpu, binary=t.binary,  # type: ignore[union-attr]
                          icount_shift=t.icount_shift if icount else None,  # type: ignore[union-attr]
                          boot_timeout_s=t.boot_timeout_s, traffic_path=traffic_path)  # type: ignore[union-attr]
        with board:
            client = board.client
            client.handshake()
            yield client, {"transport": "qemu", "port": board.pty, "board": board,
                           "icount_shift": board.icount_shift}
        return
    if t.type != "serial":
        raise UsageError(f"target '{spec.name}' has transport '{t.type}'; microcontrollers use serial or qemu")
    flashed = flash_firmware(build, spec) if flash else {"flashed": False}
    # after flashing the board reboots: give it time to print its banner
    with open_dut(t.port, t.baud, traffic_path=traffic_path,  # type: ignore[union-attr]
                  banner_timeout_s=3.0 if flashed.get("flashed") else 0.0,
                  command_timeout_s=t.timeout_s) as client:  # type: ignore[union-attr]
        yield client, {"transport": "serial", "port": t.port, "baud": t.baud, **flashed}  # type: ignore[union-attr]


def _check_model_on_board(client: Any, build: FirmwareBuild) -> dict[str, Any]:
    prof = client.profile()
    want = build.model["model_id"]
    if prof["model"] != want:
        raise DeviceError(
            f"the board runs model '{prof['model']}', the build is '{want}'",
            hint="flash the firmware that was just built (or pass --flash)",
        )
    return prof


# ====================================================================== deploy


def deploy_mcu(model: str | os.PathLike, target: str | TargetSpec, out_dir: str | os.PathLike | None = None, *,
               reference: str | None = None, stack_bytes: int = DEFAULT_STACK, flash: bool = True,
               targets_dir: Sequence[str | os.PathLike] | None = None, debug: bool = False) -> dict[str, Any]:
    """Build the firmware, check it fits, flash or boot it, and handshake; the board's answers."""
    reference = reference or default_reference(model)
    spec = resolve_target(target, list(targets_dir or []))
    out = Path(out_dir) if out_dir else default_out_dir(model, spec.name)
    build = build_firmware(model, spec, out, reference=reference, stack_bytes=stack_bytes)
    traffic = out / "serial-traffic.log" if debug or os.environ.get("EDGEKD_DEBUG") == "1" else None
    t0 = time.monotonic()
    with connect(build, spec, traffic_path=traffic, flash=flash) as (client, info):
        prof = _check_model_on_board(client, build)
        caps = sorted(client.caps())
        mem = client.kv("edgekd-mem", "m-edgekd-mem-") if "mem" in caps else {}
        io = client.kv("edgekd-io", "m-edgekd-io-") if "io" in caps else {}
    info.pop("board", None)
    return {
        "target": spec.name,
        "build": build.to_dict(),
        "connection": info,
        "profile": prof,
        "caps": caps,
        "memory_on_board": mem,
        "io": io,
        "seconds": round(time.monotonic() - t0, 3),
        "traffic_log": str(traffic) if traffic else None,
    }


# ====================================================================== profile


def quantize_inputs(inputs: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Float inputs -> the model's int8 input (round half away from zero, like TFLite); int8 passes."""
    x = np.asarray(inputs)
    dtype = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32}[meta["dtype"]]
    if x.dtype == dtype:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"inputs are {x.dtype}; the model takes {meta['dtype']} (or float to be quantized)")
    scale, zp = meta["scale"], meta["zero_point"]
    if not scale:
        raise DataError("float inputs given but the model input is not quantized")
    q = x.astype(np.float64) / scale
    q = np.where(q >= 0, np.floor(q + 0.5), -np.floor(-q + 0.5)) + zp
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def input_arrays(inputs: np.ndarray | Mapping[str, np.ndarray], metas: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    """Every model input as [N, *shape] in its integer dtype, in the model's input order.

    inputs: one array for a single-input model, or {name: array} with one entry per model input,
    named as the model's input ('joints', or the TFLite name 'serving_default_joints:0'). Float
    arrays are quantized with the input's scale; an array with the input's element count per
    sample is reshaped to the input's shape."""
    from edgekd.convert.runtime import tflite_name

    if isinstance(inputs, Mapping) and len(metas) > 1:
        # the device agent's binding (by name, else by a shape only one input has): one rule everywhere
        from edgekd.agent.edgekd_agent import AgentError, match_inputs

        given = [(name, np.asarray(a)) for name, a in inputs.items()]

        def per_sample(shape) -> list[int]:  # [1, 4, 25] and [4, 25] are the same sample (batch axis or not)
            dims = [int(d) for d in shape]
            while dims and dims[0] == 1:
                dims = dims[1:]
            return dims

        try:
            order = match_inputs([(m["name"], [1, *per_sample(m["shape"])]) for m in metas],
                                 [(name, per_sample(a.shape[1:])) for name, a in given])
        except AgentError as exc:
            raise DataError(exc.message, hint=exc.hint) from None
        arrays = [given[j][1] for j in order]
    elif isinstance(inputs, Mapping):
        if len(inputs) != 1:
            raise DataError(f"the model has one input ({tflite_name(metas[0]['name'])}) and {len(inputs)} arrays were "
                            f"given ({', '.join(inputs)})", hint="give the model's one input array")
        arrays = [np.asarray(next(iter(inputs.values())))]
    else:
        if len(metas) != 1:
            raise DataError(f"the model has {len(metas)} inputs ({', '.join(tflite_name(m['name']) for m in metas)}) "
                            "and one array was given", hint="give {name: array} with one array per input (an eval.npz "
                                                            "written by edgekd convert holds them)")
        arrays = [np.asarray(inputs)]
    out = []
    counts = {len(a) for a in arrays}
    if len(counts) != 1:
        raise DataError(f"the inputs hold different numbers of samples: {sorted(counts)}")
    for a, meta in zip(arrays, metas):
        x = quantize_inputs(a, meta)
        shape = tuple(meta["shape"])
        if x.shape[1:] != shape:
            if x.ndim >= 1 and int(np.prod(x.shape[1:])) == int(np.prod(shape)):
                x = x.reshape((x.shape[0], *shape))
            else:
                raise DataError(f"input '{tflite_name(meta['name'])}' has shape {list(x.shape[1:])} per sample; the "
                                f"model takes {list(shape)}")
        out.append(x)
    return out


def _compared_with(reference: str) -> str:
    from edgekd.convert.tflite2c import REFERENCE_INTERPRETERS

    return REFERENCE_INTERPRETERS[reference]


def interpreter_outputs(model: str | os.PathLike, inputs: np.ndarray | Sequence[np.ndarray],
                        reference: str = "tflite") -> np.ndarray:
    """The int8 outputs, for every input, of the interpreter a reference flavour is compared with
    (tflite2c.REFERENCE_INTERPRETERS): TFLite's reference kernels ("tflite"), its default CPU
    kernels with XNNPACK ("tflite-cpu"), or TFLite Micro ("tflm").

    inputs: [N, *shape] for a single-input model, or a list of such arrays in the model's
    input order (input_arrays gives them)."""
    from edgekd.convert.tflite2c import interpreter_runner

    arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    run = interpreter_runner(Path(model).read_bytes(), reference, Path(model).name)
    return np.stack([run([a[i] for a in arrays]) for i in range(len(arrays[0]))])


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def profile_mcu(model: str | os.PathLike, target: str | TargetSpec, inputs: np.ndarray | Mapping[str, np.ndarray], *,
                labels: np.ndarray | None = None, out_dir: str | os.PathLike | None = None,
                reference: str | None = None, timing_runs: int = 20, timing_warmup: int = 2,
                compare_with_interpreter: bool = True, binary_upload: bool | None = None,
                retries: int = 1, max_consecutive_failures: int = 3, flash: bool = True,
                stack_bytes: int = DEFAULT_STACK,
                targets_dir: Sequence[str | os.PathLike] | None = None, debug: bool = False,
                progress: bool = True) -> dict[str, Any]:
    """Run every input on the board and report what the device did.

    inputs: [N, *input_shape] (int8 as the model takes, or float to be quantized with the model's
    input scale); for a model with several inputs, {input name: [N, *shape]} (see input_arrays). Per input: upload, `infer 1 0`, results. A failed input (e-[...], garbled reply,
    time-out, reboot) is retried `retries` times after a fresh handshake, then recorded as failed;
    after `max_consecutive_failures` failed inputs in a row, or a lost port, the run stops.
    Results of the inputs done so far are always kept. Timing: `infer timing_runs timing_warmup`
    with per-inference laps. Writes profile.json and device_outputs.npy to out_dir.
    """
    from edgekd.artifacts import atomic_write_bytes, atomic_write_json
    from edgekd.runners.protocol import BoardError, BoardReset, ProtocolError

    reference = reference or default_reference(model)

    spec = resolve_target(target, list(targets_dir or []))
    out = Path(out_dir) if out_dir else default_out_dir(model, spec.name)
    build = build_firmware(model, spec, out, reference=reference, stack_bytes=stack_bytes)
    metas_out = build.model["outputs"]
    if len(metas_out) != 1:
        raise UsageError("profile_mcu runs single-output models (the class scores)")
    arrays = input_arrays(inputs, build.model["inputs"])
    x = packed_inputs(arrays)  # [N, bytes]: one upload per sample, the inputs back to back
    n = x.shape[0]
    if labels is not None and len(labels) != n:
        raise DataError(f"{len(labels)} labels for {n} inputs")
    out_shape = tuple(metas_out[0]["shape"])
    device = np.zeros((n, *out_shape), dtype=np.int8)
    done = np.zeros(n, dtype=bool)
    failures: list[dict[str, Any]] = []
    events: list[str] = []
    timing: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    traffic = out / "serial-traffic.log" if debug or os.environ.get("EDGEKD_DEBUG") == "1" else None
    t_start = time.monotonic()
    interrupted: str | None = None
    emulated = spec.transport.type == "qemu"
    # the emulator's bulk run goes without -icount (same results, faster bytes); timing gets its own boot
    with connect(build, spec, traffic_path=traffic, flash=flash, icount=not emulated) as (client, info):
        board = info.pop("board", None)
        _check_model_on_board(client, build)
        caps = client.caps()
        expected_s: float | None = None
        consecutive = 0
        with _progress(progress, n, f"{Path(model).name} on {spec.name}") as advance:
            for i in range(n):
                for attempt in range(retries + 1):
                    try:
                        client.load(x[i].tobytes(), binary=binary_upload)
                        res = client.infer(1, 0, expected_latency_s=expected_s)
                        expected_s = max(expected_s or 0.0, res.expected_latency_s() or 0.0) or None
                        vals = np.asarray(res.results)
                        if vals.size != int(np.prod(out_shape)):
                            raise ProtocolError(f"{vals.size} result values, the model has {int(np.prod(out_shape))}")
                        device[i] = vals.reshape(out_shape).astype(np.int8)
                        done[i] = True
                        break
                    except BoardReset as exc:  # rebooted: the rest of its banner, then a fresh handshake
                        events.append(f"input {i}: {exc.message}")
                        _rehandshake(client, events, resync=True)
                    except BoardError as exc:  # a clean e-[...] reply, m-ready already seen
                        events.append(f"input {i} attempt {attempt + 1}: {exc.message}")
                    except DeviceError as exc:  # time-out, garbled reply or a lost port
                        events.append(f"input {i} attempt {attempt + 1}: {exc.message}")
                        if "reading" in exc.message and "failed" in exc.message:
                            interrupted = exc.message  # the port is gone: keep what we have
                            break
                        _rehandshake(client, events, resync=True)
                if not done[i]:
                    failures.append({"index": i, "error": events[-1] if events else "unknown"})
                    consecutive += 1
                    if consecutive >= max_consecutive_failures and not interrupted:
                        interrupted = f"{consecutive} inputs in a row failed; the board is not responding"
                else:
                    consecutive = 0
                if interrupted:
                    break
                advance()
        if not interrupted and not emulated:
            timing, memory = _timing_and_memory(client, caps, x[-1], timing_runs, timing_warmup, None,
                                                binary_upload, events, expected_s)
    if not interrupted and emulated:
        with connect(build, spec, traffic_path=traffic, flash=False, icount=True) as (client, info):
            # -icount runs slower than the bulk run: its latency, with room, bounds the first time-out
            hint = expected_s * ICOUNT_SLOWDOWN if expected_s else None
            timing, memory = _timing_and_memory(client, client.caps(), x[-1], timing_runs, timing_warmup,
                                                info.get("board"), binary_upload, events, hint)
    result: dict[str, Any] = {
        "target": spec.name,
        "model": str(model),
        "model_id": build.model["model_id"],
        "n_inputs": n,
        "n_done": int(done.sum()),
        "n_failed": int(n - done.sum()),
        "failures": failures[:50],
        "events": events[:200],
        "interrupted": interrupted,
        "flash_bytes": build.sizes["flash_bytes"],
        "ram_bytes": build.sizes["ram_bytes"],
        "arena_bytes": build.sizes["arena_bytes"],
        "sizes": build.sizes,
        "memory_on_board": memory,
        "timing": timing,
        "seconds": round(time.monotonic() - t_start, 3),
        "reference": reference,
        "compared_with": _compared_with(reference),
    }
    if compare_with_interpreter and done.any():
        ref = interpreter_outputs(model, arrays, reference).reshape(device.shape)
        ok = done
        same = np.all(ref[ok].reshape(ok.sum(), -1) == device[ok].reshape(ok.sum(), -1), axis=1)
        result["bit_exact_inputs"] = int(same.sum())
        result["bit_exact"] = bool(same.all())
        result["max_abs_diff"] = int(np.abs(ref[ok].astype(np.int32) - device[ok].astype(np.int32)).max())
        top_dev = device[ok].reshape(ok.sum(), -1).argmax(1)
        top_ref = ref[ok].reshape(ok.sum(), -1).argmax(1)
        result["top1_agreement"] = float((top_dev == top_ref).mean())
    if labels is not None and done.any():
        top = device[done].reshape(done.sum(), -1).argmax(1)
        result["accuracy"] = float((top == np.asarray(labels)[done]).mean())
    atomic_write_bytes(out / "device_outputs.npy", _npy_bytes(device))
    atomic_write_json(out / "profile.json", result)
    result["profile_json"] = str(out / "profile.json")
    return result


def _rehandshake(client: Any, events: list[str], resync: bool) -> None:
    """Back to a known state after a failed input: (after a time-out or garbled reply) drain to the
    board's next m-ready, then handshake."""
    try:
        if resync:
            client.resync(10.0)
        client.handshake(retries=3, timeout_s=5.0)
    except DeviceError as exc:
        events.append(f"re-handshake failed: {exc.message}")


def _timing_and_memory(client: Any, caps: set[str], sample: np.ndarray, runs: int, warmup: int, board: Any,
                       binary_upload: bool | None, events: list[str],
                       expected_latency_s: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    timing: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    try:
        timing = _measure_timing(client, caps, sample, runs, warmup, board, binary_upload, expected_latency_s)
        if "mem" in caps:  # after the runs: the stack high-water mark includes them
            memory = client.kv("edgekd-mem", "m-edgekd-mem-")
    except DeviceError as exc:
        events.append(f"timing: {exc.message}")
    return timing, memory


def _measure_timing(client: Any, caps: set[str], sample: np.ndarray, runs: int, warmup: int,
                    board: Any, binary_upload: bool | None, expected_latency_s: float | None = None) -> dict[str, Any]:
    if runs <= 0:
        return {}
    client.load(sample.tobytes(), binary=binary_upload)
    hz = int(client.kv("edgekd-clock", "m-edgekd-clock-")["hz"]) if "clock" in caps else None
    if "laps" in caps:
        client.set_laps(True)
    first = client.infer(1, 0, expected_latency_s=expected_latency_s)  # calibrates the time-out of the long run
    res = client.infer(runs, warmup, expected_latency_s=first.expected_latency_s())
    if "laps" in caps:
        client.set_laps(False)
    timing: dict[str, Any] = {"runs": runs, "warmup": warmup, "total_us": res.total_us,
                              "mean_us": res.mean_us, "seconds_per_inference": (res.mean_us or 0) / 1e6,
                              "tick_hz": hz}
    if res.per_inference_ticks and hz:
        ticks = [float(t) for t in res.per_inference_ticks]
        us = [t * 1e6 / hz for t in ticks]
        timing.update(ticks_mean=float(np.mean(ticks)), us_p50=_percentile(us, 50), us_p90=_percentile(us, 90),
                      us_min=min(us), us_max=max(us))
        if board is not None:  # emulated: ticks -> instructions with -icount
            ipt = board.instructions_per_tick(hz)
            instr = [t * ipt for t in ticks]
            timing.update(clock="qemu -icount (virtual)", instructions_per_inference=float(np.mean(instr)),
                          instructions_p50=_percentile(instr, 50), instructions_spread=max(instr) - min(instr),
                          instruction_resolution=ipt)
        else:
            timing.update(clock="SysTick (CPU cycles)", cycles_per_inference=float(np.mean(ticks)),
                          cycles_p50=_percentile(ticks, 50), cycles_p90=_percentile(ticks, 90))
    return timing


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@contextlib.contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Any]:
    if not enabled or total < 2:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def load_inputs(path: str | os.PathLike, key: str | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """Inputs from a .npy file, or an array of a .npz (by key, else 'inputs', 'x' or its first
    array). An eval.npz of a model with several inputs (x_<name> arrays and 'input_names', as
    edgekd convert writes it) gives {name: array}."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"no inputs file '{p}'", hint="save the evaluation inputs with numpy.save (.npy) or savez (.npz)")
    data = np.load(p, allow_pickle=False)
    if isinstance(data, np.lib.npyio.NpzFile):
        names = list(data.keys())
        if not names:
            raise DataError(f"{p} holds no arrays")
        if key is None and "input_names" in names:
            return {str(n): data[f"x_{n}"] for n in data["input_names"]}
        k = key or next((c for c in ("inputs", "x") if c in names), names[0])
        if k not in names:
            raise DataError(f"{p} has no array '{k}' (it has {', '.join(names)})")
        return data[k]
    return data
