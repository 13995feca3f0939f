"""Skeleton action models on (N, C=3, T, V, M) sequences.

Teacher `skeleton-gcn`: a multimodal GCN (ST-GCN / 2s-AGCN style). One stem unit per modality
(joints, bones, joint motion, bone motion), summed, then a trunk of units; each unit is a spatial
graph convolution over three adjacency partitions (self, inward, outward) plus a learned
adaptive adjacency, BN, ReLU, a temporal convolution over frames, BN, residual, ReLU. ~10 units.

Student `skeleton-sgn` (MK-SGN): skeleton spiking coding of each modality (1x1 conv, BN, LIF),
spiking multimodal fusion (learned per-channel modality weights, then LIF), ~6 units of spatial
spiking graph convolution with spiking self-attention over the joints followed by a spiking
temporal convolution. As in the authors' code the frames are the spike time steps: each LIF
layer runs over the frame axis (dim 2), in layer-by-layer (multi-step) order.

Project choices (not published): the fusion weights are learned softmax weights per channel
(the paper's mutual-information guidance is not reproduced); the spiking self-attention is
Spikformer's Q(K^T V) without softmax over the joints of each frame, written with broadcast
multiplies and means so the exported graph needs no batched matmul; graph mixing over the
joints is a fully connected layer with the fixed adjacency as its weight.

`int8_exact = true` on the student (with an integer membrane, lif.membrane_grid) makes its float
model compute what full int8 computes, as eye-snn's does (edgekd.models.int8): int8-rounded
weights (adjacencies included, per output joint); each input stream on a fixed grid
(INPUT_LEVELS); every current that is added to another (graph mix + attention, the residual
stream) on the membrane's grid threshold / K, and the residual stream clamped to that grid's
int8 range; the graph mix's x A_k on a grid of 1 / MIX_LEVELS; the modality fusion one 1x1
convolution over the modalities' spikes (one learned weight per modality and channel, no
softmax); logits on a grid of 1 / logit_levels in evaluation and export, so that near-ties
resolve as the int8 output's do. docs/int8-spiking.md has the measurements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edgekd.errors import ConfigError, did_you_mean
from edgekd.models.int8 import (SPIKE_SCALE, Int8Conv2d, Int8ConvBN, Int8Linear, check_levels, grid_input, grid_value,
                                bn_affine, int8_weight, int32_bias, require_integer_membrane, weight_scale)
from edgekd.models.neurons import LIF, LIFParams

MODALITIES = ("joints", "bones", "joint_motion", "bone_motion")
# int8_exact grids (steps of 1 / levels). Normalised joints reach about +-4 torso lengths (MSR
# Action3D: 99.9 % within 2.6); bones and motions stay within +-2 (99.9 %: 1.4 and below).
INPUT_LEVELS = {"joints": 32, "bones": 64, "joint_motion": 64, "bone_motion": 64}
MIX_LEVELS = 32  # x A_k of spikes: sums of adjacency weights, within +-4
LOGIT_LEVELS = 8  # default logit grid: logits within [-16, 16)


def conv_bn(cin: int, cout: int, kernel: int | tuple[int, int] = 1, stride: int | tuple[int, int] = 1,
            padding: int | tuple[int, int] = 0, bias: bool = False, in_scale: float = 0.0) -> nn.Module:
    """conv -> BatchNorm: nn.Sequential(Conv2d, BatchNorm2d), or with `in_scale` (int8_exact; the
    int8 scale of the input) the pair whose float model computes its int8 form (Int8ConvBN)."""
    conv = (Int8Conv2d if in_scale else nn.Conv2d)(cin, cout, kernel, stride, padding, bias=bias)
    return Int8ConvBN(conv, nn.BatchNorm2d(cout), in_scale) if in_scale else nn.Sequential(conv, nn.BatchNorm2d(cout))

SGN_SIZES: dict[str, tuple[int, ...]] = {
    "tiny": (8, 8, 16, 16, 32, 32),  # microcontroller-sized
    "small": (16, 16, 32, 32, 64, 64),
    "base": (32, 32, 64, 64, 128, 128),
}
GCN_SIZES: dict[str, tuple[int, ...]] = {
    "small": (32, 32, 32, 32, 64, 64, 64, 128, 128, 128),
    "base": (64, 64, 64, 64, 128, 128, 128, 256, 256, 256),  # ST-GCN's widths
}


def adjacency_partitions(layout: Any) -> np.ndarray:
    """(3, V, V) ST-GCN-style spatial partitions: identity, parent->child, child->parent, column-normalised."""
    from edgekd.data.graphs import get_layout

    lay = get_layout(layout)
    v = lay.num_joints
    inward = np.zeros((v, v), dtype=np.float32)
    for parent, child in lay.bones:
        if parent != child:
            inward[parent, child] = 1.0  # x @ A: y[:, child] gathers x[:, parent]; outward the reverse
    outward = inward.T.copy()

    def norm(a: np.ndarray) -> np.ndarray:
        deg = a.sum(axis=0)
        return a / np.where(deg > 0, deg, 1.0)[None, :]

    return np.stack([np.eye(v, dtype=np.float32), norm(inward), norm(outward)])


def _sizes(kind: str, size: str, table: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    if size not in table:
        raise ConfigError(f"unknown {kind} size '{size}'{did_you_mean(size, table)}",
                          hint=f"sizes: {', '.join(table)}, or give channels = [..]")
    return table[size]


def _default_strides(n: int) -> list[int]:
    # ST-GCN halves the frames at the first unit of each new width (units 5 and 8 of 10).
    return [2 if i in (n * 4 // 10, n * 7 // 10) and i > 0 else 1 for i in range(n)]


class GraphMix(nn.Module):
    """y = sum_k W_k (x A_k): K fixed+adaptive adjacencies, then one 1x1 conv over K*C channels."""

    def __init__(self, in_channels: int, out_channels: int, partitions: np.ndarray, adaptive: bool = True,
                 int8_exact: bool = False):
        super().__init__()
        self.register_buffer("A", torch.from_numpy(partitions))
        self.B = nn.Parameter(torch.zeros_like(self.A)) if adaptive else None
        self.int8_exact = int8_exact
        mixed = in_channels * partitions.shape[0]
        # int8_exact: the BN that follows the mix belongs to the conv (one folded int8 conv)
        self.conv = conv_bn(mixed, out_channels, bias=True, in_scale=1.0 / MIX_LEVELS) if int8_exact else \
            nn.Conv2d(mixed, out_channels, 1)
        self.export_mode = False

    def forward(self, x: Tensor) -> Tensor:
        n, c, t, v = x.shape
        a = self.A + self.B if self.B is not None else self.A
        if self.int8_exact:  # each output joint's weights (a column of A_k) rounded to int8 on their own
            a = int8_weight(a.transpose(1, 2).reshape(-1, v)).reshape(-1, v, v).transpose(1, 2)
        if self.export_mode:
            mixed = self._mix_as_conv(x, a)
        else:
            flat = x.reshape(n * c * t, v)
            mixed = [nn.functional.linear(flat, a[k].t()).reshape(n, c, t, v) for k in range(a.shape[0])]
        if self.int8_exact:
            mixed = [grid_value(m, MIX_LEVELS, self.export_mode) for m in mixed]
        return self.conv(torch.cat(mixed, dim=1))

    @staticmethod
    def _mix_as_conv(x: Tensor, a: Tensor) -> list[Tensor]:
        """x A_k for each k without a Reshape: the joints become the channel axis of 1x1 convs.

        (N, C, T, V) -> transpose -> (N, V, T, C) -> conv V -> V (weight A_k^T) -> transposed
        back to (N, C, T, V). Flattening to (N*C*T, V) and back instead made onnx2tf guess the
        layout of the 4-D result from its shape, which it got wrong when the frames equalled
        the channels (16 frames, 16 channels)."""
        v = a.shape[1]
        joints_first = x.transpose(1, 3)
        return [nn.functional.conv2d(joints_first, a[k].t().reshape(v, v, 1, 1)).transpose(1, 3)
                for k in range(a.shape[0])]


class GCNUnit(nn.Module):
    def __init__(self, cin: int, cout: int, partitions: np.ndarray, stride: int = 1, kernel: int = 5,
                 residual: bool = True):
        super().__init__()
        self.gcn = GraphMix(cin, cout, partitions)
        self.bn1 = nn.BatchNorm2d(cout)
        self.tcn = nn.Conv2d(cout, cout, (kernel, 1), (stride, 1), (kernel // 2, 0))
        self.bn2 = nn.BatchNorm2d(cout)
        if not residual:
            self.res = None
        elif cin == cout and stride == 1:
            self.res = nn.Identity()
        else:
            self.res = nn.Sequential(nn.Conv2d(cin, cout, 1, (stride, 1)), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.tcn(self.relu(self.bn1(self.gcn(x)))))
        if self.res is not None:
            y = y + self.res(x)
        return self.relu(y)


def _fold_persons(x: Tensor) -> Tensor:
    """(N, C, T, V, M) -> (N*M, C, T, V)."""
    if x.dim() != 5:
        raise ConfigError(f"skeleton input must be (N, C, T, V, M), got {tuple(x.shape)}")
    n, c, t, v, m = x.shape
    return x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)


def _pool_persons(x: Tensor, persons: int) -> Tensor:
    """(N*M, C, T, V) -> (N, C) by the mean over frames, joints and persons."""
    pooled = x.mean(dim=(2, 3))
    if persons == 1:  # no second MEAN in the graph: int8 would requantize its values once more
        return pooled
    return pooled.reshape(-1, persons, pooled.shape[1]).mean(dim=1)


def _input_bn_4d(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """The evaluation-mode data BN over the C*V (channel, joint) features, on (N, C, T, V) itself.

    The same per-feature scale and shift as `bn` (as torch's inference kernel computes them),
    broadcast as (C, 1, V) constants: MUL + ADD instead of a (N, C*V, T) reshape and back, whose
    4-D result onnx2tf would lay out by guessing from its shape."""
    _, c, _, v = x.shape
    alpha, beta = bn_affine(bn)
    return x * alpha.reshape(c, 1, v) + beta.reshape(c, 1, v)


def _check_modalities(arch: str, modalities: Sequence[str]) -> tuple[str, ...]:
    """The streams a model reads, in the canonical order (joints, bones, joint_motion, bone_motion)."""
    chosen = list(modalities)
    unknown = [m for m in chosen if m not in MODALITIES]
    if unknown:
        raise ConfigError(f"{arch}: unknown modality '{unknown[0]}'{did_you_mean(unknown[0], MODALITIES)}",
                          hint=f"modalities: {', '.join(MODALITIES)}")
    if not chosen or len(set(chosen)) != len(chosen):
        raise ConfigError(f"{arch}: modalities must be a non-empty list without repeats, got {chosen}",
                          hint=f"e.g. modalities = [\"joints\"]; all: {list(MODALITIES)}")
    return tuple(m for m in MODALITIES if m in chosen)


class SkeletonGCN(nn.Module):
    """Multimodal GCN teacher. forward(joints, bones, joint_motion, bone_motion) -> (N, K).

    `modalities` restricts it to some streams (e.g. ["bones", "bone_motion"], a per-modality
    teacher); forward then takes those streams, in the order of `input_names`."""

    input_names = MODALITIES

    def __init__(self, layout: str, num_classes: int, size: str = "small", channels: Sequence[int] | None = None,
                 strides: Sequence[int] | None = None, in_channels: int = 3, persons: int = 1,
                 temporal_kernel: int = 5, dropout: float = 0.0, modalities: Sequence[str] = MODALITIES):
        super().__init__()
        self.input_names = _check_modalities("skeleton-gcn", modalities)
        channels = list(channels) if channels is not None else list(_sizes("skeleton-gcn", size, GCN_SIZES))
        strides = list(strides) if strides is not None else _default_strides(len(channels))
        if len(strides) != len(channels):
            raise ConfigError(f"skeleton-gcn: {len(strides)} strides for {len(channels)} units")
        parts = adjacency_partitions(layout)
        v = parts.shape[1]
        self.persons = persons
        self.export_mode = False
        self.input_bn = nn.ModuleDict({m: nn.BatchNorm1d(in_channels * v) for m in self.input_names})
        self.stems = nn.ModuleDict(
            {m: GCNUnit(in_channels, channels[0], parts, strides[0], temporal_kernel, residual=False)
             for m in self.input_names}
        )
        self.trunk = nn.Sequential(
            *[GCNUnit(channels[i - 1], channels[i], parts, strides[i], temporal_kernel) for i in range(1, len(channels))]
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels[-1], num_classes)

    def _streams(self, streams: Sequence[Tensor]) -> dict[str, Tensor]:
        if len(streams) != len(self.input_names):
            raise ConfigError(f"{type(self).__name__} reads {', '.join(self.input_names)}: "
                              f"{len(self.input_names)} inputs, got {len(streams)}")
        return dict(zip(self.input_names, streams))

    def _stem_input(self, name: str, x: Tensor) -> Tensor:
        x = _fold_persons(x)
        nm, c, t, v = x.shape
        bn = self.input_bn[name]
        if self.export_mode and not bn.training:
            return _input_bn_4d(bn, x)
        # data BN over (C, V) per frame, as ST-GCN
        y = bn(x.permute(0, 1, 3, 2).reshape(nm, c * v, t))
        return y.reshape(nm, c, v, t).permute(0, 1, 3, 2)

    def forward(self, *streams: Tensor) -> Tensor:
        inputs = self._streams(streams)
        fused = None
        for name in self.input_names:
            h = self.stems[name](self._stem_input(name, inputs[name]))
            fused = h if fused is None else fused + h
        h = self.trunk(fused)
        return self.head(self.dropout(_pool_persons(h, self.persons)))


# ---------------------------------------------------------------- spiking student


class SpikingSelfAttention(nn.Module):
    """Spikformer-style SSA over the joints of each frame: LIF(BN(Q (K^T V))) then a 1x1 projection.

    Q, K, V are spike maps; no softmax. K^T V and Q(K^T V) are broadcast multiplies and means
    (MUL + MEAN when exported) instead of batched matmuls."""

    def __init__(self, channels: int, out_channels: int, dim: int, lif: LIFParams, int8_exact: bool = False):
        super().__init__()
        self.dim = dim
        self.export_mode = False
        self.int8_exact = int8_exact
        spikes_in = SPIKE_SCALE if int8_exact else 0.0
        self.q = conv_bn(channels, dim, in_scale=spikes_in)
        self.k = conv_bn(channels, dim, in_scale=spikes_in)
        self.v = conv_bn(channels, dim, in_scale=spikes_in)
        self.q_lif, self.k_lif, self.v_lif = LIF(lif, 2), LIF(lif, 2), LIF(lif, 2)
        self.attn_bn = nn.BatchNorm2d(dim)
        self.attn_lif = LIF(lif, 2)
        self.proj = conv_bn(dim, out_channels, in_scale=spikes_in)

    def _folded_bn(self, joints: int) -> tuple[Tensor, Tensor] | None:
        """int8_exact in evaluation: attn_bn as (scale, bias) folded into the sum over i (weights
        1 / d, on int8's grid as they are), the bias on that conv's int32 grid (its input holds
        k / V values, scale 1 / V). None: attn_bn as a module."""
        if not self.int8_exact or self.training:
            return None
        a, b = bn_affine(self.attn_bn)
        return a, int32_bias(b, 1.0 / joints, weight_scale(a.reshape(-1, 1)) / self.dim)

    def forward(self, x: Tensor) -> Tensor:
        n, _, t, v = x.shape
        d = self.dim
        q = self.q_lif(self.q(x))
        k = self.k_lif(self.k(x))
        val = self.v_lif(self.v(x))

        def tokens(z: Tensor) -> Tensor:  # (N, d, T, V) -> (N*T, V, d)
            return z.permute(0, 2, 3, 1).reshape(n * t, v, d)

        folded = self._folded_bn(v)
        if self.export_mode:
            out = self._attend_4d(q, k, val, folded)
        else:  # batched matmuls over the (N*T, V, d) tokens of each frame (faster to train)
            qt, kt, vt = tokens(q), tokens(k), tokens(val)
            kv = torch.bmm(kt.transpose(1, 2), vt) * (1.0 / v)
            out = torch.bmm(qt, kv) * (1.0 / d)
            out = out.reshape(n, t, v, d).permute(0, 3, 1, 2)
            if folded is not None:
                out = out * folded[0].reshape(1, -1, 1, 1) + folded[1].reshape(1, -1, 1, 1)
        return self.proj(self.attn_lif(self.attn_bn(out) if folded is None else out))

    def _attend_4d(self, q: Tensor, k: Tensor, val: Tensor, folded: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Q (K^T V / V) / d on the (N, d, T, V) spike maps themselves: 1x1 CONV, MUL, MEAN, no Reshape.

        Channel i*d + j of the d*d-channel maps pairs feature i of Q and K with feature j of V (fixed
        one-hot 1x1 convs copy the features there; exact on spikes): the mean over the joints of
        K_i * V_j is (K^T V / V)_ij per frame, Q_i times it is feature i's contribution to output
        feature j at every joint, and a fixed 1x1 conv sums over i (and divides by d). Seven ops
        for any d. The tokens form instead folded the frames into the batch, (N*T, V, d) and back,
        and onnx2tf, guessing the layout of the reshaped maps from their shapes, laid them out
        wrongly when the frames equalled the channels."""
        d = self.dim

        def weights(rows: int, cols: int, value: Callable[[int, int], float]) -> Tensor:
            # built from Python lists so they are traced as constants
            return torch.tensor([[[[value(r, c)]] for c in range(cols)] for r in range(rows)], dtype=q.dtype,
                                device=q.device)

        feature_i = weights(d * d, d, lambda r, c: 1.0 if c == r // d else 0.0)
        feature_j = weights(d * d, d, lambda r, c: 1.0 if c == r % d else 0.0)
        sum_over_i = weights(d, d * d, lambda r, c: 1.0 / d if c % d == r else 0.0)
        kv = (nn.functional.conv2d(k, feature_i) * nn.functional.conv2d(val, feature_j)).mean(dim=3, keepdim=True)
        paired = nn.functional.conv2d(q, feature_i) * kv
        if folded is None:
            return nn.functional.conv2d(paired, sum_over_i)
        return nn.functional.conv2d(paired, sum_over_i * folded[0].reshape(-1, 1, 1, 1), folded[1])


class SpikingGraphUnit(nn.Module):
    """LIF -> spatial spiking graph conv (+ spiking self-attention) -> LIF -> spiking temporal conv.

    Membrane-shortcut residual (MS-ResNet style): the unit's input and output are real-valued
    currents, every convolution reads spikes, and the identity path skips the LIF layers so
    gradients reach the first units of the deep spiking network."""

    def __init__(self, cin: int, cout: int, partitions: np.ndarray, lif: LIFParams, stride: int = 1,
                 kernel: int = 5, attention: bool = True, attn_dim: int | None = None, int8_exact: bool = False):
        super().__init__()
        self.gcn = GraphMix(cin, cout, partitions, int8_exact=int8_exact)
        self.attn = SpikingSelfAttention(cin, cout, attn_dim or max(4, cout // 4), lif, int8_exact) if attention else None
        self.in_lif = LIF(lif, 2)
        self.gcn_lif = LIF(lif, 2)
        if int8_exact:  # each BN folded into its conv (conv_bn); the mix's BN lives in GraphMix
            self.gcn_bn: nn.Module = nn.Identity()
            self.tcn: nn.Module = conv_bn(cout, cout, (kernel, 1), (stride, 1), (kernel // 2, 0), in_scale=SPIKE_SCALE)
            self.tcn_bn: nn.Module = nn.Identity()
        else:
            self.gcn_bn = nn.BatchNorm2d(cout)
            self.tcn = nn.Conv2d(cout, cout, (kernel, 1), (stride, 1), (kernel // 2, 0), bias=False)
            self.tcn_bn = nn.BatchNorm2d(cout)
        # identity on the currents; where the shape changes a 1x1 conv on the input spikes
        self.res = None if cin == cout and stride == 1 else \
            conv_bn(cin, cout, 1, (stride, 1), in_scale=SPIKE_SCALE if int8_exact else 0.0)
        # int8_exact: the currents that are added on the membrane's grid (module doc)
        self.current_levels = lif.membrane_grid / lif.threshold if int8_exact else 0.0
        self.export_mode = False

    def _current(self, x: Tensor) -> Tensor:
        return grid_value(x, self.current_levels, self.export_mode) if self.current_levels else x

    def forward(self, x: Tensor) -> Tensor:
        s = self.in_lif(x)
        g = self.gcn_bn(self.gcn(s))
        if self.attn is not None:  # the sum feeds a LIF only, whose clamp is inside the grid's range
            g = self._current(g) + self._current(self.attn(s))
        y = self._current(self.tcn_bn(self.tcn(self.gcn_lif(g))))
        out = y + (x if self.res is None else self._current(self.res(s)))
        if self.current_levels:  # the residual stream saturates where its int8 tensor does
            out = out.clamp(-128.0 / self.current_levels, 127.0 / self.current_levels)
        return out


class SkeletonSGN(nn.Module):
    """MK-SGN spiking GCN student over four modalities. forward(...) -> (N, K).

    `modalities` restricts it to some streams (e.g. ["joints"]: a joints-only student for
    privileged KD, where bones and motions are seen by the teacher only)."""

    input_names = MODALITIES

    def __init__(self, layout: str, num_classes: int, size: str = "small", channels: Sequence[int] | None = None,
                 strides: Sequence[int] | None = None, in_channels: int = 3, persons: int = 1,
                 temporal_kernel: int = 5, attention: bool | Sequence[int] = True,
                 lif: dict[str, Any] | LIFParams | None = None, modalities: Sequence[str] = MODALITIES,
                 int8_exact: bool = False, logit_levels: int = LOGIT_LEVELS):
        super().__init__()
        self.input_names = _check_modalities("skeleton-sgn", modalities)
        self.logit_levels = check_levels("skeleton-sgn", "logit_levels", logit_levels)
        channels = list(channels) if channels is not None else list(_sizes("skeleton-sgn", size, SGN_SIZES))
        strides = list(strides) if strides is not None else [1, 1, 2, 1, 2, 1][: len(channels)] + [1] * max(0, len(channels) - 6)
        if len(strides) != len(channels):
            raise ConfigError(f"skeleton-sgn: {len(strides)} strides for {len(channels)} units")
        # MK-SGN authors' LIF: tau 2, threshold 1.0, hard reset, sigmoid surrogate.
        params = lif if isinstance(lif, LIFParams) else LIFParams.from_config(
            lif or {"tau": 2.0, "threshold": 1.0, "reset": "zero", "surrogate": "sigmoid", "alpha": 4.0}
        )
        if int8_exact:
            require_integer_membrane("skeleton-sgn", params.membrane_grid,
                                     'e.g. lif = { beta = 0.6, current_clamp = 2.0, membrane_grid = 16, reset = "subtract" }')
        if int8_exact and persons != 1:
            raise ConfigError(f"skeleton-sgn int8_exact reads one person per sequence, got persons = {persons}",
                              hint="drop int8_exact, or train on one person (persons = 1)")
        parts = adjacency_partitions(layout)
        self.persons = persons
        self.export_mode = False
        self.int8_exact = int8_exact
        c0, m = channels[0], len(self.input_names)
        self.encoders = nn.ModuleDict(
            {name: conv_bn(in_channels, c0, in_scale=1.0 / INPUT_LEVELS[name] if int8_exact else 0.0)
             for name in self.input_names})
        self.encoder_lifs = nn.ModuleDict({name: LIF(params, 2) for name in self.input_names})
        if int8_exact:
            # one weight per modality and channel, on int8's grid: a 1x1 conv over the modalities'
            # spikes whose weight is zero off the diagonal blocks (starts at the mean, as the
            # softmax does), with the fused current's BN folded in
            mask = torch.eye(c0).repeat(1, m).reshape(c0, m * c0, 1, 1)
            self.fusion = Int8ConvBN(Int8Conv2d(m * c0, c0, 1, bias=False), nn.BatchNorm2d(c0), SPIKE_SCALE, mask)
            with torch.no_grad():
                self.fusion.conv.weight.copy_(mask / m)
            self.current_levels = params.membrane_grid / params.threshold
        else:
            self.fusion_logits = nn.Parameter(torch.zeros(m, c0))
            self.fusion_bn = nn.BatchNorm2d(c0)  # the fused current; the first unit's LIF spikes on it
        # attention: True (every unit), False, or the indices of the units that have it
        with_attention = set(range(len(channels))) if attention is True else set(attention or [])
        units = []
        prev = c0
        for i, (c, s) in enumerate(zip(channels, strides)):
            units.append(SpikingGraphUnit(prev, c, parts, params, s, temporal_kernel, i in with_attention,
                                          int8_exact=int8_exact))
            prev = c
        self.units = nn.Sequential(*units)
        self.out_lif = LIF(params, 2)
        self.head = (Int8Linear if int8_exact else nn.Linear)(prev, num_classes)

    _streams = SkeletonGCN._streams

    def _spikes(self, name: str, x: Tensor) -> Tensor:
        if self.int8_exact:  # on the int8 input's grid, so that quantizing the input loses nothing
            levels = INPUT_LEVELS[name]
            x = grid_input(x, levels, low=-128.0 / levels)
        return self.encoder_lifs[name](self.encoders[name](_fold_persons(x)))

    def _fuse(self, inputs: dict[str, Tensor]) -> Tensor:
        if self.int8_exact:
            spikes = torch.cat([self._spikes(name, inputs[name]) for name in self.input_names], dim=1)
            return grid_value(self.fusion(spikes), self.current_levels, self.export_mode)  # the first residual stream
        weights = torch.softmax(self.fusion_logits, dim=0)  # a constant once exported
        fused = None
        for i, name in enumerate(self.input_names):
            term = self._spikes(name, inputs[name]) * weights[i].reshape(1, -1, 1, 1)
            fused = term if fused is None else fused + term
        return self.fusion_bn(fused)

    def forward(self, *streams: Tensor) -> Tensor:
        spikes = self.out_lif(self.units(self._fuse(self._streams(streams))))
        if not self.int8_exact:
            return self.head(_pool_persons(spikes, self.persons))
        # the head reads spike rates k / n (n frames x joints), the int8 grid of its input
        n = spikes.shape[2] * spikes.shape[3] * self.persons
        logits = self.head(_pool_persons(spikes, self.persons), in_scale=1.0 / n)
        if not self.training:  # the int8 output's grid: ties between classes resolve as int8's do
            logits = grid_value(logits, self.logit_levels, self.export_mode)
        return logits
