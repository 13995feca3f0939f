"""Layers whose float computation is what full-int8 TFLite computes (quantization-aware training).

`Int8Conv2d` / `Int8Linear` use their weight rounded per output channel to int8 the way
TensorFlow's converter rounds it (symmetric, [-127, 127], scale max|w| / 127 per channel), in
training (straight-through: the gradient reaches the float weight unchanged), evaluation and
export alike; the converter then finds weights already on its grid and keeps them as they are,
so the int8 model multiplies by exactly the weights torch used. Per-channel rounding is
scale-free per channel, so a BatchNorm folded into the layer at conversion keeps it on the grid.

`grid_input` rounds an input onto a fixed grid (step 1 / levels), clamped to the int8 range of
that grid, so that the model's int8 input quantization (pinned to the same grid by
edgekd.convert.spiking_ranges) loses nothing the float model kept.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

WEIGHT_LEVELS = 127  # symmetric int8 weights, as TFLite's converter makes them


def round_ste(v: Tensor) -> Tensor:
    """round(v); where v needs a gradient, it passes the rounding unchanged (straight-through)."""
    return v + (torch.round(v) - v).detach() if v.requires_grad else torch.round(v)


def int8_weight(w: Tensor) -> Tensor:
    """w rounded per output channel (axis 0) to int8 steps of max|w_c| / 127; straight-through."""
    dims = tuple(range(1, w.dim()))
    scale = w.detach().abs().amax(dim=dims, keepdim=True).clamp_min(1e-12) / WEIGHT_LEVELS
    return round_ste(w / scale).clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS) * scale


class Int8Conv2d(nn.Conv2d):
    """nn.Conv2d computing with its int8-rounded weight (module doc); same parameters and state."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, int8_weight(self.weight), self.bias)


class Int8Linear(nn.Linear):
    """nn.Linear computing with its int8-rounded weight (module doc); same parameters and state."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, int8_weight(self.weight), self.bias)


def grid_input(x: Tensor, levels: int, low: float = 0.0) -> Tensor:
    """round(x * levels) / levels, clamped to [low, 127 / levels] (the input carries no gradient)."""
    return torch.round(x.clamp(low, (WEIGHT_LEVELS) / levels) * levels) * (1.0 / levels)
