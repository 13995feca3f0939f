"""Theoretical energy (45 nm estimate) of each spiking student vs its ANN teacher, per task.

    python benchmarks/energy.py --quick --out energy.json
    python benchmarks/energy.py --eye-run runs/quickstart-eye --skeleton-run runs/skeleton-mksgn --out energy.json

With a run directory (a pipeline run holding 01-teacher and 02-student) the trained models are
measured. Otherwise the task's recipe is trained here on small synthetic data (--quick: a few
epochs) so firing rates come from trained weights, not from a random initialisation. Firing
rates are measured on the recipe's validation split. The MK-SGN claim to compare with: the
spiking GCN needs > 98 % less energy than GCNs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)

from _common import write_result

QUICK = {
    "eye": ("eye-mskd", ["data.options.samples=420", "data.options.subjects=14", "teacher_train.epochs=2", "train.epochs=2"]),
    "skeleton": ("skeleton-mksgn", ["data.options.samples=300", "teacher_train.epochs=2", "train.epochs=2"]),
}
FULL = {
    "eye": ("eye-mskd", []),
    "skeleton": ("skeleton-mksgn", []),
}


def trained_pair(task: str, quick: bool, workdir: Path) -> tuple[Path, Path, str]:
    from edgekd.distill.api import distill_recipe, train_recipe

    recipe, overrides = (QUICK if quick else FULL)[task]
    teacher, student = workdir / task / "01-teacher", workdir / task / "02-student"
    train_recipe(recipe, overrides, out=teacher, progress=False)
    distill_recipe(recipe, teacher, overrides, out=student, progress=False)
    return teacher, student, f"trained here: {recipe} {' '.join(overrides)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--eye-run", help="pipeline run dir with 01-teacher and 02-student for the eye task")
    parser.add_argument("--skeleton-run", help="pipeline run dir with 01-teacher and 02-student for the skeleton task")
    parser.add_argument("--samples", type=int, default=128, help="validation samples for firing rates")
    args = parser.parse_args()

    from edgekd.measure.energy import energy_of_run

    figures: dict[str, float] = {}
    config: dict[str, object] = {"quick": args.quick, "label": "estimate (45 nm): MAC 4.6 pJ, AC 0.9 pJ", "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for task, run in (("eye", args.eye_run), ("skeleton", args.skeleton_run)):
            if run:
                teacher_dir, student_dir, source = Path(run) / "01-teacher", Path(run) / "02-student", f"run {run}"
            else:
                teacher_dir, student_dir, source = trained_pair(task, args.quick, Path(tmp))
            teacher = energy_of_run(str(teacher_dir), limit=args.samples)
            student = energy_of_run(str(student_dir), limit=args.samples)
            rates = [layer.input_rate for layer in student.layers if layer.input_rate is not None]
            figures[f"{task}_teacher_mj"] = teacher.total_uj / 1e3
            figures[f"{task}_student_mj"] = student.total_uj / 1e3
            figures[f"{task}_student_energy_reduction_pct"] = 100.0 * (1 - student.total_uj / teacher.total_uj)
            figures[f"{task}_teacher_macs"] = teacher.total_macs
            figures[f"{task}_student_macs"] = student.total_macs
            figures[f"{task}_teacher_parameters"] = teacher.parameters
            figures[f"{task}_student_parameters"] = student.parameters
            figures[f"{task}_student_mean_input_firing_rate"] = sum(rates) / len(rates) if rates else 0.0
            config["models"][task] = {"source": source, "teacher": teacher.to_dict(), "student": student.to_dict()}
    result = write_result(args.out, figures, config)
    for k, v in result["figures"].items():
        print(f"{k:45s} {v:14.6g}")


if __name__ == "__main__":
    main()
