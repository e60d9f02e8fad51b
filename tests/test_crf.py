"""DenseCRF wrapper: input conversion, clear errors, and a map that the CRF visibly cleans."""

from __future__ import annotations

import numpy as np
import pytest

from amecam_lib.config import EvaluationConfig
from amecam_lib.crf import dense_crf, dense_crf_from_config, kernel_pixels


def _scene(size: int = 40, seed: int = 0):
    """A bright square on a dark slice, and a noisy CAM of it (salt outside, holes inside)."""
    rng = np.random.default_rng(seed)
    square = np.zeros((size, size), dtype=bool)
    square[10:26, 12:30] = True  # not square on purpose, so a transpose is visible
    image = np.where(square, 0.9, 0.2).astype(np.float32)
    prob_map = np.where(square, 0.9, 0.1)
    flips = rng.random((size, size)) < 0.15
    prob_map = np.where(flips, 1.0 - prob_map, prob_map)
    return image, prob_map, square


def _errors(mask, truth) -> int:
    return int((mask != truth).sum())


def test_crf_cleans_a_noisy_map():
    image, prob_map, square = _scene()
    thresholded = prob_map > 0.5
    refined = dense_crf(prob_map, image)
    assert refined.dtype == np.bool_ and refined.shape == square.shape
    assert _errors(thresholded, square) > 100  # the noisy map is visibly wrong ...
    assert _errors(refined, square) < _errors(thresholded, square) / 5  # ... the CRF fixes most


def test_float64_and_transposed_inputs_keep_orientation():
    image, prob_map, square = _scene()
    reference = dense_crf(prob_map.astype(np.float32), image)
    transposed = dense_crf(prob_map.astype(np.float64).T, image.astype(np.float64).T)
    assert transposed.shape == square.T.shape
    np.testing.assert_array_equal(transposed, reference.T)


def test_image_forms_are_equivalent():
    image, prob_map, _ = _scene()
    grey_uint8 = np.round(image * 255).astype(np.uint8)
    reference = dense_crf(prob_map, image)
    np.testing.assert_array_equal(dense_crf(prob_map, grey_uint8), reference)
    np.testing.assert_array_equal(dense_crf(prob_map, image[..., None]), reference)
    np.testing.assert_array_equal(dense_crf(prob_map, np.repeat(grey_uint8[..., None], 3, axis=2)),
                                  reference)


def test_config_wrapper_uses_the_settings():
    image, prob_map, _ = _scene()
    np.testing.assert_array_equal(dense_crf_from_config(prob_map, image, EvaluationConfig()),
                                  dense_crf(prob_map, image))


def test_kernel_widths_in_mm_become_pixels_per_axis():
    # (row spacing, column spacing) = (2.0, 1.0) mm: 20 mm is 20 px along columns (x), 10 px along rows (y).
    assert kernel_pixels(20.0, (2.0, 1.0)) == (20.0, 10.0)
    assert kernel_pixels(3.0, (1.875, 1.875)) == (1.6, 1.6)
    with pytest.raises(ValueError, match="positive"):
        kernel_pixels(0.0, (1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        kernel_pixels(10.0, (0.0, 1.0))


def test_config_wrapper_converts_mm_with_the_spacing():
    # At 2 mm per pixel the authors' 3 mm / 10 mm kernels are 1.5 px / 5 px.
    image, prob_map, _ = _scene()
    np.testing.assert_array_equal(dense_crf_from_config(prob_map, image, EvaluationConfig(), (2.0, 2.0)),
                                  dense_crf(prob_map, image, gaussian_sxy=1.5, bilateral_sxy=5.0))


def test_confident_uniform_map_stays_empty():
    image, _, _ = _scene()
    assert not dense_crf(np.zeros(image.shape), image).any()


@pytest.mark.parametrize("prob_map, image, match", [
    (np.zeros((4, 4, 2)), np.zeros((4, 4)), "prob_map"),
    (np.full((4, 4), np.nan), np.zeros((4, 4)), "prob_map"),
    (np.full((4, 4), 2.0), np.zeros((4, 4)), "prob_map"),
    (np.zeros((4, 4)), np.zeros((5, 5)), "differ"),
    (np.zeros((4, 4)), np.zeros((4, 4, 2)), "image"),
    (np.zeros((4, 4)), np.full((4, 4), np.nan), "image"),
    (np.zeros((4, 4)), np.full((4, 4), 7.0), "image"),
])
def test_bad_inputs_name_the_argument(prob_map, image, match):
    with pytest.raises(ValueError, match=match):
        dense_crf(prob_map, image)


def test_bad_options():
    with pytest.raises(ValueError, match="unary"):
        dense_crf(np.zeros((4, 4)), np.zeros((4, 4)), unary="bogus")


def test_a_non_square_asymmetric_map_keeps_its_orientation():
    """24 x 40 (H x W; pydensecrf takes width, height): a block in the top-right corner of the map
    and image must come back in the top-right corner, not transposed or mirrored."""
    image = np.full((24, 40), 0.2, np.float32)
    image[2:10, 28:38] = 0.9                     # rows 2..9, columns 28..37
    prob_map = np.where(image > 0.5, 0.9, 0.1)
    refined = dense_crf(prob_map, image)
    assert refined.shape == (24, 40)
    rows, cols = np.nonzero(refined)
    assert refined[2:10, 28:38].all() and rows.min() >= 1 and rows.max() <= 10 and cols.min() >= 27
    assert not refined[14:, :].any() and not refined[:, :20].any()
