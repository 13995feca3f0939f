"""How hard is the built-in synthetic data? Small classifiers trained on it, side by side.

eye: a small frame-only CNN and the same CNN fed frames + event frames, trained with the same
seed on the synthetic eye training split and scored on its subject-disjoint validation split,
overall and per lighting. The synthetic data should be learnable (well above chance), not
trivial (below 100 %), and events should help most where frames lose information (low light,
overexposure).
skeleton: a small temporal CNN on the synthetic skeleton joints, subject-disjoint validation.

    python benchmarks/data_difficulty.py --quick --out runs/benchmarks/data_difficulty.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result  # noqa: E402

QUICK = {"eye_samples": 2000, "eye_subjects": 40, "eye_epochs": 8, "skeleton_samples": 720, "skeleton_subjects": 24,
         "skeleton_epochs": 12}
FULL = {"eye_samples": 3000, "eye_subjects": 50, "eye_epochs": 15, "skeleton_samples": 1800, "skeleton_subjects": 36,
        "skeleton_epochs": 25}


def _split(task: str, seed: int, **options):
    import numpy as np

    from edgekd.data.api import read_all, split_indices

    ds = read_all(task, "synthetic", seed=seed, **options)
    return ds.subset(split_indices(ds, "train")), ds.subset(split_indices(ds, "validation")), np


def _train(model, x_train, y_train, x_val, epochs: int, seed: int, lr: float = 5e-3, batch: int = 64):
    import numpy as np
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * ((len(y_train) + batch - 1) // batch))
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(yt), generator=gen).split(batch):
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x_val[i:i + 256])).argmax(1).numpy() for i in range(0, len(x_val), 256)])


def _eye_cnn(in_channels: int, classes: int):
    import torch.nn as nn

    def block(i: int, o: int) -> list:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

    # T (and 2T event) time steps as input channels: early fusion, about 3.5 / 5.9 M MACs per sample.
    return nn.Sequential(*block(in_channels, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, classes))


def _skeleton_cnn(in_channels: int, classes: int):
    import torch.nn as nn

    return nn.Sequential(nn.Conv1d(in_channels, 64, 5, padding=2), nn.BatchNorm1d(64), nn.ReLU(),
                         nn.Conv1d(64, 64, 5, padding=2, stride=2), nn.BatchNorm1d(64), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, classes))


def run(cfg: dict, seed: int) -> dict[str, float]:
    import torch

    from edgekd.tasks import get_task

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    figures: dict[str, float] = {}

    t0 = time.perf_counter()
    train, val, np = _split("eye", seed, samples=cfg["eye_samples"], subjects=cfg["eye_subjects"])
    figures["eye_generate_seconds_per_1000"] = (time.perf_counter() - t0) * 1000 / cfg["eye_samples"]
    spec = get_task("eye")
    n, t = train.x["frames"].shape[:2]
    frames_tr = train.x["frames"].reshape(n, t, 32, 32)
    frames_va = val.x["frames"].reshape(len(val), t, 32, 32)
    both_tr = np.concatenate([frames_tr, train.x["events"].reshape(n, 2 * t, 32, 32)], axis=1)
    both_va = np.concatenate([frames_va, val.x["events"].reshape(len(val), 2 * t, 32, 32)], axis=1)
    figures["eye_chance"] = 1 / len(train.classes)
    figures["eye_train_samples"] = n
    figures["eye_validation_samples"] = len(val)
    for name, xtr, xva in (("frames", frames_tr, frames_va), ("events_frames", both_tr, both_va)):
        torch.manual_seed(seed)
        pred = _train(_eye_cnn(xtr.shape[1], len(train.classes)), xtr, train.y, xva, cfg["eye_epochs"], seed)
        report = spec.evaluate(val.y, pred, val.meta, train.classes)
        figures[f"eye_{name}_val_acc"] = report["accuracy"]
        figures[f"eye_{name}_val_uar"] = report["uar"]
        for light, acc in report["accuracy_by_lighting"].items():
            figures[f"eye_{name}_val_acc_{light.replace('-', '_')}"] = acc
        print(f"eye {name}: acc {report['accuracy']:.3f} uar {report['uar']:.3f} by lighting "
              + ", ".join(f"{k} {v:.3f}" for k, v in report["accuracy_by_lighting"].items()), flush=True)
    for light in ("normal", "overexposed", "low_light", "hdr"):
        figures[f"eye_events_gain_{light}"] = figures[f"eye_events_frames_val_acc_{light}"] - figures[f"eye_frames_val_acc_{light}"]

    train, val, np = _split("skeleton", seed, samples=cfg["skeleton_samples"], subjects=cfg["skeleton_subjects"])
    x_tr = train.x["joints"][..., 0].transpose(0, 1, 3, 2).reshape(len(train), -1, train.x["joints"].shape[2])
    x_va = val.x["joints"][..., 0].transpose(0, 1, 3, 2).reshape(len(val), -1, val.x["joints"].shape[2])
    pred = _train(_skeleton_cnn(x_tr.shape[1], len(train.classes)), x_tr.astype("float32"), train.y,
                  x_va.astype("float32"), cfg["skeleton_epochs"], seed)
    report = get_task("skeleton").evaluate(val.y, pred, val.meta, train.classes)
    figures["skeleton_chance"] = 1 / len(train.classes)
    figures["skeleton_val_acc"] = report["accuracy"]
    figures["skeleton_val_uar"] = report["uar"]
    for view, acc in report["accuracy_by_view"].items():
        figures[f"skeleton_val_acc_view_{view}"] = acc
    print(f"skeleton: acc {report['accuracy']:.3f} uar {report['uar']:.3f} (chance {1 / len(train.classes):.3f})", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (< 3 min on 2 cores)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    import resource

    t0 = time.perf_counter()
    figures = run(cfg, args.seed)
    figures["wall_seconds"] = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures["cpu_seconds"] = usage.ru_utime + usage.ru_stime  # wall time depends on what else runs
    write_result(args.out, figures, {"quick": args.quick, "seed": args.seed, **cfg,
                                     "split": "synthetic train / subject-disjoint validation (20 % of subjects)"})
    print(f"done in {figures['wall_seconds']:.0f} s" + (f"; wrote {args.out}" if args.out else ""))


if __name__ == "__main__":
    main()
