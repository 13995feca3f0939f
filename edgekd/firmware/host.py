"""The firmware runtime compiled for this host: the same C (kernels + generated model) as the
board runs, as a shared library driven through ctypes. Tests and benchmarks use it to compare
with the TFLite and TFLite Micro interpreters on many inputs without an emulator."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ConversionError, MissingDependencyError, UsageError
from edgekd.firmware.sources import firmware_dir, src_dir

HOST_CFLAGS = ["-std=c99", "-O2", "-fPIC", "-shared", "-ffp-contract=off", "-fwrapv", "-Wall", "-Wno-unused-const-variable"]


@dataclass
class HostModel:
    library: Path
    metadata: dict[str, Any]

    def __post_init__(self) -> None:
        self._lib = ctypes.CDLL(str(self.library))
        self._lib.ekd_host_run_batch.argtypes = [ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32]
        self._lib.ekd_host_run_batch.restype = ctypes.c_int
        self._lib.ekd_model_arena.restype = ctypes.c_void_p
        self.in_bytes = sum(i["bytes"] for i in self.metadata["inputs"])
        self.out_bytes = sum(o["bytes"] for o in self.metadata["outputs"])

    def run_raw(self, batch: np.ndarray) -> np.ndarray:
        """batch: [N, in_bytes] uint8 (all inputs back to back) -> [N, out_bytes] uint8."""
        data = np.ascontiguousarray(batch, dtype=np.uint8).reshape(-1, self.in_bytes)
        out = np.empty((data.shape[0], self.out_bytes), dtype=np.uint8)
        rc = self._lib.ekd_host_run_batch(data.shape[0], data.ctypes.data, self.in_bytes, out.ctypes.data, self.out_bytes)
        if rc != 0:
            raise UsageError(f"input of {self.in_bytes} bytes does not match the model")
        return out

    def arena(self) -> np.ndarray:
        """The activation arena after the last run (all tensors, when built with reuse_arena=False)."""
        n = int(self.metadata["arena_bytes"])
        return np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(self._lib.ekd_model_arena())).copy()

    def run(self, inputs: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """inputs: [N, *input_shape] of the input's dtype (a list of those, in the model's input
        order, for several inputs) -> [N, *output_shape] of the (single) output's dtype."""
        if len(self.metadata["outputs"]) != 1:
            raise UsageError("run() takes single-output models; use run_raw()")
        metas, meta_out = self.metadata["inputs"], self.metadata["outputs"][0]
        arrays = [np.asarray(inputs)] if isinstance(inputs, np.ndarray) else [np.asarray(a) for a in inputs]
        if len(arrays) != len(metas):
            raise UsageError(f"{len(arrays)} input array(s) for a model with {len(metas)} inputs")
        for x, meta in zip(arrays, metas):
            if x.dtype != np.dtype(_np_dtype(meta["dtype"])):
                raise UsageError(f"input '{meta['name']}' is {x.dtype}, the model takes {meta['dtype']}")
        n = arrays[0].shape[0]
        raw = self.run_raw(packed_inputs(arrays))
        return raw.view(_np_dtype(meta_out["dtype"])).reshape([n] + list(meta_out["shape"]))


def packed_inputs(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """[N, total input bytes] uint8: each sample's inputs back to back in the model's input order,
    the layout the C runtime takes (the board's db upload, the host build's run_raw)."""
    n = len(arrays[0])
    return np.concatenate([np.ascontiguousarray(a).reshape(n, -1).view(np.uint8) for a in arrays], axis=1)


def _np_dtype(name: str):
    return {"int8": np.int8, "uint8": np.uint8, "bool": np.uint8, "int16": np.int16, "int32": np.int32, "float32": np.float32}[name]


def build_host_model(model: str | os.PathLike, out_dir: str | os.PathLike, reference: str = "tflite",
                     compiler: str | None = None, reuse_arena: bool = True) -> HostModel:
    """Generate C from the .tflite into out_dir and compile it with the host compiler."""
    from edgekd.convert.tflite2c import runtime_cflags, write_model_sources

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metadata = write_model_sources(model, out, reference=reference, reuse_arena=reuse_arena)  # type: ignore[arg-type]
    cc = compiler or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise MissingDependencyError("no C compiler found for the host build", hint="apt-get install gcc")
    lib = out / "libekd_model.so"
    src = src_dir()
    argv = [cc, *HOST_CFLAGS, *runtime_cflags(reference), f"-I{src}", str(out / "model.c"), str(src / "ekd_kernels.c"),
            str(firmware_dir() / "host" / "ekd_host.c"), "-o", str(lib)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ConversionError(f"host build failed:\n{proc.stderr[-3000:]}", hint=" ".join(argv))
    return HostModel(lib, metadata)


def compare_ops(model: str | os.PathLike, inputs: Sequence[np.ndarray], out_dir: str | os.PathLike,
                reference: str = "tflite", samples: int = 5) -> dict[str, dict[str, Any]]:
    """Op by op: each int8 op of the C runtime (every tensor kept) against the same op run alone, on
    the runtime's own inputs to it, in the interpreter `reference` reproduces. Names the op types
    that compute differently, so a model that is not bit-exact says where.

    inputs: the model's int8 inputs in its input order (firmware.api.input_arrays), [N, ...] each;
    the first `samples` are used. Returns {op type: {"runs", "differ", "first_difference"}}."""
    from edgekd.convert.tflite2c import isolated_model, interpreter_runner, load_graph

    host = build_host_model(model, out_dir, reference=reference, reuse_arena=False)
    graph = load_graph(model)
    offsets = {int(k): v for k, v in host.metadata["tensor_offsets"].items()}
    runners: dict[int, Any] = {}
    report: dict[str, dict[str, Any]] = {}
    for s in range(min(samples, len(inputs[0]))):
        host.run([a[s:s + 1] for a in inputs])
        arena = host.arena()

        def value(i: int) -> np.ndarray:
            t = graph.tensors[i]
            return arena[offsets[i]:offsets[i] + t.nbytes].view(_np_dtype(t.dtype)).reshape(t.shape)

        for op in graph.operators:
            out = graph.tensors[op.outputs[0]]
            if out.dtype != "int8" or op.outputs[0] not in offsets:
                continue  # fused into a table, or not an int8 result
            if op.index not in runners:
                raw, reads = isolated_model(graph, [op])
                runners[op.index] = (interpreter_runner(raw, reference, f"op #{op.index} {op.op}"), reads)
            run, reads = runners[op.index]
            if any(i not in offsets for i in reads):
                continue
            theirs = run([value(i) for i in reads]).reshape(out.shape)
            mine = value(op.outputs[0])
            entry = report.setdefault(op.op, {"runs": 0, "differ": 0, "first_difference": None})
            entry["runs"] += 1
            if not np.array_equal(mine, theirs):
                entry["differ"] += 1
                if entry["first_difference"] is None:
                    diff = np.abs(mine.astype(np.int32) - theirs.astype(np.int32))
                    entry["first_difference"] = {"op_index": op.index, "sample": s, "elements": int((diff > 0).sum()),
                                                 "of": int(diff.size), "max_abs": int(diff.max())}
    return report
