"""Theoretical energy of a model from its operation counts: always an ESTIMATE (45 nm figures).

Convention of the spiking-network literature (Horowitz 2014 figures, used by MK-SGN and others):
  ANN layer:  E = MACs x 4.6 pJ
  SNN layer:  E = SOPs x 0.9 pJ, with SOPs = input firing rate x MACs of that layer over all T steps
The first layer of an SNN sees real-valued input, so it is counted as MACs. Which rule applies is
decided per layer from what it actually receives: a layer whose every input value is 0 or 1 is
driven by spikes (accumulates only); anything else is a MAC layer. MACs come from torch's own
FLOP counter (FlopCounterMode, 2 FLOPs per MAC); firing rates are measured on the inputs given.
Operations outside conv/linear layers (e.g. attention matmuls) are counted as MACs: an upper bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

E_MAC_PJ = 4.6
E_AC_PJ = 0.9
LABEL = "estimate (45 nm)"


@dataclass
class LayerEnergy:
    name: str
    kind: str                 # conv / linear / other
    macs: float               # per sample, all time steps
    input_rate: float | None  # fraction of non-zero inputs (spike rate) when spike-driven
    op: str                   # MAC or AC
    ops: float                # MACs, or synaptic operations (rate x MACs)
    energy_uj: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EnergyEstimate:
    model: str
    parameters: int
    samples: int
    layers: list[LayerEnergy] = field(default_factory=list)
    label: str = LABEL
    kind: str = "estimate"

    @property
    def total_uj(self) -> float:
        return sum(layer.energy_uj for layer in self.layers)

    @property
    def total_macs(self) -> float:
        return sum(layer.macs for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "label": self.label, "kind": self.kind, "parameters": self.parameters,
            "samples": self.samples, "total_mj": self.total_uj / 1e3, "total_uj": self.total_uj,
            "total_macs": self.total_macs, "e_mac_pj": E_MAC_PJ, "e_ac_pj": E_AC_PJ,
            "layers": [layer.to_dict() for layer in self.layers],
        }


def theoretical_energy(model: Any, batches: Iterable[Sequence[Any]]) -> EnergyEstimate:
    """Per-sample estimate over `batches` (tuples of the model's input tensors)."""
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    weighted = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, weighted)}
    stats = {name: {"nonzero": 0.0, "total": 0.0, "binary": True} for name in layers}

    def pre_hook(name):
        def hook(module, args):
            x = args[0].detach()
            s = stats[name]
            s["nonzero"] += float(torch.count_nonzero(x))
            s["total"] += float(x.numel())
            if s["binary"]:
                s["binary"] = bool(torch.all((x == 0) | (x == 1)))
        return hook

    handles = [m.register_forward_pre_hook(pre_hook(n)) for n, m in layers.items()]
    prefix = type(model).__name__
    model.eval()
    samples = 0
    flops: dict[str, float] = {}
    total_flops = 0.0
    try:
        with torch.no_grad():
            for batch in batches:
                counter = FlopCounterMode(display=False)
                with counter:
                    model(*batch)
                samples += int(batch[0].shape[0])
                counts = counter.get_flop_counts()
                for name in layers:
                    flops[name] = flops.get(name, 0.0) + float(sum(counts.get(f"{prefix}.{name}", {}).values()))
                total_flops += float(sum(counts.get("Global", {}).values()))
    finally:
        for h in handles:
            h.remove()
    if samples == 0:
        from edgekd.errors import DataError

        raise DataError("no samples to measure firing rates on", hint="pass at least one batch of real inputs")

    estimate = EnergyEstimate(model=getattr(model, "arch_name", prefix),
                              parameters=int(sum(p.numel() for p in model.parameters())), samples=samples)
    counted = 0.0
    for name, module in layers.items():
        macs = flops.get(name, 0.0) / 2.0 / samples
        counted += flops.get(name, 0.0)
        s = stats[name]
        rate = s["nonzero"] / s["total"] if s["total"] else 0.0
        kind = "linear" if isinstance(module, nn.Linear) else "conv"
        if s["binary"] and s["total"]:
            ops = rate * macs
            estimate.layers.append(LayerEnergy(name, kind, macs, rate, "AC", ops, ops * E_AC_PJ * 1e-6))
        else:
            estimate.layers.append(LayerEnergy(name, kind, macs, None, "MAC", macs, macs * E_MAC_PJ * 1e-6))
    other = max(total_flops - counted, 0.0) / 2.0 / samples
    if other > 0:
        estimate.layers.append(LayerEnergy("(other ops)", "other", other, None, "MAC", other, other * E_MAC_PJ * 1e-6))
    return estimate


def energy_of_run(run_dir: str, limit: int = 256) -> EnergyEstimate:
    """The estimate for a trained model's artifact directory, with firing rates measured on its
    recipe's validation data."""
    from pathlib import Path

    from edgekd.artifacts import read_manifest
    from edgekd.config import Recipe, validate
    from edgekd.distill.api import firing_rate_batches, load_recipe_data
    from edgekd.distill.trainer import tensors_for
    from edgekd.errors import ArtifactError
    from edgekd.models import load_model

    manifest = read_manifest(run_dir)
    if "recipe" not in manifest.params:
        raise ArtifactError(f"'{run_dir}' is a '{manifest.stage}' stage, not a trained model",
                            hint="pass a directory written by `edgekd train` or `edgekd distill`")
    recipe = validate(Recipe, manifest.params["recipe"], f"{run_dir}/manifest.json")
    model = load_model(Path(run_dir))
    data = load_recipe_data(recipe).validation
    tensors = tensors_for(data, list(model.input_names))
    return theoretical_energy(model, firing_rate_batches(model, tensors, limit=limit))


def format_estimate(est: EnergyEstimate) -> str:
    lines = [f"{est.model}: {est.total_uj / 1e3:.4f} mJ per sample — {est.label}",
             f"  parameters {est.parameters:,}; MACs {est.total_macs:,.0f}; measured on {est.samples} samples",
             f"  {'layer':<40} {'op':<4} {'rate':>6} {'MACs':>14} {'ops':>14} {'uJ':>10}"]
    for layer in est.layers:
        rate = f"{layer.input_rate:.3f}" if layer.input_rate is not None else "-"
        lines.append(f"  {layer.name:<40} {layer.op:<4} {rate:>6} {layer.macs:>14,.0f} {layer.ops:>14,.0f} {layer.energy_uj:>10.3f}")
    return "\n".join(lines)
