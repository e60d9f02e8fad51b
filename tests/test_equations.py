"""The paper's formulas (amecam_lib.equations) on tiny tensors whose answers are known by hand."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from amecam_lib.equations import average_exits, final_cam, fuse, normalise_maps


class FixedWeights(nn.Module):
    """Stand-in for A: puts all weight on one map everywhere."""

    def __init__(self, n_maps: int, chosen: int):
        super().__init__()
        self.n_maps, self.chosen = n_maps, chosen

    def forward(self, masked_images):
        weights = torch.zeros_like(masked_images)
        weights[:, self.chosen] = 1.0
        return weights


# --- n(.) --------------------------------------------------------------------------------------------

def test_normalise_maps_by_hand():
    maps = torch.tensor([[[[0.0, 2.0], [4.0, 8.0]], [[-1.0, -1.0], [-1.0, -1.0]]]])
    normalised = normalise_maps(maps)
    assert torch.allclose(normalised[0, 0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.equal(normalised[0, 1], torch.zeros(2, 2))  # constant map -> zeros, not NaN
    assert normalised.dtype == torch.float32
    with pytest.raises(ValueError, match="NaN"):
        normalise_maps(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="2 dims"):
        normalise_maps(torch.tensor([1.0, 2.0]))


def test_each_image_and_map_is_normalised_on_its_own():
    maps = torch.tensor([[[1.0, 3.0], [5.0, 9.0]], [[-4.0, 0.0], [0.0, -2.0]]])   # (B=2, 2, 2)
    expected = torch.tensor([[[0.0, 0.25], [0.5, 1.0]], [[0.0, 1.0], [1.0, 0.5]]])
    assert torch.allclose(normalise_maps(maps), expected)


def test_a_constant_map_upsampled_bilinearly_stays_all_zeros():
    """Bilinear upsampling of a constant map changes its last float bits; n(.) must not stretch
    that noise to [0, 1]."""
    for value in (0.3, 0.7, -1.37):
        upsampled = F.interpolate(torch.full((1, 1, 4, 4), value), size=(240, 240), mode="bilinear",
                                  align_corners=False)
        assert upsampled.amax() > upsampled.amin()  # the noise is there ...
        assert torch.equal(normalise_maps(upsampled), torch.zeros(1, 1, 240, 240))  # ... and ignored


def test_small_but_real_contrast_is_kept():
    maps = torch.tensor([[1.0, 1.001], [1.0, 1.0]])   # span 1e-3 of the magnitude: a real difference
    assert torch.allclose(normalise_maps(maps), torch.tensor([[0.0, 1.0], [0.0, 0.0]]))


def test_normalise_within_a_region():
    maps = torch.tensor([[[[9.0, 2.0], [4.0, 6.0]], [[-5.0, 1.0], [3.0, 100.0]]]])   # (1, 2, 2, 2)
    region = torch.tensor([[[[False, True], [True, True]]]])                          # (1, 1, 2, 2)
    normalised = normalise_maps(maps, region)
    # map 0: min 2, max 6 over the region; map 1: min 1, max 100; 0 outside the region
    assert torch.allclose(normalised[0, 0], torch.tensor([[0.0, 0.0], [0.5, 1.0]]))
    assert torch.allclose(normalised[0, 1], torch.tensor([[0.0, 0.0], [2.0 / 99.0, 1.0]]))


def test_a_region_without_pixels_or_constant_inside_gives_zeros():
    maps = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[7.0, 7.0], [0.0, 8.0]]])
    region = torch.tensor([[[False, False], [False, False]], [[True, True], [False, False]]])
    normalised = normalise_maps(maps, region)
    assert torch.equal(normalised, torch.zeros(2, 2, 2))
    assert torch.isfinite(normalised).all()


def test_region_errors():
    maps = torch.rand(2, 4, 3, 3)
    with pytest.raises(TypeError, match="bool"):
        normalise_maps(maps, torch.ones(2, 1, 3, 3))
    with pytest.raises(ValueError, match="broadcast"):
        normalise_maps(maps, torch.ones(2, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="broadcast"):  # would broadcast maps up, not the region down
        normalise_maps(torch.rand(4, 3, 3), torch.ones(2, 4, 3, 3, dtype=torch.bool))


# --- Eq. 2 -------------------------------------------------------------------------------------------

def test_fuse_is_the_weighted_sum_of_normalised_maps():
    images = torch.rand(2, 1, 6, 6)
    exit_maps_norm = torch.rand(2, 4, 6, 6)
    weights, fused_map = fuse(images, exit_maps_norm, FixedWeights(4, chosen=2))
    assert weights.shape == (2, 4, 6, 6) and fused_map.shape == (2, 1, 6, 6)
    assert torch.allclose(fused_map[:, 0], exit_maps_norm[:, 2])


def test_fuse_with_half_half_weights():
    class Half(nn.Module):
        def forward(self, masked_images):
            return torch.full_like(masked_images, 0.5)

    exit_maps_norm = torch.stack([torch.zeros(3, 3), torch.ones(3, 3)])[None]
    _, fused_map = fuse(torch.ones(1, 1, 3, 3), exit_maps_norm, Half())
    assert torch.allclose(fused_map, torch.full((1, 1, 3, 3), 0.5))


def test_fuse_gives_the_attention_the_masked_slices():
    seen = []

    def attention(masked_images):   # any callable will do, not only an nn.Module
        seen.append(masked_images)
        return torch.full_like(masked_images, 0.5)

    images = torch.tensor([[[[1.0, 0.5]]]])
    exit_maps_norm = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.5]]]])
    fuse(images, exit_maps_norm, attention)
    assert torch.allclose(seen[0], torch.tensor([[[[1.0, 0.5]], [[0.0, 0.25]]]]))


def test_fuse_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="exit_maps_norm"):
        fuse(torch.rand(2, 1, 6, 6), torch.rand(2, 4, 5, 5), FixedWeights(4, 0))
    with pytest.raises(ValueError, match="images"):
        fuse(torch.rand(2, 3, 6, 6), torch.rand(2, 4, 6, 6), FixedWeights(4, 0))


# --- final CAM and Avg. ME ------------------------------------------------------------------------------

EXIT_MAPS = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]],     # n(M_1)
                           [[0.0, 0.0], [1.0, 0.0]],     # n(M_2)
                           [[0.0, 0.0], [0.0, 1.0]]]])   # n(M_3)


def test_final_cam_by_hand():
    fused_map = torch.tensor([[[[0.0, 0.0], [1.0, 0.0]]]])
    # mean of the four maps: [[0, 1/4], [2/4, 1/4]] -> n: [[0, 0.5], [1, 0.5]]
    cam = final_cam(EXIT_MAPS, fused_map)
    assert cam.shape == (1, 2, 2) and cam.dtype == torch.float32
    assert torch.allclose(cam, torch.tensor([[[0.0, 0.5], [1.0, 0.5]]]))
    region = torch.tensor([[[[True, True], [False, True]]]])   # (B, 1, H, W): 0.25 is now the max
    assert torch.allclose(final_cam(EXIT_MAPS, fused_map, region), torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match="fused_map"):
        final_cam(EXIT_MAPS, torch.rand(1, 2, 2, 2))


def test_average_exits_by_hand():
    # mean of two hand-made maps: [[0, 0.5], [0.5, 0]] -> n: [[0, 1], [1, 0]]
    assert torch.allclose(average_exits(EXIT_MAPS[:, :2]), torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))
    # three maps: [[0, 1/3], [1/3, 1/3]] -> [[0, 1], [1, 1]]; within the bottom row only: constant -> 0
    assert torch.allclose(average_exits(EXIT_MAPS), torch.tensor([[[0.0, 1.0], [1.0, 1.0]]]))
    region = torch.tensor([[[False, False], [True, True]]])
    assert torch.equal(average_exits(EXIT_MAPS, region), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="exit_maps_norm"):
        average_exits(torch.rand(2, 2))


# --- dependencies ------------------------------------------------------------------------------------

def test_equations_import_no_other_project_module():
    """The formulas stand alone: importing them loads torch, not the models or the training stack."""
    code = ("import sys, amecam_lib.equations; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('amecam_lib'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert set(loaded) == {"amecam_lib", "amecam_lib.equations"}
