"""Per-slice segmentation scores: Dice, IoU and HD95, with the empty-mask convention first.

The protocol of the paper (Sec. 3.2) and of the authors' code scores every test slice labelled
tumour; a slice is never dropped and no score is ever NaN. The overlap and distance measures come
from ``medpy.metric.binary`` (``dc``, ``jc``, ``hd95``); this module only settles what those
functions leave undefined or crash on, i.e. an empty mask:

=================  =========  ========  ==========================================
prediction / GT    Dice       IoU       HD95
=================  =========  ========  ==========================================
both empty         1          1         0
exactly one empty  0          0         ``hd95_empty`` (373.12866, BraTS convention)
both non-empty     medpy dc   medpy jc  medpy hd95 (in mm, see ``voxelspacing``)
=================  =========  ========  ==========================================

HD95 (medpy's definition): the border of each mask is the mask minus its erosion by the
4-connected cross (connectivity 1); for every border pixel of one mask take the Euclidean distance
to the nearest border pixel of the other, in both directions; HD95 is the 95th percentile (numpy's
linear interpolation) of the two sets of distances pooled together.

Units: the paper reports HD95 on the 1 mm, 240 x 240 BraTS grid, so a pixel there is 1 mm. When
the slices were resampled to S px, pass ``voxelspacing = 240 / S`` (mm per stored pixel) so the
number stays comparable. ``hd95_empty`` is a fixed penalty and is *not* rescaled.

No torch here (ARCHITECTURE: metrics never imports torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from medpy.metric.binary import dc, hd95, jc

HD95_EMPTY: float = 373.12866
"""HD95 given when exactly one of prediction and ground truth is empty (BraTS / authors' code)."""


@dataclass(frozen=True)
class SliceScores:
    """Scores of one slice: Dice and IoU in [0, 1], HD95 in mm (>= 0)."""

    dice: float
    iou: float
    hd95: float


def _as_mask(mask, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask (H, W), got shape {array.shape}")
    if array.dtype != np.bool_:
        if not np.issubdtype(array.dtype, np.number):
            raise TypeError(f"{name} must be boolean or numeric, got dtype {array.dtype}")
        if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
            raise ValueError(f"{name} contains NaN")
        array = array != 0
    return array


def slice_scores(prediction, ground_truth, voxelspacing: float | tuple[float, float] = 1.0,
                 hd95_empty: float = HD95_EMPTY) -> SliceScores:
    """Dice, IoU and HD95 of one predicted mask against its ground truth.

    Args:
        prediction: ``(H, W)`` mask, bool or numeric (non-zero = tumour).
        ground_truth: ``(H, W)`` mask of the same shape (whole tumour).
        voxelspacing: mm per pixel (one number or ``(row, col)``); ``240 / S`` for slices stored at
            S px from the 1 mm BraTS grid.
        hd95_empty: HD95 when exactly one mask is empty (default 373.12866).

    Returns:
        :class:`SliceScores`; never NaN (see the module docstring for the empty-mask convention).

    Raises:
        ValueError: not 2-D, shapes differ, NaN in a float mask, or a non-positive spacing.
    """
    predicted = _as_mask(prediction, "prediction")
    reference = _as_mask(ground_truth, "ground_truth")
    if predicted.shape != reference.shape:
        raise ValueError(f"prediction shape {predicted.shape} != ground_truth shape {reference.shape}")
    spacing = np.broadcast_to(np.asarray(voxelspacing, dtype=np.float64), (2,))
    if not np.all(spacing > 0):
        raise ValueError(f"voxelspacing must be positive, got {voxelspacing}")
    predicted_empty, reference_empty = not predicted.any(), not reference.any()
    if predicted_empty and reference_empty:
        return SliceScores(dice=1.0, iou=1.0, hd95=0.0)
    if predicted_empty or reference_empty:
        return SliceScores(dice=0.0, iou=0.0, hd95=float(hd95_empty))
    return SliceScores(dice=float(dc(predicted, reference)), iou=float(jc(predicted, reference)),
                       hd95=float(hd95(predicted, reference, voxelspacing=tuple(spacing))))


def false_positive_area(prediction) -> float:
    """Fraction of the slice predicted tumour, for slices whose ground truth is normal.

    Args:
        prediction: ``(H, W)`` mask (bool or numeric, non-zero = tumour).

    Returns:
        float in [0, 1]: 0 is a perfect normal slice; a fixed 0.5 threshold on a map that is high
        everywhere gives values near 1.
    """
    predicted = _as_mask(prediction, "prediction")
    return float(predicted.mean())


@dataclass(frozen=True)
class Summary:
    """Mean and standard deviation (population, ddof=0) of one score over ``n`` slices."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} +- {self.std:.3f} (n={self.n})"


def summarise(scores) -> Summary:
    """Mean +- std of a sequence of per-slice scores (the paper's "mean +- std" form).

    Args:
        scores: 1-D sequence of finite floats (Dice, IoU, HD95 or false-positive areas).

    Returns:
        :class:`Summary` (std with ddof=0).

    Raises:
        ValueError: empty input, or a NaN / infinite score (it would otherwise be dropped or
            poison the mean silently).
    """
    values = np.asarray(list(scores), dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"summarise needs a non-empty 1-D sequence, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("summarise got NaN or infinite scores; every slice must have a finite score")
    return Summary(mean=float(values.mean()), std=float(values.std()), n=int(values.size))
