"""Leaky integrate-and-fire neurons with explicit state and surrogate gradients.

`spike, state = lif(x, state, params)` advances one time step. The state is the membrane
potential *before* reset (snntorch's convention): the reset of step t is applied at step t+1
from that stored potential, so the dynamics equal `snntorch.Leaky` with the same beta,
threshold and reset mechanism:

    reset_t  = H(state_{t-1} - threshold)                       (no gradient)
    mem_t    = beta * state_{t-1} + x_t - reset_t * threshold    (reset="subtract", soft)
    mem_t    = beta * (1 - reset_t) * state_{t-1} + x_t          (reset="zero", hard)
    spike_t  = H(mem_t - threshold)                             (surrogate gradient in training)

H is `>=` (snntorch uses `>`; the two differ only when the potential equals the threshold
exactly). In export mode the spike is `floor(u / 1024) + 1` for u = mem - threshold, which equals
H(u) exactly in float32 for |u| < 1024, so a model unrolled over its time steps exports with
Floor/Mul/Add/Sub only (no custom autograd op, no comparison). Why not `(u >= 0).float()`: after
int8 quantization that is GREATER_EQUAL + CAST(bool) + QUANTIZE, which XNNPACK (TFLite's CPU
engine) does not take, so every LIF layer split its graph and the int8 eye student ran 5x slower
than with the floor form, whose DEQUANTIZE/FLOOR/QUANTIZE it runs (benchmarks/latency.py).
Nothing here keeps state between calls: the caller threads `state` through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from edgekd.errors import ConfigError, did_you_mean
from edgekd.models.int8 import round_ste

Surrogate = Literal["rectangular", "sigmoid", "atan"]
Reset = Literal["subtract", "zero", "none"]
SURROGATES = ("rectangular", "sigmoid", "atan")
RESETS = ("subtract", "zero", "none")


@dataclass(frozen=True)
class LIFParams:
    """beta: membrane decay per step (tau form: beta = 1 - 1/tau); alpha: surrogate sharpness
    (atan: snntorch's alpha; sigmoid: slope; rectangular: 1/width of the window).

    Int8 fidelity (see docs/int8-spiking.md): `current_clamp` c > 0 clamps the input current to
    [-c, c] before integration (export: a Clip right after the conv, which TFLite fuses into the
    conv's activation), so the current's int8 step is 2c/255 rather than range/255 and far fewer
    spikes flip at the threshold after quantization. `current_noise` n > 0 adds uniform noise in
    [-n, n] to the current in training only, so the network learns not to rely on membranes a
    quantization step away from the threshold.

    `spike_margin` delta > 0 (training only, with the loss term `spike_margin`): every LIF layer
    computes the penalty mean(relu(delta - |mem - threshold|)) over its pre-spike membranes and
    time steps, whose gradient pushes membranes within delta of the threshold away from it, so that
    int8 rounding of the membrane path (a few steps of its int8 range) would not move a spike.
    Evaluation and export compute nothing of it. Measured on the eye student it lowers near-ties
    but does not clear the band by itself (docs/int8-spiking.md).

    `membrane_grid` K > 0 (integer membrane, for int8 agreement): the membrane lives on a grid of
    threshold / K in every mode (training, evaluation, export), counted in whole grid steps: the
    current becomes round(x * K / threshold), the leak round(beta * n), the reset subtracts K
    and the neuron fires at n >= K. The state is then in grid steps. Every value on the path is
    an integer in [-128, 127], so the int8 model (whose converter gives these tensors scale 1,
    see `edgekd.convert.spiking_ranges`) computes the same membranes exactly; what still differs
    is the current's rounding where the int8 convolution lands on the other side of a half step.
    Rounding is straight-through in training. Needs current_clamp (it bounds the current), a
    beta for which beta * n is never halfway between two integers (engines round halves
    differently: 0.6 yes, 0.5 no), beta < 1, reset "subtract" or "none", and K small enough that
    no membrane leaves [-128, 127] (checked here)."""

    beta: float = 0.5
    threshold: float = 1.0
    reset: Reset = "subtract"
    surrogate: Surrogate = "atan"
    alpha: float = 2.0
    current_clamp: float = 0.0
    current_noise: float = 0.0
    spike_margin: float = 0.0
    membrane_grid: int = 0
    export: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"LIF beta must be in [0, 1], got {self.beta}", hint="beta = 1 - 1/tau, e.g. tau=2 -> 0.5")
        if self.threshold <= 0:
            raise ConfigError(f"LIF threshold must be > 0, got {self.threshold}")
        if self.reset not in RESETS:
            raise ConfigError(f"unknown LIF reset '{self.reset}'{did_you_mean(self.reset, RESETS)}",
                              hint=f"one of {', '.join(RESETS)}")
        if self.surrogate not in SURROGATES:
            raise ConfigError(f"unknown surrogate '{self.surrogate}'{did_you_mean(self.surrogate, SURROGATES)}",
                              hint=f"one of {', '.join(SURROGATES)}")
        if self.alpha <= 0:
            raise ConfigError(f"surrogate alpha must be > 0, got {self.alpha}")
        if self.current_clamp < 0 or self.current_noise < 0:
            raise ConfigError(f"LIF current_clamp and current_noise must be >= 0 (0 = off), got "
                              f"{self.current_clamp} and {self.current_noise}")
        if self.spike_margin < 0:
            raise ConfigError(f"LIF spike_margin must be >= 0 (0 = off), got {self.spike_margin}")
        if self.membrane_grid:
            self._check_grid()
        if 0 < self.current_clamp < self.threshold:
            raise ConfigError(f"LIF current_clamp {self.current_clamp} is below the threshold {self.threshold}",
                              hint="a neuron could then fire only by integrating over several steps; use clamp >= threshold")

    def _check_grid(self) -> None:
        k = self.membrane_grid
        if not isinstance(k, int) or isinstance(k, bool) or k < 2:
            raise ConfigError(f"LIF membrane_grid must be an integer >= 2 (grid steps per threshold; 0 = off), got {k!r}")
        if self.current_clamp <= 0:
            raise ConfigError("LIF membrane_grid needs current_clamp > 0 (the clamp bounds the current in grid steps)",
                              hint="e.g. lif = { beta = 0.6, current_clamp = 2.0, membrane_grid = 16 }")
        if self.reset == "zero":
            raise ConfigError("LIF membrane_grid supports reset 'subtract' or 'none', not 'zero'",
                              hint="use reset = \"subtract\" (the default)")
        ties = [n for n in range(1, 129) if abs(abs(self.beta * n) % 1.0 - 0.5) < 1e-4]
        if ties:
            raise ConfigError(f"LIF beta {self.beta} with membrane_grid: beta * {ties[0]} = {self.beta * ties[0]:g} lies "
                              "halfway between two grid steps, which int8 engines round differently",
                              hint="pick a beta whose fraction has an odd denominator, e.g. 0.6 or 0.8")
        # |n| <= (c K / thr + 1/2) / (1 - beta) must stay inside int8: no op on the path saturates
        if self.beta >= 1.0:
            raise ConfigError("LIF membrane_grid needs beta < 1: without a leak a membrane can grow past int8's range",
                              hint="e.g. beta = 0.6 or 0.8")
        bound = (self.current_clamp * k / self.threshold + 0.5) / (1.0 - self.beta)
        if bound > 127:
            k_max = max(int((127 * (1.0 - self.beta) - 0.5) * self.threshold / self.current_clamp), 0)
            raise ConfigError(f"LIF membrane_grid {k}: a membrane could reach {bound:.0f} grid steps, outside int8's "
                              f"[-128, 127] (current_clamp {self.current_clamp}, beta {self.beta})",
                              hint=f"use membrane_grid <= {k_max}, a smaller current_clamp or a smaller beta")

    @classmethod
    def from_tau(cls, tau: float, **kwargs: Any) -> LIFParams:
        if tau < 1.0:
            raise ConfigError(f"LIF tau must be >= 1, got {tau}")
        return cls(beta=1.0 - 1.0 / tau, **kwargs)

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> LIFParams:
        """From a recipe's `lif = {...}` table (keys: beta or tau, threshold, reset, surrogate, alpha,
        current_clamp, current_noise, spike_margin, membrane_grid)."""
        cfg = dict(cfg or {})
        allowed = {"beta", "tau", "threshold", "reset", "surrogate", "alpha", "current_clamp", "current_noise",
                   "spike_margin", "membrane_grid"}
        for key in cfg:
            if key not in allowed:
                raise ConfigError(f"unknown LIF key '{key}'{did_you_mean(key, allowed)}",
                                  hint=f"valid: {', '.join(sorted(allowed))}")
        if "tau" in cfg and "beta" in cfg:
            raise ConfigError("LIF: give either tau or beta, not both", hint="beta = 1 - 1/tau")
        if "tau" in cfg:
            return cls.from_tau(float(cfg.pop("tau")), **cfg)
        return cls(**cfg)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("export")
        return d


# ---------------------------------------------------------------- surrogate spike functions


def _rectangular_grad(u: Tensor, alpha: float) -> Tensor:
    # Box of width 1/alpha and height alpha around the threshold (area 1), as in STBP/SEEN.
    return (u.abs() < 0.5 / alpha).to(u.dtype) * alpha


def _sigmoid_grad(u: Tensor, alpha: float) -> Tensor:
    s = torch.sigmoid(alpha * u)
    return alpha * s * (1 - s)


def _atan_grad(u: Tensor, alpha: float) -> Tensor:
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * u) ** 2)


_SURROGATE_GRAD = {"rectangular": _rectangular_grad, "sigmoid": _sigmoid_grad, "atan": _atan_grad}


class _Heaviside(torch.autograd.Function):
    """Forward: H(u) (u >= 0); backward: the named surrogate derivative."""

    @staticmethod
    def forward(ctx: Any, u: Tensor, surrogate: str, alpha: float) -> Tensor:
        ctx.save_for_backward(u)
        ctx.surrogate, ctx.alpha = surrogate, alpha
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (u,) = ctx.saved_tensors
        return grad * _SURROGATE_GRAD[ctx.surrogate](u, ctx.alpha), None, None


# |u| below this keeps export_heaviside exact; a power of two, so the scaling is exact in float32
# and, in fp16, does not underflow for the membranes a quantization step from the threshold.
EXPORT_HEAVISIDE_RANGE = 1024.0


def export_heaviside(u: Tensor) -> Tensor:
    """H(u) = (u >= 0) as floor(u / 1024) + 1: the same values for |u| < 1024 (u < 0 gives
    floor(-small) = -1, u >= 0 gives 0), built from ops every TFLite engine runs in its int8
    graph (see the module docstring)."""
    return torch.floor(u * (1.0 / EXPORT_HEAVISIDE_RANGE)) + 1.0


def spike_fn(u: Tensor, params: LIFParams) -> Tensor:
    """Heaviside of `u` (= membrane - threshold); surrogate gradient unless in export mode."""
    if params.export:
        return export_heaviside(u)
    return _Heaviside.apply(u, params.surrogate, params.alpha)


def grid_round(v: Tensor, params: LIFParams) -> Tensor:
    """round(v): a plain Round when exported, else straight-through (edgekd.models.int8.round_ste)."""
    return torch.round(v) if params.export else round_ste(v)


def _grid_lif(x: Tensor, state: Tensor | None, params: LIFParams, fired: Tensor | None) -> tuple[Tensor, Tensor]:
    """lif() with the membrane in whole steps of threshold / K (LIFParams.membrane_grid)."""
    k = params.membrane_grid

    def spike(n: Tensor) -> Tensor:  # H(n - K); the surrogate sees it in threshold units, as without the grid
        return spike_fn(n - k if params.export else (n - k) * (params.threshold / k), params)

    current = grid_round(x * (k / params.threshold), params)
    if state is None:
        mem = current
    else:
        mem = grid_round(params.beta * state, params) + current
        if params.reset == "subtract":
            fired = spike(state) if fired is None else fired
            mem = mem - fired.detach() * k
    return spike(mem), mem


def lif(x: Tensor, state: Tensor | None, params: LIFParams, fired: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One LIF step: input current `x`, previous membrane `state` (None = at rest).

    `fired` may pass the previous step's spikes, which equal H(state - threshold): the reset then
    reuses that tensor instead of comparing again. Exported, the reset multiplies the spike
    tensor the next layer already reads (an int8 tensor after quantization) rather than
    computing the Heaviside a second time."""
    if params.current_clamp > 0:
        x = x.clamp(-params.current_clamp, params.current_clamp)
    if params.membrane_grid:
        return _grid_lif(x, state, params, fired)
    if state is None:
        mem = x  # beta * 0 + x: no op on a zero tensor, so exported graphs stay small
    else:
        if params.reset == "none":
            mem = params.beta * state + x
        else:
            fired = spike_fn(state - params.threshold, params) if fired is None else fired
            fired = fired.detach()  # no gradient through the reset (snntorch's default)
            if params.reset == "subtract":
                mem = params.beta * state + x - fired * params.threshold
            else:
                mem = params.beta * (state - fired * state) + x
    return spike_fn(mem - params.threshold, params), mem


# ---------------------------------------------------------------- time-step handling


def unbind_steps(x: Tensor, dim: int, export: bool) -> list[Tensor]:
    """Split `x` along its time axis `dim` into per-step tensors.

    In export mode each step is picked by a fixed one-hot fully connected layer instead of a
    slice, so the exported graph needs no SLICE/SPLIT/GATHER (the int8 C runtime implements
    FULLY_CONNECTED, RESHAPE and TRANSPOSE but not those)."""
    if not export:
        return list(x.unbind(dim))
    dim = dim % x.dim()
    steps = x.shape[dim]
    moved = x.movedim(dim, -1)
    rest = moved.shape[:-1]
    flat = moved.reshape(-1, steps)
    out = []
    for t in range(steps):
        # built from a Python list so it is traced as a constant (not EyeLike + Slice)
        one_hot = torch.tensor([[1.0 if i == t else 0.0 for i in range(steps)]], dtype=x.dtype, device=x.device)
        out.append(nn.functional.linear(flat, one_hot).reshape(rest))
    return out


def stack_steps(xs: Sequence[Tensor], dim: int) -> Tensor:
    """Inverse of unbind_steps: reshape + concatenate (exports as RESHAPE + CONCATENATION)."""
    first = xs[0]
    dim = dim % (first.dim() + 1)
    shape = list(first.shape)
    shape.insert(dim, 1)
    return torch.cat([x.reshape(shape) for x in xs], dim=dim)


class LIF(nn.Module):
    """A layer of LIF neurons run over a whole sequence along `time_dim`.

    Keeps no state between calls (the sequence's state lives in `forward`). Firing rates are
    read by hooks on these modules (see `edgekd.models.firing_rates`). With `spike_margin` > 0,
    a training forward leaves its margin penalty in `margin_penalty` (None otherwise), which
    `take_margin_penalties` collects for the loss term `spike_margin`."""

    def __init__(self, params: LIFParams | None = None, time_dim: int = 1):
        super().__init__()
        self.params = params or LIFParams()
        self.time_dim = time_dim
        self.margin_penalty: Tensor | None = None

    def extra_repr(self) -> str:
        p = self.params
        return f"beta={p.beta}, threshold={p.threshold}, reset={p.reset}, surrogate={p.surrogate}, time_dim={self.time_dim}"

    def step(self, x: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        return lif(x, state, self.params)

    def forward(self, x: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
        """x: a tensor with time along `time_dim`, or a list of per-step tensors (export mode)."""
        as_list = isinstance(x, list)
        export = self.params.export
        steps = x if as_list else unbind_steps(x, self.time_dim, export)
        state: Tensor | None = None
        s: Tensor | None = None
        spikes = []
        noise = self.params.current_noise if self.training and not export else 0.0
        margin = self.params.spike_margin if self.training and not export else 0.0
        penalty: Tensor | None = None
        for xt in steps:
            if noise > 0:
                xt = xt + (torch.rand_like(xt) * 2 - 1) * noise
            s, state = lif(xt, state, self.params, fired=s)
            if margin > 0:
                grid = self.params.membrane_grid
                p = (spike_margin_penalty(state, grid, margin * grid / self.params.threshold) if grid
                     else spike_margin_penalty(state, self.params.threshold, margin))
                penalty = p if penalty is None else penalty + p
            spikes.append(s)
        self.margin_penalty = None if penalty is None else penalty / len(steps)
        if as_list:
            return spikes
        return stack_steps(spikes, self.time_dim) if export else torch.stack(spikes, dim=self.time_dim)


def spike_margin_penalty(mem: Tensor, threshold: float, delta: float) -> Tensor:
    """mean(relu(delta - |mem - threshold|)): zero when every membrane is at least delta from the
    threshold; its gradient pushes the others away from it, on the side they are on."""
    return torch.relu(delta - (mem.float() - threshold).abs()).mean()


def take_margin_penalties(model: nn.Module) -> dict[str, Tensor]:
    """The margin penalties the LIF layers of `model` left in their last training forward, by module
    path, cleared as they are taken (so a penalty is read once, for the forward that made it)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LIF) and module.margin_penalty is not None:
            out[name] = module.margin_penalty
            module.margin_penalty = None
    return out


def set_export_mode(model: nn.Module, export: bool = True) -> nn.Module:
    """Switch every LIF layer (and models that read `export_mode`) to plain-comparison spikes."""
    for module in model.modules():
        if isinstance(module, LIF):
            module.params = replace(module.params, export=export)
        if hasattr(module, "export_mode"):
            module.export_mode = export
    return model
