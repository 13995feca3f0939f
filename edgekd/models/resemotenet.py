"""Facial expression models: ResEmoteNet (the Mini-ResEmoteNet teacher) and its channel-cut
students.

ResEmoteNet (arXiv 2409.10545, as used by Mini-ResEmoteNet, arXiv 2501.18538): three
conv3x3-BN-ReLU-maxpool(2) blocks (64, 128, 256 channels; dropout 0.2 after the first two),
squeeze-excitation on the 256 channels (reduction 16), three residual basic blocks with stride 2
(512, 1024, 2048 channels, 1x1 projection shortcuts), global average pooling, fully connected
2048 -> 1024 -> 512 -> 256 (ReLU, dropout 0.5) -> classes. About 80 M parameters; the count does
not depend on the input size (global pooling), 48x48 and 64x64 both work.

Sizes (`size`): "full" (the teacher, width 1), "A", "B", "C" (Mini-ResEmoteNet's students: every
layer's channels cut by 50 / 75 / 87.5 %, i.e. width 0.5 / 0.25 / 0.125), and "tiny", a
microcontroller student under 100 k parameters: the same layout with fewer channels and
depthwise-separable residual convolutions (int8 ops: CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED, MAX_POOL_2D, MEAN, MUL, ADD, LOGISTIC, RESHAPE). `width` or `channels` build
other sizes instead of `size`.

Choices where the paper leaves freedom, documented here:
- Input: one grayscale channel (N, 1, H, W) in [0, 1]. The paper copies the gray image into three
  channels; a conv over three identical channels equals a one-channel conv whose kernel is the
  sum of the three, so the first conv takes one channel (same function, a third of its weights).
- Convolutions followed by BatchNorm have no bias (the BN shift makes it redundant).
- The penultimate embedding (N, D) is the output of the module `embedding` (fc1..fc3 with their
  ReLUs; D = last channels / 8, 256 for the teacher), the features that structural KD (e.g. PKDOT)
  addresses by module path; `classifier` maps it (after dropout) to the class scores.

`int8_exact = true` (a student for exact full-int8 agreement, quantization-aware training): the
float model computes what full int8 computes. Weights int8 per output channel (edgekd.models.int8),
each BatchNorm folded into its conv in evaluation with the bias on int8's int32 grid, the image on
a grid of 1/127, every activation (after each ReLU, the pooled means, the SE product, the
residual sums, the logits) on a symmetric int8 grid whose step a running max sets in training
(ActivationGrid), frozen in evaluation and export, where the converter pins each int8 tensor to
it. Two changes of function: the squeeze-excitation gate is a hard gate, clamp(W2 h + b, 0, 1) on
a grid of 1/127, instead of a sigmoid (TFLite fixes LOGISTIC's output grid, whose rounding the
float model would not see), and activations keep 7 bits above zero (symmetric grids).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from edgekd.errors import ConfigError, did_you_mean
from edgekd.models.int8 import ActivationGrid, GridSequential, Int8Conv2d, Int8ConvBN, Int8Linear, grid_input, grid_value

IMAGE_LEVELS = 127  # int8_exact: the image in [0, 1] on steps of 1/127 (a symmetric int8 grid)
GATE_LEVELS = 127  # int8_exact: the hard SE gate in [0, 1] on steps of 1/127

# ResEmoteNet's channels: three plain conv blocks, then three residual blocks.
FULL_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
SIZES: dict[str, dict[str, object]] = {
    "full": {"width": 1.0, "separable": False},  # the teacher, ~80 M parameters
    "A": {"width": 0.5, "separable": False},  # -50 % channels, ~20 M
    "B": {"width": 0.25, "separable": False},  # -75 %, ~5 M
    "C": {"width": 0.125, "separable": False},  # -87.5 %, ~1.3 M
    # < 100 k parameters, for microcontrollers. Its head is 128 -> 64 -> 32 -> 16: dropout 0.5 on
    # 16-32 units stalls learning (measured on the synthetic faces), so it drops less by default.
    "tiny": {"channels": (8, 16, 32, 48, 96, 128), "separable": True, "dropout": (0.0, 0.1)},
}
PAPER_DROPOUT = (0.2, 0.5)  # after the first two conv blocks; in the head


def resolve_channels(size: str | None, width: float | None, channels: Sequence[int] | None,
                     separable: bool | None) -> tuple[tuple[int, ...], bool]:
    """The six channel counts and the residual conv kind from exactly one of size/width/channels."""
    given = [name for name, value in (("size", size), ("width", width), ("channels", channels)) if value is not None]
    if len(given) > 1:
        raise ConfigError(f"face-resemotenet: give one of size, width, channels (got {' and '.join(given)})",
                          hint="size = 'full' | 'A' | 'B' | 'C' | 'tiny'; width = a channel multiplier; "
                               "channels = six channel counts")
    if size is not None or not given:
        name = "full" if size is None else size
        if name not in SIZES:
            same_letters = [k for k in SIZES if k.lower() == str(name).lower()]
            suggestion = f" (did you mean '{same_letters[0]}'?)" if same_letters else did_you_mean(name, SIZES)
            raise ConfigError(f"unknown face-resemotenet size '{name}'{suggestion}",
                              hint=f"sizes: {', '.join(SIZES)}; or give width = 0.5 or channels = [6 counts]")
        if separable is not None:
            raise ConfigError(f"face-resemotenet: size '{name}' fixes separable; do not set it as well",
                              hint="use width or channels to choose separable yourself")
        spec = SIZES[name]
        if "channels" in spec:
            return tuple(int(c) for c in spec["channels"]), bool(spec["separable"])
        width = float(spec["width"])
        separable = bool(spec["separable"])
    if channels is None:
        if not isinstance(width, (int, float)) or not 0.0 < width <= 4.0:
            raise ConfigError(f"face-resemotenet: width must be in (0, 4], got {width!r}",
                              hint="1.0 = ResEmoteNet; 0.5, 0.25, 0.125 = students A, B, C")
        channels = tuple(max(1, int(round(c * width))) for c in FULL_CHANNELS)
    channels = tuple(channels)
    if len(channels) != 6 or not all(isinstance(c, int) and c >= 1 for c in channels):
        raise ConfigError(f"face-resemotenet: channels must be six positive integers, got {list(channels)}",
                          hint="three plain conv blocks then three residual blocks, e.g. [64, 128, 256, 512, 1024, 2048]")
    if channels[-1] < 8:
        raise ConfigError(f"face-resemotenet: the last block needs >= 8 channels (the head divides by 8), got {channels[-1]}")
    return channels, bool(separable)


def conv_params(cin: int, cout: int, k: int, bias: bool = False, groups: int = 1) -> int:
    return cin // groups * cout * k * k + (cout if bias else 0)


def count_resemotenet_parameters(num_classes: int = 7, size: str | None = None, width: float | None = None,
                                 channels: Sequence[int] | None = None, separable: bool | None = None,
                                 se_reduction: int = 16) -> int:
    """Trainable parameters of a ResEmoteNet, computed without building it (the teacher is 80 M)."""
    ch, sep = resolve_channels(size, width, channels, separable)
    total, prev = 0, 1
    for c in ch[:3]:
        total += conv_params(prev, c, 3) + 2 * c
        prev = c
    total += 2 * prev * max(1, prev // se_reduction)
    for c in ch[3:]:
        if sep:
            total += conv_params(prev, prev, 3, groups=prev) + 2 * prev + conv_params(prev, c, 1)
            total += conv_params(c, c, 3, groups=c) + 2 * c + conv_params(c, c, 1)
        else:
            total += conv_params(prev, c, 3) + conv_params(c, c, 3)
        total += 2 * c + 2 * c + conv_params(prev, c, 1) + 2 * c  # two BNs, projection + its BN
        prev = c
    for d in (prev // 2, prev // 4, prev // 8):
        total += prev * d + d
        prev = d
    return total + prev * num_classes + num_classes


class SqueezeExcitation(nn.Module):
    """x * sigmoid(W2 relu(W1 mean_hw(x))): channel attention (reduction r). int8_exact: the hard
    gate clamp(W2 h + b, 0, 1) and every activation on its grid (module doc)."""

    def __init__(self, channels: int, reduction: int = 16, int8_exact: bool = False):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.int8_exact = int8_exact
        self.export_mode = False
        if not int8_exact:
            self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(),
                                    nn.Linear(hidden, channels, bias=False), nn.Sigmoid())
            return
        gate = Int8Linear(hidden, channels)
        nn.init.constant_(gate.bias, 0.5)  # starts where a sigmoid gate starts
        self.fc = GridSequential(ActivationGrid(), Int8Linear(channels, hidden, bias=False), nn.ReLU(), ActivationGrid(),
                                 gate)
        self.out_grid = ActivationGrid()

    def forward(self, x: Tensor) -> Tensor:
        if not self.int8_exact:
            return x * self.fc(x.mean(dim=(-2, -1)))[:, :, None, None]
        gate = grid_value(self.fc(x.mean(dim=(-2, -1))).clamp(0.0, 1.0), GATE_LEVELS, self.export_mode)
        return self.out_grid(x * gate[:, :, None, None])


def _conv3x3(cin: int, cout: int, stride: int, separable: bool) -> nn.Module:
    if not separable:
        return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
    # depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 (the block's own BN follows)
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
                         nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False))


def _int8_conv3x3_bn(cin: int, cout: int, stride: int, separable: bool) -> GridSequential:
    """_conv3x3 and the BN after it for int8_exact: folded int8 convs, the depthwise output on a grid."""
    if not separable:
        return GridSequential(Int8ConvBN(Int8Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), 0.0))
    return GridSequential(Int8ConvBN(Int8Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), 0.0),
                          nn.ReLU(), ActivationGrid(),
                          Int8ConvBN(Int8Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), 0.0))


class ResidualBlock(nn.Module):
    """Basic block: conv3x3(stride)-BN-ReLU-conv3x3-BN + 1x1 projection shortcut, then ReLU.
    int8_exact: each conv-BN one folded int8 conv (conv1/conv2 hold their BN; bn1/bn2 are
    identities), the branch outputs and their sum on one grid (exact int8 ADD), the sum saturating
    where int8 does; forward then takes the int8 scale of x."""

    def __init__(self, cin: int, cout: int, stride: int = 2, separable: bool = False, int8_exact: bool = False):
        super().__init__()
        self.int8_exact = int8_exact
        self.relu = nn.ReLU()
        if int8_exact:
            self.conv1: nn.Module = _int8_conv3x3_bn(cin, cout, stride, separable)
            self.conv1.append(nn.ReLU())
            self.conv1.append(ActivationGrid())
            self.bn1: nn.Module = nn.Identity()
            self.conv2: nn.Module = _int8_conv3x3_bn(cout, cout, 1, separable)
            self.bn2: nn.Module = nn.Identity()
            self.shortcut: nn.Module = GridSequential(
                Int8ConvBN(Int8Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout), 0.0))
            self.sum_grid = ActivationGrid()
            return
        self.conv1 = _conv3x3(cin, cout, stride, separable)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout, 1, separable)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor, in_scale: float | None = None) -> Tensor:
        if not self.int8_exact:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + self.shortcut(x))
        out = self.conv2(self.conv1(x, in_scale=in_scale), in_scale=self.conv1[-1].step)
        total = self.sum_grid(out) + self.sum_grid(self.shortcut(x, in_scale=in_scale))
        return self.relu(total).clamp(max=127.0 * self.sum_grid.step if self.sum_grid.step else float("inf"))


class ResEmoteNet(nn.Module):
    """forward(image (N, 1, H, W) in [0, 1]) -> class scores (N, K). See the module docstring."""

    input_names = ("image",)

    def __init__(
        self,
        num_classes: int = 7,
        size: str | None = None,
        width: float | None = None,
        channels: Sequence[int] | None = None,
        separable: bool | None = None,
        se_reduction: int = 16,
        dropout: Sequence[float] | None = None,
        int8_exact: bool = False,
    ):
        super().__init__()
        ch, sep = resolve_channels(size, width, channels, separable)
        if dropout is None:  # the size's own, else ResEmoteNet's
            dropout = SIZES[size].get("dropout", PAPER_DROPOUT) if size in SIZES else PAPER_DROPOUT
        if len(dropout) != 2 or not all(0.0 <= p < 1.0 for p in dropout):
            raise ConfigError(f"face-resemotenet: dropout must be two rates in [0, 1), got {list(dropout)}",
                              hint="(after the first two conv blocks, in the head); ResEmoteNet uses [0.2, 0.5]")
        self.dropout_rates = tuple(float(p) for p in dropout)
        self.channels, self.separable = ch, sep
        self.int8_exact = int8_exact
        self.export_mode = False
        linear = Int8Linear if int8_exact else nn.Linear
        stem: list[nn.Module] = []
        prev = 1  # grayscale; see the module docstring
        for i, c in enumerate(ch[:3]):
            if int8_exact:
                stem += [Int8ConvBN(Int8Conv2d(prev, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), 0.0), nn.ReLU(),
                         ActivationGrid(), nn.MaxPool2d(2)]
            else:
                stem += [nn.Conv2d(prev, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            if i < 2:
                stem.append(nn.Dropout(dropout[0]))
            prev = c
        self.stem = GridSequential(*stem) if int8_exact else nn.Sequential(*stem)
        self.se = SqueezeExcitation(prev, se_reduction, int8_exact)
        blocks = []
        for c in ch[3:]:
            blocks.append(ResidualBlock(prev, c, 2, sep, int8_exact))
            prev = c
        self.blocks = nn.Sequential(*blocks)
        head: list[nn.Module] = [ActivationGrid()] if int8_exact else []  # the pooled means
        for i, d in enumerate((prev // 2, prev // 4, prev // 8)):
            if i:
                head.append(nn.Dropout(dropout[1]))
            head += [linear(prev, d), nn.ReLU()] + ([ActivationGrid()] if int8_exact else [])
            prev = d
        # (N, D): the penultimate features
        self.embedding = GridSequential(*head) if int8_exact else nn.Sequential(*head)
        self.embedding_dim = prev
        self.dropout = nn.Dropout(dropout[1])
        self.classifier = linear(prev, num_classes)
        if int8_exact:
            self.logit_grid = ActivationGrid()

    def forward(self, image: Tensor) -> Tensor:
        if not torch.jit.is_tracing() and (image.dim() != 4 or image.shape[1] != 1):
            raise ConfigError(f"face-resemotenet expects images (N, 1, H, W), got {tuple(image.shape)}",
                              hint="face images are one grayscale channel in [0, 1]")
        if not self.int8_exact:
            x = self.blocks(self.se(self.stem(image)))
            return self.classifier(self.dropout(self.embedding(x.mean(dim=(-2, -1)))))
        x = self.stem(grid_input(image, IMAGE_LEVELS), in_scale=1.0 / IMAGE_LEVELS)
        x = self.se(x)
        scale = self.se.out_grid.step
        for block in self.blocks:
            x = block(x, in_scale=scale)
            scale = block.sum_grid.step
        features = self.embedding(x.mean(dim=(-2, -1)))
        return self.logit_grid(self.classifier(self.dropout(features), in_scale=self.embedding[-1].step))
