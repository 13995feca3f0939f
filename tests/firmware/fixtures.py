"""Session fixtures for the firmware and emulated-board tests: small int8 models converted once
with TensorFlow (shared through the session temp folder), and the tools they need.

Test modules import the fixtures they use from here (tests/conftest.py is shared by everyone)."""

from __future__ import annotations

import shutil

import pytest


def need_tool(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (scripts/install-system-deps.sh installs it)")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    return tmp_path_factory.getbasetemp() / "fw-models"


@pytest.fixture(scope="session")
def ref_model(model_dir):
    """ref_model(name) -> path of the converted .tflite (built once per session)."""
    from edgekd.firmware.reference_models import build_cached

    return lambda name: build_cached(name, model_dir)


@pytest.fixture(scope="session")
def host_cc():
    need_tool("cc")


@pytest.fixture(scope="session")
def arm_gcc():
    need_tool("arm-none-eabi-gcc")


@pytest.fixture(scope="session")
def qemu():
    need_tool("qemu-system-arm")


def litert_reference_outputs(path, inputs):
    """The model's output for each int8 input, by TFLite's reference kernels (what the firmware
    runtime reproduces)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    outs = []
    for x in inputs:
        interp.set_tensor(i, x)
        interp.invoke()
        outs.append(interp.get_tensor(o).copy())
    return np.stack(outs)
