"""`edgekd train` and `edgekd distill`: a recipe in, an artifact directory out.

train:   the recipe's teacher trained with its `teacher_losses` (default: cross-entropy).
distill: the recipe's student trained with the recipe's `losses` against a trained teacher
         read from a run directory (arch.json + model.pt), or against several (multi-teacher:
         per batch the teacher with the lowest cross-entropy, e.g. MT-PKDOT).
Both write, through `edgekd.artifacts.stage_dir`: model.pt (state_dict), arch.json,
metrics.jsonl, checkpoints, and manifest.json with the best validation metrics, parameter
counts and (for spiking models) firing rates per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.config import LossTerm, ModelSection, Recipe, load_recipe
from edgekd.errors import ConfigError

GROUP_KEYS = {"eye": ("lighting",), "skeleton": ("view",), "face": ()}


@dataclass
class LoadedData:
    train: Any  # edgekd.data.api.Dataset
    validation: Any


def load_recipe_data(recipe: Recipe) -> LoadedData:
    """Training and validation splits of the recipe's data (validation cut from the training side)."""
    from edgekd.data.api import load_dataset

    common = dict(task=recipe.task, source=recipe.data.source, path=recipe.data.path, seed=recipe.seed,
                  validation_fraction=recipe.data.validation_fraction, **recipe.data.options)
    return LoadedData(load_dataset(split="train", **common), load_dataset(split="validation", **common))


def data_params(arch: str, dataset: Any) -> dict[str, Any]:
    """Model parameters that come from the data: classes, joint layout, persons."""
    params: dict[str, Any] = {"num_classes": len(dataset.classes)}
    if arch.startswith("skeleton-"):
        params["layout"] = dataset.layout
        params["persons"] = int(dataset.x["joints"].shape[-1])
    return params


def build_from_section(section: ModelSection, dataset: Any) -> Any:
    from edgekd.models import build_model

    params = dict(section.params)
    for key, value in data_params(section.arch, dataset).items():
        if key in params and params[key] != value:
            raise ConfigError(
                f"model '{section.arch}': {key} = {params[key]!r} in the recipe, but the data has {value!r}",
                hint=f"remove '{key}' from the model params: it is taken from the data",
            )
        params[key] = value
    return build_model(section.arch, **params)


def firing_rate_batches(model: Any, data: Any, batch_size: int = 64, limit: int = 256) -> list[tuple[Any, ...]]:
    """Up to `limit` samples of `data` (TensorData) as input tuples for `firing_rates`."""
    n = min(len(data), limit)
    return [tuple(data.inputs[k][i : i + batch_size] for k in model.input_names) for i in range(0, n, batch_size)]


def _run(recipe: Recipe, stage: str, out: Path, model_section: ModelSection, losses: Sequence[LossTerm],
         teacher_dirs: Sequence[Path], resume: bool, progress: bool, log: Callable[[str], None] | None,
         train_cfg: Any = None) -> dict[str, Any]:
    import torch

    from edgekd.artifacts import stage_dir
    from edgekd.distill.trainer import evaluate, fit, tensors_for
    from edgekd.models import SPIKING, count_parameters, firing_rates, load_model, save_model

    from edgekd.models import architecture_class

    architecture_class(model_section.arch)  # a misspelt architecture fails before the data is read
    data = load_recipe_data(recipe)
    torch.manual_seed(recipe.seed)
    model = build_from_section(model_section, data.train)
    teachers = []
    inputs: dict[str, str] = {}
    for i, teacher_dir in enumerate(teacher_dirs):
        teachers.append(load_model(teacher_dir, expect_arch=recipe.teacher.arch if recipe.teacher else None))
        inputs["teacher_model" if i == 0 else f"teacher_model_{i + 1}"] = teacher_dir / "model.pt"
    teacher = teachers[0] if len(teachers) == 1 else (teachers or None)
    names = list(model.input_names) + [n for t in teachers for n in t.input_names]
    train_t, val_t = tensors_for(data.train, names), tensors_for(data.validation, names)
    groups = GROUP_KEYS.get(recipe.task, ())
    params = {"recipe": recipe.model_dump(mode="json"), "model": model_section.model_dump(mode="json"),
              "losses": [t.model_dump(mode="json") for t in losses]}
    with stage_dir(out, stage, params=params, inputs=inputs) as sd:
        result = fit(model, train_t, val_t, train_cfg or recipe.train, losses, teacher=teacher, out_dir=out, seed=recipe.seed,
                     group_keys=groups, resume=resume, progress=progress, log=log)
        import os

        if int(os.environ.get("RANK", "0")) != 0:
            raise SystemExit(0)  # only rank 0 writes the artifact directory
        files = save_model(model, out)
        for name, p in files.items():
            sd.add_output(name, p)
        for name in ("metrics.jsonl", "best.pt", "checkpoint-last.pt"):
            sd.add_output(name, out / name)
        metrics: dict[str, Any] = {f"val_{k}": v for k, v in result.best_metrics.items()}
        metrics.update(best_epoch=result.best_epoch, epochs=result.epochs_run, parameters=count_parameters(model),
                       validation_samples=len(val_t), training_samples=len(train_t))
        for i, t in enumerate(teachers):
            key = "teacher" if i == 0 else f"teacher_{i + 1}"
            metrics[f"{key}_parameters"] = count_parameters(t)
            # where fit() left it: after a CUDA run the student is back on the CPU, the teachers are not
            device = next(t.parameters()).device
            metrics[f"{key}_val_accuracy"] = evaluate(t, val_t, 128, device, groups)["accuracy"]
        if model_section.arch in SPIKING:
            metrics["firing_rates"] = firing_rates(model, firing_rate_batches(model, val_t))
        sd.set_metrics(**metrics)
    return {"out": str(out), "stage": stage, "metrics": metrics}


def student_regularizers(recipe: Recipe) -> list[LossTerm]:
    """The recipe's loss terms that regularize the student itself (spike_margin, logit_margin):
    every training of the student keeps them, with or without a teacher."""
    from edgekd.distill.losses import LOSSES

    return [t for t in recipe.losses if t.name in LOSSES and LOSSES[t.name].student_regularizer]


def train_recipe(recipe_name: str, overrides: Sequence[str] = (), out: str | Path | None = None,
                 model: str = "teacher", resume: bool = True, progress: bool = True,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the recipe's teacher (or, with model='student', the student alone: no KD baseline)."""
    recipe = load_recipe(recipe_name, overrides)
    section = recipe.teacher if model == "teacher" else recipe.student
    if model not in ("teacher", "student"):
        raise ConfigError(f"--model must be 'teacher' or 'student', got '{model}'")
    if section is None:
        raise ConfigError(f"recipe '{recipe.name}' has no [{model}] section", hint=f"add [{model}] arch = '...'")
    losses = [LossTerm(name="ce")]
    if recipe.teacher_losses and model == "teacher":
        losses = list(recipe.teacher_losses)
    if model == "student":  # the student's own regularizers (spike_margin) apply without KD too
        losses += student_regularizers(recipe)
    dest = Path(out) if out else Path("runs") / recipe.name / ("01-train" if model == "teacher" else "01-train-student")
    train_cfg = recipe.teacher_train if (model == "teacher" and recipe.teacher_train) else recipe.train
    return _run(recipe, "train", dest, section, losses, [], resume, progress, log, train_cfg)


def distill_recipe(recipe_name: str, teacher_dir: str | Path | Sequence[str | Path], overrides: Sequence[str] = (),
                   out: str | Path | None = None, resume: bool = True, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Distill the recipe's student from the teacher in `teacher_dir` (or from several teachers,
    a list of run directories: multi-teacher) with the recipe's losses."""
    recipe = load_recipe(recipe_name, overrides)
    if recipe.student is None:
        raise ConfigError(f"recipe '{recipe.name}' has no [student] section", hint="add [student] arch = '...'")
    if not recipe.losses:
        raise ConfigError(f"recipe '{recipe.name}' has no [[losses]]", hint="add the KD terms, e.g. name = 'kd'")
    teacher_paths = [Path(p) for p in ([teacher_dir] if isinstance(teacher_dir, (str, Path)) else teacher_dir)]
    if not teacher_paths:
        raise ConfigError("no teacher run directory given", hint="edgekd distill --teacher RUN_DIR [--teacher RUN_DIR2 ...]")
    if len(set(teacher_paths)) != len(teacher_paths):
        raise ConfigError("the same teacher run directory is given twice", hint="give each teacher once")
    for teacher_path in teacher_paths:
        if not teacher_path.is_dir():
            from edgekd.errors import NotFoundError

            raise NotFoundError(f"no teacher run directory '{teacher_path}'", hint="train one first: edgekd train --recipe NAME")
    dest = Path(out) if out else Path("runs") / recipe.name / "02-distill"
    return _run(recipe, "distill", dest, recipe.student, recipe.losses, teacher_paths, resume, progress, log)
