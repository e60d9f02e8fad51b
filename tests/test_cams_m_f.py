"""cams.m_f: M_f alone, n(M_f), on hand-set exit maps and hand-set attention networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _hand_nets import FixedExitsNet, FixedWeights
from amecam_lib.cams.base import CamBatch, CamNetworks
from amecam_lib.cams.m_f import FusedMap
from amecam_lib.cams.registry import REGISTRY, attention_exits

# native maps at the slice size (2x2), so n(M_i) is known by hand:
NET_MAPS = [torch.tensor([[0.0, 1.0], [0.0, 0.0]]),      # n(M_1) = [[0, 1], [0, 0]]
            torch.tensor([[0.0, 0.0], [2.0, 0.0]]),      # n(M_2) = [[0, 0], [1, 0]]
            torch.tensor([[0.0, 0.0], [0.0, 3.0]]),      # n(M_3) = [[0, 0], [0, 1]]
            torch.full((2, 2), 5.0)]                     # n(M_4) = 0 (constant)


class FirstTwoHalves(nn.Module):
    """1/2 on exits 1 and 2 at every pixel, 0 on exits 3 and 4."""

    def forward(self, masked_images):
        weights = torch.zeros_like(masked_images)
        weights[:, :2] = 0.5
        return weights


def m_f(attention, images=None, restrict_to_brain=False):
    images = torch.ones(2, 1, 2, 2) if images is None else images
    batch = CamBatch(images, CamNetworks(FixedExitsNet(NET_MAPS), {(1, 2, 3, 4): attention}),
                     restrict_to_brain=restrict_to_brain)
    return FusedMap()(batch)


def test_m_f_is_the_weighted_sum_normalised():
    # all weight on exit 2: M_f = n(M_2), already in [0, 1] with min 0 and max 1
    cam = m_f(FixedWeights(4, chosen=1))
    assert cam.shape == (2, 2, 2) and cam.dtype == torch.float32
    assert torch.equal(cam, torch.tensor([[0.0, 0.0], [1.0, 0.0]]).expand(2, 2, 2))
    # 1/2 on exits 1 and 2: M_f = [[0, 1/2], [1/2, 0]] -> n: [[0, 1], [1, 0]] (normalised like the others)
    assert torch.allclose(m_f(FirstTwoHalves()), torch.tensor([[0.0, 1.0], [1.0, 0.0]]).expand(2, 2, 2))


def test_m_f_inside_the_brain_only():
    # pixel (0, 1) is air: n(M_i) over the three brain pixels; M_1 is 0 there -> n(M_1) = 0;
    # 1/2 on exits 1 and 2: M_f = [[0, 0], [1/2, 0]] -> n over the brain: [[0, 0], [1, 0]], 0 in the air
    images = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    cam = m_f(FirstTwoHalves(), images, restrict_to_brain=True)
    assert torch.equal(cam, torch.tensor([[[0.0, 0.0], [1.0, 0.0]]]))


def test_m_f_is_registered_and_needs_the_attention_over_all_exits():
    assert REGISTRY["m_f"].name == "m_f" and isinstance(REGISTRY["m_f"], FusedMap)
    assert attention_exits(["m_f", "grad_cam"]) == {(1, 2, 3, 4)}
    assert attention_exits(["exit2_3", "ame_cam_crf"]) == {(2, 3), (1, 2, 3, 4)}
    assert attention_exits(["exit1", "avg_me"]) == set()
    with pytest.raises(ValueError, match="attention"):
        FusedMap()(CamBatch(torch.ones(1, 1, 2, 2), CamNetworks(FixedExitsNet(NET_MAPS))))
