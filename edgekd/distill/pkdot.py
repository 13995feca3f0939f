"""PKDOT: privileged knowledge distillation by optimal transport over the batch structure.

PKDOT (arXiv 2401.15489) and its multi-teacher variant MT-PKDOT (arXiv 2408.09035): the teacher
saw privileged modalities in training (events for `eye`; bones and motions for `skeleton`), the
student sees the visual one only. What is transferred is the structure of the batch: how similar
each sample is to the others in the teacher's embedding space. Registered as the loss term
`pkdot`; the recipe weights it against `ce` (PKDOT: CE + 0.6 pkdot; MT-PKDOT: 0.8 CE + 0.2 pkdot,
with several teachers, see trainer.fit). The construction, with the project's choices marked (*):

1. Embeddings. The output of a module addressed by path (`student`, `teacher`), (N*r, C, ...) ->
   (N, C): a module that runs on a merged batch of r time steps or persons (N*r rows, sample-major,
   as eye and skeleton models do) is averaged over r; the axes after the channels (time, space)
   are averaged (`pool = "mean"`, default*) or flattened (`pool = "flatten"`). Pick modules with
   the channels on axis 1: eye-snn 'features.blocks.2.pool' (merged (N*T, C, H, W)), not
   'features' ((N, T, C, H, W)).
2. Structure. The N x N cosine-similarity matrix of the embeddings, shifted non-negative by
   subtracting its minimum (as the authors' code does). The shift is a constant of the batch
   (no gradient flows through the minimum*): through it, the sum of the gradients of all
   entries would land on the single least-similar pair; that made the term's gradient 10-20x
   larger on the skeleton student (measured) and stopped its cross-entropy from decreasing.
   Pick embeddings with comparable ranges on both sides: e.g. the student's spikes (rates >= 0)
   against the teacher's post-ReLU features.
3. Anchors. Per row i, k columns j != i chosen from the TEACHER's matrix: the k least similar
   samples (`anchors = "least"`, default: the authors' released code) or the k most similar
   (`anchors = "most"`), ordered by the teacher's similarity. The same columns are gathered from
   both matrices: two N x k matrices. k larger than the batch minus one is a ConfigError
   (`check_batch`, called by the trainer before training). A batch with fewer than k + 1
   samples (the last of an epoch, a data-parallel share) uses all of its other samples; a batch
   of one sample has no structure and gives 0.
4. Divergence. The rows of the two matrices are point clouds of N points in R^k with uniform
   weights; the term is their debiased entropic Sinkhorn divergence
       S(X, Y) = OT(X, Y) - OT(X, X) / 2 - OT(Y, Y) / 2,
       OT(X, Y) = min_P <P, C> + eps * KL(P | a b^T),   C_ij = |x_i - y_j|^2 / 2,
   eps = 0.01 (`epsilon`): the authors' geomloss SamplesLoss("sinkhorn", p=2, blur=0.1), whose
   eps is blur^p and cost |x - y|^p / p. Each OT is solved by POT (`ot.solve`: log-domain
   Sinkhorn in float64, stopping when the marginals are within 1e-6 (L2), or after `max_iter`
   iterations) with envelope gradients (dOT/dC = the optimal plan). On the recipes' features
   the divergence at 1e-6 matched a 10,000-iteration solve to 1e-4 relative or better. S is exactly 0 for identical structures and
   invariant to a permutation of the batch applied to both.
5. Hallucination (optional*: give the teacher's `visual` and `privileged` module paths; a list of
   paths is concatenated). Before distillation an MLP H, D_v -> D_v/2 -> D_v/4 -> D_v/2 -> D_p
   (the paper's 512-256-128-256-512 scaled to the feature sizes here), is trained on the
   training set to predict the teacher's privileged-branch embedding from its visual-branch
   embedding (both standardised with training-set statistics; MSE, Adam,
   `hallucination_epochs`), then frozen. During distillation a learned linear adapter A maps the
   student's embedding into H's standardised visual space, held there by an alignment MSE to the
   teacher's standardised visual embedding (weight `align`), and the student's similarity matrix
   becomes the mean of the cosine similarities of its own embedding and of the hallucinated
   privileged features H(A(e_student)); the teacher's stays that of its `teacher` embedding.
   The term is then S + align * MSE. With several teachers H is trained on, and A aligned to,
   the first one. A and H are training-only: the exported student is unchanged.

Unlike the other terms this one is not a mean of per-sample quantities: under data-parallel
training each process computes the structure on its own share of the batch (no gather).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from edgekd.distill.losses import KDOutputs, Loss, register_loss
from edgekd.errors import ConfigError, did_you_mean

SINKHORN_TOL = 1e-6  # L2 violation of the marginals (each 1/N) at which Sinkhorn stops

# POT probes every array library it finds when imported (TensorFlow among them: seconds and
# hundreds of MB); only its torch backend is used here.
_POT_PROBES = ("POT_BACKEND_DISABLE_TENSORFLOW", "POT_BACKEND_DISABLE_JAX", "POT_BACKEND_DISABLE_CUPY")


def _pot() -> Any:
    """The `ot` module, imported with POT's own switches turning off its TensorFlow/JAX/CuPy
    backends for the duration of the import (the environment is restored afterwards)."""
    if "ot" in sys.modules:
        return sys.modules["ot"]
    saved = {k: os.environ.get(k) for k in _POT_PROBES}
    try:
        os.environ.update({k: "1" for k in _POT_PROBES})
        import ot
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return ot


def entropic_ot(x: Tensor, y: Tensor, epsilon: float, max_iter: int = 1000) -> Tensor:
    """OT_eps between the point clouds x (n, d) and y (m, d), uniform weights, cost |x - y|^2 / 2:
    <P, C> + eps KL(P | a b^T) at the optimal plan P (POT, float64, envelope gradients)."""
    ot = _pot()
    cost = 0.5 * ((x.double()[:, None, :] - y.double()[None, :, :]) ** 2).sum(dim=-1)
    return ot.solve(cost, reg=float(epsilon), reg_type="KL", max_iter=int(max_iter), tol=SINKHORN_TOL, grad="envelope").value


def sinkhorn_divergence(x: Tensor, y: Tensor, epsilon: float = 0.01, max_iter: int = 1000) -> Tensor:
    """Debiased entropic Sinkhorn divergence OT(x, y) - OT(x, x)/2 - OT(y, y)/2 (float32 scalar)."""
    value = entropic_ot(x, y, epsilon, max_iter) - 0.5 * entropic_ot(x, x, epsilon, max_iter) \
        - 0.5 * entropic_ot(y, y, epsilon, max_iter)
    return value.float()


def embedding(x: Tensor, n: int, pool: str = "mean", where: str = "module") -> Tensor:
    """A module output (N*r, C, ...) -> (N, C) (pool 'mean') or (N, C*...) (pool 'flatten')."""
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ConfigError(f"pkdot: {where} gives {tuple(getattr(x, 'shape', ()))}, not a batch of features",
                          hint="address a module whose output is (N, C, ...)")
    if x.shape[0] != n:
        if x.shape[0] % n:
            raise ConfigError(f"pkdot: {where} gives {x.shape[0]} rows for a batch of {n} samples",
                              hint="address a module that runs once per sample (or per time step / person)")
        x = x.reshape(n, x.shape[0] // n, *x.shape[1:]).mean(dim=1)
    x = x.float()
    if x.dim() > 2:
        x = x.flatten(2).mean(dim=2) if pool == "mean" else x.flatten(1)
    return x


def cosine_similarity_matrix(e: Tensor) -> Tensor:
    """(N, D) -> (N, N) cosine similarities (a zero embedding has similarity 0 to every sample)."""
    unit = e / torch.sqrt((e * e).sum(dim=1, keepdim=True) + 1e-8)
    return unit @ unit.t()


def anchor_columns(teacher_similarity: Tensor, k: int, anchors: str = "least") -> Tensor:
    """(N, k) column indices per row: the k other samples least (or most) similar in the teacher's
    matrix, in the order of that similarity."""
    s = teacher_similarity.detach().clone()
    most = anchors == "most"
    s.fill_diagonal_(-torch.inf if most else torch.inf)
    return torch.topk(s, k, dim=1, largest=most, sorted=True).indices


def structure_divergence(student_similarity: Tensor, teacher_similarity: Tensor, k: int, epsilon: float = 0.01,
                         anchors: str = "least", max_iter: int = 1000) -> Tensor:
    """The PKDOT distance between two N x N similarity matrices (steps 2-4 of the module doc)."""
    n = teacher_similarity.shape[0]
    if n < 2:
        return student_similarity.sum() * 0.0
    idx = anchor_columns(teacher_similarity, min(k, n - 1), anchors)
    t = (teacher_similarity - teacher_similarity.min()).detach().gather(1, idx)  # the shift: a constant
    s = (student_similarity - student_similarity.min().detach()).gather(1, idx)
    return sinkhorn_divergence(s, t, epsilon, max_iter)


class Hallucinator(nn.Module):
    """Frozen MLP from standardised visual features to standardised privileged features."""

    def __init__(self, visual_dim: int, privileged_dim: int):
        super().__init__()
        h1, h2 = max(visual_dim // 2, 8), max(visual_dim // 4, 4)
        self.net = nn.Sequential(nn.Linear(visual_dim, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(),
                                 nn.Linear(h2, h1), nn.ReLU(), nn.Linear(h1, privileged_dim))
        for name, dim in (("visual", visual_dim), ("privileged", privileged_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))
        for p in self.parameters():
            p.requires_grad_(False)

    def standardise(self, x: Tensor, which: str) -> Tensor:
        return (x - getattr(self, f"{which}_mean")) / getattr(self, f"{which}_std")

    def forward(self, visual_standardised: Tensor) -> Tensor:
        return self.net(visual_standardised)

    def fit(self, visual: Tensor, privileged: Tensor, epochs: int, lr: float, seed: int = 0,
            held_out: float = 0.2) -> dict[str, float]:
        """Train on (visual, privileged) feature pairs, then freeze. A seeded `held_out` share of the
        pairs is kept out of training to measure the fit (R^2 of the standardised targets)."""
        self.visual_mean.copy_(visual.mean(0))
        self.visual_std.copy_(visual.std(0).clamp_min(1e-4))
        self.privileged_mean.copy_(privileged.mean(0))
        self.privileged_std.copy_(privileged.std(0).clamp_min(1e-4))
        x, y = self.standardise(visual, "visual"), self.standardise(privileged, "privileged")
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(x), generator=gen)
        n_out = int(len(x) * held_out) if len(x) >= 10 else 0
        test, train = order[:n_out], order[n_out:]
        params = list(self.net.parameters())
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr)
        # A net this small gains nothing from intra-op threads, and on a busy 2-core machine their
        # synchronisation made this loop 12x slower (4.9 s vs 58 s measured): one thread here,
        # the caller's setting restored after.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.enable_grad():
                for _ in range(epochs):
                    for idx in train[torch.randperm(len(train), generator=gen)].split(64):
                        loss = ((self.net(x[idx]) - y[idx]) ** 2).mean()
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
        finally:
            torch.set_num_threads(threads)
            for p in params:
                p.requires_grad_(False)
                p.grad = None
        result: dict[str, float] = {"samples": len(train), "held_out": len(test)}
        with torch.no_grad():
            for name, idx in (("train", train), ("held_out", test)):
                if len(idx):
                    mse = float(((self.net(x[idx]) - y[idx]) ** 2).mean())
                    var = float(((y[idx] - y[idx].mean(0)) ** 2).mean())
                    result[f"{name}_r2"] = 1.0 - mse / max(var, 1e-12)
        return result


def _paths(value: Any, key: str) -> list[str]:
    paths = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise ConfigError(f"loss 'pkdot': params.{key} must be a module path or a list of them, got {value!r}",
                          hint="e.g. params = {visual = 'spatial', privileged = 'temporal.blocks.2.pool'}")
    return paths


class PKDOT(Loss):
    """params: student, teacher (module paths, required); k (anchors per row, default 30), epsilon
    (0.01), anchors ('least' | 'most'), pool ('mean' | 'flatten'), max_iter (Sinkhorn, 1000);
    hallucination: visual, privileged (teacher module paths), align (1.0), hallucination_epochs
    (100), hallucination_lr (0.001)."""

    name = "pkdot"
    needs_teacher = True
    allowed_params = ("student", "teacher", "k", "epsilon", "anchors", "pool", "max_iter", "visual", "privileged",
                      "align", "hallucination_epochs", "hallucination_lr")

    def __init__(self, **params: Any):
        super().__init__(**params)
        for key in ("student", "teacher"):
            if not isinstance(params.get(key), str) or not params[key]:
                raise ConfigError(f"loss 'pkdot' needs params.{key} = a module path",
                                  hint="e.g. params = {student = 'units.5', teacher = 'trunk.8'}")
        self.student_path, self.teacher_path = params["student"], params["teacher"]
        self.k = params.get("k", 30)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"loss 'pkdot': k must be a whole number >= 1, got {self.k!r}",
                              hint="k = anchors per row of the similarity matrix, at most the batch size - 1")
        self.epsilon = float(params.get("epsilon", 0.01))
        self.max_iter = int(params.get("max_iter", 1000))
        if self.epsilon <= 0 or self.max_iter < 1:
            raise ConfigError(f"loss 'pkdot': epsilon must be > 0 and max_iter >= 1, got {self.epsilon}, {self.max_iter}")
        for key, choices in (("anchors", ("least", "most")), ("pool", ("mean", "flatten"))):
            value = params.get(key, choices[0])
            if value not in choices:
                raise ConfigError(f"loss 'pkdot': {key} = {value!r}{did_you_mean(str(value), choices)}",
                                  hint=f"{key}: {' or '.join(repr(c) for c in choices)}")
        self.anchors, self.pool = params.get("anchors", "least"), params.get("pool", "mean")
        if ("visual" in params) != ("privileged" in params):
            raise ConfigError("loss 'pkdot': hallucination needs both params.visual and params.privileged",
                              hint="give the teacher's visual-branch and privileged-branch module paths, or neither")
        self.visual = _paths(params["visual"], "visual") if "visual" in params else []
        self.privileged = _paths(params["privileged"], "privileged") if "privileged" in params else []
        self.align = float(params.get("align", 1.0))
        self.hallucination_epochs = int(params.get("hallucination_epochs", 100))
        self.hallucination_lr = float(params.get("hallucination_lr", 1e-3))
        self.adapter: nn.Linear | None = None
        self.hallucinator: Hallucinator | None = None
        self.prepared: dict[str, float] = {}  # the hallucination net's fit (set by prepare)

    @property
    def hallucinates(self) -> bool:
        return bool(self.visual)

    def student_paths(self) -> list[str]:
        return [self.student_path]

    def teacher_paths(self) -> list[str]:
        return [self.teacher_path]

    def reference_paths(self) -> list[str]:
        """Paths read on the first teacher only (the hallucination's visual and privileged branches)."""
        return self.visual + self.privileged

    def check_batch(self, batch_size: int, processes: int = 1) -> None:
        share = batch_size // max(processes, 1)
        if self.k > share - 1:
            per = f" per process ({batch_size} over {processes} processes)" if processes > 1 else ""
            raise ConfigError(
                f"loss 'pkdot': k = {self.k} anchors per row, but a batch of {share} samples{per} has only "
                f"{share - 1} other samples to anchor on",
                hint=f"lower the pkdot params.k to at most {max(share - 1, 1)}, or raise train.batch_size above {self.k}",
            )

    def _concat(self, features: dict[str, Tensor], paths: Sequence[str], n: int) -> Tensor:
        return torch.cat([embedding(features[p], n, self.pool, f"teacher module '{p}'") for p in paths], dim=1)

    def build(self, out: KDOutputs) -> None:
        """Create the adapter and the (untrained) hallucination net from the first batch's shapes."""
        if not self.hallucinates:
            return
        n = out.student_logits.shape[0]
        e_s = embedding(out.student_features[self.student_path], n, self.pool, f"student module '{self.student_path}'")
        v = self._concat(out.reference_features, self.visual, n)
        p = self._concat(out.reference_features, self.privileged, n)
        self.adapter = nn.Linear(e_s.shape[1], v.shape[1]).to(e_s.device)
        self.hallucinator = Hallucinator(v.shape[1], p.shape[1]).to(e_s.device)

    def prepare(self, batches: Callable[[], Iterable[tuple[int, dict[str, Tensor]]]], seed: int = 0) -> str:
        """Train the hallucination net on the first teacher's features over the training set
        (`batches()` yields (samples, reference features) per batch), then freeze it."""
        if not self.hallucinates:
            return ""
        if self.hallucinator is None:
            raise ConfigError("loss 'pkdot': prepare() before build()", hint="the trainer calls build() on a first batch")
        vs, ps = [], []
        for n, feats in batches():
            vs.append(self._concat(feats, self.visual, n).detach())
            ps.append(self._concat(feats, self.privileged, n).detach())
        self.prepared = self.hallucinator.fit(torch.cat(vs), torch.cat(ps), self.hallucination_epochs,
                                                       self.hallucination_lr, seed)
        f = self.prepared
        fit_text = (f"R^2 {f['held_out_r2']:.3f} on {f['held_out']} held-out training samples" if "held_out_r2" in f
                    else f"R^2 {f['train_r2']:.3f} on its training samples")
        return (f"pkdot: hallucination net {'+'.join(self.visual)} -> {'+'.join(self.privileged)} trained on "
                f"{f['samples']} training samples ({fit_text}), then frozen")

    def forward(self, out: KDOutputs) -> Tensor:
        n = out.student_logits.shape[0]
        e_s = embedding(out.student_features[self.student_path], n, self.pool, f"student module '{self.student_path}'")
        e_t = embedding(out.teacher_features[self.teacher_path], n, self.pool, f"teacher module '{self.teacher_path}'")
        s_s = cosine_similarity_matrix(e_s)
        extra = e_s.sum() * 0.0
        if self.hallucinates:
            if self.adapter is None or self.hallucinator is None:
                self.build(out)
            z = self.adapter(e_s)
            v = self.hallucinator.standardise(self._concat(out.reference_features, self.visual, n), "visual").detach()
            extra = self.align * ((z - v) ** 2).mean()
            s_s = 0.5 * (s_s + cosine_similarity_matrix(self.hallucinator(z)))
        s_t = cosine_similarity_matrix(e_t.detach())
        return structure_divergence(s_s, s_t, self.k, self.epsilon, self.anchors, self.max_iter) + extra


register_loss(PKDOT)
