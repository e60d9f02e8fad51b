"""The attention network A of AME-CAM's activation-aggregation phase (paper Sec. 2, Eq. 2).

A looks at the slice masked by each normalised exit map and says, at every pixel, how much each
exit map should count::

    S_xyi = A([I * n(M_i)]_{i=1..n})          (Eq. 2; softmax over i at every pixel)
    M_f   = sum_i S_xyi * n(M_i)              (the aggregated map, see amecam_lib.aggregation)

Architecture (REFERENCE_NOTES "Phase 2", the authors' code): four 3x3 convolutions
n -> 32 -> 32 -> 32 -> n (padding 1, so the map keeps the slice's size), BatchNorm + ReLU after the
first three, softmax over the n maps at every pixel.

The last convolution: the authors' code also puts BatchNorm + ReLU after the fourth convolution,
just before the softmax. We leave them out by default (``final_bn_relu=False``) because a ReLU in
front of a softmax clips every negative score to 0, so wherever all n scores are negative the
weights are exactly uniform and the gradient through them is zero; and BatchNorm there makes a
pixel's weights depend on the other slices of the batch. A plain convolution gives the softmax
unclipped scores. ``final_bn_relu=True`` reproduces the authors' layer.
"""

from __future__ import annotations

import torch
from torch import nn


class AttentionNet(nn.Module):
    """Attention network A: per-pixel softmax weights over ``n_maps`` activation maps (Eq. 2).

    Args:
        n_maps: number of exit maps aggregated (4 for AME-CAM, 2 for the exits-2-and-3 ablation).
        hidden: channels of the three hidden convolutions (32 in the authors' code).
        final_bn_relu: put BatchNorm + ReLU after the last convolution too (the authors' code);
            default False (see the module docstring).

    Raises:
        ValueError: ``n_maps < 1`` or ``hidden < 1``.
    """

    def __init__(self, n_maps: int = 4, hidden: int = 32, final_bn_relu: bool = False):
        super().__init__()
        if n_maps < 1 or hidden < 1:
            raise ValueError(f"n_maps and hidden must be >= 1, got n_maps={n_maps}, hidden={hidden}")
        self.n_maps, self.hidden, self.final_bn_relu = n_maps, hidden, final_bn_relu
        widths = [n_maps, hidden, hidden, hidden]
        layers: list[nn.Module] = []
        for in_channels, out_channels in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                       nn.BatchNorm2d(out_channels), nn.ReLU()]
        layers.append(nn.Conv2d(hidden, n_maps, kernel_size=3, padding=1))
        if final_bn_relu:
            layers += [nn.BatchNorm2d(n_maps), nn.ReLU()]
        self.layers = nn.Sequential(*layers)
        # The n(.) A was trained with (EvaluationConfig.restrict_to_brain); set by
        # amecam_lib.aggregation.load_attention, None when unknown. Not part of the state dict.
        self.restrict_to_brain: bool | None = None

    def forward(self, masked_images: torch.Tensor) -> torch.Tensor:
        """Per-pixel importance of each map.

        Args:
            masked_images: ``(B, n_maps, H, W) float32``, channel i = slice x n(M_i), in [0, 1].

        Returns:
            weights S: ``(B, n_maps, H, W) float32``, each pixel's weights >= 0 and summing to 1
            over dim 1.

        Raises:
            ValueError: not 4-D or not ``n_maps`` channels.
        """
        if masked_images.ndim != 4 or masked_images.shape[1] != self.n_maps:
            raise ValueError(f"masked_images must be (B, {self.n_maps}, H, W), got {tuple(masked_images.shape)}")
        return torch.softmax(self.layers(masked_images), dim=1)
