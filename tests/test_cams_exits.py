"""cams.exits: n(M_i) of a hand-set network, upsampled bilinearly, from one shared forward pass."""

from __future__ import annotations

import pytest
import torch

from _hand_nets import FixedExitsNet
from amecam_lib.cams.base import CamBatch, CamNetworks
from amecam_lib.cams.exits import EXIT_MAPS, ExitMap


def test_exit_maps_by_hand():
    net = FixedExitsNet([
        torch.tensor([[0.0, 2.0], [0.0, 2.0]]),        # 2x2 -> 4x4 bilinear: rows 0, 1/4, 3/4, 1 (x2)
        torch.tensor([[5.0, -3.0], [1.0, 5.0]]),       # native size 2x2 ... see below
        torch.full((1, 1), 7.0),                       # constant: all zeros after n(.)
        torch.tensor([[-1.0, -1.0], [-1.0, -3.0]]),
    ])
    methods = [ExitMap(i) for i in (1, 2, 3, 4)]
    batch = CamBatch(torch.rand(2, 1, 4, 4), CamNetworks(net), methods)
    exit1, exit2, exit3, exit4 = (method(batch) for method in methods)
    assert exit1.shape == (2, 4, 4) and exit1.dtype == torch.float32
    # align_corners=False: output pixel j samples input coordinate (j + 0.5) / 2 - 0.5, clamped
    assert torch.allclose(exit1[0], torch.tensor([[0.0, 0.25, 0.75, 1.0]] * 4))
    # exit 2 upsampled: corners keep their values 5, -3, 1, 5 -> n: 1, 0, 0.5, 1
    assert torch.allclose(exit2[1, [0, 0, 3, 3], [0, 3, 0, 3]], torch.tensor([1.0, 0.0, 0.5, 1.0]))
    assert float(exit2.min()) == 0.0 and float(exit2.max()) == 1.0
    assert torch.equal(exit3, torch.zeros(2, 4, 4))
    assert torch.allclose(exit4[0, [0, 3], [0, 3]], torch.tensor([1.0, 0.0]))  # -1 is the max, -3 the min
    assert net.calls == 1                                  # one forward pass for the four exits
    assert batch.shared(EXIT_MAPS).shape == (2, 4, 4, 4)


def test_exit_names_and_range():
    assert [ExitMap(i).name for i in (1, 2, 3, 4)] == ["exit1", "exit2", "exit3", "exit4"]
    for bad in (0, 5):
        with pytest.raises(ValueError, match="exit_index"):
            ExitMap(bad)


def test_exit_maps_normalised_inside_the_brain():
    """restrict_to_brain: n(M_i) over the brain pixels (slice > 0) only, 0 in the air; by hand."""
    net = FixedExitsNet([torch.tensor([[9.0, 1.0], [3.0, 5.0]]), torch.tensor([[-4.0, 2.0], [2.0, 2.0]]),
                         torch.zeros(2, 2), torch.zeros(2, 2)])
    images = torch.tensor([[[[0.0, 0.5], [0.5, 1.0]]]])          # pixel (0, 0) is air
    whole = CamBatch(images, CamNetworks(net)).shared(EXIT_MAPS)
    brain = CamBatch(images, CamNetworks(net), restrict_to_brain=True).shared(EXIT_MAPS)
    # exit 1: over the slice min 1, max 9 -> [[1, 0], [1/4, 1/2]]; over the brain min 1, max 5 -> [[0, 0], [1/2, 1]]
    assert torch.allclose(whole[0, 0], torch.tensor([[1.0, 0.0], [0.25, 0.5]]))
    assert torch.allclose(brain[0, 0], torch.tensor([[0.0, 0.0], [0.5, 1.0]]))
    # exit 2: the air held the only contrast; constant over the brain -> all zeros
    assert torch.allclose(whole[0, 1], torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    assert torch.equal(brain[0, 1], torch.zeros(2, 2))
