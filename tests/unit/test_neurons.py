"""LIF neuron: dynamics equal snntorch.Leaky; surrogate gradients; export mode; time-step helpers."""

from __future__ import annotations

import math

import pytest
import torch

from edgekd.errors import ConfigError
from edgekd.models.neurons import LIF, LIFParams, lif, stack_steps, unbind_steps

snn = pytest.importorskip("snntorch")


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("beta,threshold", [(0.5, 1.0), (0.9, 0.3), (0.2, 0.7)])
def test_dynamics_equal_snntorch_leaky(reset: str, beta: float, threshold: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(25, 8, 16) * 0.8 + 0.3  # (T, N, F)
    ref = snn.Leaky(beta=beta, threshold=threshold, reset_mechanism=reset)
    mem_ref = ref.init_leaky()
    params = LIFParams(beta=beta, threshold=threshold, reset=reset)
    state = None
    total_spikes = 0.0
    for t in range(x.shape[0]):
        spk_ref, mem_ref = ref(x[t], mem_ref)
        spk, state = lif(x[t], state, params)
        torch.testing.assert_close(state, mem_ref, rtol=0, atol=1e-6)
        assert torch.equal(spk, spk_ref)
        total_spikes += float(spk.sum())
    assert total_spikes > 0  # the comparison covered firing neurons, not a silent layer


def test_atan_surrogate_gradient_equals_snntorch() -> None:
    torch.manual_seed(1)
    x = torch.randn(6, 4, 10)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref = snn.Leaky(beta=0.8, threshold=0.5, spike_grad=snn.surrogate.atan(alpha=2.0))
    mem_ref = ref.init_leaky()
    params = LIFParams(beta=0.8, threshold=0.5, surrogate="atan", alpha=2.0)
    state, out_ref, out = None, 0.0, 0.0
    for t in range(6):
        s_ref, mem_ref = ref(xa[t], mem_ref)
        s, state = lif(xb[t], state, params)
        out_ref = out_ref + (s_ref * torch.arange(10.0)).sum()
        out = out + (s * torch.arange(10.0)).sum()
    out_ref.backward()
    out.backward()
    torch.testing.assert_close(xb.grad, xa.grad)


@pytest.mark.parametrize("surrogate", ["rectangular", "sigmoid", "atan"])
def test_surrogates_give_gradients_near_threshold_only(surrogate: str) -> None:
    u = torch.tensor([-3.0, -0.05, 0.0, 0.05, 3.0], requires_grad=True)
    spike, _ = lif(u + 1.0, None, LIFParams(threshold=1.0, surrogate=surrogate, alpha=4.0))
    spike.sum().backward()
    g = u.grad
    assert torch.equal(spike.detach(), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))
    assert g[2] > 0 and g[1] > 0 and g[3] > 0
    assert g[0] < 0.1 * g[2] and g[4] < 0.1 * g[2]
    if surrogate == "sigmoid":
        assert math.isclose(float(g[2]), 4.0 * 0.25, rel_tol=1e-6)


def test_export_mode_same_spikes_no_autograd_function() -> None:
    torch.manual_seed(2)
    x = torch.randn(5, 3, 7)
    layer = LIF(LIFParams(beta=0.7, threshold=0.4, reset="zero"), time_dim=0)
    a = layer(x)
    layer.params = LIFParams(beta=0.7, threshold=0.4, reset="zero", export=True)
    b = layer(x)
    assert torch.equal(a, b)
    assert b.grad_fn is None or "Backward" in type(b.grad_fn).__name__
    assert 0 < float(a.mean()) < 1


def test_unbind_and_stack_steps_round_trip_in_export_mode() -> None:
    x = torch.randn(2, 3, 5, 4)
    plain = unbind_steps(x, 2, export=False)
    exported = unbind_steps(x, 2, export=True)
    assert len(exported) == 5
    for p, e in zip(plain, exported):
        torch.testing.assert_close(p, e)
    torch.testing.assert_close(stack_steps(exported, 2), x)


def test_bad_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="beta"):
        LIFParams(beta=1.5)
    with pytest.raises(ConfigError, match="did you mean 'atan'"):
        LIFParams(surrogate="atann")
    with pytest.raises(ConfigError, match="either tau or beta"):
        LIFParams.from_config({"tau": 2.0, "beta": 0.5})
    assert LIFParams.from_config({"tau": 2.0}).beta == 0.5


def test_current_clamp_bounds_the_input_current() -> None:
    params = LIFParams(beta=0.5, threshold=1.0, current_clamp=1.5)
    x = torch.tensor([[10.0, -10.0, 0.3]])
    spike, mem = lif(x, None, params)
    assert mem.tolist() == [[1.5, -1.5, pytest.approx(0.3)]]
    assert spike.tolist() == [[1.0, 0.0, 0.0]]
    # the same step without the clamp integrates the raw current
    _, raw = lif(x, None, LIFParams(beta=0.5, threshold=1.0))
    assert raw.tolist()[0][:2] == [10.0, -10.0]
    with pytest.raises(ConfigError, match="below the threshold"):
        LIFParams(threshold=1.0, current_clamp=0.5)
    with pytest.raises(ConfigError, match=">= 0"):
        LIFParams(current_noise=-0.1)
    assert LIFParams.from_config({"current_clamp": 2.0, "current_noise": 0.05}).current_clamp == 2.0


def test_layer_reusing_previous_spikes_equals_step_function() -> None:
    torch.manual_seed(4)
    x = torch.randn(7, 5, 12) * 0.8 + 0.5
    for reset in ("subtract", "zero"):
        params = LIFParams(beta=0.6, threshold=0.8, reset=reset)
        state, expected = None, []
        for t in range(x.shape[0]):
            s, state = lif(x[t], state, params)  # recomputes the reset from the membrane
            expected.append(s)
        assert torch.equal(LIF(params, time_dim=0)(x), torch.stack(expected))


def test_current_noise_only_in_training() -> None:
    torch.manual_seed(3)
    x = torch.randn(6, 4, 32) * 0.7 + 0.6
    layer = LIF(LIFParams(beta=0.5, threshold=1.0, current_noise=0.3), time_dim=0)
    clean = LIF(LIFParams(beta=0.5, threshold=1.0), time_dim=0)
    layer.eval()
    assert torch.equal(layer(x), clean(x))  # evaluation is deterministic and noise-free
    layer.train()
    noisy = layer(x)
    assert not torch.equal(noisy, clean(x))
    # uniform noise in [-0.3, 0.3] moves only neurons within 0.3 of the threshold at the first step
    first = (noisy[0] != clean(x)[0])
    assert bool(((x[0] - 1.0).abs()[first] <= 0.3).all())


def test_current_clamp_exports_as_a_clip() -> None:
    onnx = pytest.importorskip("onnx")
    import io

    layer = LIF(LIFParams(beta=0.5, threshold=1.0, current_clamp=2.0, export=True), time_dim=1)
    buf = io.BytesIO()
    torch.onnx.export(layer, (torch.randn(1, 3, 8),), buf, input_names=["x"], dynamo=False)
    ops = [n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node]
    assert ops.count("Clip") == 3  # one per time step, on the current before integration
    # one Heaviside (a Floor) per step: the reset reuses the previous step's spikes; no comparison
    # or bool cast, which XNNPACK would leave out of its int8 graph
    assert ops.count("Floor") == 3
    assert "GreaterOrEqual" not in ops and "Cast" not in ops


def test_export_heaviside_equals_the_comparison_in_float32() -> None:
    from edgekd.models.neurons import export_heaviside

    # around zero at every float32 scale a membrane can sit from its threshold, and far from it
    tiny = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 1e-3, -1e-3, 0.5, -0.5, 1.0, -1.0])
    wide = torch.linspace(-1023.0, 1023.0, 100_001)
    for u in (tiny, wide, torch.randn(10_000) * 5):
        assert torch.equal(export_heaviside(u), (u >= 0).float())


def test_lif_export_mode_matches_training_mode_in_eval() -> None:
    torch.manual_seed(4)
    x = torch.randn(2, 12, 64) * 1.5
    for reset in ("subtract", "zero"):
        trained = LIF(LIFParams(beta=0.7, threshold=0.8, reset=reset), time_dim=1).eval()
        exported = LIF(LIFParams(beta=0.7, threshold=0.8, reset=reset, export=True), time_dim=1).eval()
        assert torch.equal(trained(x), exported(x))


def test_spike_margin_penalty_is_zero_beyond_delta_and_pushes_membranes_away() -> None:
    from edgekd.models.neurons import take_margin_penalties

    params = LIFParams(beta=0.5, threshold=1.0, spike_margin=0.1)
    layer = LIF(params, time_dim=0)
    layer.train()
    # one step: the membrane is the current; every membrane at least 0.1 from the threshold
    far = torch.tensor([[[0.5, 1.5, -1.0, 0.9, 1.1]]])
    layer(far)
    assert float(layer.margin_penalty) == 0.0
    # within delta: positive penalty, finite gradient that moves each membrane away from the threshold
    near = torch.tensor([[[0.95, 1.02, 3.0]]], requires_grad=True)
    layer(near)
    penalties = take_margin_penalties(layer)
    assert list(penalties) == [""] and layer.margin_penalty is None  # taken once
    penalty = penalties[""]
    assert float(penalty.detach()) == pytest.approx((0.05 + 0.08) / 3)
    penalty.backward()
    grad = near.grad[0, 0]
    assert bool(torch.isfinite(grad).all())
    assert grad[0] > 0 and grad[1] < 0 and grad[2] == 0  # descent lowers 0.95, raises 1.02
    # several steps: the mean over the steps of the pre-spike (pre-reset) membranes
    x = torch.tensor([[0.96], [0.0], [1.03]])  # mem: 0.96, 0.48, 0.24 + 1.03 = 1.27
    layer(x)
    assert float(layer.margin_penalty) == pytest.approx((0.1 - 0.04) / 3)
    with pytest.raises(ConfigError, match="spike_margin"):
        LIFParams(spike_margin=-0.1)
    assert LIFParams.from_config({"spike_margin": 0.1}).spike_margin == 0.1


def test_spike_margin_has_no_effect_in_eval_or_export() -> None:
    onnx = pytest.importorskip("onnx")
    import io

    torch.manual_seed(5)
    x = torch.randn(4, 6, 10) * 0.8 + 0.6
    plain = LIF(LIFParams(beta=0.5, threshold=1.0, current_clamp=2.0), time_dim=0)
    margin = LIF(LIFParams(beta=0.5, threshold=1.0, current_clamp=2.0, spike_margin=0.2), time_dim=0)
    margin.eval()
    assert torch.equal(margin(x), plain(x)) and margin.margin_penalty is None
    margin.train()
    assert torch.equal(margin(x), plain(x)) and margin.margin_penalty is not None  # spikes unchanged in training too

    def graph(p: LIFParams) -> str:
        layer = LIF(p, time_dim=1)
        buf = io.BytesIO()
        torch.onnx.export(layer, (torch.randn(1, 3, 8),), buf, input_names=["x"], dynamo=False)
        return onnx.printer.to_text(onnx.load_from_string(buf.getvalue()).graph)

    base = LIFParams(beta=0.5, threshold=1.0, current_clamp=2.0, export=True)
    assert graph(base) == graph(LIFParams(beta=0.5, threshold=1.0, current_clamp=2.0, spike_margin=0.2, export=True))


# ---------------------------------------------------------------- integer membrane (membrane_grid)


def _integer_lif_reference(x: torch.Tensor, beta: float, clamp: float, k: int, threshold: float) -> list[torch.Tensor]:
    """The integer recurrence written out: n = round(beta n) + round(clamp(x) K / thr) - K s."""
    n, spikes, fired = None, [], None
    for t in range(x.shape[0]):
        current = torch.round(x[t].clamp(-clamp, clamp) * k / threshold)
        n = current if n is None else torch.round(beta * n) + current - k * fired
        fired = (n >= k).float()
        spikes.append(fired)
    return spikes


def test_membrane_grid_runs_the_integer_recurrence_in_every_mode() -> None:
    torch.manual_seed(3)
    x = torch.randn(4, 12, 6, 32) * 1.2  # (N, T, C, F) through a layer with time on axis 1
    params = LIFParams(beta=0.6, threshold=1.0, current_clamp=2.0, membrane_grid=16)
    layer = LIF(params, time_dim=1).eval()
    ref = torch.stack(_integer_lif_reference(x.transpose(0, 1), 0.6, 2.0, 16, 1.0), dim=1)
    out = layer(x)
    assert torch.equal(out, ref) and 0.05 < float(out.mean()) < 0.6  # firing, not silent or saturated
    state = None
    for t in range(x.shape[1]):  # the state is in whole grid steps, inside int8's range
        _, state = lif(x[:, t], state, params, fired=None)
        assert torch.equal(state, torch.round(state)) and float(state.abs().max()) <= 127
    from edgekd.models.neurons import set_export_mode

    set_export_mode(layer)
    assert torch.equal(layer(x), ref)


def test_membrane_grid_trains_with_straight_through_rounding() -> None:
    torch.manual_seed(4)
    x = (torch.randn(3, 8, 20) * 1.5).requires_grad_(True)
    params = LIFParams(beta=0.6, current_clamp=2.0, membrane_grid=16, surrogate="atan")
    LIF(params, time_dim=1).train()(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    # the clamp passes no gradient beyond it, rounding passes it unchanged: inside the clamp it flows
    inside = x.detach().abs() < 2.0
    assert float(x.grad[inside].abs().mean()) > 0 and float(x.grad[~inside].abs().max()) == 0.0


@pytest.mark.parametrize("kwargs,fragment", [
    ({"beta": 0.5, "current_clamp": 2.0, "membrane_grid": 16}, "halfway between two grid steps"),
    ({"beta": 0.6, "membrane_grid": 16}, "needs current_clamp"),
    ({"beta": 0.6, "current_clamp": 2.0, "membrane_grid": 32}, "use membrane_grid <= 25"),
    ({"beta": 0.6, "current_clamp": 2.0, "membrane_grid": 16, "reset": "zero"}, "'subtract' or 'none'"),
    ({"beta": 0.6, "current_clamp": 2.0, "membrane_grid": 1}, "integer >= 2"),
    ({"beta": 1.0, "current_clamp": 2.0, "membrane_grid": 16}, "needs beta < 1"),
])
def test_membrane_grid_rejects_settings_int8_cannot_run_exactly(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        LIFParams(**kwargs)
    assert fragment in str(err.value) + str(err.value.hint)
    assert LIFParams.from_config({"beta": 0.6, "current_clamp": 2.0, "membrane_grid": 16}).membrane_grid == 16


def test_int8_layers_compute_with_weights_on_tflites_per_channel_grid() -> None:
    from edgekd.models.int8 import Int8Conv2d, Int8Linear, grid_input, int8_weight

    torch.manual_seed(5)
    conv = Int8Conv2d(3, 8, 3)
    w = int8_weight(conv.weight)
    steps = w.detach().abs().amax(dim=(1, 2, 3), keepdim=True) / 127  # per output channel
    assert torch.allclose(w / steps, torch.round(w / steps), atol=1e-4)  # whole steps: TFLite keeps them
    assert float((w - conv.weight).abs().max()) <= float(steps.max()) / 2 + 1e-7
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(conv(x), torch.nn.functional.conv2d(x, w, conv.bias), atol=1e-6)
    lin = Int8Linear(5, 4)
    lin(torch.randn(3, 5)).sum().backward()  # straight-through: the float weight gets a gradient
    assert lin.weight.grad is not None and float(lin.weight.grad.abs().sum()) > 0
    g = grid_input(torch.tensor([-0.3, 0.0, 0.51, 0.999, 2.0]), 128)
    assert torch.equal(g, torch.tensor([0.0, 0.0, 65 / 128, 127 / 128, 127 / 128]))


def test_eye_student_int8_exact_needs_an_integer_membrane() -> None:
    from edgekd.models.eye import EyeSNN

    with pytest.raises(ConfigError, match="membrane_grid"):
        EyeSNN(int8_exact=True, lif={"beta": 0.6, "current_clamp": 2.0})
    model = EyeSNN(int8_exact=True, onset_difference=True, lif={"beta": 0.6, "current_clamp": 2.0, "membrane_grid": 16})
    from edgekd.models.neurons import set_export_mode

    x = torch.rand(2, 4, 1, 16, 16)
    model.eval()
    ref = model(x)
    set_export_mode(model)
    assert torch.equal(model(x), ref)  # the unrolled export form computes the same


def test_int8_conv_bn_folds_in_evaluation_with_the_bias_on_the_int32_grid() -> None:
    """Training: conv then BN (batch statistics). Evaluation: one conv with BN folded in, its
    weight on int8's per-channel grid and its bias on the int32 grid (input scale x weight
    scale), i.e. the layer the converter makes and what the int8 model adds."""
    from edgekd.models.int8 import Int8Conv2d, Int8ConvBN, int8_weight, weight_scale

    torch.manual_seed(3)
    layer = Int8ConvBN(Int8Conv2d(4, 6, 1, bias=False), torch.nn.BatchNorm2d(6), in_scale=1 / 64)
    with torch.no_grad():
        layer.bn.running_mean.uniform_(-1, 1)
        layer.bn.running_var.uniform_(0.01, 2)  # large folded weights: a coarse bias grid
        layer.bn.bias.uniform_(-1, 1)
    x = torch.round(torch.randn(3, 4, 5, 5) * 64) / 64
    layer.eval()
    w, b = layer.folded()
    steps = weight_scale(w)
    assert torch.allclose(w / steps, torch.round(w / steps), atol=1e-3)
    bias_steps = b / ((1 / 64) * steps.reshape(-1))
    assert torch.allclose(bias_steps, torch.round(bias_steps), atol=1e-3)
    reference = layer.bn(torch.nn.functional.conv2d(x, int8_weight(layer.conv.weight)))  # BN as a module
    got = layer(x)
    assert float((got - reference).abs().max()) <= float(steps.max()) / 64 / 2 + 1e-5  # half a bias step
    assert not torch.equal(got, reference)  # the bias did move: the test can tell the two apart
    layer.train()
    out = layer(x)
    out.sum().backward()
    assert layer.conv.weight.grad is not None and torch.allclose(out.mean(dim=(0, 2, 3)), layer.bn.bias, atol=1e-5)


def test_grid_value_clamps_to_the_int8_range_and_rounds_straight_through() -> None:
    from edgekd.models.int8 import grid_value

    x = torch.tensor([-20.0, -0.07, 0.03, 0.2, 9.0], requires_grad=True)
    y = grid_value(x, 8)
    assert torch.equal(y.detach(), torch.tensor([-16.0, -0.125, 0.0, 0.25, 9.0]))
    assert torch.equal(grid_value(torch.tensor([40.0]), 8, export=True), torch.tensor([127 / 8]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0]))  # no gradient where clamped
