"""Session-wide conversions shared by the chain tests (onnx2tf and TensorFlow are slow: each
model is converted once per target and every test reads the artifact directory)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.convert.models import CLASSES, TinyCNN, blob_images, train_briefly


@dataclass
class Converted:
    result: object  # edgekd.convert.api.ConvertResult, or None when the stage failed
    error: Exception | None
    out: Path
    model: object


def _data(frames: int | None = None):
    from edgekd.convert.api import HeldOut
    from edgekd.convert.representative import Representative

    x, y = blob_images(400, seed=0, frames=frames)
    xv, yv = blob_images(120, seed=1, frames=frames)
    name = "frames" if frames else "image"
    held = HeldOut({name: xv}, yv, list(CLASSES), {"task": "blobs", "split": "validation", "samples": len(yv)})
    cal = Representative({name: x[:96]}, y[:96], "blob training images")
    return x, y, held, cal


@pytest.fixture(scope="session")
def trained_cnn():
    import torch

    torch.manual_seed(0)
    x, y, held, cal = _data()
    return train_briefly(TinyCNN(), x, y), held, cal


def _convert(model, held, cal, target: str, out: Path, **kwargs) -> Converted:
    from edgekd.convert.api import convert_model
    from edgekd.targets import get_target

    try:
        return Converted(convert_model(model, held, cal, get_target(target), out, **kwargs), None, out, model)
    except Exception as exc:  # the tests look at the error
        return Converted(None, exc, out, model)


@pytest.fixture(scope="session")
def cnn_local(trained_cnn, tmp_path_factory) -> Converted:
    model, held, cal = trained_cnn
    return _convert(model, held, cal, "local", tmp_path_factory.mktemp("cnn-local"))


@pytest.fixture(scope="session")
def cnn_coral(trained_cnn, tmp_path_factory) -> Converted:
    """Coral through onnx2tf's own int8 path (per-tensor, as the Edge TPU needs)."""
    from edgekd.convert.api import ConvertOptions

    model, held, cal = trained_cnn
    return _convert(model, held, cal, "coral-usb", tmp_path_factory.mktemp("cnn-coral"),
                    options=ConvertOptions(quantizer="onnx2tf"))


@pytest.fixture(scope="session")
def cnn_jetson(trained_cnn, tmp_path_factory) -> Converted:
    model, held, cal = trained_cnn
    return _convert(model, held, cal, "jetson-nano", tmp_path_factory.mktemp("cnn-jetson"), formats=["onnx", "tensorrt"])


@pytest.fixture(scope="session")
def outlier_local(tmp_path_factory) -> Converted:
    import torch

    from tests.convert.models import OutlierCNN

    torch.manual_seed(0)
    x, y, held, cal = _data()
    model = train_briefly(OutlierCNN(), x, y).make_outlier()
    return _convert(model, held, cal, "local", tmp_path_factory.mktemp("outlier"), formats=["tflite-int8"])


def quantized_weight_scales(tflite: Path) -> list[int]:
    """Number of scales of each int8 conv/fc weight tensor (1 = per-tensor)."""
    from edgekd.convert.ops import inventory

    inv = inventory(tflite)
    counts = []
    for op in inv.ops:
        if op.op in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"):
            w = inv.tensors[op.inputs[1]]
            if w.dtype == "int8":
                counts.append(len(w.scale))
    return counts
