"""KD gain of the two spiking methods: the same student trained with and without KD.

For each method (MSKD on synthetic eye data; MK-SGN on synthetic skeletons and on MSR Action3D
with validation subjects held out), one teacher is trained (recipe's teacher_train, seed = the
recipe's seed); then for every seed the student is trained twice on the same data with the same
seed: with cross-entropy only, and with the recipe's KD losses. Reported: validation accuracy of
the last epoch (no epoch picked on the validation set), mean and std over seeds, the gain
(KD minus no KD; its std is over the per-seed paired differences), eye accuracy under low light,
teacher and student parameter counts, teacher validation accuracy, and the firing rate of every
LIF layer of the KD student (seed 0; mean over 256 validation samples).

    python benchmarks/kd_gain.py --quick --out runs/benchmarks/kd_gain.json
    nice -n 10 python benchmarks/kd_gain.py --out runs/benchmarks/kd_gain-full.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, write_result  # noqa: E402


def shared_data() -> Path | None:
    env = os.environ.get("EDGEKD_SHARED_DATA")
    root = Path(env) if env else (REPO / ".." / "shared" / "data").resolve()
    return root if root.is_dir() else None


def method_configs(quick: bool) -> dict[str, dict[str, Any]]:
    """Recipe + overrides per method. Quick: same code path, fewer samples and epochs."""
    data = shared_data()
    configs: dict[str, dict[str, Any]] = {
        "mskd_eye": {
            "recipe": "eye-mskd",
            "overrides": (["data.options.samples=300", "train.epochs=2", "teacher_train.epochs=3"] if quick
                          else ["data.options.samples=800", "train.epochs=8", "teacher_train.epochs=8"]),
        },
        "mksgn_synthetic": {
            "recipe": "skeleton-mksgn",
            "overrides": (["data.options.samples=160", "train.epochs=2", "teacher_train.epochs=2",
                           "student.params.size=\"tiny\""] if quick
                          else ["data.options.samples=400", "train.epochs=10", "teacher_train.epochs=5"]),
        },
    }
    if data is not None and (data / "msr-action3d").is_dir():
        configs["mksgn_msr"] = {
            "recipe": "skeleton-mksgn",
            "overrides": ["data.source=msr-action3d", f"data.path=\"{data / 'msr-action3d'}\""]
            + (["train.epochs=2", "teacher_train.epochs=3", "student.params.size=\"tiny\""] if quick
               else ["train.epochs=12", "teacher_train.epochs=25"]),
        }
    return configs


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run_method(name: str, recipe_name: str, overrides: list[str], seeds: list[int], log: Any,
               partial: Any = None) -> tuple[dict[str, float], dict[str, Any]]:
    """`partial(figures, config)` is called after the teacher and after every seed (partial results survive)."""
    import torch

    from edgekd.config import LossTerm, load_recipe
    from edgekd.distill.api import GROUP_KEYS, build_from_section, firing_rate_batches, load_recipe_data
    from edgekd.distill.trainer import evaluate, fit, tensors_for
    from edgekd.models import count_parameters, firing_rates

    recipe = load_recipe(recipe_name, overrides)
    groups = GROUP_KEYS.get(recipe.task, ())
    t0 = time.time()
    data = load_recipe_data(recipe)
    torch.manual_seed(recipe.seed)
    teacher = build_from_section(recipe.teacher, data.train)
    student_probe = build_from_section(recipe.student, data.train)
    names = list(teacher.input_names) + list(student_probe.input_names)
    train_t, val_t = tensors_for(data.train, names), tensors_for(data.validation, names)
    quiet = dict(progress=False, log=lambda _m: None, group_keys=groups)
    log(f"[{name}] {len(train_t)} train / {len(val_t)} validation samples; training the teacher")
    fit(teacher, train_t, val_t, recipe.teacher_train or recipe.train, recipe.teacher_losses or [LossTerm(name="ce")],
        seed=recipe.seed, progress=False, group_keys=groups, log=lambda m: log(f"[{name}] teacher {m}"))
    teacher_eval = evaluate(teacher, val_t, 128, "cpu", groups)
    figures: dict[str, float] = {
        f"{name}_teacher_accuracy": teacher_eval["accuracy"],
        f"{name}_teacher_params": count_parameters(teacher),
        f"{name}_student_params": count_parameters(student_probe),
    }
    low_key = "accuracy_lighting_low-light"
    if low_key in teacher_eval:
        figures[f"{name}_teacher_accuracy_lowlight"] = teacher_eval[low_key]
    runs: dict[str, list[dict[str, Any]]] = {"nokd": [], "kd": []}
    rates: dict[str, float] = {}
    if partial is not None:
        partial(summarise(name, figures, runs, rates, t0),
                config_of(recipe, recipe_name, overrides, seeds, train_t, val_t, runs, teacher_eval))
    for seed in seeds:
        for arm, losses, t in (("nokd", [LossTerm(name="ce")], None), ("kd", recipe.losses, teacher)):
            torch.manual_seed(seed)
            student = build_from_section(recipe.student, data.train)
            result = fit(student, train_t, val_t, recipe.train, losses, teacher=t, seed=seed, **quiet)
            last = {k[4:]: v for k, v in result.history[-1].items() if k.startswith("val_")}
            runs[arm].append(last)
            log(f"[{name}] seed {seed} {arm}: val accuracy {last['accuracy']:.3f} (best epoch {result.best_metric:.3f})")
            if arm == "kd" and seed == seeds[0]:  # on the weights fit returns (its best epoch)
                rates = firing_rates(student, firing_rate_batches(student, val_t))
        if partial is not None:
            partial(summarise(name, figures, runs, rates, t0),
                    config_of(recipe, recipe_name, overrides, seeds, train_t, val_t, runs, teacher_eval))
    return summarise(name, figures, runs, rates, t0), config_of(recipe, recipe_name, overrides, seeds, train_t, val_t,
                                                                 runs, teacher_eval)


def summarise(name: str, base: dict[str, float], runs: dict[str, list[dict[str, Any]]], rates: dict[str, float],
              t0: float) -> dict[str, float]:
    figures = dict(base)
    low_key = "accuracy_lighting_low-light"
    done = min(len(runs["kd"]), len(runs["nokd"]))
    for key, label in (("accuracy", ""), (low_key, "_lowlight")):
        if not done or key not in runs["kd"][0]:
            continue
        nokd = [r[key] for r in runs["nokd"][:done]]
        kd = [r[key] for r in runs["kd"][:done]]
        diffs = [a - b for a, b in zip(kd, nokd)]
        for arm, vals in (("nokd", nokd), ("kd", kd), ("gain", diffs)):
            m, s = _mean_std(vals)
            prefix = f"{name}_kd_gain{label}" if arm == "gain" else f"{name}_student_{arm}_accuracy{label}"
            figures[f"{prefix}_mean"] = m
            figures[f"{prefix}_std"] = s
    for layer, rate in rates.items():
        figures[f"{name}_firing_rate_{layer}"] = rate
    if rates:
        figures[f"{name}_firing_rate_mean"] = statistics.fmean(rates.values())
    figures[f"{name}_seeds_done"] = done
    figures[f"{name}_seconds"] = round(time.time() - t0, 1)
    return figures


def config_of(recipe: Any, recipe_name: str, overrides: list[str], seeds: list[int], train_t: Any, val_t: Any,
              runs: dict[str, Any], teacher_eval: dict[str, Any]) -> dict[str, Any]:
    return {"recipe": recipe_name, "overrides": overrides, "seeds": seeds, "task": recipe.task,
              "data": recipe.data.model_dump(mode="json"), "teacher": recipe.teacher.model_dump(mode="json"),
              "student": recipe.student.model_dump(mode="json"),
              "losses": [t.model_dump(mode="json") for t in recipe.losses],
              "train": recipe.train.model_dump(mode="json"),
              "teacher_train": (recipe.teacher_train or recipe.train).model_dump(mode="json"),
              "train_samples": len(train_t), "validation_samples": len(val_t),
              "per_seed": runs, "teacher_eval": teacher_eval}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (same code path), < 3 min on 2 cores")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm (>= 3 for the figures)")
    parser.add_argument("--methods", nargs="*", default=None, help="subset of methods to run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    import torch

    # one thread: on a shared machine spinning OpenMP threads cost more than they give
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    configs = method_configs(args.quick)
    if args.methods:
        unknown = [m for m in args.methods if m not in configs]
        if unknown:
            parser.error(f"unknown method(s) {unknown}; known: {sorted(configs)}")
        configs = {m: configs[m] for m in args.methods}
    figures: dict[str, float] = {}
    config: dict[str, Any] = {"quick": args.quick, "seeds": seeds, "methods": {}}
    if shared_data() is None:
        config["skipped"] = "mksgn_msr: ../shared/data/msr-action3d not found (set EDGEKD_SHARED_DATA)"
    start = time.time()
    for name, cfg in configs.items():
        def partial(f: dict[str, float], c: dict[str, Any], name: str = name) -> None:
            write_result(args.out, {**figures, **f}, {**config, "methods": {**config["methods"], name: c}})

        f, c = run_method(name, cfg["recipe"], cfg["overrides"], seeds, lambda m: print(m, flush=True), partial)
        figures.update(f)
        config["methods"][name] = c
        figures["total_seconds"] = round(time.time() - start, 1)
        result = write_result(args.out, figures, config)  # after every method: partial results survive
    for key in sorted(k for k in figures if "firing_rate_" not in k or k.endswith("_mean")):
        print(f"{key:55s} {figures[key]:.4f}")
    return 0 if result else 1


if __name__ == "__main__":
    sys.exit(main())
