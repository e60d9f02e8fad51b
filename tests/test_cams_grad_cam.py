"""cams.grad_cam and the shared gradient pass, on a hand-set linear network (tests/_hand_nets.py).

Last stage [x, 1 - x], tumour logit mean(ch0 - ch1): Grad-CAM's channel weights are the gradients
averaged over the pixels, +1/HW and -1/HW, so the map is ReLU(x - (1 - x)) / HW -> n(ReLU(2x - 1)).
"""

from __future__ import annotations

import numpy as np
import torch

from _hand_nets import LinearStagesNet
from amecam_lib.cams.base import CamBatch, CamNetworks
from amecam_lib.cams.grad_cam import GradCam
from amecam_lib.cams.gradient_pass import GRADIENTS
from amecam_lib.cams.layer_cam import LayerCamLast

SLICE = torch.tensor([[0.0, 0.25, 0.5, 0.75], [1.0, 0.75, 0.5, 0.25], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]])


def test_grad_cam_by_hand():
    images = torch.stack([SLICE, 1.0 - SLICE])[:, None]
    cam = GradCam()(CamBatch(images, CamNetworks(LinearStagesNet())))
    expected = np.maximum(2.0 * images[:, 0].numpy() - 1.0, 0.0)     # already in [0, 1] with max 1
    assert cam.shape == (2, 4, 4) and cam.dtype == torch.float32
    np.testing.assert_allclose(cam.numpy(), expected, atol=1e-5)


def test_methods_announced_to_the_batch_share_one_pass():
    net = LinearStagesNet()
    calls = []
    net.register_forward_hook(lambda module, inputs, output: calls.append(1))
    grad_cam, layer_cam_last = GradCam(), LayerCamLast()
    batch = CamBatch(SLICE[None, None], CamNetworks(net), [grad_cam, layer_cam_last])
    together = {method: method(batch) for method in (grad_cam, layer_cam_last)}
    assert len(calls) == 1 and batch.has_run(GRADIENTS)               # one forward (+ backward)
    for method, cam in together.items():                              # same as each on its own
        alone = method(CamBatch(SLICE[None, None], CamNetworks(net)))
        np.testing.assert_allclose(cam.numpy(), alone.numpy(), atol=1e-6)
    # Grad-CAM and LayerCAM differ here: LayerCAM drops the channel with a negative gradient
    assert not torch.allclose(together[grad_cam], together[layer_cam_last])


def test_gradient_maps_of_a_non_square_slice_keep_rows_and_columns():
    """A 3 x 5 slice (H != W): pytorch-grad-cam resizes to (width, height); the maps must come back
    (3, 5) and equal the by-hand answers pixel for pixel, not transposed."""
    wide = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0], [1.0, 0.9, 0.5, 0.1, 0.0], [0.6, 0.0, 1.0, 0.3, 0.8]])
    batch = CamBatch(wide[None, None], CamNetworks(LinearStagesNet()))
    grad_cam, layer_cam_last = GradCam()(batch), LayerCamLast()(batch)
    assert grad_cam.shape == layer_cam_last.shape == (1, 3, 5)
    np.testing.assert_allclose(grad_cam[0].numpy(), np.maximum(2.0 * wide.numpy() - 1.0, 0.0), atol=1e-5)
    np.testing.assert_allclose(layer_cam_last[0].numpy(), wide.numpy(), atol=1e-5)


def test_grad_cam_on_the_multi_exit_network_is_exit_4s_map():
    """Exit 4 is a 1x1 convolution then GAP, so d logit / d A_k = w_k / hw at every pixel and
    Grad-CAM = ReLU(M_4 - b) / hw. Where M_4 - b > 0 everywhere (exit-4 weights >= 0 on the
    post-ReLU features), Grad-CAM and n(M_4) are the same map, with or without the brain restriction."""
    from amecam_lib.cams.registry import get_method
    from amecam_lib.evaluation import map_correlation
    from amecam_lib.models.multi_exit import MultiExitResNet

    torch.manual_seed(0)
    net = MultiExitResNet().eval()
    with torch.no_grad():
        net.exits[3].weight.copy_(torch.rand_like(net.exits[3].weight))
        net.exits[3].bias.fill_(-5.0)                     # the bias does not enter Grad-CAM
    images = torch.rand(2, 1, 64, 96)
    images[:, :, :, :8] = 0.0                              # some air, for the brain restriction
    for restrict in (False, True):
        batch = CamBatch(images, CamNetworks(net), restrict_to_brain=restrict)
        grad_cam, exit4 = GradCam()(batch).numpy(), get_method("exit4")(batch).numpy()
        np.testing.assert_allclose(grad_cam, exit4, atol=1e-4)
        np.testing.assert_allclose(map_correlation(grad_cam, exit4), [1.0, 1.0], atol=1e-6)


def test_a_slice_constant_up_to_float_noise_gives_empty_maps():
    """A slice of 0.75 whose pixels differ only in their last float bits: every map is constant up to
    float noise. pytorch-grad-cam min-max scales its map itself, (m - min) / (1e-7 + max - min), which
    stretched that noise to [0, 1] before our n(.) could see it was constant (37 of 64 pixels >= 0.5
    for Grad-CAM); every library method now goes through equations.normalise_maps alone -> zeros."""
    from amecam_lib.cams.layer_cam import LayerCam
    from amecam_lib.cams.score_cam import ScoreCam

    noisy = np.full((8, 8), 0.75, dtype=np.float32)
    bits = np.random.default_rng(0).integers(0, 4, size=(8, 8))
    for step in range(1, 4):
        noisy[bits >= step] = np.nextafter(noisy[bits >= step], np.float32(1.0))
    assert noisy.max() > noisy.min()                                  # the noise is there
    images = torch.from_numpy(noisy)[None, None]
    for method in (GradCam(), LayerCamLast(), LayerCam(), ScoreCam()):
        cam = method(CamBatch(images, CamNetworks(LinearStagesNet())))
        assert cam.shape == (1, 8, 8) and float(cam.abs().max()) == 0.0, method.name
