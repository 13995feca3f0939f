"""Single-eye emotion models.

Teacher `eye-hybrid` (SEEN-style event+frame ANN-SNN hybrid): a spatial ANN branch (conv-BN-ReLU)
on the first and last intensity frames, a spiking temporal branch (conv-BN-LIF) on the T event
frames, fused per time step into per-step class scores.

Student `eye-snn`: a frame-only spiking CNN run over the T frames (direct input coding: frame t
is the input current at step t); per-step class scores from the last spike maps, averaged over T.
Sizes: "tiny" (< 100 k parameters, microcontroller-sized) to "small". `int8_exact = true` (with
an integer membrane, lif.membrane_grid) makes the float model compute what full int8 computes:
int8-rounded weights (edgekd.models.int8), frames on the int8 input's grid, and a readout of one
FC on the spike rates summed over the steps (docs/int8-spiking.md).

Sequences are batch-first (N, T, C, H, W). In training, convolutions run on the merged (N*T)
batch; in export mode the input is split into per-step tensors once (by one-hot fully connected
layers, see `unbind_steps`) and the network is unrolled step by step, which is the same
arithmetic in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from edgekd.errors import ConfigError, did_you_mean
from edgekd.models.int8 import (SPIKE_SCALE, Int8Conv2d, Int8ConvBN, Int8Linear, check_levels, grid_input, grid_value,
                                require_integer_membrane)
from edgekd.models.neurons import LIF, LIFParams, unbind_steps

SeqT = Tensor | list[Tensor]

# int8_exact: frames in [0, 1) on steps of 1/128, their differences in (-1, 1) on the same grid:
# all three input channels fit one int8 grid (scale 1/128, zero point 0) without rounding
INPUT_LEVELS = 128

STUDENT_SIZES: dict[str, tuple[int, ...]] = {
    "tiny": (16, 32, 64),  # ~25 k parameters: fits a Cortex-M4 in int8
    "small": (32, 64, 128),  # ~100 k
    "base": (32, 64, 128, 256),  # ~390 k
}


def seq_map(fn: Callable[[Tensor], Tensor], xs: SeqT) -> SeqT:
    """Apply a per-step layer to a sequence: merged batch for (N, T, ...) tensors, per step for lists."""
    if isinstance(xs, list):
        return [fn(x) for x in xs]
    n, t = xs.shape[:2]
    y = fn(xs.reshape(n * t, *xs.shape[2:]))
    return y.reshape(n, t, *y.shape[1:])


def seq_sum(xs: SeqT) -> Tensor:
    """Sum over time of a sequence (N, T, ...) or list -> (N, ...) (exported: an ADD chain)."""
    if isinstance(xs, list):
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total
    return xs.sum(dim=1)


def seq_mean(xs: SeqT) -> Tensor:
    """Mean over time of a sequence (N, T, ...) or list -> (N, ...)."""
    if isinstance(xs, list):
        return seq_sum(xs) * (1.0 / len(xs))
    return xs.mean(dim=1)


def seq_stack(xs: SeqT) -> Tensor:
    if isinstance(xs, list):
        return torch.stack(xs, dim=1)
    return xs


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm '{kind}'{did_you_mean(kind, ['batch', 'none'])}", hint="norm = 'batch' or 'none'")


def _global_mean(x: Tensor) -> Tensor:
    return x.mean(dim=(-2, -1))


def _split_time(x: Tensor, in_channels: int, export: bool) -> SeqT:
    """(N, T, C, H, W) or (N, T*C, H, W) -> sequence (tensor in training, list in export)."""
    if x.dim() == 4:
        n, tc, h, w = x.shape
        if tc % in_channels:
            raise ConfigError(f"input has {tc} channels, not a multiple of {in_channels}")
        x = x.reshape(n, tc // in_channels, in_channels, h, w)
    if x.dim() != 5 or x.shape[2] != in_channels:
        raise ConfigError(
            f"expected input (N, T, {in_channels}, H, W), got {tuple(x.shape)}",
            hint="eye frames are (N, T, 1, H, W) and events (N, T, 2, H, W)",
        )
    if not export:
        return x
    n, t, c, h, w = x.shape
    # Steps picked from (N, T*C*H*W)-shaped data by one-hot FC layers: no slicing op in the graph.
    flat = x.reshape(n, t, c * h * w)
    return [s.reshape(n, c, h, w) for s in unbind_steps(flat, 1, True)]


class SpikingConvStack(nn.Module):
    """conv3x3 -> norm -> LIF -> maxpool(2), per channel count; time along dim 1.

    `input_scale` > 0 (int8_exact; the int8 scale of the first layer's input, norm "batch"): each
    conv and its BN are one Int8ConvBN (edgekd.models.int8), later layers reading spike maps."""

    def __init__(self, in_channels: int, channels: Sequence[int], lif: LIFParams, norm: str = "batch",
                 input_scale: float = 0.0):
        super().__init__()
        blocks = []
        prev = in_channels
        for i, c in enumerate(channels):
            if input_scale:
                conv: nn.Module = Int8ConvBN(Int8Conv2d(prev, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                             input_scale if i == 0 else SPIKE_SCALE)
                normed: nn.Module = nn.Identity()
            else:
                conv, normed = nn.Conv2d(prev, c, 3, padding=1, bias=norm == "none"), _norm2d(norm, c)
            blocks.append(
                nn.ModuleDict(
                    {
                        "conv": conv,
                        "norm": normed,
                        "lif": LIF(lif, time_dim=1),
                        "pool": nn.MaxPool2d(2),
                    }
                )
            )
            prev = c
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = prev

    def forward(self, xs: SeqT) -> SeqT:
        for b in self.blocks:
            xs = seq_map(lambda x, b=b: b["norm"](b["conv"](x)), xs)
            xs = b["lif"](xs)
            xs = seq_map(b["pool"], xs)
        return xs


class EyeSNN(nn.Module):
    """Frame-only spiking CNN student. forward(frames) -> (N, K); forward_steps -> (N, T, K)."""

    input_names = ("frames",)

    def __init__(
        self,
        num_classes: int = 7,
        size: str = "tiny",
        channels: Sequence[int] | None = None,
        in_channels: int = 1,
        lif: dict[str, Any] | LIFParams | None = None,
        norm: str = "batch",
        frame_difference: bool = True,
        onset_difference: bool = False,
        int8_exact: bool = False,
        logit_levels: int = 4,
    ):
        super().__init__()
        if channels is None:
            if size not in STUDENT_SIZES:
                raise ConfigError(f"unknown eye-snn size '{size}'{did_you_mean(size, STUDENT_SIZES)}",
                                  hint=f"sizes: {', '.join(STUDENT_SIZES)}, or give channels = [..]")
            channels = STUDENT_SIZES[size]
        params = lif if isinstance(lif, LIFParams) else LIFParams.from_config(lif or {"beta": 0.5, "threshold": 1.0})
        if int8_exact:
            require_integer_membrane("eye-snn", params.membrane_grid,
                                     "e.g. lif = { beta = 0.6, current_clamp = 2.0, membrane_grid = 16 }")
        if int8_exact and norm != "batch":
            raise ConfigError(f"eye-snn int8_exact folds each BatchNorm into its conv: norm must be 'batch', got '{norm}'")
        self.in_channels = in_channels
        self.frame_difference = frame_difference
        self.onset_difference = onset_difference
        self.int8_exact = int8_exact
        self.logit_levels = check_levels("eye-snn", "logit_levels", logit_levels)
        self.export_mode = False
        coded = in_channels * (1 + int(frame_difference) + int(onset_difference))
        self.features = SpikingConvStack(coded, channels, params, norm, 1.0 / INPUT_LEVELS if int8_exact else 0.0)
        self.head = (Int8Linear if int8_exact else nn.Linear)(self.features.out_channels, num_classes)

    def _code(self, frames: Tensor) -> SeqT:
        """Input current per step: frame t; with frame_difference also frame t - frame t-1 (0 at
        t = 0: the change between frames, the student's stand-in for events); with
        onset_difference also frame t - frame 0 (how far the eye has moved since the sequence
        began: per-step features then carry the expression's displacement, which a per-step
        network with a mean over time cannot otherwise recover from the small, noisy step
        differences)."""
        if self.int8_exact:  # frames on the grid of the int8 input (1/128), so it loses nothing
            frames = grid_input(frames, INPUT_LEVELS)
        xs = _split_time(frames, self.in_channels, self.export_mode)
        if not (self.frame_difference or self.onset_difference):
            return xs
        if isinstance(xs, list):
            coded = []
            for i, x in enumerate(xs):
                parts = [x]
                if self.frame_difference:
                    parts.append(x - (xs[i - 1] if i else x))
                if self.onset_difference:
                    parts.append(x - xs[0])
                coded.append(torch.cat(parts, dim=1))
            return coded
        parts = [xs]
        if self.frame_difference:
            parts.append(xs - torch.cat([xs[:, :1], xs[:, :-1]], dim=1))
        if self.onset_difference:
            parts.append(xs - xs[:, :1])
        return torch.cat(parts, dim=2)

    def forward_steps(self, frames: Tensor) -> Tensor:
        xs = self.features(self._code(frames))
        logits = seq_map(lambda x: self.head(_global_mean(x)), xs)
        return seq_stack(logits)

    def forward(self, frames: Tensor) -> Tensor:
        xs = self.features(self._code(frames))
        if self.int8_exact:
            # one FC on the spike rates summed over the steps: values k / (H W) that int8 holds
            # exactly (edgekd.convert.spiking_ranges pins them), its bias on int8's int32 grid; the
            # logits on a grid of 1 / logit_levels (evaluation), which the int8 output is pinned
            # to, so that ties between classes resolve as int8's do
            last = xs[-1] if isinstance(xs, list) else xs
            rates = seq_sum(seq_map(_global_mean, xs))
            logits = self.head(rates, in_scale=1.0 / (last.shape[-1] * last.shape[-2]))
            return logits if self.training else grid_value(logits, self.logit_levels, self.export_mode)
        # Exported, this is T fully connected layers whose int8 logits are summed. One MEAN over
        # all steps' maps and one FC (equal in float) was tried: no better agreement on one
        # student, 1.25 points lower int8 accuracy on the quickstart's (docs/int8-spiking.md).
        return seq_mean(seq_map(lambda x: self.head(_global_mean(x)), xs))


class EyeHybrid(nn.Module):
    """Event+frame teacher: ANN on (first, last) frames + SNN on event frames, fused per step."""

    input_names = ("frames", "events")

    def __init__(
        self,
        num_classes: int = 7,
        spatial_channels: Sequence[int] = (32, 64, 128),
        temporal_channels: Sequence[int] = (32, 64, 128),
        hidden: int = 128,
        event_channels: int = 2,
        lif: dict[str, Any] | LIFParams | None = None,
        norm: str = "batch",
    ):
        super().__init__()
        # SEEN's LIF: decay 0.2, threshold 0.3, hard reset, rectangular surrogate.
        params = lif if isinstance(lif, LIFParams) else LIFParams.from_config(
            lif or {"beta": 0.2, "threshold": 0.3, "reset": "zero", "surrogate": "rectangular", "alpha": 2.0}
        )
        layers: list[nn.Module] = []
        prev = 2
        for c in spatial_channels:
            layers += [nn.Conv2d(prev, c, 3, padding=1, bias=norm == "none"), _norm2d(norm, c), nn.ReLU(), nn.MaxPool2d(2)]
            prev = c
        self.spatial = nn.Sequential(*layers)
        self.temporal = SpikingConvStack(event_channels, temporal_channels, params, norm)
        self.event_channels = event_channels
        self.export_mode = False
        self.fuse = nn.Sequential(nn.Linear(prev + self.temporal.out_channels, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def _steps(self, frames: Tensor, events: Tensor) -> SeqT:
        if frames.dim() != 5:
            raise ConfigError(f"eye-hybrid expects frames (N, T, 1, H, W), got {tuple(frames.shape)}")
        key = torch.cat([frames[:, 0], frames[:, -1]], dim=1)  # first + last intensity frame (SEEN)
        spatial = _global_mean(self.spatial(key))
        es = self.temporal(_split_time(events, self.event_channels, self.export_mode))

        def fuse(x: Tensor) -> Tensor:
            t = _global_mean(x)
            s = spatial if t.shape[0] == spatial.shape[0] else spatial.repeat_interleave(t.shape[0] // spatial.shape[0], 0)
            return self.head(self.fuse(torch.cat([s, t], dim=1)))

        if isinstance(es, list):
            return [fuse(x) for x in es]
        n, t = es.shape[:2]
        # merged batch is (n*t): sample-major, so each sample's spatial vector repeats t times
        return fuse(es.reshape(n * t, *es.shape[2:])).reshape(n, t, -1)

    def forward_steps(self, frames: Tensor, events: Tensor) -> Tensor:
        return seq_stack(self._steps(frames, events))

    def forward(self, frames: Tensor, events: Tensor) -> Tensor:
        return seq_mean(self._steps(frames, events))
