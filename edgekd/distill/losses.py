"""Training and distillation losses as named, weighted terms.

A recipe lists terms (`edgekd.config.LossTerm(name, weight, params)`); the total loss is
sum(weight * term). Each name maps to a class in `LOSSES` (add one with `register_loss`).
A term is an nn.Module (it may own parameters, e.g. a feature adapter) with
`forward(out: KDOutputs) -> Tensor` and declares what it needs: a teacher, per-step outputs,
features at module paths.

Every term is a mean over the samples of the batch of a per-sample quantity, so data-parallel
training (which averages gradients over equal shares of a global batch, see trainer.py) gives
the same gradient as one process on the whole batch.

Definitions (T = temperature, p = softmax(z / T), KL(p_t || p_s) per sample):
- ce:      cross-entropy with the labels (optional label smoothing).
- kd:      Hinton: T^2 * KL(p_teacher || p_student)  ("soft labels").
- hckd:    hit-consistency KD (MSKD): T^2 * KL on the samples the teacher classifies right
           (a "hit"), zero on the others; mean over all samples of the batch.
- tckd:    temporal-consistency KD (MSKD): T^2 * KL between teacher and student class
           distributions at every time step, mean over the steps (models with `forward_steps`).
- mskd:    (1 - alpha) * ce + alpha * hckd + alpha * tckd (the MSKD total as one term).
- feature: feature KD at module paths: a learned translation module (linear map of the
           student's channels to the teacher's, then adaptive average pooling to the teacher's
           spatial/temporal shape) and the MSE between standardised features.
- gcn2sgn: MK-SGN's GCN->SGN loss: (1 - alpha) * ce + alpha * kd + beta * feature.
- spike_margin: int8 fidelity of spiking students: the mean over the student's LIF layers of
           mean(relu(delta - |mem - threshold|)) over their pre-spike membranes (delta = the
           layers' `lif.spike_margin`): pushes membranes away from the threshold, where int8
           rounding would move a spike (docs/int8-spiking.md has what it achieves). Also
           applied when the student is trained alone (no KD), like logit_margin.
- logit_margin: int8 near-ties at the output: mean over samples of relu(m - (z_top1 - z_top2)),
           m = steps * (max z - min z over the batch, no gradient) / 255, i.e. `steps` int8 steps
           of the logits' range (scale-free: growing the logits grows the step with them).
- pkdot:   PKDOT structural KD: entropic Sinkhorn divergence between teacher and student batch
           similarity matrices at k anchors per row, optional hallucination of the privileged
           modality's features (pkdot.py; the one term that is not a per-sample mean).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.errors import ConfigError, did_you_mean


@dataclass
class KDOutputs:
    """What one forward pass produced, for the loss terms."""

    labels: Tensor
    student_logits: Tensor
    teacher_logits: Tensor | None = None
    student_steps: Tensor | None = None  # (N, T, K)
    teacher_steps: Tensor | None = None
    student_features: dict[str, Tensor] = field(default_factory=dict)
    teacher_features: dict[str, Tensor] = field(default_factory=dict)
    # Features of the first teacher at the terms' `reference_paths()` (with several teachers the
    # other fields hold the teacher picked for the batch; these always come from the first).
    reference_features: dict[str, Tensor] = field(default_factory=dict)
    # Margin penalties of the student's LIF layers with lif.spike_margin > 0 (training forwards
    # only), by module path; see edgekd.models.neurons.take_margin_penalties.
    spike_margins: dict[str, Tensor] = field(default_factory=dict)


class Loss(nn.Module):
    """Base class of a loss term. Subclasses set `name` and the `needs_*` flags."""

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = False
    # A regularizer of the student itself: kept when the student is trained alone (no KD).
    student_regularizer: ClassVar[bool] = False
    needs_steps: ClassVar[bool] = False
    allowed_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params: Any):
        super().__init__()
        for key in params:
            if key not in self.allowed_params:
                raise ConfigError(
                    f"loss '{self.name}' has no parameter '{key}'{did_you_mean(key, self.allowed_params)}",
                    hint=f"parameters of '{self.name}': {', '.join(self.allowed_params) or '(none)'}",
                )
        self.params = params

    def student_paths(self) -> list[str]:
        return []

    def teacher_paths(self) -> list[str]:
        return []

    def forward(self, out: KDOutputs) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def kl_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)) per sample (reduces the last axis)."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=-1) * temperature**2


def _temperature(params: dict[str, Any]) -> float:
    t = float(params.get("temperature", 4.0))
    if t <= 0:
        raise ConfigError(f"KD temperature must be > 0, got {t}")
    return t


def _alpha(params: dict[str, Any], default: float = 0.5) -> float:
    a = float(params.get("alpha", default))
    if not 0.0 <= a <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {a}")
    return a


class CrossEntropy(Loss):
    name = "ce"
    allowed_params = ("label_smoothing",)

    def forward(self, out: KDOutputs) -> Tensor:
        return F.cross_entropy(out.student_logits.float(), out.labels,
                               label_smoothing=float(self.params.get("label_smoothing", 0.0)))


class HintonKD(Loss):
    name = "kd"
    needs_teacher = True
    allowed_params = ("temperature",)

    def forward(self, out: KDOutputs) -> Tensor:
        return kl_per_sample(out.student_logits, out.teacher_logits, _temperature(self.params)).mean()


def hit_consistency(out: KDOutputs, temperature: float) -> Tensor:
    hits = (out.teacher_logits.argmax(dim=-1) == out.labels).float()
    return (hits * kl_per_sample(out.student_logits, out.teacher_logits, temperature)).mean()


def temporal_consistency(out: KDOutputs, temperature: float) -> Tensor:
    s, t = out.student_steps, out.teacher_steps
    if s is None or t is None:
        raise ConfigError(
            "tckd needs per-time-step outputs from student and teacher",
            hint="use models with forward_steps (eye-snn, eye-hybrid), or drop the tckd term",
        )
    if s.shape[:2] != t.shape[:2]:
        raise ConfigError(
            f"tckd: student has {s.shape[1]} time steps, teacher {t.shape[1]}",
            hint="give both the same number of frames (data option 'frames')",
        )
    return kl_per_sample(s, t, temperature).mean(dim=1).mean()


class HitConsistencyKD(Loss):
    name = "hckd"
    needs_teacher = True
    allowed_params = ("temperature",)

    def forward(self, out: KDOutputs) -> Tensor:
        return hit_consistency(out, _temperature(self.params))


class TemporalConsistencyKD(Loss):
    name = "tckd"
    needs_teacher = True
    needs_steps = True
    allowed_params = ("temperature",)

    def forward(self, out: KDOutputs) -> Tensor:
        return temporal_consistency(out, _temperature(self.params))


class MSKD(Loss):
    name = "mskd"
    needs_teacher = True
    needs_steps = True
    allowed_params = ("alpha", "temperature", "label_smoothing")

    def forward(self, out: KDOutputs) -> Tensor:
        a, t = _alpha(self.params), _temperature(self.params)
        ce = F.cross_entropy(out.student_logits.float(), out.labels,
                             label_smoothing=float(self.params.get("label_smoothing", 0.0)))
        return (1 - a) * ce + a * hit_consistency(out, t) + a * temporal_consistency(out, t)


# ---------------------------------------------------------------- feature KD


def _standardise(x: Tensor) -> Tensor:
    flat = x.reshape(x.shape[0], -1).float()
    return ((flat - flat.mean(dim=1, keepdim=True)) / (flat.std(dim=1, keepdim=True) + 1e-5)).reshape(x.shape)


class FeatureTranslation(nn.Module):
    """Student features (N, Cs, *S) -> the teacher's shape (N, Ct, *St): a learned linear map over
    channels, then adaptive average pooling of the spatial/temporal axes (or a global mean when the
    numbers of axes differ). Used only during training; not part of the exported student."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.proj = nn.Linear(student_channels, teacher_channels)

    def forward(self, x: Tensor, target_shape: tuple[int, ...]) -> Tensor:
        y = self.proj(x.movedim(1, -1).float()).movedim(-1, 1)
        spatial_s, spatial_t = tuple(y.shape[2:]), tuple(target_shape[2:])
        if spatial_s == spatial_t:
            return y
        if len(spatial_s) == len(spatial_t) and 1 <= len(spatial_t) <= 3:
            pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[len(spatial_t)]
            return pool(y, spatial_t)
        return y.reshape(y.shape[0], y.shape[1], -1).mean(dim=2)


class FeatureKD(Loss):
    """params: student (module path), teacher (module path), student_channel_dim / teacher_channel_dim
    (axis of the channels in that module's output, default 1; e.g. 2 for eye-snn's (N, T, C, H, W)),
    normalize (standardise both per sample before the MSE, default true)."""

    name = "feature"
    needs_teacher = True
    allowed_params = ("student", "teacher", "student_channel_dim", "teacher_channel_dim", "normalize")

    def __init__(self, **params: Any):
        super().__init__(**params)
        for key in ("student", "teacher"):
            if not isinstance(params.get(key), str):
                raise ConfigError(f"loss 'feature' needs params.{key} = a module path",
                                  hint="e.g. params = {student = 'units.3', teacher = 'trunk.6'}")
        self.adapter: FeatureTranslation | None = None

    def student_paths(self) -> list[str]:
        return [self.params["student"]]

    def teacher_paths(self) -> list[str]:
        return [self.params["teacher"]]

    def _canonical(self, x: Tensor, which: str) -> Tensor:
        dim = int(self.params.get(f"{which}_channel_dim", 1))
        return x.movedim(dim, 1) if dim != 1 else x

    def build(self, out: KDOutputs) -> None:
        """Create the adapter from the first batch's feature shapes (before the optimiser exists)."""
        s = self._canonical(out.student_features[self.params["student"]], "student")
        t = self._canonical(out.teacher_features[self.params["teacher"]], "teacher")
        self.adapter = FeatureTranslation(s.shape[1], t.shape[1]).to(s.device)

    def forward(self, out: KDOutputs) -> Tensor:
        s = self._canonical(out.student_features[self.params["student"]], "student")
        t = self._canonical(out.teacher_features[self.params["teacher"]], "teacher").detach().float()
        if self.adapter is None:
            self.build(out)
        y = self.adapter(s, tuple(t.shape))
        if y.dim() != t.dim():
            t = t.reshape(t.shape[0], t.shape[1], -1).mean(dim=2)
        if bool(self.params.get("normalize", True)):
            y, t = _standardise(y), _standardise(t)
        return ((y - t) ** 2).reshape(y.shape[0], -1).mean(dim=1).mean()


class GCNToSGN(Loss):
    """MK-SGN: (1 - alpha) * ce + alpha * kd + beta * feature (feature translation + soft labels)."""

    name = "gcn2sgn"
    needs_teacher = True
    allowed_params = ("alpha", "beta", "temperature", "student", "teacher", "student_channel_dim",
                      "teacher_channel_dim", "normalize")

    def __init__(self, **params: Any):
        super().__init__(**params)
        feature_keys = ("student", "teacher", "student_channel_dim", "teacher_channel_dim", "normalize")
        self.feature = FeatureKD(**{k: v for k, v in params.items() if k in feature_keys})

    def student_paths(self) -> list[str]:
        return self.feature.student_paths()

    def teacher_paths(self) -> list[str]:
        return self.feature.teacher_paths()

    def build(self, out: KDOutputs) -> None:
        self.feature.build(out)

    def forward(self, out: KDOutputs) -> Tensor:
        a, t = _alpha(self.params), _temperature(self.params)
        beta = float(self.params.get("beta", 1.0))
        ce = F.cross_entropy(out.student_logits.float(), out.labels)
        kd = kl_per_sample(out.student_logits, out.teacher_logits, t).mean()
        return (1 - a) * ce + a * kd + beta * self.feature(out)


class SpikeMargin(Loss):
    """Mean over the LIF layers of their margin penalty (each a mean over neurons, samples, steps)."""

    name = "spike_margin"
    student_regularizer = True

    def forward(self, out: KDOutputs) -> Tensor:
        if not out.spike_margins:
            raise ConfigError("loss 'spike_margin' found no LIF layer with a margin in the student",
                              hint="set lif = { spike_margin = delta } in the student's params (delta > 0, e.g. 0.1)")
        values = list(out.spike_margins.values())
        return sum(values[1:], values[0]) / len(values)


class LogitMargin(Loss):
    """Hinge on the gap between the student's two largest logits, in int8 steps of the batch's range."""

    name = "logit_margin"
    student_regularizer = True
    allowed_params = ("steps",)

    def forward(self, out: KDOutputs) -> Tensor:
        steps = float(self.params.get("steps", 4.0))
        if steps <= 0:
            raise ConfigError(f"logit_margin steps must be > 0, got {steps}")
        z = out.student_logits.float()
        top2 = z.topk(2, dim=-1).values
        margin = steps * (z.max() - z.min()).detach() / 255.0
        return F.relu(margin - (top2[:, 0] - top2[:, 1])).mean()


LOSSES: dict[str, type[Loss]] = {}


def register_loss(cls: type[Loss]) -> type[Loss]:
    """Add a loss class under its `name` (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    LOSSES[cls.name] = cls
    return cls


for _cls in (CrossEntropy, HintonKD, HitConsistencyKD, TemporalConsistencyKD, MSKD, FeatureKD, GCNToSGN, SpikeMargin,
             LogitMargin):
    register_loss(_cls)


class WeightedLoss(nn.Module):
    """The recipe's terms together: total = sum(weight * term); also the value of each term."""

    def __init__(self, terms: list[Any]):
        super().__init__()
        if not terms:
            raise ConfigError("the recipe has no loss terms", hint="add e.g. [[losses]] name = 'ce'")
        names = [t.name for t in terms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"loss term '{dup[0]}' appears twice", hint="merge the terms or change their weights")
        modules = {}
        self.weights: dict[str, float] = {}
        for term in terms:
            if term.name not in LOSSES:
                raise ConfigError(f"unknown loss '{term.name}'{did_you_mean(term.name, LOSSES)}",
                                  hint=f"losses: {', '.join(sorted(LOSSES))}")
            modules[term.name] = LOSSES[term.name](**dict(term.params))
            self.weights[term.name] = float(term.weight)
        self.terms = nn.ModuleDict(modules)

    @property
    def needs_teacher(self) -> bool:
        return any(t.needs_teacher for t in self.terms.values())

    @property
    def needs_steps(self) -> bool:
        return any(t.needs_steps for t in self.terms.values())

    def student_paths(self) -> list[str]:
        return sorted({p for t in self.terms.values() for p in t.student_paths()})

    def teacher_paths(self) -> list[str]:
        return sorted({p for t in self.terms.values() for p in t.teacher_paths()})

    def reference_paths(self) -> list[str]:
        return sorted({p for t in self.terms.values() if hasattr(t, "reference_paths") for p in t.reference_paths()})

    def check_batch(self, batch_size: int, processes: int = 1) -> None:
        """Reject terms that cannot work on batches of this size (before any training)."""
        for t in self.terms.values():
            if hasattr(t, "check_batch"):
                t.check_batch(batch_size, processes)

    def build(self, out: KDOutputs) -> None:
        for t in self.terms.values():
            if hasattr(t, "build"):
                t.build(out)

    @property
    def preparers(self) -> list[nn.Module]:
        """Terms with a `prepare(batches, seed)` step to run on the training set before distillation."""
        return [t for t in self.terms.values() if hasattr(t, "prepare")]

    def forward(self, out: KDOutputs) -> tuple[Tensor, dict[str, Tensor]]:
        parts = {name: term(out) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, parts


def make_loss(terms: list[Any]) -> WeightedLoss:
    return WeightedLoss(terms)


from edgekd.distill import pkdot as _pkdot  # noqa: E402,F401  (registers 'pkdot'; it imports this module)
