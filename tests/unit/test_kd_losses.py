"""KD loss terms: definitions, composition by name and weight, feature translation, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgekd.config import LossTerm
from edgekd.distill.losses import LOSSES, KDOutputs, Loss, WeightedLoss, kl_per_sample, register_loss
from edgekd.errors import ConfigError


def _outputs(n: int = 6, k: int = 4, t: int = 3) -> KDOutputs:
    g = torch.Generator().manual_seed(0)
    s_steps = torch.randn(n, t, k, generator=g, requires_grad=True)
    t_steps = torch.randn(n, t, k, generator=g)
    labels = torch.randint(0, k, (n,), generator=g)
    return KDOutputs(labels=labels, student_logits=s_steps.mean(1), teacher_logits=t_steps.mean(1),
                     student_steps=s_steps, teacher_steps=t_steps)


def test_hinton_kd_is_t2_scaled_kl() -> None:
    out = _outputs()
    loss = WeightedLoss([LossTerm(name="kd", params={"temperature": 3.0})])
    total, parts = loss(out)
    ref = F.kl_div(F.log_softmax(out.student_logits / 3, 1), F.softmax(out.teacher_logits / 3, 1),
                   reduction="batchmean") * 9
    torch.testing.assert_close(total, ref)
    assert float(kl_per_sample(out.teacher_logits, out.teacher_logits, 2.0).abs().max()) < 1e-6


def test_hckd_only_counts_teacher_hits() -> None:
    out = _outputs()
    hits = out.teacher_logits.argmax(1) == out.labels
    assert 0 < int(hits.sum()) < len(hits)  # the case has hits and misses
    hckd = WeightedLoss([LossTerm(name="hckd", params={"temperature": 2.0})])(out)[0]
    per = kl_per_sample(out.student_logits, out.teacher_logits, 2.0)
    torch.testing.assert_close(hckd, (per * hits.float()).mean())
    # a student that copies the teacher on the hits has zero HCKD whatever it does elsewhere
    copied = out.student_logits.detach().clone()
    copied[hits] = out.teacher_logits[hits]
    out.student_logits = copied
    assert float(WeightedLoss([LossTerm(name="hckd")])(out)[0]) < 1e-6


def test_tckd_is_mean_per_step_kl_and_mskd_composes() -> None:
    out = _outputs()
    tckd = WeightedLoss([LossTerm(name="tckd", params={"temperature": 4.0})])(out)[0]
    per_step = torch.stack([kl_per_sample(out.student_steps[:, i], out.teacher_steps[:, i], 4.0) for i in range(3)], 1)
    torch.testing.assert_close(tckd, per_step.mean())
    a = 0.3
    terms = [LossTerm(name="ce", weight=1 - a), LossTerm(name="hckd", weight=a, params={"temperature": 4.0}),
             LossTerm(name="tckd", weight=a, params={"temperature": 4.0})]
    total, parts = WeightedLoss(terms)(out)
    assert set(parts) == {"ce", "hckd", "tckd"}
    composite = WeightedLoss([LossTerm(name="mskd", params={"alpha": a, "temperature": 4.0})])(out)[0]
    torch.testing.assert_close(total, composite)
    total.backward()
    assert out.student_steps.grad is not None and float(out.student_steps.grad.abs().sum()) > 0


def test_feature_translation_matches_shapes_and_learns() -> None:
    torch.manual_seed(0)
    student_feat = torch.randn(4, 8, 6, 5)  # (N, C, T, V)
    teacher_feat = torch.randn(4, 16, 3, 5)  # more channels, fewer frames
    out = KDOutputs(labels=torch.zeros(4, dtype=torch.long), student_logits=torch.zeros(4, 2),
                    teacher_logits=torch.zeros(4, 2), student_features={"s": student_feat},
                    teacher_features={"t": teacher_feat})
    loss = WeightedLoss([LossTerm(name="feature", params={"student": "s", "teacher": "t"})])
    loss.build(out)
    opt = torch.optim.Adam(loss.parameters(), lr=0.05)
    with torch.no_grad():
        first = float(loss(out)[0])
    for _ in range(60):
        opt.zero_grad()
        value = loss(out)[0]
        value.backward()
        opt.step()
    assert float(value.detach()) < 0.8 * first  # the adapter learns a map towards the teacher's features
    # channels on another axis (eye-snn's (N, T, C, H, W)) and a different number of axes -> global pool
    out.student_features = {"s": torch.randn(4, 3, 8, 4, 4)}
    two = WeightedLoss([LossTerm(name="feature", params={"student": "s", "teacher": "t", "student_channel_dim": 2})])
    assert torch.isfinite(two(out)[0])


def test_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="did you mean 'hckd'"):
        WeightedLoss([LossTerm(name="hckdd")])
    with pytest.raises(ConfigError, match="no parameter 'temp'"):
        WeightedLoss([LossTerm(name="kd", params={"temp": 2.0})])
    with pytest.raises(ConfigError, match="appears twice"):
        WeightedLoss([LossTerm(name="ce"), LossTerm(name="ce")])
    with pytest.raises(ConfigError, match="module path"):
        WeightedLoss([LossTerm(name="feature", params={"student": "a"})])
    out = _outputs(t=3)
    out.teacher_steps = out.teacher_steps[:, :2]
    with pytest.raises(ConfigError, match="3 time steps, teacher 2"):
        WeightedLoss([LossTerm(name="tckd")])(out)


def test_new_loss_names_can_be_registered() -> None:
    class Zero(Loss):
        name = "zero-test"

        def forward(self, out: KDOutputs) -> torch.Tensor:
            return out.student_logits.sum() * 0

    register_loss(Zero)
    try:
        total, parts = WeightedLoss([LossTerm(name="ce"), LossTerm(name="zero-test", weight=2.0)])(_outputs())
        assert set(parts) == {"ce", "zero-test"} and float(parts["zero-test"].detach()) == 0.0
    finally:
        LOSSES.pop("zero-test")


def test_gcn2sgn_is_ce_soft_labels_and_feature_translation() -> None:
    torch.manual_seed(0)
    out = _outputs()
    out.student_features = {"s": torch.randn(6, 8, 4, 5)}
    out.teacher_features = {"t": torch.randn(6, 16, 2, 5)}
    feature = {"student": "s", "teacher": "t"}
    composite = WeightedLoss([LossTerm(name="gcn2sgn", params={"alpha": 0.4, "beta": 2.0, "temperature": 3.0, **feature})])
    composite.build(out)
    separate = WeightedLoss([LossTerm(name="ce", weight=0.6), LossTerm(name="kd", weight=0.4, params={"temperature": 3.0}),
                             LossTerm(name="feature", weight=2.0, params=feature)])
    separate.build(out)
    separate.terms["feature"].adapter.load_state_dict(composite.terms["gcn2sgn"].feature.adapter.state_dict())
    torch.testing.assert_close(composite(out)[0], separate(out)[0])


def test_spike_margin_term_averages_the_layers_and_needs_them() -> None:
    out = _outputs()
    out.spike_margins = {"a.lif": torch.tensor(0.2), "b.lif": torch.tensor(0.4)}
    total, parts = WeightedLoss([LossTerm(name="spike_margin", weight=2.0)])(out)
    assert float(parts["spike_margin"]) == pytest.approx(0.3) and float(total) == pytest.approx(0.6)
    with pytest.raises(ConfigError, match="spike_margin"):
        WeightedLoss([LossTerm(name="spike_margin")])(_outputs())
    assert LOSSES["spike_margin"].student_regularizer and not LOSSES["kd"].student_regularizer


def test_logit_margin_hinges_the_top2_gap_in_int8_steps() -> None:
    logits = torch.tensor([[0.0, 255.0, 0.0], [0.0, 1.0, 2.0], [10.0, 9.0, 0.0]], requires_grad=True)
    out = KDOutputs(labels=torch.tensor([1, 2, 0]), student_logits=logits)
    value = WeightedLoss([LossTerm(name="logit_margin", params={"steps": 4.0})])(out)[0]
    # range 255 -> one step = 1: margin 4; gaps 255 (no penalty), 1 and 1 (penalty 3 each)
    assert float(value.detach()) == pytest.approx(2.0)
    value.backward()
    assert float(logits.grad[0].abs().sum()) == 0.0  # a sample beyond the margin is left alone
    assert logits.grad[1, 2] < 0 < logits.grad[1, 1]  # descent widens the gap
