"""cams.ame_cam: the final CAM of hand-set exit maps and hand-set attention networks."""

from __future__ import annotations

import pytest
import torch

from _hand_nets import FixedExitsNet, FixedWeights, HalfHalf
from amecam_lib.cams.ame_cam import AmeCam
from amecam_lib.cams.base import CamBatch, CamNetworks

# native maps at the slice size (2x2), so n(M_i) is known by hand:
NET_MAPS = [torch.tensor([[0.0, 1.0], [0.0, 0.0]]),      # n(M_1) = [[0, 1], [0, 0]]
            torch.tensor([[0.0, 0.0], [2.0, 0.0]]),      # n(M_2) = [[0, 0], [1, 0]]
            torch.tensor([[0.0, 0.0], [0.0, 3.0]]),      # n(M_3) = [[0, 0], [0, 1]]
            torch.full((2, 2), 5.0)]                     # n(M_4) = 0 (constant)


def networks(attentions):
    return CamNetworks(FixedExitsNet(NET_MAPS), attentions)


def test_ame_cam_by_hand():
    # A puts all weight on exit 2: M_f = n(M_2); mean of n(M_1..4) and M_f = [[0, 1/5], [2/5, 1/5]]
    nets = networks({(1, 2, 3, 4): FixedWeights(4, chosen=1)})
    cam = AmeCam("ame_cam", (1, 2, 3, 4))(CamBatch(torch.ones(2, 1, 2, 2), nets))
    assert cam.shape == (2, 2, 2) and cam.dtype == torch.float32
    assert torch.allclose(cam, torch.tensor([[0.0, 0.5], [1.0, 0.5]]).expand(2, 2, 2))


def test_exit2_3_uses_its_own_attention_network():
    # exits 2 and 3 with A_2_3 = 1/2 each: M_f = [[0, 0], [1/2, 1/2]]; mean of n(M_2), n(M_3), M_f
    # = [[0, 0], [1/2, 1/2]] -> [[0, 0], [1, 1]]; the attention over exits 1-4 is not used
    nets = networks({(1, 2, 3, 4): FixedWeights(4, chosen=0), (2, 3): HalfHalf()})
    cam = AmeCam("exit2_3", (2, 3))(CamBatch(torch.ones(1, 1, 2, 2), nets))
    assert torch.allclose(cam, torch.tensor([[[0.0, 0.0], [1.0, 1.0]]]))


def test_the_attention_sees_the_masked_slices():
    seen = []

    def attention(masked_images):
        seen.append(masked_images)
        return torch.full_like(masked_images, 0.5)

    images = torch.tensor([[[[0.5, 1.0], [0.25, 1.0]]]])
    AmeCam("exit2_3", (2, 3))(CamBatch(images, networks({(2, 3): attention})))
    assert torch.allclose(seen[0], torch.tensor([[[[0.0, 0.0], [0.25, 0.0]], [[0.0, 0.0], [0.0, 1.0]]]]))


def test_a_missing_attention_network_is_an_error():
    with pytest.raises(ValueError, match="attention"):
        AmeCam("ame_cam", (1, 2, 3, 4))(CamBatch(torch.ones(1, 1, 2, 2), networks({(2, 3): HalfHalf()})))
