"""The Active Contour Without Edges (Chan-Vese) losses of C&F, the paper's UL and FSL reference rows.

Chen and Frey, "Medical image segmentation via unsupervised convolutional neural network",
arXiv:2001.10155 (MIDL 2020 short paper; "C&F" in the AME-CAM paper's Table 1). C&F let a ConvNet
output a soft segmentation ``y`` in [0, 1] of the image ``x`` and train it, without any label, on
the Chan-Vese energy of ``y`` on ``x`` (Chan and Vese, "Active contours without edges", IEEE TIP 10(2),
2001, Eq. 3 with the Heaviside of the level set replaced by ``y``)::

    E(y) = mu * Length(y) + nu * Area(y)
           + lambda_in  * sum_Omega y       * (x - c_in)^2              c_in  = sum y x / sum y
           + lambda_out * sum_Omega (1 - y) * (x - c_out)^2             c_out = sum (1-y) x / sum (1-y)

(:func:`acwe_loss`: two regions, each faithful to its own mean intensity, plus the contour's length
and the inside's area). Their supervised term ("L_label", used beside the ACWE loss in their mode 4,
or alone to fine-tune) is the Active Contour loss of Chen, Williams, Vallabhaneni, Czanner and
Williams, "Learning active contour models for medical image segmentation", CVPR 2019: the same
energy with the mask ``m`` as the image and the constants fixed at c_in = 1, c_out = 0, i.e.
``Length(y) + lambda * (sum y (m - 1)^2 + sum (1 - y) m^2)`` (:func:`active_contour_label_loss`).

Written by hand here (no maintained library ships either loss): the cited papers' own idea. What is
C&F's and what is ours:

- C&F's (their public Keras code, ``Unsupervised_Seg/losses.py``): the region terms with the two
  means computed from the soft output, an area term ``nu * sum y`` (nu = 0.0005 in their training
  script), no length term in the unsupervised loss (``mu = 0``); the label loss with length weight 1
  and region weight 1; squared forward differences under a square root for the length, with a small
  epsilon inside the root.
- Ours: sums become means over the slice's H x W pixels (the weights then do not depend on the slice
  size; for one size the ratios of the terms are C&F's); the means c_in, c_out are Chan-Vese's
  ``sum y x / sum y`` (C&F's code divides by the count of non-zero outputs instead) and are per image
  (one Chan-Vese problem per slice; C&F's code pools them over the batch); the energy may be
  restricted to a region ``Omega`` (the brain, so that it does not just separate brain from air), the
  length then counting only the differences between pixels of ``Omega``. The length is the
  isotropic total variation ``sum sqrt((dy/di)^2 + (dy/dj)^2 + eps)`` on forward differences.

Shapes: ``(B, 1, H, W)`` float tensors throughout; every loss is a scalar (the mean over the batch),
or ``(B,)`` per image with ``reduction="none"``. This module imports no training code.
"""

from __future__ import annotations

import torch

__all__ = ["acwe_loss", "active_contour_label_loss", "contour_length", "soft_region_means"]


def _check_maps(name: str, tensor: torch.Tensor, unit: bool) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != 4 or tensor.shape[1] != 1:
        raise ValueError(f"{name} must be (B, 1, H, W), got {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if unit and (tensor.min() < 0 or tensor.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1] (a soft segmentation), got values in "
                         f"[{float(tensor.min()):.4g}, {float(tensor.max()):.4g}]")


def _check_same_shape(reference: torch.Tensor, **others) -> None:
    for name, tensor in others.items():
        if tensor is not None and tuple(tensor.shape) != tuple(reference.shape):
            raise ValueError(f"{name} must have the probability's shape {tuple(reference.shape)}, "
                             f"got {tuple(tensor.shape)}")


def _check_weights(**weights) -> None:
    for name, value in weights.items():
        if not float(value) >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _region_mask(probability: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor:
    if region is None:
        return torch.ones_like(probability)
    if region.dtype != torch.bool:
        raise ValueError(f"region must be a bool tensor (True = inside Omega), got {region.dtype}")
    return region.to(probability.dtype)


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def soft_region_means(intensities: torch.Tensor, probability: torch.Tensor, region: torch.Tensor | None = None,
                      eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Chan-Vese's region constants of a soft segmentation, per image (Chan and Vese 2001, Eq. 6).

    ``c_in = sum_Omega y x / (sum_Omega y + eps)``, ``c_out = sum_Omega (1 - y) x / (sum_Omega (1 - y) + eps)``:
    the mean intensity inside and outside the contour, the values that minimise the region terms.

    Args:
        intensities: ``(B, 1, H, W)`` float, the image ``x`` (any unit; C&F: min-max to [0, 1]).
        probability: ``(B, 1, H, W)`` float in [0, 1], the soft segmentation ``y`` (1 = inside).
        region: ``(B, 1, H, W)`` bool, the domain ``Omega`` (None: the whole slice).
        eps: added to both denominators (an empty region gives a mean of 0).

    Returns:
        ``(c_in, c_out)``, each ``(B,)`` float in the unit of ``intensities``.

    Raises:
        ValueError: a shape other than ``(B, 1, H, W)``, shapes that differ, NaN, a probability
            outside [0, 1], a non-bool region.
    """
    _check_maps("intensities", intensities, unit=False)
    _check_maps("probability", probability, unit=True)
    _check_same_shape(probability, intensities=intensities, region=region)
    inside_domain = _region_mask(probability, region)
    inside, outside = probability * inside_domain, (1.0 - probability) * inside_domain
    dims = (1, 2, 3)
    c_in = (inside * intensities).sum(dim=dims) / (inside.sum(dim=dims) + eps)
    c_out = (outside * intensities).sum(dim=dims) / (outside.sum(dim=dims) + eps)
    return c_in, c_out


def contour_length(probability: torch.Tensor, region: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """The length of the soft contour, per image: the isotropic total variation of ``y`` over the
    slice's pixels (Chan and Vese's ``Length = integral |grad H(phi)|``, the length term of Chen et
    al. 2019's Active Contour loss), a sum divided by ``H * W``.

    At pixel (i, j) with i < H - 1 and j < W - 1: ``sqrt((y[i+1, j] - y[i, j])^2 + (y[i, j+1] - y[i, j])^2 + eps)``;
    with a ``region`` only the pixels whose (i, j), (i+1, j) and (i, j+1) all lie in it count (the
    boundary of ``Omega`` itself is not part of the contour).

    Args:
        probability: ``(B, 1, H, W)`` float in [0, 1], the soft segmentation.
        region: ``(B, 1, H, W)`` bool domain, or None (the whole slice).
        eps: inside the square root, so that its gradient is finite where ``y`` is flat
            (C&F: 1e-8); each counted pixel adds ``sqrt(eps)`` to the length.

    Returns:
        ``(B,)`` float, in pixels of contour per pixel of slice (>= 0).

    Raises:
        ValueError: as :func:`soft_region_means`; an ``H`` or ``W`` below 2.
    """
    _check_maps("probability", probability, unit=True)
    _check_same_shape(probability, region=region)
    if probability.shape[-2] < 2 or probability.shape[-1] < 2:
        raise ValueError(f"probability must be at least 2 x 2 pixels, got {tuple(probability.shape[-2:])}")
    here = probability[..., :-1, :-1]
    down = probability[..., 1:, :-1] - here
    right = probability[..., :-1, 1:] - here
    length = torch.sqrt(down ** 2 + right ** 2 + eps)
    if region is not None:
        counted = region[..., :-1, :-1] & region[..., 1:, :-1] & region[..., :-1, 1:]
        length = length * counted.to(length.dtype)
    pixels = probability.shape[-2] * probability.shape[-1]
    return length.sum(dim=(1, 2, 3)) / pixels


def acwe_loss(intensities: torch.Tensor, probability: torch.Tensor, region: torch.Tensor | None = None,
              length_weight: float = 0.0, area_weight: float = 0.0005, inside_weight: float = 1.0,
              outside_weight: float = 1.0, eps: float = 1e-6, length_eps: float = 1e-8,
              reduction: str = "mean") -> torch.Tensor:
    """C&F's unsupervised loss L_ACWE: the Chan-Vese energy of the soft segmentation ``y`` on the
    image ``x`` over ``Omega``, per image, each sum divided by the slice's ``H * W`` pixels::

        mu * Length(y) + nu * sum_Omega y
        + lambda_in * sum_Omega y (x - c_in)^2 + lambda_out * sum_Omega (1 - y) (x - c_out)^2

    with ``c_in``, ``c_out`` from :func:`soft_region_means` (gradients flow through them too; at
    Chan-Vese's optimum their own contribution is zero) and ``Length`` from :func:`contour_length`.
    No label: the image is its own target. The energy does not say which of the two regions is the
    object (without the area term it is symmetric in ``y <-> 1 - y``): the caller decides that.

    Args:
        intensities: ``(B, 1, H, W)`` float, ``x`` (C&F: each slice min-max normalised to [0, 1]).
        probability: ``(B, 1, H, W)`` float in [0, 1], ``y`` (e.g. a sigmoid).
        region: ``(B, 1, H, W)`` bool, ``Omega`` (e.g. the brain, ``x > 0``); None: the whole slice.
        length_weight: ``mu`` >= 0 (C&F's unsupervised loss: 0).
        area_weight: ``nu`` >= 0 (C&F's training script: 0.0005).
        inside_weight, outside_weight: ``lambda_in``, ``lambda_out`` >= 0 (Chan-Vese, C&F: 1).
        eps: the means' denominators' epsilon; length_eps: the length's (see :func:`contour_length`).
        reduction: ``"mean"`` over the batch (a scalar) or ``"none"`` (``(B,)``).

    Returns:
        a scalar float tensor (or ``(B,)``), >= 0, in squared units of ``intensities`` per pixel.

    Raises:
        ValueError: as :func:`soft_region_means`; a negative weight; an unknown reduction.
    """
    _check_weights(length_weight=length_weight, area_weight=area_weight, inside_weight=inside_weight,
                   outside_weight=outside_weight)
    c_in, c_out = soft_region_means(intensities, probability, region, eps)
    inside_domain = _region_mask(probability, region)
    pixels = probability.shape[-2] * probability.shape[-1]
    dims = (1, 2, 3)
    misfit_in = (intensities - c_in.view(-1, 1, 1, 1)) ** 2
    misfit_out = (intensities - c_out.view(-1, 1, 1, 1)) ** 2
    inside = (probability * inside_domain * misfit_in).sum(dim=dims) / pixels
    outside = ((1.0 - probability) * inside_domain * misfit_out).sum(dim=dims) / pixels
    area = (probability * inside_domain).sum(dim=dims) / pixels
    energy = inside_weight * inside + outside_weight * outside + area_weight * area
    if length_weight > 0:
        energy = energy + length_weight * contour_length(probability, region, length_eps)
    return _reduce(energy, reduction)


def active_contour_label_loss(probability: torch.Tensor, masks: torch.Tensor, length_weight: float = 1.0,
                              region_weight: float = 1.0, length_eps: float = 1e-8,
                              reduction: str = "mean") -> torch.Tensor:
    """C&F's supervised term L_label: the Active Contour loss of Chen et al. (CVPR 2019, Eq. 11-12),
    over the whole slice, each sum divided by its ``H * W`` pixels::

        mu * Length(y) + lambda * (sum y (m - 1)^2 + sum (1 - y) m^2)

    (the Chan-Vese energy with the mask ``m`` as the image and the constants fixed at 1 inside, 0
    outside; for a binary mask the region part is the soft false-positive plus false-negative area).

    Args:
        probability: ``(B, 1, H, W)`` float in [0, 1], ``y``.
        masks: ``(B, 1, H, W)`` float or bool in [0, 1], the ground truth ``m`` (1 = object).
        length_weight: ``mu`` >= 0 (Chen et al., C&F: 1); region_weight: ``lambda`` >= 0 (1).
        length_eps: see :func:`contour_length`.
        reduction: ``"mean"`` over the batch or ``"none"``.

    Returns:
        a scalar float tensor (or ``(B,)``), >= 0.

    Raises:
        ValueError: shapes other than ``(B, 1, H, W)`` or that differ, NaN, values outside [0, 1],
            a negative weight, an unknown reduction.
    """
    _check_weights(length_weight=length_weight, region_weight=region_weight)
    _check_maps("probability", probability, unit=True)
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a torch.Tensor, got {type(masks).__name__}")
    masks = masks.to(probability.dtype)
    _check_maps("masks", masks, unit=True)
    _check_same_shape(probability, masks=masks)
    pixels = probability.shape[-2] * probability.shape[-1]
    dims = (1, 2, 3)
    region_term = (probability * (masks - 1.0) ** 2 + (1.0 - probability) * masks ** 2).sum(dim=dims) / pixels
    energy = region_weight * region_term
    if length_weight > 0:
        energy = energy + length_weight * contour_length(probability, None, length_eps)
    return _reduce(energy, reduction)
