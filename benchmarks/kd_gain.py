"""KD gain of the distillation methods: the same student trained with and without KD.

For each method (MSKD on synthetic eye data; MK-SGN on synthetic skeletons and on MSR Action3D
with validation subjects held out; PKDOT on synthetic eye data with events privileged and on
synthetic skeletons with bones and motions privileged; MT-PKDOT, PKDOT with a joint and two
per-modality teachers, on synthetic skeletons), one teacher is trained (recipe's teacher_train,
seed = the recipe's seed; MT-PKDOT: one per teacher variant); then for every seed the student is
trained on the same data with the same seed: with cross-entropy only, and with the recipe's KD
losses; for the PKDOT methods also with plain logit KD (0.5 CE + 0.5 Hinton KD, T = 4, the
joint teacher), so PKDOT is compared with the simplest KD as well as with none. Reported:
validation accuracy of the last epoch (no epoch picked on the validation set), mean and std
over seeds, the gain (KD minus no KD; its std is over the per-seed paired differences), for
PKDOT the gain over logit KD (paired the same way), eye accuracy under low light, teacher and
student parameter counts, teacher validation accuracy, the share of batches each MT-PKDOT
teacher was picked (last epoch, mean over seeds), the held-out R^2 of PKDOT's hallucination net
(20 % of the training samples, mean over seeds), and the firing rate of every LIF layer of the
KD student (seed 0; mean over 256 validation samples).

Runs with the same configuration (data, model, training, losses, teachers, seed) are trained
once and shared between methods: e.g. eye-mskd and eye-pkdot have the same teacher and the same
no-KD student, so those numbers are the same runs.

    python benchmarks/kd_gain.py --quick --out runs/benchmarks/kd_gain.json
    nice -n 10 python benchmarks/kd_gain.py --out runs/benchmarks/kd_gain-full.json
"""

from __future__ import annotations

import argparse
import json
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
                          # the recipe's teacher (~220 k) and onset-difference tiny student, which
                          # learns in ~10 epochs on 1,200 sequences (at 800 x 8 it stayed near chance)
                          else ["data.options.samples=1200", "train.epochs=10", "teacher_train.epochs=12"]),
        },
        "mksgn_synthetic": {
            "recipe": "skeleton-mksgn",
            "overrides": (["data.options.samples=160", "train.epochs=2", "teacher_train.epochs=2",
                           "student.params.size=\"tiny\""] if quick
                          else ["data.options.samples=400", "train.epochs=10", "teacher_train.epochs=5"]),
        },
    }
    # PKDOT: full runs share the data, teachers and no-KD students of mskd_eye / mksgn_synthetic;
    # --quick uses smaller sets of its own (the whole script must stay under 3 minutes)
    configs["pkdot_eye"] = {
        "recipe": "eye-pkdot", "logit_kd": True,
        "overrides": (["data.options.samples=160", "data.options.frames=4", "train.epochs=1",
                       "teacher_train.epochs=2"] if quick
                      # the same teacher, data and no-KD student as mskd_eye (shared runs)
                      else ["data.options.samples=1200", "train.epochs=10", "teacher_train.epochs=12"]),
    }
    skeleton_sizes = (["data.options.samples=96", "data.options.frames=8", "train.epochs=1", "teacher_train.epochs=1",
                       "student.params.size=\"tiny\""] if quick
                      else ["data.options.samples=400", "train.epochs=10", "teacher_train.epochs=5"])
    configs["pkdot_skeleton"] = {"recipe": "skeleton-pkdot", "overrides": skeleton_sizes, "logit_kd": True}
    configs["mtpkdot_skeleton"] = {
        "recipe": "skeleton-mtpkdot", "overrides": list(skeleton_sizes), "logit_kd": True,
        # the joint teacher first (the hallucination net reads its streams), then per-modality ones
        "teacher_variants": [{}, {"modalities": ["bones", "bone_motion"]}, {"modalities": ["joint_motion", "bone_motion"]}],
    }
    if data is not None and (data / "msr-action3d").is_dir():
        configs["mksgn_msr"] = {
            "recipe": "skeleton-mksgn",
            "overrides": ["data.source=msr-action3d", f"data.path=\"{data / 'msr-action3d'}\""]
            + (["train.epochs=2", "teacher_train.epochs=3", "student.params.size=\"tiny\""] if quick
               # 234 training sequences: 4 turned and scaled copies of each (teacher 81 -> 91 %
               # validation accuracy over 60 epochs, the student alone 54 -> 65 %, seed 0)
               else ["data.options.augment=4", "train.epochs=40", "teacher_train.epochs=30"]),
        }
    return configs


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


LOGIT_KD = [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "params": {"temperature": 4.0}}]

# Runs shared between methods with the same configuration (key: JSON of everything that sets them).
_CACHE: dict[str, Any] = {}


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def run_method(name: str, recipe_name: str, overrides: list[str], seeds: list[int], log: Any,
               partial: Any = None, logit_kd: bool = False,
               teacher_variants: list[dict[str, Any]] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """`partial(figures, config)` is called after the teacher and after every seed (partial results survive).
    `logit_kd` adds the arm 'logitkd' (plain Hinton KD); `teacher_variants` (teacher param updates)
    trains several teachers and distils from all of them (multi-teacher)."""
    import torch

    from edgekd.config import LossTerm, ModelSection, load_recipe
    from edgekd.distill.api import (GROUP_KEYS, build_from_section, firing_rate_batches, load_recipe_data,
                                    student_regularizers)
    from edgekd.distill.trainer import evaluate, fit, tensors_for
    from edgekd.models import count_parameters, firing_rates

    recipe = load_recipe(recipe_name, overrides)
    groups = GROUP_KEYS.get(recipe.task, ())
    t0 = time.time()
    data_key = _key(recipe.task, recipe.data.model_dump(mode="json"), recipe.seed)
    if data_key not in _CACHE:
        _CACHE[data_key] = load_recipe_data(recipe)
    data = _CACHE[data_key]
    sections = [ModelSection(arch=recipe.teacher.arch, params={**recipe.teacher.params, **v})
                for v in (teacher_variants or [{}])]
    torch.manual_seed(recipe.seed)
    teachers = [build_from_section(sec, data.train) for sec in sections]
    student_probe = build_from_section(recipe.student, data.train)
    names = [n for t in teachers for n in t.input_names] + list(student_probe.input_names)
    train_t, val_t = tensors_for(data.train, names), tensors_for(data.validation, names)
    quiet = dict(progress=False, log=lambda _m: None, group_keys=groups)
    log(f"[{name}] {len(train_t)} train / {len(val_t)} validation samples; training the teacher"
        + (f"s ({len(teachers)})" if len(teachers) > 1 else ""))
    teacher_cfg = recipe.teacher_train or recipe.train
    teacher_losses = recipe.teacher_losses or [LossTerm(name="ce")]
    teacher_keys, teacher_evals = [], []
    for i, (sec, teacher) in enumerate(zip(sections, teachers)):
        tkey = _key("teacher", data_key, sec.model_dump(mode="json"), teacher_cfg.model_dump(mode="json"),
                    [t.model_dump(mode="json") for t in teacher_losses])
        if tkey in _CACHE:
            teacher.load_state_dict(_CACHE[tkey])
            log(f"[{name}] teacher {i + 1}: the same run as an earlier method's")
        else:
            torch.manual_seed(recipe.seed)
            teacher = teachers[i] = build_from_section(sec, data.train)
            fit(teacher, train_t, val_t, teacher_cfg, teacher_losses, seed=recipe.seed, progress=False,
                group_keys=groups, log=lambda m, i=i: log(f"[{name}] teacher {i + 1} {m}"))
            _CACHE[tkey] = {k: v.clone() for k, v in teacher.state_dict().items()}
        teacher_keys.append(tkey)
        teacher_evals.append(evaluate(teacher, val_t, 128, "cpu", groups))
    teacher_eval = teacher_evals[0]
    figures: dict[str, float] = {
        f"{name}_teacher_accuracy": teacher_eval["accuracy"],
        f"{name}_teacher_params": count_parameters(teachers[0]),
        f"{name}_student_params": count_parameters(student_probe),
    }
    for i, ev in enumerate(teacher_evals[1:], start=2):
        figures[f"{name}_teacher{i}_accuracy"] = ev["accuracy"]
    low_key = "accuracy_lighting_low-light"
    if low_key in teacher_eval:
        figures[f"{name}_teacher_accuracy_lowlight"] = teacher_eval[low_key]
    own = student_regularizers(recipe)  # e.g. the spiking student's spike_margin: in every arm
    arms: list[tuple[str, list[Any], list[int]]] = [("nokd", [LossTerm(name="ce"), *own], []),
                                                     ("kd", list(recipe.losses), list(range(len(teachers))))]
    if logit_kd:
        arms.append(("logitkd", [LossTerm(**t) for t in LOGIT_KD] + own, [0]))
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm, _, _ in arms}
    extras: dict[str, list[float]] = {}
    rates: dict[str, float] = {}

    def report() -> None:
        if partial is not None:
            partial(summarise(name, figures, runs, rates, t0, extras),
                    config_of(recipe, recipe_name, overrides, seeds, train_t, val_t, runs, teacher_eval, teacher_evals,
                              sections))

    report()
    for seed in seeds:
        for arm, losses, which in arms:
            rkey = _key("student", data_key, recipe.student.model_dump(mode="json"), recipe.train.model_dump(mode="json"),
                        [t.model_dump(mode="json") for t in losses], [teacher_keys[i] for i in which], seed)
            want_rates = arm == "kd" and seed == seeds[0]
            if rkey in _CACHE and not want_rates:
                runs[arm].append(_CACHE[rkey])
                log(f"[{name}] seed {seed} {arm}: val accuracy {_CACHE[rkey]['accuracy']:.3f} (the same run as an "
                    "earlier method's)")
                continue
            torch.manual_seed(seed)
            student = build_from_section(recipe.student, data.train)
            t = None if not which else (teachers[which[0]] if len(which) == 1 else [teachers[i] for i in which])
            result = fit(student, train_t, val_t, recipe.train, losses, teacher=t, seed=seed, **quiet)
            last = {k[4:]: v for k, v in result.history[-1].items() if k.startswith("val_")}
            runs[arm].append(last)
            _CACHE[rkey] = last
            log(f"[{name}] seed {seed} {arm}: val accuracy {last['accuracy']:.3f} (best epoch {result.best_metric:.3f})")
            if arm == "kd":
                for key, value in result.history[-1].items():
                    if key.startswith("teacher_") and key.endswith("_picked"):
                        extras.setdefault(key.replace("teacher_", "teacher", 1), []).append(value)
                held_out = result.prepared.get("pkdot", {}).get("held_out_r2")
                if held_out is not None:
                    extras.setdefault("hallucination_r2_heldout", []).append(held_out)
            if want_rates:  # on the weights fit returns (its best epoch)
                rates = firing_rates(student, firing_rate_batches(student, val_t))
        report()
    return summarise(name, figures, runs, rates, t0, extras), config_of(
        recipe, recipe_name, overrides, seeds, train_t, val_t, runs, teacher_eval, teacher_evals, sections)


def summarise(name: str, base: dict[str, float], runs: dict[str, list[dict[str, Any]]], rates: dict[str, float],
              t0: float, extras: dict[str, list[float]] | None = None) -> dict[str, float]:
    figures = dict(base)
    low_key = "accuracy_lighting_low-light"
    done = min(len(v) for v in runs.values())
    for key, label in (("accuracy", ""), (low_key, "_lowlight")):
        if not done or key not in runs["kd"][0]:
            continue
        vals = {arm: [r[key] for r in runs[arm][:done]] for arm in runs}
        series = [(arm, f"{name}_student_{arm}_accuracy{label}", vals[arm]) for arm in runs]
        series.append(("gain", f"{name}_kd_gain{label}", [a - b for a, b in zip(vals["kd"], vals["nokd"])]))
        if "logitkd" in vals:
            series.append(("logitkd_gain", f"{name}_logitkd_gain{label}",
                           [a - b for a, b in zip(vals["logitkd"], vals["nokd"])]))
            series.append(("gain_over_logitkd", f"{name}_kd_gain_over_logitkd{label}",
                           [a - b for a, b in zip(vals["kd"], vals["logitkd"])]))
        for _arm, prefix, values in series:
            m, s = _mean_std(values)
            figures[f"{prefix}_mean"] = m
            figures[f"{prefix}_std"] = s
    for key, values in (extras or {}).items():
        if values:
            figures[f"{name}_{key}"] = statistics.fmean(values)
    for layer, rate in rates.items():
        figures[f"{name}_firing_rate_{layer}"] = rate
    if rates:
        figures[f"{name}_firing_rate_mean"] = statistics.fmean(rates.values())
    figures[f"{name}_seeds_done"] = done
    figures[f"{name}_seconds"] = round(time.time() - t0, 1)
    return figures


def config_of(recipe: Any, recipe_name: str, overrides: list[str], seeds: list[int], train_t: Any, val_t: Any,
              runs: dict[str, Any], teacher_eval: dict[str, Any], teacher_evals: list[dict[str, Any]] | None = None,
              teachers: list[Any] | None = None) -> dict[str, Any]:
    config = {"recipe": recipe_name, "overrides": overrides, "seeds": seeds, "task": recipe.task,
              "data": recipe.data.model_dump(mode="json"), "teacher": recipe.teacher.model_dump(mode="json"),
              "student": recipe.student.model_dump(mode="json"),
              "losses": [t.model_dump(mode="json") for t in recipe.losses],
              "train": recipe.train.model_dump(mode="json"),
              "teacher_train": (recipe.teacher_train or recipe.train).model_dump(mode="json"),
              "train_samples": len(train_t), "validation_samples": len(val_t),
              "per_seed": runs, "teacher_eval": teacher_eval}
    if "logitkd" in runs:
        config["logit_kd_losses"] = LOGIT_KD
    if teachers is not None and len(teachers) > 1:
        config["teachers"] = [t.model_dump(mode="json") for t in teachers]
        config["teacher_evals"] = teacher_evals
    return config


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

        f, c = run_method(name, cfg["recipe"], cfg["overrides"], seeds, lambda m: print(m, flush=True), partial,
                          logit_kd=cfg.get("logit_kd", False), teacher_variants=cfg.get("teacher_variants"))
        figures.update(f)
        config["methods"][name] = c
        figures["total_seconds"] = round(time.time() - start, 1)
        result = write_result(args.out, figures, config)  # after every method: partial results survive
    for key in sorted(k for k in figures if "firing_rate_" not in k or k.endswith("_mean")):
        print(f"{key:55s} {figures[key]:.4f}")
    return 0 if result else 1


if __name__ == "__main__":
    sys.exit(main())
