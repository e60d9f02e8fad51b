"""cams.intensity: the slice itself, min-max normalised per image."""

from __future__ import annotations

import torch

from _hand_nets import FixedExitsNet
from amecam_lib.cams.base import CamBatch, CamNetworks
from amecam_lib.cams.intensity import Intensity


def test_intensity_is_the_min_max_of_the_slice():
    images = torch.tensor([[[[0.2, 0.4], [0.6, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    cam = Intensity()(CamBatch(images, CamNetworks(FixedExitsNet([torch.zeros(1, 1)]))))
    assert torch.allclose(cam, torch.tensor([[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]))
    assert cam.dtype == torch.float32 and Intensity.name == "intensity"
