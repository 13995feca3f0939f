"""Theoretical energy (45 nm estimate) of each spiking student vs its ANN teacher, per task.

    python benchmarks/energy.py --quick --out energy.json
    python benchmarks/energy.py --eye-run runs/quickstart-eye --skeleton-run runs/skeleton-mksgn --out energy.json

With a run directory (a pipeline run holding 01-teacher and 02-student) the trained models are
measured. Otherwise the task's recipe is trained here on small synthetic data (--quick: a few
epochs) so firing rates come from trained weights, not from a random initialisation. Firing
rates are measured on the recipe's validation split. The MK-SGN claim to compare with: the
spiking GCN needs > 98 % less energy than GCNs.

face: ResEmoteNet teacher and the recipe's student are both ANNs, whose estimate is MACs x 4.6 pJ
whatever the weights: they are built from the face-mini-resemotenet recipe (untrained) and
measured on a few synthetic validation faces.
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


FACE_STUDENTS = ("A", "B", "C", "tiny")


def face_estimates(samples: int) -> tuple[dict[str, object], str]:
    """Estimates of the face recipe's ANN teacher and of students A, B, C and tiny."""
    import torch

    from edgekd.config import load_recipe
    from edgekd.distill.api import build_from_section, firing_rate_batches, load_recipe_data
    from edgekd.distill.trainer import tensors_for
    from edgekd.measure.energy import theoretical_energy

    recipe = load_recipe("face-mini-resemotenet", ["data.options.samples=140"])
    data = load_recipe_data(recipe)
    torch.manual_seed(0)
    sections = {"teacher": recipe.teacher}
    for size in FACE_STUDENTS:
        sections[size] = recipe.student.model_copy(update={"params": {**recipe.student.params, "size": size}})
    estimates = {}
    for name, section in sections.items():
        model = build_from_section(section, data.train).eval()
        tensors = tensors_for(data.validation, list(model.input_names))
        estimates[name] = theoretical_energy(model, firing_rate_batches(model, tensors, batch_size=8, limit=samples))
        del model
    return estimates, "built from face-mini-resemotenet (ANNs: MACs only, weights do not matter)"


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
        estimates, source = face_estimates(min(args.samples, 16))
        teacher = estimates["teacher"]
        figures["face_teacher_mj"] = teacher.total_uj / 1e3
        figures["face_teacher_macs"] = teacher.total_macs
        figures["face_teacher_parameters"] = teacher.parameters
        for size in FACE_STUDENTS:
            student = estimates[size]
            figures[f"face_student_{size}_mj"] = student.total_uj / 1e3
            figures[f"face_student_{size}_energy_reduction_pct"] = 100.0 * (1 - student.total_uj / teacher.total_uj)
            figures[f"face_student_{size}_macs"] = student.total_macs
            figures[f"face_student_{size}_parameters"] = student.parameters
        config["models"]["face"] = {"source": source, **{k: v.to_dict() for k, v in estimates.items()}}
    result = write_result(args.out, figures, config)
    for k, v in result["figures"].items():
        print(f"{k:45s} {v:14.6g}")


if __name__ == "__main__":
    main()
