"""Layers whose float computation is what full-int8 TFLite computes (quantization-aware training).

`Int8Conv2d` / `Int8Linear` use their weight rounded per output channel to int8 the way
TensorFlow's converter rounds it (symmetric, [-127, 127], scale max|w| / 127 per channel), in
training (straight-through: the gradient reaches the float weight unchanged), evaluation and
export alike; the converter then finds weights already on its grid and keeps them as they are,
so the int8 model multiplies by exactly the weights torch used. Per-channel rounding is
scale-free per channel, so a BatchNorm folded into the layer at conversion keeps it on the grid.

`grid_input` rounds an input onto a fixed grid (step 1 / levels), clamped to the int8 range of
that grid, so that the model's int8 input quantization (pinned to the same grid by
edgekd.convert.spiking_ranges) loses nothing the float model kept. `grid_value` does the same
for an activation (a current, a logit): clamp to the grid's signed int8 range, x * levels,
ROUND, x / levels. Exported, that pattern tells the converter the tensor's scale (1 / levels,
zero point 0); the producing op's own int8 requantization then rounds as torch rounded.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

WEIGHT_LEVELS = 127  # symmetric int8 weights, as TFLite's converter makes them
SPIKE_SCALE = 1.0 / 255  # int8 scale of a spike map: range [0, 1], zero point -128


def round_ste(v: Tensor) -> Tensor:
    """round(v); where v needs a gradient, it passes the rounding unchanged (straight-through)."""
    return v + (torch.round(v) - v).detach() if v.requires_grad else torch.round(v)


def weight_scale(w: Tensor) -> Tensor:
    """TFLite's per-output-channel (axis 0) int8 weight scale max|w_c| / 127, shaped to broadcast."""
    dims = tuple(range(1, w.dim()))
    return w.detach().abs().amax(dim=dims, keepdim=True).clamp_min(1e-12) / WEIGHT_LEVELS


def int8_weight(w: Tensor) -> Tensor:
    """w rounded per output channel (axis 0) to int8 steps of max|w_c| / 127; straight-through."""
    scale = weight_scale(w)
    return round_ste(w / scale).clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS) * scale


def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """(scale, shift) per channel of a BatchNorm in evaluation: bn(x) = x * scale + shift, as
    torch's inference kernel computes it (what folding a BN into a conv multiplies and adds)."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def require_integer_membrane(owner: str, membrane_grid: int, hint: str) -> None:
    """int8_exact spiking students compute their membranes in int8's integers: a ConfigError
    naming `owner` when the LIF has no integer membrane (lif.membrane_grid)."""
    from edgekd.errors import ConfigError

    if not membrane_grid:
        raise ConfigError(f"{owner} int8_exact needs an integer membrane (lif.membrane_grid)", hint=hint)


def int32_bias(b: Tensor, in_scale: float, w_scale: Tensor) -> Tensor:
    """b rounded to the int32 bias grid of an int8 layer (step in_scale * weight scale, per output
    channel), as TFLite's converter stores it; used in evaluation and export only. An unknown input
    scale (0: a grid not yet set by data) leaves b as it is."""
    if in_scale <= 0:
        return b
    step = in_scale * w_scale.reshape(-1)
    return torch.round(b / step) * step


class Int8ConvBN(nn.Module):
    """An int8 convolution followed by BatchNorm. Training: conv, then BN (batch statistics).
    Evaluation and export: the one convolution the converter makes of the pair (BN folded in),
    with its bias rounded to the int32 grid the int8 model keeps it on, so the float model adds
    the bias the int8 model adds. `in_scale` is the int8 scale of the input (a model-set grid:
    SPIKE_SCALE for spike maps); `mask` (optional) zeroes weights (a structured conv)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, in_scale: float, mask: Tensor | None = None):
        super().__init__()
        self.conv, self.bn, self.in_scale = conv, bn, float(in_scale)
        if mask is not None:
            self.register_buffer("mask", mask)
        else:
            self.mask = None

    def _weight(self) -> Tensor:
        return self.conv.weight if self.mask is None else self.conv.weight * self.mask

    def folded(self, in_scale: float | None = None) -> tuple[Tensor, Tensor]:
        """(weight, bias) of the folded convolution, weight on int8's grid and bias on int32's
        (for an input of int8 scale `in_scale`, by default the constructor's)."""
        a, b = bn_affine(self.bn)
        w = int8_weight(self._weight()) * a.reshape(-1, *[1] * (self.conv.weight.dim() - 1))
        if self.conv.bias is not None:
            b = b + self.conv.bias * a
        return w, int32_bias(b, self.in_scale if in_scale is None else float(in_scale), weight_scale(w))

    def forward(self, x: Tensor, in_scale: float | None = None) -> Tensor:
        """`in_scale` overrides the constructor's (an input grid set by data, ActivationGrid)."""
        if self.training:
            return self.bn(self.conv._conv_forward(x, int8_weight(self._weight()), self.conv.bias))
        return self.conv._conv_forward(x, *self.folded(in_scale))


class ActivationGrid(nn.Module):
    """An activation on a symmetric int8 grid whose step the data sets (quantization-aware training
    of a non-spiking student): in training the step follows a running max of |x| (step = max /
    127, momentum `momentum`) and x is rounded onto it straight-through; in evaluation and export
    the step is frozen, and exported as grid_value's pattern it becomes the int8 tensor's scale.
    Before the first training batch (`levels` 0) it passes x unchanged."""

    def __init__(self, momentum: float = 0.05):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("levels", torch.zeros(()))
        self.export_mode = False

    @property
    def step(self) -> float:
        return 1.0 / float(self.levels) if float(self.levels) > 0 else 0.0

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():  # tensor ops only: no device sync per batch
                peak = x.detach().abs().amax().clamp_min(1e-6)
                old_max = WEIGHT_LEVELS / self.levels.clamp_min(1e-12)
                running = torch.where(self.levels > 0, (1 - self.momentum) * old_max + self.momentum * peak, peak)
                self.levels.copy_(WEIGHT_LEVELS / running)
            return grid_value(x, self.levels.clone(), False)  # a copy: a second call updates levels in place
        if float(self.levels) <= 0:
            return x
        return grid_value(x, float(self.levels), self.export_mode)


class Int8Conv2d(nn.Conv2d):
    """nn.Conv2d computing with its int8-rounded weight (module doc); same parameters and state."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, int8_weight(self.weight), self.bias)


class Int8Linear(nn.Linear):
    """nn.Linear computing with its int8-rounded weight (module doc); same parameters and state.
    `in_scale` (the int8 scale of the input, where the model sets it): in evaluation and export
    the bias is rounded to the int32 grid the int8 model keeps it on."""

    def forward(self, x: Tensor, in_scale: float | None = None) -> Tensor:
        w = int8_weight(self.weight)
        b = self.bias
        if b is not None and in_scale is not None and not self.training:
            b = int32_bias(b, in_scale, weight_scale(w))
        return F.linear(x, w, b)


def grid_input(x: Tensor, levels: int, low: float = 0.0) -> Tensor:
    """round(x * levels) / levels, clamped to [low, 127 / levels] (the input carries no gradient)."""
    return torch.round(x.clamp(low, (WEIGHT_LEVELS) / levels) * levels) * (1.0 / levels)


def check_levels(owner: str, key: str, levels: object) -> int:
    """A grid's steps per unit from a config: a positive integer, else a ConfigError naming it."""
    from edgekd.errors import ConfigError

    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 1:
        raise ConfigError(f"{owner} {key} must be an integer >= 1 (steps per unit of its int8 grid), got {levels!r}")
    return levels


def grid_value(x: Tensor, levels: float | Tensor, export: bool = False) -> Tensor:
    """round(x * levels) / levels, clamped to [-128, 127] / levels (module doc); straight-through in
    training. `export`: a plain Round, so the graph reads clamp -> MUL -> ROUND -> MUL."""
    scaled = x.clamp(-128.0 / levels, WEIGHT_LEVELS / levels) * levels
    return (torch.round(scaled) if export else round_ste(scaled)) * (1.0 / levels)


class GridSequential(nn.Sequential):
    """nn.Sequential that tells each int8 layer (Int8Linear, Int8ConvBN) the int8 scale of its
    input: the step of the last ActivationGrid before it, or `in_scale` for the first."""

    def forward(self, x: Tensor, in_scale: float | None = None) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, in_scale=in_scale) if isinstance(layer, (Int8Linear, Int8ConvBN)) else layer(x)
            if isinstance(layer, ActivationGrid):
                in_scale = layer.step
        return x
