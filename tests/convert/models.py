"""Tiny models and data for the conversion tests: a CNN (conv/bn/relu/pool/linear) and a
hand-written LIF spiking CNN unrolled over T=4 that uses only the firmware's op list (steps
picked by one-hot fully connected layers, spikes as comparisons), both briefly trained on a
synthetic task so that their scores have margins like a real student's."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

CLASSES = ["left", "right", "top", "bottom"]


def blob_images(n: int, size: int = 16, seed: int = 0, frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1] with a bright blob whose position is the class; (N, 1, H, W) or (N, T, 1, H, W)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), n)
    centres = {0: (0.5, 0.25), 1: (0.5, 0.75), 2: (0.25, 0.5), 3: (0.75, 0.5)}
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), -1) / (size - 1)
    steps = frames or 1
    x = np.empty((n, steps, 1, size, size), np.float32)
    for i in range(n):
        cy, cx = centres[int(y[i])]
        for t in range(steps):
            jitter = rng.normal(0, 0.06, 2)
            d2 = ((grid - (cy + jitter[0], cx + jitter[1])) ** 2).sum(-1)
            img = np.exp(-d2 / 0.02) + rng.normal(0, 0.15, (size, size))
            x[i, t, 0] = np.clip(img, 0, 1)
    return (x if frames else x[:, 0]), y.astype(np.int64)


class TinyCNN(nn.Module):
    input_names = ("image",)

    def __init__(self, classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        )
        self.head = nn.Linear(16 * 4 * 4, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image).flatten(1))


class TinyLIFNet(nn.Module):
    """conv -> LIF -> conv(stride 2) -> LIF -> linear, unrolled over T with explicit membranes.

    Export-friendly by construction: the time step is picked by a one-hot fully connected layer
    (no GATHER/SLICE), the spike is `(v >= threshold).float()` (GREATER_EQUAL + CAST), the reset
    subtracts (MUL + SUB), the decay is MUL + ADD."""

    input_names = ("frames",)

    def __init__(self, steps: int = 4, size: int = 16, classes: int = 4, beta: float = 0.5, threshold: float = 1.0):
        super().__init__()
        self.steps, self.size, self.beta, self.threshold = steps, size, beta, threshold
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16 * (size // 2) ** 2, classes)
        self.register_buffer("pick", torch.eye(steps))

    def lif(self, current: torch.Tensor, v: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        v = current if v is None else self.beta * v + current
        spike = (v >= self.threshold).float()
        if self.training:  # straight-through surrogate for the brief training in the tests
            spike = spike + torch.sigmoid(4 * (v - self.threshold)) - torch.sigmoid(4 * (v - self.threshold)).detach()
        return spike, v - spike * self.threshold

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        n = frames.shape[0]
        flat = frames.reshape(n, self.steps, -1).transpose(1, 2)  # (N, HW, T)
        v1 = v2 = None
        total = None
        for t in range(self.steps):
            x = nn.functional.linear(flat, self.pick[t : t + 1]).reshape(n, 1, self.size, self.size)
            s1, v1 = self.lif(self.conv1(x), v1)
            s2, v2 = self.lif(self.conv2(s1), v2)
            out = self.head(s2.flatten(1))
            total = out if total is None else total + out
        return total * (1.0 / self.steps)


def train_briefly(model: nn.Module, x: np.ndarray, y: np.ndarray, steps: int = 120, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for i in range(steps):
        idx = torch.randint(0, len(xt), (32,))
        loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


class OutlierCNN(TinyCNN):
    """TinyCNN whose first conv also makes one channel a thousand times larger than the rest,
    which the next conv ignores: harmless in float, but int8's per-tensor activation scale
    then leaves the useful channels no resolution (a layer a per-layer report must find)."""

    def make_outlier(self) -> OutlierCNN:
        with torch.no_grad():
            conv1, bn1 = self.features[0], self.features[1]
            conv1.weight[0] = 0.0
            conv1.bias[0] = 0.0
            bn1.weight[0], bn1.bias[0] = 0.0, 3000.0  # a constant 3000 after BN/ReLU
            self.features[4].weight[:, 0] = 0.0
        return self
