"""Batched MRI augmentations (amecam_lib.augment)."""

from __future__ import annotations

import pytest
import torch

from amecam_lib.augment import MRIAugment, TwoViews

IDENTITY = MRIAugment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0.0, max_rotation_deg=0.0,
                      brightness=0.0, contrast=0.0, gamma=1.0)


def _brains(batch=4, size=32, seed=0):
    """Slices with a zero background ring and intensities in (0, 1] inside."""
    images = torch.zeros(batch, 1, size, size)
    images[:, :, 6:-6, 6:-6] = torch.rand(batch, 1, size - 12, size - 12,
                                          generator=torch.Generator().manual_seed(seed)) * 0.9 + 0.1
    return images


def test_keeps_shape_dtype_and_range():
    images = _brains()
    augmented = MRIAugment()(images, torch.Generator().manual_seed(0))
    assert augmented.shape == images.shape and augmented.dtype == torch.float32
    assert augmented.min() >= 0 and augmented.max() <= 1
    assert not torch.equal(augmented, images)


def test_deterministic_under_a_generator():
    images = _brains()
    first = MRIAugment()(images, torch.Generator().manual_seed(7))
    again = MRIAugment()(images, torch.Generator().manual_seed(7))
    other = MRIAugment()(images, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_each_slice_gets_its_own_parameters():
    images = _brains(batch=2).expand(2, -1, -1, -1)[:1].repeat(2, 1, 1, 1)   # two equal slices
    augmented = MRIAugment()(images, torch.Generator().manual_seed(0))
    assert not torch.equal(augmented[0], augmented[1])


def test_identity_settings_return_the_input():
    images = _brains()
    torch.testing.assert_close(IDENTITY(images, torch.Generator().manual_seed(0)), images)


def test_horizontal_flip_only_is_torch_flip():
    flip = MRIAugment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=1.0, max_rotation_deg=0.0,
                      brightness=0.0, contrast=0.0, gamma=1.0)
    images = _brains()
    torch.testing.assert_close(flip(images), torch.flip(images, dims=[-1]))


def test_intensity_jitter_keeps_background_zero():
    jitter = MRIAugment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0.0, max_rotation_deg=0.0,
                        brightness=0.3, contrast=0.3, gamma=2.0)
    images = _brains()
    augmented = jitter(images, torch.Generator().manual_seed(1))
    assert torch.equal(augmented[images == 0], torch.zeros_like(augmented[images == 0]))
    assert (augmented[images > 0] > 0).float().mean() > 0.99


def test_single_slice_and_two_views():
    image = _brains(batch=1)[0]
    assert MRIAugment()(image).shape == (1, 32, 32)
    views = TwoViews()(_brains(), torch.Generator().manual_seed(0))
    assert views.shape == (4, 2, 1, 32, 32)
    assert not torch.equal(views[:, 0], views[:, 1])
    assert TwoViews()(image).shape == (2, 1, 32, 32)


@pytest.mark.parametrize("kwargs", [{"crop_scale": (0.0, 1.0)}, {"crop_scale": (0.9, 0.5)}, {"hflip_p": 1.5},
                                    {"gamma": 0.5}, {"brightness": 1.0}, {"crop_ratio": (2.0, 1.0)}])
def test_bad_settings_raise(kwargs):
    with pytest.raises(ValueError):
        MRIAugment(**kwargs)


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="images"):
        MRIAugment()(torch.rand(32, 32))


def test_rotation_is_rigid_in_pixels_on_a_non_square_slice():
    """90 degrees on a 21 x 41 slice: the pixel 6 columns right of the centre (10, 20) must land
    6 rows above it, at (4, 20); rotating in normalised units would land 3 rows away."""
    import torch.nn.functional as F

    from amecam_lib.augment import sampling_matrices

    image = torch.zeros(1, 1, 21, 41)
    image[0, 0, 10, 26] = 1.0
    one = torch.ones(1)
    theta = sampling_matrices(one, one, torch.zeros(1), torch.zeros(1), torch.full((1,), torch.pi / 2), (21, 41))
    grid = F.affine_grid(theta, [1, 1, 21, 41], align_corners=False)
    rotated = F.grid_sample(image, grid, mode="bilinear", align_corners=False)[0, 0]
    assert torch.argwhere(rotated > 0.5).tolist() == [[4, 20]]
    assert rotated[4, 20] == pytest.approx(1.0, abs=1e-5)
    # on a square slice the matrix is the plain rotation
    square = sampling_matrices(one, one, torch.zeros(1), torch.zeros(1), torch.full((1,), torch.pi / 6), (8, 8))
    torch.testing.assert_close(square[0, :, :2], torch.tensor([[0.8660254, -0.5], [0.5, 0.8660254]]))


def test_non_square_slices_keep_their_shape():
    images = torch.zeros(3, 1, 24, 40)
    images[:, :, 4:-4, 6:-6] = 0.5
    augmented = MRIAugment()(images, torch.Generator().manual_seed(0))
    assert augmented.shape == (3, 1, 24, 40) and augmented.min() >= 0 and augmented.max() <= 1
    torch.testing.assert_close(IDENTITY(images, torch.Generator().manual_seed(0)), images)
    assert TwoViews()(images).shape == (3, 2, 1, 24, 40)
