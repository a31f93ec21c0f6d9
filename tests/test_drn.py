from __future__ import annotations

import pytest
import torch

from denoise_cli.flops import count_macs
from denoise_cli.models.drn import DRN, DualNet


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_outputs_at_every_scale_and_dual_maps_back(scale: int) -> None:
    net = DRN(scale, channels=4, blocks=1).eval()
    dual = DualNet(scale, channels=4)
    x = torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        outs = net.forward_all(x)
        downs = dual(outs)
    assert [o.shape[-2:] for o in outs] == [(12 * 2**k, 20 * 2**k) for k in range(len(outs))]
    assert [d.shape for d in downs] == [o.shape for o in outs[:-1]]
    assert torch.equal(net(x), outs[-1])


def test_drn_s_x4_has_the_papers_size() -> None:
    net = DRN(4, channels=16, blocks=30)
    params = sum(p.numel() for p in net.parameters())
    assert params == pytest.approx(4.80e6, rel=0.01)  # DRN-S x4: 4.8 M (PAPERS.md 3.2)
    dual = DualNet(4, channels=16)
    assert sum(p.numel() for p in dual.parameters()) == pytest.approx(1.7e3, rel=0.05)


def test_drn_s_x4_macs_at_a_96px_lr_input() -> None:
    macs = count_macs(DRN(4, channels=16, blocks=30).eval(), 96, 96)
    assert macs / 1e9 == pytest.approx(109.9, rel=0.02)  # DRC Table 1 "Madds" convention


def test_rejects_scales_that_are_not_powers_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        DRN(3)
