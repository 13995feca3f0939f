"""The signature of a converted model: input/output names, static shapes, and the axis order
each TFLite input expects.

onnx2tf turns channel-first inputs into channel-last ones: an input of rank r >= 3 in the
model's layout (N, C, d1, ..., dk) becomes (N, d1, ..., dk, C) in the TFLite model. For an eye
student that takes (N, T, 1, H, W) this moves T last: (N, 1, H, W, T). Every array fed to a
TFLite model (calibration, evaluation, the device) is first put in that order with
`to_tflite_layout`; the permutation is recorded in the manifest (`io.json`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import atomic_write_json
from edgekd.errors import ArtifactError

IO_FILE = "io.json"


@dataclass
class TensorSig:
    """One input or output. `shape` is in the model's own (torch/ONNX) layout with batch 1."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    # TFLite axis order: tflite_array = onnx_array.transpose(tflite_perm). None: not known yet.
    tflite_perm: tuple[int, ...] | None = None

    @property
    def tflite_shape(self) -> tuple[int, ...]:
        perm = self.tflite_perm or tuple(range(len(self.shape)))
        return tuple(self.shape[p] for p in perm)


@dataclass
class ModelIO:
    inputs: list[TensorSig]
    outputs: list[TensorSig]
    notes: list[str] = field(default_factory=list)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    def input(self, name: str) -> TensorSig:
        for s in self.inputs:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        def sig(s: TensorSig) -> dict[str, Any]:
            d = asdict(s)
            d["shape"] = list(s.shape)
            d["tflite_perm"] = list(s.tflite_perm) if s.tflite_perm is not None else None
            d["tflite_shape"] = list(s.tflite_shape)
            return d

        return {
            "inputs": [sig(s) for s in self.inputs],
            "outputs": [sig(s) for s in self.outputs],
            "layout_rule": "tflite_array = model_array.transpose(tflite_perm); batch 1, static shapes",
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelIO:
        def sig(d: Mapping[str, Any]) -> TensorSig:
            perm = d.get("tflite_perm")
            return TensorSig(d["name"], tuple(d["shape"]), d.get("dtype", "float32"), tuple(perm) if perm is not None else None)

        return cls([sig(d) for d in data["inputs"]], [sig(d) for d in data["outputs"]], list(data.get("notes", [])))

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ModelIO:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise ArtifactError(f"{path}: not a model signature ({exc})", hint="reconvert the model") from None


def channel_last_perm(rank: int) -> tuple[int, ...]:
    """onnx2tf's rule: (N, C, d1..dk) -> (N, d1..dk, C) for rank >= 3; unchanged below."""
    if rank < 3:
        return tuple(range(rank))
    return (0, *range(2, rank), 1)


def candidate_perms(model_shape: Sequence[int], tflite_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """The permutations (channel-last first, then identity) consistent with both shapes."""
    model_shape, tflite_shape = tuple(model_shape), tuple(tflite_shape)
    out: list[tuple[int, ...]] = []
    for perm in (channel_last_perm(len(model_shape)), tuple(range(len(model_shape)))):
        if len(perm) == len(tflite_shape) and tuple(model_shape[p] for p in perm) == tflite_shape and perm not in out:
            out.append(perm)
    return out


def to_tflite_layout(array: np.ndarray, perm: Sequence[int] | None, batched: bool = True) -> np.ndarray:
    """Put `array` (model layout; with a leading sample axis when `batched`) into TFLite order."""
    if perm is None:
        return array
    perm = tuple(perm)
    if batched:
        # perm is for batch-1 shapes whose axis 0 is the batch: it applies unchanged to N samples
        return np.ascontiguousarray(array.transpose(perm))
    return np.ascontiguousarray(array[None].transpose(perm)[0])


def from_tflite_layout(array: np.ndarray, perm: Sequence[int] | None) -> np.ndarray:
    if perm is None:
        return array
    inverse = np.argsort(np.asarray(perm))
    return np.ascontiguousarray(array.transpose(tuple(int(i) for i in inverse)))
