"""Swin-MIL's multiple-instance loss with deep supervision (Qian et al., "Transformer based multiple
instance learning for weakly supervised histopathology image segmentation", MICCAI 2022, Sec. 2;
the authors' code: ``utils.gm`` and ``functions/train.py`` of github.com/Nexuslkl/Swin_MIL).
Written by hand: Swin-MIL's own idea, no library has it.

A slice is a bag of pixels. Each side output (and the fused map) of
:class:`~amecam_lib.models.swin_mil.SwinMilNet` gives every pixel a probability ``p_i``; the bag's
probability is their *generalised mean* (a soft maximum, MIL pooling)::

    P = (mean_i p_i^r + eps) ^ (1 / r)          r = 4, eps = 1e-6 in the authors' code

and the loss is the binary cross-entropy of every bag score with the slice label, summed over the
side outputs and the fused map (deep supervision)::

    L = sum_k BCE(P_side_k, y) + BCE(P_fused, y)

No mask: the label is the slice's (tumour / no tumour).

Ours, an option (``SwinMilConfig.pool_region="brain"``): the mean over the *brain* pixels only
(slice > 0) instead of the whole slice. In histopathology every pixel is tissue; an MRI slice is
mostly air, and a mean over the whole slice lets a network that marks the whole brain score a slice
by its brain area (tumour slices are the middle, large ones): "brain = tumour" then fits the labels.
Pooled over the brain, marking the whole brain gives every slice the same bag score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def generalized_mean(probabilities: torch.Tensor, r: float = 4.0, eps: float = 1e-6,
                     region: torch.Tensor | None = None) -> torch.Tensor:
    """MIL pooling of Swin-MIL: ``(mean over pixels of p^r + eps) ^ (1/r)`` per map.

    Args:
        probabilities: ``(B, K, H, W)`` instance probabilities in [0, 1] (any float dtype).
        r: the exponent (> 0); 1 is the mean, large values approach the maximum.
        eps: added inside the root (the authors' 1e-6), so the gradient is finite on an all-zero map.
        region: ``(B, 1, H, W)`` bool: the mean runs over these pixels only (a slice without one
            pools to ``eps^(1/r)``); None: every pixel (Swin-MIL's).

    Returns:
        ``(B, K) float32``: the bag probabilities, in ``[eps^(1/r), (1 + eps)^(1/r)]``.

    Raises:
        ValueError: ``probabilities`` not 4-D, ``r`` <= 0, or ``region`` of another shape than
            ``(B, 1, H, W)``.
    """
    if probabilities.ndim != 4:
        raise ValueError(f"probabilities must be (B, K, H, W), got shape {tuple(probabilities.shape)}")
    if not r > 0:
        raise ValueError(f"r must be > 0, got {r}")
    powers = probabilities.float().pow(r)
    if region is None:
        return (powers.mean(dim=(2, 3)) + eps).pow(1.0 / r)
    expected = (probabilities.shape[0], 1, *probabilities.shape[-2:])
    if tuple(region.shape) != expected:
        raise ValueError(f"region must be {expected} (B, 1, H, W), got shape {tuple(region.shape)}")
    inside = region.float()
    mean = (powers * inside).sum(dim=(2, 3)) / inside.sum(dim=(2, 3)).clamp(min=1.0)
    return (mean + eps).pow(1.0 / r)


def deep_mil_loss(sides: torch.Tensor, fused: torch.Tensor, labels: torch.Tensor, r: float = 4.0,
                  eps: float = 1e-6, region: torch.Tensor | None = None) -> torch.Tensor:
    """Swin-MIL's loss: the bag-level BCE of every side output and of the fused map, summed.

    Args:
        sides: ``(B, S, H, W)`` side-output probabilities.
        fused: ``(B, 1, H, W)`` fused probabilities.
        labels: ``(B,)`` slice labels, 0 (no tumour) or 1 (tumour).
        r, eps, region: of :func:`generalized_mean` (``region``: pool over the brain only).

    Returns:
        a float32 scalar: ``sum over the S + 1 maps of mean over the batch of BCE`` (torch's
        ``binary_cross_entropy``, computed in float32 outside autocast; bag scores a hair above 1,
        from ``eps``, are clamped to 1).

    Raises:
        ValueError: shapes that do not match (naming the argument).
    """
    if sides.ndim != 4 or fused.ndim != 4 or fused.shape[1] != 1 or sides.shape[0] != fused.shape[0] \
            or sides.shape[-2:] != fused.shape[-2:]:
        raise ValueError(f"sides must be (B, S, H, W) and fused (B, 1, H, W) of the same B, H, W; "
                         f"got {tuple(sides.shape)} and {tuple(fused.shape)}")
    if labels.shape != (sides.shape[0],):
        raise ValueError(f"labels must be (B,) = ({sides.shape[0]},), got shape {tuple(labels.shape)}")
    bags = generalized_mean(torch.cat([sides, fused], dim=1), r, eps, region).clamp(max=1.0)     # (B, S + 1)
    targets = labels.float().view(-1, 1).expand_as(bags)
    with torch.autocast(device_type=bags.device.type, enabled=False):      # BCE is not autocast-safe
        per_map = F.binary_cross_entropy(bags, targets, reduction="none").mean(dim=0)
    return per_map.sum()
