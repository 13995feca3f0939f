"""Shared fixtures. Real parts only: tests start the servers and peers they need themselves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
