"""Model architectures by name, so recipes and checkpoints can name them.

`build_model(arch, **params)` builds one; `ARCHITECTURES` maps a name to "module:class" (imported
only when built, so this package imports no torch at import time). A new architecture is one
line here. Checkpoints are a plain state_dict (model.pt) plus `arch.json` ({"arch", "params"}).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import ArtifactError, ConfigError, NotFoundError, did_you_mean

if TYPE_CHECKING:
    from torch import Tensor, nn

ARCHITECTURES: dict[str, str] = {
    "eye-snn": "edgekd.models.eye:EyeSNN",
    "eye-hybrid": "edgekd.models.eye:EyeHybrid",
    "skeleton-gcn": "edgekd.models.gcn:SkeletonGCN",
    "skeleton-sgn": "edgekd.models.gcn:SkeletonSGN",
    "face-resemotenet": "edgekd.models.resemotenet:ResEmoteNet",
}
# Spiking architectures (firing rates and export mode apply).
SPIKING = {"eye-snn", "skeleton-sgn"}

ARCH_FILE = "arch.json"
WEIGHTS_FILE = "model.pt"


def architecture_class(arch: str) -> type:
    if arch not in ARCHITECTURES:
        raise ConfigError(
            f"unknown architecture '{arch}'{did_you_mean(arch, ARCHITECTURES)}",
            hint=f"architectures: {', '.join(sorted(ARCHITECTURES))}",
        )
    module, _, name = ARCHITECTURES[arch].partition(":")
    return getattr(importlib.import_module(module), name)


def build_model(arch: str, **params: Any) -> nn.Module:
    """Build architecture `arch` with keyword params; unknown params are a ConfigError."""
    import inspect

    cls = architecture_class(arch)
    sig = inspect.signature(cls.__init__)
    allowed = [p for p in sig.parameters if p != "self"]
    for key in params:
        if key not in allowed:
            raise ConfigError(
                f"architecture '{arch}' has no parameter '{key}'{did_you_mean(key, allowed)}",
                hint=f"parameters: {', '.join(allowed)}",
            )
    try:
        sig.bind(None, **params)
    except TypeError as exc:
        raise ConfigError(f"architecture '{arch}': {exc}", hint=f"parameters: {', '.join(allowed)}") from None
    model = cls(**params)
    model.arch_name = arch
    # Every parameter, defaults included: a checkpoint must rebuild the same model even after a
    # default changes in a later release.
    bound = sig.bind(None, **params)
    bound.apply_defaults()
    model.arch_params = {k: _jsonable(v) for k, v in bound.arguments.items() if k != "self"}
    return model


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return _jsonable(dataclasses.asdict(value))
    return value


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def arch_description(model: nn.Module) -> dict[str, Any]:
    """What `arch.json` holds: enough to rebuild the model before loading its weights."""
    if not hasattr(model, "arch_name"):
        raise ConfigError("model was not built by edgekd.models.build_model", hint="build it with build_model(arch, ...)")
    return {
        "arch": model.arch_name,
        "params": model.arch_params,
        "input_names": list(getattr(model, "input_names", ())),
        "parameters": count_parameters(model),
    }


def save_model(model: nn.Module, directory: str | Path) -> dict[str, Path]:
    """Write model.pt (plain state_dict) and arch.json atomically into `directory`."""
    import io

    import torch

    from edgekd.artifacts import atomic_write_bytes, atomic_write_json

    directory = Path(directory)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    weights = atomic_write_bytes(directory / WEIGHTS_FILE, buf.getvalue())
    arch = atomic_write_json(directory / ARCH_FILE, arch_description(model))
    return {"model": weights, "arch": arch}


def load_model(directory: str | Path, expect_arch: str | None = None) -> nn.Module:
    """Rebuild the model described by `directory`/arch.json and load model.pt (weights_only)."""
    import torch

    directory = Path(directory)
    arch_path, weights_path = directory / ARCH_FILE, directory / WEIGHTS_FILE
    for p in (arch_path, weights_path):
        if not p.exists():
            raise NotFoundError(f"'{directory}' has no {p.name}", hint="point at a directory written by `edgekd train` or `edgekd distill`")
    try:
        desc = json.loads(arch_path.read_text())
        arch, params = desc["arch"], desc.get("params", {})
    except (json.JSONDecodeError, KeyError) as exc:
        raise ArtifactError(f"{arch_path}: not an edgekd architecture description ({exc})") from None
    if expect_arch is not None and arch != expect_arch:
        raise ConfigError(
            f"'{directory}' holds a '{arch}' model, but '{expect_arch}' was asked for",
            hint="use a run directory of the right model, or change the recipe's architecture",
        )
    model = build_model(arch, **params)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    load_state_checked(model, state, str(weights_path))
    return model


def load_state_checked(model: nn.Module, state: Mapping[str, Any], source: str) -> None:
    """load_state_dict with an error that names the architecture and the first mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        arch = getattr(model, "arch_name", type(model).__name__)
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (e.g. {'; '.join(shapes[:2])})")
        raise ArtifactError(
            f"{source} does not fit architecture '{arch}' {getattr(model, 'arch_params', {})}: " + ", ".join(parts),
            hint="the checkpoint was saved from a different architecture or size; load it with the arch.json written beside it",
        )
    model.load_state_dict(state, strict=True)


def spiking_layers(model: nn.Module) -> dict[str, nn.Module]:
    from edgekd.models.neurons import LIF

    return {name: m for name, m in model.named_modules() if isinstance(m, LIF)}


def firing_rates(model: nn.Module, batches: Iterable[tuple[Tensor, ...]]) -> dict[str, float]:
    """Mean firing rate (spikes per neuron per time step) of every LIF layer over `batches`
    (each a tuple of the model's inputs), in eval mode. Keyed by module path."""
    import torch

    layers = spiking_layers(model)
    sums = {name: 0.0 for name in layers}
    counts = {name: 0 for name in layers}
    handles = []

    def hook(name: str):
        def record(_module: Any, _inputs: Any, output: Any) -> None:
            outs = output if isinstance(output, list) else [output]
            for o in outs:
                sums[name] += float(o.detach().float().sum())
                counts[name] += o.numel()

        return record

    for name, layer in layers.items():
        handles.append(layer.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for inputs in batches:
                model(*inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: (sums[name] / counts[name] if counts[name] else 0.0) for name in layers}
