"""cams.unet_fsl and baselines.unet_fsl: the fully supervised ceiling (paper Table 1, FSL, Opt. U-net).

The method on a hand-made "U-Net" (known logits -> known probabilities), MONAI's network on a
non-square slice, and the training phase on the tiny synthetic run: masks of the training
patients only, checkpoints, resume, load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from _hand_nets import FixedExitsNet
from _tiny_run import one_thread, tiny_preset, tiny_run  # noqa: F401  (fixture)
from amecam_lib.baselines.unet_fsl import (brain_zscore, load_unet_fsl, random_flips, random_intensity, random_patch,
                                         train_unet_fsl, unet_network)
from amecam_lib.cams.base import CamBatch, CamNetworks
from amecam_lib.cams.unet_fsl import UnetFsl


class FixedLogits(nn.Module):
    """A stand-in U-Net: the given (H, W) logits whatever the slice."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def forward(self, images):
        return self.logits.expand(images.shape[0], 1, *self.logits.shape)


def test_the_map_is_the_sigmoid_of_the_logits_and_zero_outside_the_brain():
    logits = torch.tensor([[0.0, math.log(3.0)], [-math.log(3.0), 20.0]])   # -> 1/2, 3/4, 1/4, ~1
    networks = CamNetworks(FixedExitsNet([torch.zeros(1, 1)]), references={"unet_fsl": FixedLogits(logits)})
    images = torch.tensor([[[[0.5, 0.5], [0.5, 0.0]]]]).repeat(2, 1, 1, 1)     # one air pixel
    cam = UnetFsl()(CamBatch(images, networks))
    expected = torch.tensor([[0.5, 0.75], [0.25, 1.0]])
    assert cam.shape == (2, 2, 2) and torch.allclose(cam, expected.expand(2, 2, 2), atol=1e-6)
    restricted = UnetFsl()(CamBatch(images, networks, restrict_to_brain=True))
    assert torch.allclose(restricted, torch.tensor([[0.5, 0.75], [0.25, 0.0]]).expand(2, 2, 2), atol=1e-6)
    assert UnetFsl.name == "unet_fsl" and UnetFsl.supervision == "FSL"


def test_missing_network_is_named():
    with pytest.raises(ValueError, match="no 'unet_fsl' network"):
        UnetFsl()(CamBatch(torch.rand(1, 1, 2, 2), CamNetworks(FixedExitsNet([torch.zeros(1, 1)]))))


def test_monai_unet_keeps_a_non_square_slice_shape(one_thread):
    net = unet_network((2, 2, 2, 2, 2, 2)).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 1, 64, 77)).shape == (2, 1, 64, 77)


def test_flips_move_slice_and_mask_together():
    torch.manual_seed(0)
    image = torch.arange(6.0).reshape(1, 1, 2, 3)
    for _ in range(8):
        flipped, mask = random_flips(image, image.clone())
        assert torch.equal(flipped, mask)


def test_training_on_the_tiny_run_reads_training_masks_resumes_and_loads(tmp_path, one_thread, monkeypatch):
    import amecam_lib.baselines.unet_fsl as unet_module
    import amecam_lib.slices as slices_module

    run = tiny_run(tmp_path)
    read = []
    original = slices_module.read_training_masks_for_fully_supervised

    def recording(*args, **kwargs):
        read.append(args[:2])
        result = original(*args, **kwargs)
        assert result.split == "train" and result.masks is not None
        return result

    monkeypatch.setattr(unet_module, "read_training_masks_for_fully_supervised", recording)
    preset = tiny_preset(**{"unet_fsl.channels": (2, 2, 4, 4, 4, 2), "unet_fsl.batch_size": 4,
                            "unet_fsl.epochs": 2})
    history = train_unet_fsl(run, "flair", preset, device="cpu", progress=False)
    assert read == [(run, "flair")] and len(history) == 2 and np.isfinite(history.column("train_loss")).all()
    assert {p.name for p in (run / "flair" / "unet_fsl").iterdir()} >= {"log.csv", "last.pt", "best.pt"}
    again = train_unet_fsl(run, "flair", preset, device="cpu", progress=False)
    assert again.resumed_epochs == 2
    net = load_unet_fsl(run, "flair")
    with torch.no_grad():
        assert net(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_random_patch_is_one_window_of_slice_and_mask_together():
    torch.manual_seed(0)
    images = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 1, 5, 7)
    patch, mask = random_patch(images, images.clone(), (3, 4))
    assert patch.shape == (2, 1, 3, 4) and torch.equal(patch, mask)
    row, col = divmod(int(patch[0, 0, 0, 0]), 7)
    assert torch.equal(patch, images[..., row:row + 3, col:col + 4])
    whole, _ = random_patch(images, images, (64, 64))          # larger than the slice: the whole slice
    assert torch.equal(whole, images) and random_patch(images, images, None)[0] is images


def test_brain_zscore_is_monais_nonzero_normalisation_per_slice():
    from monai.transforms import NormalizeIntensity

    torch.manual_seed(0)
    images = torch.rand(3, 1, 6, 5)
    images[:, :, :2] = 0.0                                               # air
    ours = brain_zscore(images)
    theirs = torch.stack([torch.as_tensor(NormalizeIntensity(nonzero=True)(image)) for image in images])
    assert torch.allclose(ours, theirs.float(), atol=1e-4)
    assert (ours[:, :, :2] == 0).all()
    # by hand: brain values 1, 3 -> mean 2, std 1 -> -1, 1
    assert torch.allclose(brain_zscore(torch.tensor([[[[0.0, 1.0, 3.0]]]])), torch.tensor([[[[0.0, -1.0, 1.0]]]]),
                          atol=1e-5)


def test_tumour_centred_patches_hold_the_tumour():
    torch.manual_seed(0)
    masks = torch.zeros(2, 1, 40, 40)
    masks[1, 0, 30, 35] = 1.0                                            # one tumour pixel, near a corner
    for _ in range(5):
        _, patch = random_patch(masks.clone(), masks, (8, 8), tumour_fraction=1.0)
        assert patch.shape == (2, 1, 8, 8) and patch.sum() == 1.0


def test_intensity_augmentation_changes_the_brain_only():
    images = torch.tensor([[[[0.0, 1.0], [-2.0, 0.0]]], [[[3.0, 0.0], [0.0, 0.5]]]])
    fixed = random_intensity(images, scale=(2.0, 2.0), shift=(1.0, 1.0), noise_std=(0.0, 0.0))
    expected = torch.tensor([[[[0.0, 3.0], [-3.0, 0.0]]], [[[7.0, 0.0], [0.0, 2.0]]]])     # 2 x + 1 in the brain
    assert torch.equal(fixed, expected)
    torch.manual_seed(0)
    noisy = random_intensity(torch.ones(64, 1, 8, 8).index_fill(3, torch.tensor([0]), 0.0))
    assert (noisy[..., 0] == 0).all()                                   # the air column stays 0
    factors = noisy[..., 1:].mean(dim=(1, 2, 3))                        # 1 * scale + shift, noise averaged
    assert 0.65 - 0.3 - 0.1 < factors.min() and factors.max() < 1.5 + 0.3 + 0.1 and factors.std() > 0.1
