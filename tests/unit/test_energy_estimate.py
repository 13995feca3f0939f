"""Theoretical energy: MAC and spike-driven layers against hand-computed counts."""

import pytest
import torch
from torch import nn

from edgekd.measure.energy import E_AC_PJ, E_MAC_PJ, theoretical_energy


class TwoLayer(nn.Module):
    """conv (real input) -> threshold spikes -> conv: the second conv is spike-driven."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(4, 2, 3, padding=1, bias=False)

    def forward(self, x):
        spikes = (self.conv1(x) >= 0).float()
        return self.conv2(spikes)


def test_mac_and_ac_layers_match_hand_counts():
    torch.manual_seed(0)
    model = TwoLayer()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        rate = float((model.conv1(x) >= 0).float().mean())
    est = theoretical_energy(model, [(x,)])
    conv1, conv2 = est.layers[:2]
    assert conv1.op == "MAC" and conv1.macs == 8 * 8 * 4 * 9 * 1
    assert conv1.energy_uj == pytest.approx(conv1.macs * E_MAC_PJ * 1e-6)
    assert conv2.op == "AC" and conv2.macs == 8 * 8 * 2 * 9 * 4
    assert conv2.input_rate == pytest.approx(rate)
    assert conv2.energy_uj == pytest.approx(rate * conv2.macs * E_AC_PJ * 1e-6)
    assert est.samples == 3 and est.label == "estimate (45 nm)"
    assert est.to_dict()["total_mj"] == pytest.approx((conv1.energy_uj + conv2.energy_uj) / 1e3)


def test_no_batches_is_an_error():
    from edgekd.errors import DataError

    with pytest.raises(DataError):
        theoretical_energy(TwoLayer(), [])
