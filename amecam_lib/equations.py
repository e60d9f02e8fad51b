"""The formulas of AME-CAM (paper Sec. 2) on tensors, and nothing else: no network, no training.

Read top to bottom, this module is the method's arithmetic. For a slice I and its exit maps
M_1..M_n, upsampled to the slice size::

    n(M)   per-image min-max normalisation to [0, 1]                    (:func:`normalise_maps`)
    S      = A([I * n(M_i)]_i)   softmax over i at every pixel          (Eq. 2, :func:`fuse`)
    M_f    = sum_i S_i * n(M_i)                                         (:func:`fuse`)
    final  = n(mean(n(M_1), ..., n(M_n), M_f))                          (Sec. 2 end, :func:`final_cam`)
    Avg ME = n(mean(n(M_1), ..., n(M_n)))                               (Table 2, :func:`average_exits`)

n(.) may be taken over a region only (``region=``): with ``EvaluationConfig.restrict_to_brain`` every
map is normalised over the brain, :func:`brain_region` (the pixels where the skull-stripped slice is
above 0), and is 0 outside it.

It imports only torch, so that the CAM methods (:mod:`amecam_lib.cams`) and the training of the
attention network (:mod:`amecam_lib.aggregation`) share the same formulas without one pulling in
the other. The attention network A is passed in as any callable (e.g. an
:class:`~amecam_lib.models.attention.AttentionNet`).
"""

from __future__ import annotations

from typing import Protocol

import torch

CONSTANT_RELATIVE_SPAN = 1e-5
"""A map whose span (max - min) is at most this fraction of its magnitude (max(|max|, |min|)) counts
as constant in :func:`normalise_maps`: float32 rounding (about 1.2e-7 relative per operation), e.g.
of a constant map upsampled bilinearly, stays far below it; any real contrast lies far above."""


class AttentionFunction(Protocol):
    """What :func:`fuse` needs from the attention network A of Eq. 2 (an ``nn.Module`` or any callable).

    Called on the masked slices ``(B, n, H, W)`` (``I * n(M_i)`` stacked over i), it returns the
    weights ``(B, n, H, W)``: at every pixel, non-negative and summing to 1 over the n maps.
    """

    def __call__(self, masked_images: torch.Tensor) -> torch.Tensor: ...


def normalise_maps(maps: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image, per-map min-max normalisation n(.) of the paper (Eq. 2), over the last two dims.

    ``n(M) = (M - min M) / (max M - min M)``, each ``(H, W)`` map on its own.

    Args:
        maps: ``(..., H, W)`` float tensor of any real values, e.g. ``(B, n, H, W)`` exit maps or a
            ``(B, H, W)`` CAM.
        region: optional ``bool`` tensor broadcastable to ``maps`` (e.g. a ``(B, 1, H, W)`` brain
            mask for ``(B, n, H, W)`` maps): min and max are then taken over the region's pixels
            only, and the output is 0 outside the region.

    Returns:
        same shape as ``maps``, float32 in [0, 1] (min -> 0, max -> 1). A map that is constant over
        its pixels (or region) becomes all zeros, never NaN: constant means max == min, or a span
        at float-noise level, ``max - min <= CONSTANT_RELATIVE_SPAN * max(|max|, |min|)`` (a constant
        map upsampled bilinearly differs in its last float bits; stretching that noise to [0, 1]
        would invent contrast). A region without any pixel also gives zeros.

    Raises:
        ValueError: ``maps`` has fewer than 2 dims or holds NaN / infinite values; ``region`` does
            not broadcast to the shape of ``maps``.
        TypeError: ``region`` is not a bool tensor.
    """
    if maps.ndim < 2:
        raise ValueError(f"maps must have at least 2 dims (..., H, W), got shape {tuple(maps.shape)}")
    maps = maps.float()
    if not torch.isfinite(maps).all():
        raise ValueError("maps contain NaN or infinite values")
    if region is None:
        inside = None
        low = maps.amin(dim=(-2, -1), keepdim=True)
        high = maps.amax(dim=(-2, -1), keepdim=True)
    else:
        inside = _region_like(region, maps)
        has_pixel = inside.any(dim=(-2, -1), keepdim=True)
        low = torch.where(inside, maps, torch.inf).amin(dim=(-2, -1), keepdim=True)
        high = torch.where(inside, maps, -torch.inf).amax(dim=(-2, -1), keepdim=True)
        low = torch.where(has_pixel, low, torch.zeros_like(low))      # empty region: span 0 -> zeros
        high = torch.where(has_pixel, high, torch.zeros_like(high))
    span = high - low
    varies = span > CONSTANT_RELATIVE_SPAN * torch.maximum(high.abs(), low.abs())   # False when span == 0
    safe_span = torch.where(varies, span, torch.ones_like(span))
    normalised = torch.where(varies, (maps - low) / safe_span, torch.zeros_like(maps))
    if inside is not None:
        normalised = torch.where(inside, normalised, torch.zeros_like(normalised))
    return normalised


def brain_region(images: torch.Tensor) -> torch.Tensor:
    """The brain of skull-stripped slices: ``images > 0``, ``(B, 1, H, W) bool`` for ``(B, 1, H, W)``
    slices in [0, 1] (BraTS volumes are 0 outside the brain; the per-volume min-max keeps that 0)."""
    return images > 0


def fuse(images: torch.Tensor, exit_maps_norm: torch.Tensor,
         attention: AttentionFunction) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2 and the weighted sum: attention weights S and the aggregated map M_f.

    ``S = A([I * n(M_i)]_{i=1..n})`` and ``M_f = sum_i S_i * n(M_i)`` at every pixel.

    Args:
        images: ``(B, 1, H, W) float32`` slices I in [0, 1].
        exit_maps_norm: ``(B, n, H, W) float32`` normalised exit maps n(M_i) in [0, 1].
        attention: the attention network A over n maps (:class:`AttentionFunction`; e.g. an
            ``AttentionNet(n_maps=n)``). Gradients flow through it (no ``no_grad`` here).

    Returns:
        ``weights`` ``(B, n, H, W)`` (what A returns: softmax over n) and ``fused_map``
        ``(B, 1, H, W)`` float32 in [0, 1] (a convex combination of maps in [0, 1]).

    Raises:
        ValueError: ``images`` is not ``(B, 1, H, W)``, or ``exit_maps_norm`` is not ``(B, n, H, W)``
            with the batch size and ``(H, W)`` of ``images``.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, H, W), got {tuple(images.shape)}")
    if exit_maps_norm.ndim != 4 or exit_maps_norm.shape[0] != images.shape[0] \
            or exit_maps_norm.shape[2:] != images.shape[2:]:
        raise ValueError(f"exit_maps_norm must be (B, n, H, W) matching images {tuple(images.shape)}, "
                         f"got {tuple(exit_maps_norm.shape)}")
    weights = attention(images * exit_maps_norm)
    fused_map = (weights * exit_maps_norm).sum(dim=1, keepdim=True)
    return weights, fused_map


def final_cam(exit_maps_norm: torch.Tensor, fused_map: torch.Tensor,
              region: torch.Tensor | None = None) -> torch.Tensor:
    """AME-CAM's final map (paper Sec. 2, end): the mean of the n(M_i) and M_f, min-max normalised.

    ``final = n((n(M_1) + ... + n(M_n) + M_f) / (n + 1))``

    Args:
        exit_maps_norm: ``(B, n, H, W) float32`` normalised exit maps n(M_i) in [0, 1].
        fused_map: ``(B, 1, H, W) float32`` M_f in [0, 1] (from :func:`fuse`).
        region: optional ``bool`` ``(B, H, W)`` or ``(B, 1, H, W)`` mask: the normalisation uses its
            pixels only and the map is 0 outside it (see :func:`normalise_maps`).

    Returns:
        ``(B, H, W) float32`` in [0, 1] (all zeros where the mean is constant).

    Raises:
        ValueError: shapes that do not match (``exit_maps_norm`` not 4-D, ``fused_map`` not
            ``(B, 1, H, W)`` beside it), NaN / infinite values, a ``region`` of another shape.
        TypeError: ``region`` is not a bool tensor.
    """
    if exit_maps_norm.ndim != 4 or fused_map.ndim != 4 or fused_map.shape[1] != 1 \
            or fused_map.shape[0] != exit_maps_norm.shape[0] or fused_map.shape[2:] != exit_maps_norm.shape[2:]:
        raise ValueError(f"exit_maps_norm must be (B, n, H, W) and fused_map (B, 1, H, W) with the same B, H, W; "
                         f"got {tuple(exit_maps_norm.shape)} and {tuple(fused_map.shape)}")
    return normalise_maps(torch.cat([exit_maps_norm, fused_map], dim=1).mean(dim=1), _per_image(region))


def average_exits(exit_maps_norm: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Table 2's "Avg. ME": the plain mean of the n(M_i), min-max normalised (no attention).

    ``avg = n((n(M_1) + ... + n(M_n)) / n)``

    Args:
        exit_maps_norm: ``(B, n, H, W) float32`` normalised exit maps n(M_i) in [0, 1].
        region: optional ``bool`` ``(B, H, W)`` or ``(B, 1, H, W)`` mask (see :func:`final_cam`).

    Returns:
        ``(B, H, W) float32`` in [0, 1] (all zeros where the mean is constant).

    Raises:
        ValueError: ``exit_maps_norm`` is not 4-D, holds NaN / infinite values, or ``region`` has
            another shape.
        TypeError: ``region`` is not a bool tensor.
    """
    if exit_maps_norm.ndim != 4:
        raise ValueError(f"exit_maps_norm must be (B, n, H, W), got {tuple(exit_maps_norm.shape)}")
    return normalise_maps(exit_maps_norm.mean(dim=1), _per_image(region))


# --- helpers ---------------------------------------------------------------------------------------

def _region_like(region: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``region`` as a bool tensor of the shape of ``maps``, on its device."""
    if not isinstance(region, torch.Tensor) or region.dtype != torch.bool:
        raise TypeError(f"region must be a bool tensor, got {getattr(region, 'dtype', type(region).__name__)}")
    try:
        shape = torch.broadcast_shapes(region.shape, maps.shape)
    except RuntimeError:
        shape = None
    if shape != maps.shape:
        raise ValueError(f"region of shape {tuple(region.shape)} does not broadcast to maps {tuple(maps.shape)}")
    return region.to(maps.device).expand(maps.shape)


def _per_image(region: torch.Tensor | None) -> torch.Tensor | None:
    """A ``(B, 1, H, W)`` region as ``(B, H, W)``, to go with one map per image; others unchanged."""
    if region is not None and region.ndim == 4 and region.shape[1] == 1:
        return region[:, 0]
    return region
