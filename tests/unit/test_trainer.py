"""The shared trainer: learns, writes metrics/checkpoints, resumes, stops on NaN, keeps the last
good checkpoint on Ctrl-C, distils with a teacher and feature terms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekd.config import LossTerm, TrainSection
from edgekd.distill.trainer import BEST, CHECKPOINT, METRICS, TensorData, evaluate, fit
from edgekd.errors import ConfigError, TrainingError
from edgekd.models import build_model


def _eye_data(n: int, seed: int) -> TensorData:
    """A learnable toy: the class sets which quadrant of the 8x8 frames is bright, over 3 steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    frames = torch.rand(n, 3, 1, 8, 8, generator=g) * 0.3
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c, 2)
        frames[i, :, 0, r * 4 : r * 4 + 4, col * 4 : col * 4 + 4] += 0.7
    events = frames.repeat(1, 1, 2, 1, 1)
    light = np.array(["normal", "low-light"] * (n // 2))
    return TensorData({"frames": frames, "events": events}, y, ["a", "b", "c"], {"lighting": light})


def _cfg(**kw) -> TrainSection:
    base = dict(epochs=3, batch_size=16, lr=0.01, optimizer="adam", device="cpu")
    base.update(kw)
    return TrainSection(**base)


def _student() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("eye-snn", num_classes=3, channels=[4, 8], lif={"beta": 0.5, "threshold": 0.5})


def test_fit_learns_and_writes_metrics_and_checkpoints(tmp_path) -> None:
    train, val = _eye_data(96, 0), _eye_data(48, 1)
    model = _student()
    result = fit(model, train, val, _cfg(epochs=4), [LossTerm(name="ce")], out_dir=tmp_path, progress=False,
                 group_keys=["lighting"], log=lambda _m: None)
    assert result.best_metric > 0.6  # chance is 1/3
    lines = [json.loads(x) for x in (tmp_path / METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    assert {"loss", "loss_ce", "val_accuracy", "val_uar", "val_accuracy_lighting_low-light"} <= set(lines[0])
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 3
    best = torch.load(tmp_path / BEST, weights_only=True)
    assert evaluate(model, val)["accuracy"] == pytest.approx(result.best_metric)
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())


def test_resume_continues_after_interruption_and_matches_uninterrupted(tmp_path) -> None:
    train, val = _eye_data(64, 0), _eye_data(32, 1)
    full = _student()
    fit(full, train, val, _cfg(), [LossTerm(name="ce")], out_dir=tmp_path / "full", progress=False, log=lambda _m: None)

    calls = {"n": 0}

    def interrupt_after_two_epochs(msg: str) -> None:
        if msg.startswith("epoch 2/"):
            raise KeyboardInterrupt  # what Ctrl-C raises, right after epoch 2's checkpoint

    part = _student()
    with pytest.raises(KeyboardInterrupt):
        fit(part, train, val, _cfg(), [LossTerm(name="ce")], out_dir=tmp_path / "part", progress=False,
            log=interrupt_after_two_epochs)
    assert torch.load(tmp_path / "part" / CHECKPOINT, weights_only=True)["epoch"] == 1  # the last good epoch is kept
    messages: list[str] = []
    resumed = _student()
    result = fit(resumed, train, val, _cfg(), [LossTerm(name="ce")], out_dir=tmp_path / "part", progress=False,
                 log=messages.append)
    assert result.resumed_from == 2 and any("resuming from epoch 2" in m for m in messages)
    assert result.epochs_run == 3
    full_ckpt = torch.load(tmp_path / "full" / CHECKPOINT, weights_only=True)["student"]
    part_ckpt = torch.load(tmp_path / "part" / CHECKPOINT, weights_only=True)["student"]
    for k in full_ckpt:
        torch.testing.assert_close(part_ckpt[k], full_ckpt[k], rtol=0, atol=1e-5)
    # other settings in the same directory are refused, not silently mixed
    with pytest.raises(TrainingError, match="other settings"):
        fit(_student(), train, val, _cfg(lr=0.5), [LossTerm(name="ce")], out_dir=tmp_path / "part", progress=False,
            log=lambda _m: None)


def test_nan_loss_stops_with_a_message() -> None:
    train, val = _eye_data(32, 0), _eye_data(16, 1)
    model = _student()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")  # a diverged weight: every logit becomes NaN
    with pytest.raises(TrainingError, match=r"not finite at epoch 1, step 1 \(total=nan; ce=nan\)"):
        fit(model, train, val, _cfg(epochs=1), [LossTerm(name="ce")], progress=False, log=lambda _m: None)


def test_distillation_with_teacher_steps_and_features() -> None:
    train, val = _eye_data(48, 0), _eye_data(16, 1)
    torch.manual_seed(1)
    teacher = build_model("eye-hybrid", num_classes=3, spatial_channels=[4, 8], temporal_channels=[4, 8], hidden=8)
    fit(teacher, train, val, _cfg(epochs=2), [LossTerm(name="ce")], progress=False, log=lambda _m: None)
    losses = [LossTerm(name="ce", weight=0.5), LossTerm(name="hckd", weight=0.5), LossTerm(name="tckd", weight=0.5),
              LossTerm(name="feature", weight=0.1, params={"student": "features.blocks.1.lif", "student_channel_dim": 2,
                                                           "teacher": "temporal.blocks.1.lif", "teacher_channel_dim": 2})]
    result = fit(_student(), train, val, _cfg(epochs=2), losses, teacher=teacher, progress=False, log=lambda _m: None)
    rec = result.history[-1]
    assert {"loss_ce", "loss_hckd", "loss_tckd", "loss_feature"} <= set(rec)
    assert rec["loss_tckd"] > 0 and np.isfinite(rec["loss"])
    with pytest.raises(ConfigError, match="needs a teacher"):
        fit(_student(), train, val, _cfg(epochs=1), losses, progress=False, log=lambda _m: None)
    with pytest.raises(ConfigError, match="no module 'features.blocks.9'"):
        fit(_student(), train, val, _cfg(epochs=1),
            [LossTerm(name="feature", params={"student": "features.blocks.9", "teacher": "temporal"})],
            teacher=teacher, progress=False, log=lambda _m: None)


def test_spike_margin_trains_and_is_checked_against_the_losses() -> None:
    data = _eye_data(32, 0)
    torch.manual_seed(0)
    student = build_model("eye-snn", num_classes=3, channels=[4, 8],
                          lif={"beta": 0.5, "threshold": 0.5, "spike_margin": 0.1})
    res = fit(student, data, data, _cfg(epochs=1), [LossTerm(name="ce"), LossTerm(name="spike_margin", weight=1.0)],
              progress=False, log=lambda _m: None)
    assert res.history[0]["loss_spike_margin"] > 0
    with pytest.raises(ConfigError, match="no 'spike_margin' term"):
        fit(student, data, data, _cfg(epochs=1), [LossTerm(name="ce")], progress=False, log=lambda _m: None)
    with pytest.raises(ConfigError, match="no LIF layer with a margin"):
        fit(_student(), data, data, _cfg(epochs=1), [LossTerm(name="ce"), LossTerm(name="spike_margin")],
            progress=False, log=lambda _m: None)
