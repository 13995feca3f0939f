"""DDP under torchrun: 2 CPU processes (gloo) train one epoch to the same weights as 1 process
on the same global batch (benchmarks/ddp_equivalence.py, the script that reports the figure)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ddp_equivalence.py"


def _load():
    spec = importlib.util.spec_from_file_location("ddp_equivalence", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_process_torchrun_equals_one_process(tmp_path) -> None:
    ddp = _load()
    figures = ddp.compare("none", samples=40, batch_size=8, tmp=tmp_path)
    assert figures["ddp_none_max_abs_weight_diff"] < 1e-5, figures
    assert figures["ddp_none_val_accuracy_2proc"] == figures["ddp_none_val_accuracy_1proc"]
