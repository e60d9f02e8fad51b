"""DenseCRF post-processing of a CAM into a tumour mask (paper Sec. 2 end).

Fully connected CRF with Gaussian edge potentials (Kraehenbuehl and Koltun, NIPS 2011) through
``pydensecrf``. Two labels (background, tumour); settings from the authors' code (their CRF is
defined but never called; the paper says it is applied): Gaussian kernel sxy=3, compat=3;
bilateral kernel sxy=10, srgb=13, compat=10; 10 mean-field iterations; the grey slice given to the
bilateral term as three identical uint8 channels.

Kernel widths in mm: the authors' sxy values are pixels of the 1 mm BraTS grid, i.e. millimetres.
:func:`dense_crf` takes pixels (what pydensecrf takes); :func:`dense_crf_from_config` reads the
widths in mm from the configuration (``crf_gaussian_sxy_mm``, ``crf_bilateral_sxy_mm``) and
divides them by the slice's pixel spacing per axis, so that a kernel covers the same anatomy
whatever the slice geometry (1.875 mm/px at 128 px, 1 mm/px for a crop at zoom 1).

Unary: the authors build it from ``softmax([1 - p, p])`` over the two labels (``unary="softmax"``,
default): that softens the CAM (p = 1 becomes 0.73 tumour), so the pairwise terms weigh more.
``unary="probability"`` uses ``[1 - p, p]`` as the label probabilities directly.

pydensecrf needs a float32, C-contiguous ``(2, H*W)`` unary and a uint8, C-contiguous
``(H, W, 3)`` image; anything else fails deep inside Cython (PITFALLS "CRF"). :func:`dense_crf`
converts what it can (float64, transposed views, grey or one-channel images, [0, 1] floats) and
raises a ``ValueError`` naming the argument otherwise.

No torch here (ARCHITECTURE: crf never imports torch).
"""

from __future__ import annotations

import numpy as np
from pydensecrf.densecrf import DenseCRF2D
from pydensecrf.utils import unary_from_softmax

UNARY_CHOICES = ("softmax", "probability")


def _probability_map(prob_map) -> np.ndarray:
    array = np.asarray(prob_map)
    if array.ndim != 2:
        raise ValueError(f"prob_map must be a 2-D (H, W) map, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.bool_)):
        raise ValueError(f"prob_map must be a float (or bool) map in [0, 1], got dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError("prob_map contains NaN or infinite values")
    if array.min() < -1e-6 or array.max() > 1 + 1e-6:
        raise ValueError(f"prob_map must lie in [0, 1], got [{array.min():.4g}, {array.max():.4g}]")
    return np.clip(array, 0.0, 1.0)


def _rgb_image(image) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (1, 3):
        array = array[..., 0] if array.shape[2] == 1 else array
    elif array.ndim != 2:
        raise ValueError(f"image must be (H, W), (H, W, 1) or (H, W, 3), got shape {array.shape}")
    if array.dtype == np.uint8:
        grey_or_rgb = array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("image contains NaN or infinite values")
        if array.min() < -1e-6 or array.max() > 1 + 1e-6:
            raise ValueError(f"a float image must lie in [0, 1], got [{array.min():.4g}, {array.max():.4g}]")
        grey_or_rgb = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ValueError(f"image must be uint8 or float in [0, 1], got dtype {array.dtype}")
    if grey_or_rgb.ndim == 2:
        grey_or_rgb = np.repeat(grey_or_rgb[..., None], 3, axis=2)
    return np.ascontiguousarray(grey_or_rgb, dtype=np.uint8)


def dense_crf(prob_map, image, *, gaussian_sxy: float | tuple[float, float] = 3.0, gaussian_compat: float = 3.0,
              bilateral_sxy: float | tuple[float, float] = 10.0, bilateral_srgb: float = 13.0,
              bilateral_compat: float = 10.0, iterations: int = 10,
              unary: str = "softmax") -> np.ndarray:
    """Refine a tumour probability map into a mask with a two-label DenseCRF.

    Args:
        prob_map: ``(H, W)`` float map in [0, 1] (any float dtype, any memory layout), high on
            tumour; a CAM normalised to [0, 1].
        image: the slice, ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``; float in [0, 1] or uint8.
        gaussian_sxy, gaussian_compat: smoothness kernel (standard deviation in pixels, one number
            or ``(along columns x, along rows y)``; weight).
        bilateral_sxy, bilateral_srgb, bilateral_compat: appearance kernel (pixels as above, grey
            levels 0-255, weight).
        iterations: mean-field iterations.
        unary: ``"softmax"`` (authors: -log softmax([1-p, p])) or ``"probability"``
            (-log [1-p, p], clipped at 1e-5).

    Returns:
        ``(H, W)`` bool tumour mask, same orientation as ``prob_map``.

    Raises:
        ValueError: wrong shape or dtype, NaN / infinite values, values outside [0, 1],
            ``prob_map`` and ``image`` of different sizes, an unknown ``unary`` or ``iterations < 1``.
    """
    probability = _probability_map(prob_map)
    rgb = _rgb_image(image)
    if rgb.shape[:2] != probability.shape:
        raise ValueError(f"prob_map shape {probability.shape} and image shape {rgb.shape[:2]} differ")
    if unary not in UNARY_CHOICES:
        raise ValueError(f"unary must be one of {UNARY_CHOICES}, got {unary!r}")
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    height, width = probability.shape
    label_scores = np.stack([1.0 - probability, probability]).reshape(2, -1)
    if unary == "softmax":
        exp_scores = np.exp(label_scores - label_scores.max(axis=0, keepdims=True))
        label_scores = exp_scores / exp_scores.sum(axis=0, keepdims=True)
    unary_energy = np.ascontiguousarray(unary_from_softmax(label_scores), dtype=np.float32)
    crf = DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(unary_energy)
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=rgb, compat=bilateral_compat)
    marginals = np.asarray(crf.inference(int(iterations)), dtype=np.float32).reshape(2, height, width)
    return marginals[1] > marginals[0]


def kernel_pixels(width_mm: float, spacing_mm: tuple[float, float]) -> tuple[float, float]:
    """A kernel width in mm as pydensecrf's ``(sx, sy)`` in pixels: ``sx`` along columns (x),
    ``sy`` along rows (y), for a slice whose pixels are ``spacing_mm = (row spacing, column
    spacing)`` mm (:attr:`amecam_lib.slices.CaseInfo.pixel_spacing_mm`).

    Raises:
        ValueError: a width or spacing that is not positive.
    """
    row_mm, col_mm = (float(value) for value in spacing_mm)
    if not (width_mm > 0 and row_mm > 0 and col_mm > 0):
        raise ValueError(f"CRF kernel width {width_mm} mm and pixel spacing {spacing_mm} mm must be positive")
    return (width_mm / col_mm, width_mm / row_mm)


def dense_crf_from_config(prob_map, image, config, spacing_mm: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """:func:`dense_crf` with the settings of an ``EvaluationConfig`` (``crf_*`` fields), the kernel
    widths given in mm and converted with the slice's ``spacing_mm`` (row, column) to pixels."""
    return dense_crf(prob_map, image, gaussian_sxy=kernel_pixels(config.crf_gaussian_sxy_mm, spacing_mm),
                     gaussian_compat=config.crf_gaussian_compat,
                     bilateral_sxy=kernel_pixels(config.crf_bilateral_sxy_mm, spacing_mm),
                     bilateral_srgb=config.crf_bilateral_srgb,
                     bilateral_compat=config.crf_bilateral_compat, iterations=config.crf_iterations,
                     unary=config.crf_unary)
