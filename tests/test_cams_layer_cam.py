"""cams.layer_cam on a hand-set linear network (tests/_hand_nets.py), and the paper's fusion rule.

Per pixel, LayerCAM weights each activation by its ReLU'd gradient. Last stage [x, 1 - x] with
gradients (+1/HW, -1/HW): the second channel drops out and the map is x / HW -> n(x).
Stages 1-3 output x with gradient 2/HW: each stage's map divided by its maximum is x (max 1).
The paper's fusion: max(tanh(2x), tanh(2x), tanh(2x), x), then min-max.
"""

from __future__ import annotations

import numpy as np
import torch

from _hand_nets import LinearStagesNet
from amecam_lib.cams.base import CamBatch, CamNetworks
from amecam_lib.cams.layer_cam import LayerCam, LayerCamLast, PaperLayerCAM

SLICE = torch.tensor([[0.0, 0.25, 0.5, 0.75], [1.0, 0.75, 0.5, 0.25], [0.0, 0.0, 1.0, 1.0], [0.9, 0.1, 0.3, 0.6]])


def test_layer_cam_last_by_hand():
    cam = LayerCamLast()(CamBatch(SLICE[None, None], CamNetworks(LinearStagesNet())))
    assert cam.shape == (1, 4, 4) and cam.dtype == torch.float32
    np.testing.assert_allclose(cam[0].numpy(), SLICE.numpy(), atol=1e-5)


def test_layer_cam_with_the_papers_fusion_by_hand():
    cam = LayerCam()(CamBatch(SLICE[None, None], CamNetworks(LinearStagesNet())))
    x = SLICE.numpy().astype(np.float64)
    expected = np.maximum(np.tanh(2.0 * x), x)                # min 0 (x = 0), max 1 (x = 1): n() is identity
    np.testing.assert_allclose(cam[0].numpy(), expected, atol=1e-5)


def test_paper_layercam_fusion_is_elementwise_max():
    fusion = PaperLayerCAM.fuse_layers(None, np.concatenate([np.array([[[[0.0, 0.5], [1.0, 0.0]]]]),
                                                              np.array([[[[0.8, 0.0], [0.0, 0.0]]]])], axis=1))
    np.testing.assert_allclose(fusion, [[[0.8, 0.5], [1.0, 0.0]]], atol=1e-6)
