"""Segmentation scores: Dice, IoU and HD95, with the empty-mask convention first; per slice (2-D)
and per patient volume (3-D).

The protocol of the paper (Sec. 3.2) and of the authors' code scores every test slice labelled
tumour; a slice is never dropped and no score is ever NaN. :func:`volume_scores` applies the same
convention to a whole 3-D volume (the BraTS challenge's own measure: one score per patient). The overlap and distance measures come
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
4-connected cross (connectivity 1; in 3-D the 6-connected one); for every border pixel of one mask take the Euclidean distance
to the nearest border pixel of the other, in both directions; HD95 is the 95th percentile (numpy's
linear interpolation) of the two sets of distances pooled together.

Units: the paper reports HD95 on the 1 mm, 240 x 240 BraTS grid, so a pixel there is 1 mm. Pass
the mm per stored pixel as ``voxelspacing`` so the number stays comparable: ``240 / S`` for slices
resampled to S px, ``1 / zoom`` (about) for a crop; the evaluation passes each case's
:attr:`amecam_lib.slices.CaseInfo.pixel_spacing_mm`. ``hd95_empty`` is a fixed penalty in mm and
is *not* rescaled.

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


@dataclass(frozen=True)
class VolumeScores(SliceScores):
    """Scores of one patient volume: Dice, IoU, HD95 in mm, and the voxel counts they compare."""

    predicted_voxels: int = 0
    true_voxels: int = 0


_MASK_AXES = {2: "(H, W)", 3: "(X, Y, Z)"}


def _as_mask(mask, name: str, ndim: int = 2) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D mask {_MASK_AXES[ndim]}, got shape {array.shape}")
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
    predicted, reference, spacing = _checked_pair(prediction, ground_truth, voxelspacing, ndim=2)
    return SliceScores(*_convention_scores(predicted, reference, spacing, hd95_empty))


def volume_scores(prediction, ground_truth, voxelspacing: float | tuple[float, float, float] = 1.0,
                  hd95_empty: float = HD95_EMPTY) -> VolumeScores:
    """Dice, IoU and HD95 of one predicted 3-D volume against its ground truth (one patient).

    The same empty-mask convention as :func:`slice_scores` (both empty: 1, 1, 0; exactly one empty:
    0, 0, ``hd95_empty``), on the whole volume: a false positive on any slice counts.

    Cost: medpy's HD95 runs a Euclidean distance transform over its input. Both masks are first
    cut to the bounding box of their union, which gives exactly the same numbers (every voxel
    outside it is background in both, so the borders and the nearest-border distances inside it
    are unchanged) on far fewer voxels than 240 x 240 x 155.

    Args:
        prediction: ``(X, Y, Z)`` mask, bool or numeric (non-zero = tumour).
        ground_truth: ``(X, Y, Z)`` mask of the same shape (whole tumour, ``seg > 0``).
        voxelspacing: mm per voxel, one number or ``(x, y, z)`` (the NIfTI header's voxel size).
        hd95_empty: HD95 when exactly one volume is empty (default 373.12866).

    Returns:
        :class:`VolumeScores` with the voxel counts of both masks; never NaN.

    Raises:
        ValueError: not 3-D, shapes differ, NaN in a float mask, or a non-positive spacing.
    """
    predicted, reference, spacing = _checked_pair(prediction, ground_truth, voxelspacing, ndim=3)
    counts = {"predicted_voxels": int(np.count_nonzero(predicted)), "true_voxels": int(np.count_nonzero(reference))}
    box = bounding_box(predicted | reference)
    if box is not None:
        predicted, reference = predicted[box], reference[box]
    return VolumeScores(*_convention_scores(predicted, reference, spacing, hd95_empty), **counts)


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every non-zero voxel of an n-D mask, as slices; None when empty."""
    mask = np.asarray(mask)
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if present.size == 0:
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _checked_pair(prediction, ground_truth, voxelspacing, ndim: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Both masks as bool arrays of ``ndim`` dimensions and one shape, and the spacing per axis."""
    predicted = _as_mask(prediction, "prediction", ndim)
    reference = _as_mask(ground_truth, "ground_truth", ndim)
    if predicted.shape != reference.shape:
        raise ValueError(f"prediction shape {predicted.shape} != ground_truth shape {reference.shape}")
    spacing = np.broadcast_to(np.asarray(voxelspacing, dtype=np.float64), (ndim,))
    if not np.all(spacing > 0):
        raise ValueError(f"voxelspacing must be positive, got {voxelspacing}")
    return predicted, reference, tuple(float(v) for v in spacing)


def _convention_scores(predicted: np.ndarray, reference: np.ndarray, spacing: tuple,
                       hd95_empty: float) -> tuple[float, float, float]:
    """``(dice, iou, hd95)``: the empty-mask convention, else medpy (any number of dimensions)."""
    predicted_empty, reference_empty = not predicted.any(), not reference.any()
    if predicted_empty and reference_empty:
        return 1.0, 1.0, 0.0
    if predicted_empty or reference_empty:
        return 0.0, 0.0, float(hd95_empty)
    return (float(dc(predicted, reference)), float(jc(predicted, reference)),
            float(hd95(predicted, reference, voxelspacing=spacing)))


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
