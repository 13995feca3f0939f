"""Typed configuration: TOML files validated by pydantic models that reject unknown keys.

Errors name the file, the key path and, for a misspelled key, the closest valid key. TOML is
data only: nothing in a config is executed.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekd.errors import ConfigError, NotFoundError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- loading with clear errors


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no such file: '{path}'")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}", hint="check quotes, brackets and '=' on that line") from None


def validate(model: type[M], data: Mapping[str, Any], source: str) -> M:
    """Validate `data` against `model`; the first problem becomes one clear ConfigError line."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise config_error_from(exc, model, source) from None


def load_toml(model: type[M], path: str | Path) -> M:
    return validate(model, read_toml(path), str(path))


def config_error_from(exc: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    # A misspelled key shows up as "unknown key" AND "missing key": report the misspelling first.
    order = {"extra_forbidden": 0, "union_tag_invalid": 1, "literal_error": 2, "missing": 4}
    errors = sorted(exc.errors(), key=lambda e: order.get(e.get("type", ""), 3))
    problems = [_describe(err, model, source) for err in errors]
    message, hint = problems[0]
    if len(problems) > 1:
        message += f"  (+{len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return ConfigError(message, hint)


def _describe(err: Mapping[str, Any], model: type[BaseModel], source: str) -> tuple[str, str | None]:
    loc = tuple(err.get("loc", ()))
    key_path = _key_path(loc, model)
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        suggestion = did_you_mean(loc[-1], allowed)
        hint = f"valid keys here: {', '.join(sorted(allowed))}" if allowed else None
        return f"{source}: unknown key '{key_path}'{suggestion}", hint
    if kind == "missing":
        return f"{source}: missing required key '{key_path}'", "add it to the file"
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        got = err.get("input")
        choices = [c.strip().strip("'") for c in str(expected).replace(" or ", ",").split(",") if c.strip()]
        return (
            f"{source}: '{key_path}' = {got!r} is not allowed{did_you_mean(got, choices)}",
            f"expected {expected}",
        )
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        tag = ctx.get("tag")
        expected = ctx.get("expected_tags", "")
        choices = [c.strip().strip("'") for c in str(expected).split(",")]
        return (
            f"{source}: '{key_path}' has unknown type {tag!r}{did_you_mean(tag, choices)}",
            f"expected one of {expected}",
        )
    if kind == "value_error" and not loc:
        return f"{source}: {err.get('msg', 'invalid value').removeprefix('Value error, ')}", None
    got = err.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    return f"{source}: '{key_path}': {err.get('msg', 'invalid value')} (got {shown})", None


def _key_path(loc: Sequence[Any], model: type[BaseModel]) -> str:
    # Drop discriminator tags pydantic inserts into the location (e.g. transport.ssh.host).
    parts: list[str] = []
    candidates: list[Any] = [model]
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
            candidates = _unwrap(candidates, sequence=True)
            continue
        models = [c for c in candidates if _is_model(c)]
        if any(item in m.model_fields for m in models):
            parts.append(str(item))
            candidates = [m.model_fields[item].annotation for m in models if item in m.model_fields]
            candidates = _unwrap(candidates)
            continue
        tagged = [m for m in models if _tag_of(m) == item]
        if tagged:
            candidates = tagged
            continue
        parts.append(str(item))
        candidates = []
    return ".".join(parts) or "(top level)"


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    candidates: list[Any] = [model]
    for item in loc:
        if isinstance(item, int):
            candidates = _unwrap(candidates, sequence=True)
            continue
        models = [c for c in candidates if _is_model(c)]
        if any(item in m.model_fields for m in models):
            candidates = _unwrap([m.model_fields[item].annotation for m in models if item in m.model_fields])
            continue
        tagged = [m for m in models if _tag_of(m) == item]
        candidates = tagged if tagged else _unwrap(candidates, mapping=True)
    names: set[str] = set()
    for c in candidates:
        if _is_model(c):
            names.update(c.model_fields)
    return sorted(names)


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return args[0] if typing.get_origin(field.annotation) is Literal and len(args) == 1 else None


def _unwrap(annotations: Sequence[Any], sequence: bool = False, mapping: bool = False) -> list[Any]:
    """Model classes reachable from annotations through Optional/Union/Annotated/list/dict."""
    out: list[Any] = []
    for ann in annotations:
        origin = typing.get_origin(ann)
        args = typing.get_args(ann)
        if origin is typing.Annotated:
            out.extend(_unwrap([args[0]], sequence, mapping))
        elif origin in (typing.Union, types.UnionType):
            out.extend(_unwrap(list(args), sequence, mapping))
        elif sequence and origin in (list, tuple):
            out.extend(_unwrap(list(args[:1])))
        elif mapping and origin is dict:
            out.extend(_unwrap(list(args[1:2])))
        elif origin in (list, tuple, dict):
            out.append(ann)
        else:
            out.append(ann)
    return out


# ---------------------------------------------------------------- --set key=value overrides


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """['train.epochs=3', 'student.width=0.5'] -> nested dict; values parsed as TOML scalars."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set '{item}' is not KEY=VALUE", hint="e.g. --set train.epochs=3")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # bare words are strings: --set data.source=fer2013
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set '{item}' conflicts with another --set for '{part}'")
        node[parts[-1]] = value
    return nested


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ---------------------------------------------------------------- recipes

Task = Literal["eye", "skeleton", "face"]


class DataSection(Strict):
    source: str = "synthetic"
    path: str | None = None
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    options: dict[str, Any] = Field(default_factory=dict)


class ModelSection(Strict):
    arch: str
    params: dict[str, Any] = Field(default_factory=dict)


class LossTerm(Strict):
    name: str
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)


class TrainSection(Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    weight_decay: float = Field(0.0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    num_workers: int = Field(0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"  # learning rate over the epochs
    metric: str = "accuracy"  # validation metric that picks the best checkpoint (higher is better)


class ConvertSection(Strict):
    formats: list[str] = Field(default_factory=lambda: ["tflite-int8"])
    per_channel: bool = True
    calibration_samples: int = Field(200, ge=1)
    max_accuracy_drop: float = Field(1.0, ge=0)
    min_agreement: float = Field(0.98, ge=0, le=1)
    # Float hops: share of held-out samples whose scores must stay within the tolerance. A spiking
    # student flips a spike when a membrane sits a rounding error from its threshold, so its
    # recipes set this lower (the top-1 agreement limit still applies).
    float_min_within: float = Field(0.99, ge=0, le=1)


class Recipe(Strict):
    name: str
    task: Task
    seed: int = 0
    description: str = ""
    data: DataSection = Field(default_factory=DataSection)
    teacher: ModelSection | None = None
    student: ModelSection | None = None
    losses: list[LossTerm] = Field(default_factory=list)
    train: TrainSection = Field(default_factory=TrainSection)
    # Teacher training (edgekd train): its own loss terms and schedule; default ce and [train].
    teacher_losses: list[LossTerm] = Field(default_factory=list)
    teacher_train: TrainSection | None = None
    convert: ConvertSection = Field(default_factory=ConvertSection)


RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def load_recipe(name_or_path: str, overrides: Sequence[str] = ()) -> Recipe:
    """A shipped recipe by name, or a TOML file by path, with --set overrides applied."""
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            names = recipe_names()
            raise NotFoundError(
                f"no recipe '{name_or_path}'{did_you_mean(name_or_path, names)}",
                hint=f"shipped recipes: {', '.join(names) or '(none)'}; or pass a path to a .toml file",
            )
    data = deep_merge(read_toml(path), parse_overrides(overrides))
    source = str(path) + (" (with --set)" if overrides else "")
    return validate(Recipe, data, source)
