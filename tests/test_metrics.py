"""Dice / IoU / HD95 with the empty-mask convention, on shapes whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import cdist

from amecam_lib.metrics import HD95_EMPTY, false_positive_area, slice_scores, summarise


def _square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_both_empty_is_perfect():
    empty = np.zeros((8, 8), dtype=bool)
    scores = slice_scores(empty, empty)
    assert (scores.dice, scores.iou, scores.hd95) == (1.0, 1.0, 0.0)


@pytest.mark.parametrize("empty_side", ["prediction", "ground_truth"])
def test_exactly_one_empty_is_a_miss(empty_side):
    empty, square = np.zeros((8, 8), dtype=bool), _square(8, 2, 2, 3)
    pair = (empty, square) if empty_side == "prediction" else (square, empty)
    scores = slice_scores(*pair)
    assert (scores.dice, scores.iou, scores.hd95) == (0.0, 0.0, HD95_EMPTY)
    assert slice_scores(*pair, hd95_empty=99.0).hd95 == 99.0


def test_identical_masks():
    square = _square(10, 3, 3, 4)
    scores = slice_scores(square, square.astype(np.uint8))
    assert (scores.dice, scores.iou, scores.hd95) == (1.0, 1.0, 0.0)


def test_two_by_two_squares_offset_by_one_pixel():
    # A covers columns 0-1, B columns 1-2 (rows 0-1). Overlap 2 px of 4 each:
    # Dice = 2*2/(4+4) = 0.5, IoU = 2/6. Every pixel is a border pixel; distances A->B are
    # [1, 1, 0, 0] and B->A [0, 0, 1, 1]; the 95th percentile of the 8 pooled values is 1.
    first, second = _square(6, 2, 1, 2), _square(6, 2, 2, 2)
    scores = slice_scores(first, second)
    assert scores.dice == pytest.approx(0.5)
    assert scores.iou == pytest.approx(1 / 3)
    assert scores.hd95 == pytest.approx(1.0)
    # at 120 px from the 240 px grid a stored pixel is 2 mm
    assert slice_scores(first, second, voxelspacing=240 / 120).hd95 == pytest.approx(2.0)


def test_parallel_lines_k_pixels_apart():
    # two vertical 1-px lines 5 px apart: every border pixel is 5 px from the other line
    first, second = np.zeros((12, 12), bool), np.zeros((12, 12), bool)
    first[2:9, 3], second[2:9, 8] = True, True
    scores = slice_scores(first, second)
    assert (scores.dice, scores.iou) == (0.0, 0.0)
    assert scores.hd95 == pytest.approx(5.0)


@pytest.mark.parametrize("offset", [1, 2, 3])
def test_squares_offset_by_k_pixels(offset):
    side = 8
    first, second = _square(24, 6, 6, side), _square(24, 6, 6 + offset, side)
    scores = slice_scores(first, second)
    assert scores.dice == pytest.approx((side - offset) / side)
    assert scores.iou == pytest.approx((side - offset) / (side + offset))
    # independent HD95: borders by 4-connected erosion, brute-force pairwise distances
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
    borders = [np.argwhere(m ^ binary_erosion(m, structure=cross)) for m in (first, second)]
    distances = cdist(borders[0], borders[1])
    pooled = np.concatenate([distances.min(axis=1), distances.min(axis=0)])
    assert scores.hd95 == pytest.approx(np.percentile(pooled, 95))
    assert scores.hd95 >= offset - 1e-9


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="shape"):
        slice_scores(np.zeros((4, 4)), np.zeros((5, 5)))
    with pytest.raises(ValueError, match="prediction"):
        slice_scores(np.full((4, 4), np.nan), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="2-D"):
        slice_scores(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))


def test_false_positive_area_is_the_predicted_fraction():
    assert false_positive_area(_square(10, 0, 0, 5)) == pytest.approx(0.25)
    assert false_positive_area(np.zeros((3, 3))) == 0.0


def test_summarise_mean_and_std():
    summary = summarise([0.0, 1.0, 1.0, 0.0])
    assert (summary.mean, summary.std, summary.n) == (0.5, 0.5, 4)
    assert "0.500 +- 0.500" in str(summary)
    with pytest.raises(ValueError):
        summarise([])
    with pytest.raises(ValueError, match="NaN"):
        summarise([0.5, math.nan])
