"""cams.avg_me: the mean of hand-made exit maps, normalised (Table 2, "Avg. ME")."""

from __future__ import annotations

import torch

from _hand_nets import FixedExitsNet
from amecam_lib.cams.avg_me import AverageExits
from amecam_lib.cams.base import CamBatch, CamNetworks


def test_average_of_two_hand_made_maps():
    # exits 3 and 4 constant (n -> 0); mean of [[0, 1], [0, 0]] and [[0, 0], [1, 0]] and two zero
    # maps: [[0, 1/4], [1/4, 0]] -> n: [[0, 1], [1, 0]]
    net = FixedExitsNet([torch.tensor([[0.0, 4.0], [0.0, 0.0]]), torch.tensor([[-2.0, -2.0], [3.0, -2.0]]),
                         torch.full((2, 2), 1.5), torch.zeros(2, 2)])
    cam = AverageExits()(CamBatch(torch.rand(3, 1, 2, 2), CamNetworks(net)))
    assert cam.shape == (3, 2, 2) and cam.dtype == torch.float32
    assert torch.allclose(cam, torch.tensor([[0.0, 1.0], [1.0, 0.0]]).expand(3, 2, 2))
    assert AverageExits.name == "avg_me"
