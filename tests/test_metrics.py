"""Dice / IoU / HD95 with the empty-mask convention, on shapes whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from medpy.metric.binary import hd95
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import cdist

from amecam_lib.metrics import (HD95_EMPTY, bounding_box, false_positive_area, slice_scores, summarise,
                                volume_scores)


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


# --- 3-D: one score per patient volume --------------------------------------------------------------

def _block(shape=(8, 8, 8), rows=(2, 4), cols=(2, 4), z=(1, 3)) -> np.ndarray:
    volume = np.zeros(shape, dtype=bool)
    volume[rows[0]:rows[1], cols[0]:cols[1], z[0]:z[1]] = True
    return volume


def test_volume_overlap_by_a_known_number_of_voxels():
    # truth: 2 x 2 x 2 block at z 1..2; prediction: the same block moved to z 2..3 -> 4 common voxels
    truth, predicted = _block(z=(1, 3)), _block(z=(2, 4))
    scores = volume_scores(predicted, truth, voxelspacing=(1.0, 1.0, 2.5))
    assert scores.dice == pytest.approx(2 * 4 / (8 + 8)) and scores.iou == pytest.approx(4 / 12)
    assert (scores.predicted_voxels, scores.true_voxels) == (8, 8)
    # every voxel of a 2-thick block is a border voxel: 8 distances 0 and 8 of one slice (2.5 mm)
    assert scores.hd95 == pytest.approx(np.percentile([0.0] * 8 + [2.5] * 8, 95)) == pytest.approx(2.5)


def test_false_positives_on_a_slice_without_tumour_lower_the_volume_dice():
    truth = _block(z=(1, 3))
    predicted = truth.copy()
    predicted[4:6, 4:6, 6] = True                      # 4 voxels on slice 6, which holds no tumour
    assert volume_scores(truth, truth).dice == 1.0
    scores = volume_scores(predicted, truth)
    assert scores.dice == pytest.approx(2 * 8 / (12 + 8)) and scores.iou == pytest.approx(8 / 12)
    assert scores.predicted_voxels == 12 and scores.hd95 > 0


def test_empty_volumes_follow_the_convention():
    truth = _block()
    missed = volume_scores(np.zeros_like(truth), truth)
    assert (missed.dice, missed.iou, missed.hd95) == (0.0, 0.0, HD95_EMPTY)
    assert (missed.predicted_voxels, missed.true_voxels) == (0, 8)
    both = volume_scores(np.zeros_like(truth), np.zeros_like(truth))
    assert (both.dice, both.iou, both.hd95) == (1.0, 1.0, 0.0)
    assert volume_scores(truth, np.zeros_like(truth), hd95_empty=99.0).hd95 == 99.0


def test_volume_hd95_on_the_union_box_equals_medpy_on_the_whole_volume():
    rng = np.random.default_rng(0)
    for _ in range(3):
        truth = np.zeros((30, 34, 20), bool)
        predicted = np.zeros_like(truth)
        truth[5:15, 8:20, 3:9] = rng.random((10, 12, 6)) > 0.3
        predicted[9:22, 4:16, 6:15] = rng.random((13, 12, 9)) > 0.5
        spacing = (1.0, 0.8, 2.0)
        scores = volume_scores(predicted, truth, voxelspacing=spacing)
        assert scores.hd95 == pytest.approx(hd95(predicted, truth, voxelspacing=spacing), rel=1e-12)
    assert bounding_box(_block(z=(1, 3))) == (slice(2, 4), slice(2, 4), slice(1, 3))
    assert bounding_box(np.zeros((3, 3, 3))) is None


def test_volume_scores_want_3d_masks():
    with pytest.raises(ValueError, match="3-D"):
        volume_scores(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="shape"):
        volume_scores(np.zeros((4, 4, 2)), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="positive"):
        volume_scores(_block(), _block(), voxelspacing=(1.0, 0.0, 1.0))
