"""Shared fixtures. Real parts only: tests start the servers and peers they need themselves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.runners.models import build_int8_classifier, build_int8_multi_input
from tests.runners.sshd import start_sshd

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    env = os.environ.get("EDGEKD_SHARED_DATA")
    return Path(env).resolve() if env else (REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set EDGEKD_SHARED_DATA to run this test)")
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--target", action="append", default=[], help="run hardware tests against this real target")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    targets = config.getoption("--target")
    skip = pytest.mark.skip(reason="real hardware test: select a device with --target NAME")
    for item in items:
        if "hardware" in item.keywords and not targets:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with its own host key and authorized key."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """(model.tflite, eval.npz): a fast int8 classifier with 64 evaluation samples."""
    return build_int8_classifier(tmp_path_factory.mktemp("small_model"))


@pytest.fixture(scope="session")
def multi_input_model(tmp_path_factory):
    """(model.tflite, eval.npz): a three-input int8 classifier; two inputs share a shape."""
    return build_int8_multi_input(tmp_path_factory.mktemp("multi_input_model"))


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory):
    """A heavier model and 1500 samples, so a run can be interrupted half-way."""
    return build_int8_classifier(tmp_path_factory.mktemp("slow_model"), size=48, channels=32, samples=1500)
