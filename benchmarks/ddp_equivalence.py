"""Data-parallel training equals one process: one epoch of the eye student under `torchrun`
with 2 CPU processes (gloo) against 1 process, same global batch and seed.

The exact comparison uses the student without BatchNorm (norm = "none"): DDP without
SyncBatchNorm normalises each process's share of the batch with its own statistics, so a
BatchNorm model is expected to differ slightly; that difference is reported too.

    python benchmarks/ddp_equivalence.py --quick --out runs/benchmarks/ddp.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, write_result  # noqa: E402


def worker(state_out: Path, norm: str, samples: int, batch_size: int) -> None:
    """Runs inside torchrun: one epoch; rank 0 saves the weights and validation metrics."""
    import torch

    from edgekd.config import LossTerm, TrainSection
    from edgekd.data.api import load_dataset
    from edgekd.distill.trainer import evaluate, fit, tensors_for
    from edgekd.models import build_model

    torch.set_num_threads(1)
    opts = dict(samples=samples, size=16, frames=4)
    train = tensors_for(load_dataset("eye", "synthetic", split="train", seed=0, **opts), ["frames"])
    val = tensors_for(load_dataset("eye", "synthetic", split="validation", seed=0, **opts), ["frames"])
    torch.manual_seed(0)
    model = build_model("eye-snn", num_classes=len(train.classes), channels=[8, 16], norm=norm)
    cfg = TrainSection(epochs=1, batch_size=batch_size, lr=0.01, optimizer="sgd", device="cpu", schedule="constant")
    fit(model, train, val, cfg, [LossTerm(name="ce")], seed=0, progress=False, log=lambda _m: None)
    if int(os.environ.get("RANK", "0")) == 0:
        metrics = evaluate(model, val)
        torch.save({"state": model.state_dict(), "metrics": json.dumps(metrics)}, state_out)


def run_torchrun(nproc: int, state_out: Path, norm: str, samples: int, batch_size: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}",
           str(Path(__file__).resolve()), "--worker", "--state-out", str(state_out), "--norm", norm,
           "--samples", str(samples), "--batch-size", str(batch_size)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun with {nproc} process(es) failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    import torch

    return torch.load(state_out, weights_only=True)


def compare(norm: str, samples: int, batch_size: int, tmp: Path) -> dict[str, float]:
    one = run_torchrun(1, tmp / f"one-{norm}.pt", norm, samples, batch_size)
    two = run_torchrun(2, tmp / f"two-{norm}.pt", norm, samples, batch_size)
    diffs = [float((one["state"][k].float() - two["state"][k].float()).abs().max()) for k in one["state"]]
    m1, m2 = json.loads(one["metrics"]), json.loads(two["metrics"])
    return {f"ddp_{norm}_max_abs_weight_diff": max(diffs), f"ddp_{norm}_val_accuracy_1proc": m1["accuracy"],
            f"ddp_{norm}_val_accuracy_2proc": m2["accuracy"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--norm", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=16, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    samples = args.samples or (120 if args.quick else 400)
    if args.worker:
        worker(args.state_out, args.norm, samples, args.batch_size)
        return 0
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for norm in ("none", "batch"):
            figures.update(compare(norm, samples, args.batch_size, Path(tmp)))
    write_result(args.out, figures, {"samples": samples, "batch_size": args.batch_size, "epochs": 1,
                                     "model": "eye-snn channels [8, 16], T=4, 16x16", "optimizer": "sgd lr 0.01",
                                     "backend": "gloo"})
    for k, v in figures.items():
        print(f"{k:45s} {v:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
