"""C2AM's class-agnostic activation head (Xie et al., "C2AM: Contrastive learning of class-agnostic
activation map for weakly supervised object localization and semantic segmentation", CVPR 2022),
used by the ``avg_me_c2am`` row (paper Table 2, "Avg. ME + C2AM").

C2AM puts a *disentangler* on backbone features: one 3x3 convolution to a single channel, batch
normalisation and a sigmoid give a class-agnostic map ``P`` (B, 1, h, w) in [0, 1]; the features
averaged under ``P`` and under ``1 - P`` are the foreground and background representations that
the contrastive loss (paper Eq. 3, :func:`amecam_lib.losses.c2am.c2am_loss`) pulls apart. C2AM's
features are a ResNet's last two stages concatenated; here the frozen multi-exit classifier's
stages 3 and 4 (stage 4 upsampled bilinearly to stage 3's grid, :func:`head_features`).

The map has no built-in polarity: Eq. 3 is symmetric in foreground and background, so training
may make ``P`` high on either side. C2AM fixes it after the fact: a map whose border (the image
frame, mostly background) is on average above 0.5 is flipped. :attr:`ClassAgnosticHead.flip`
holds that decision (a buffer, saved with the weights).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

HEAD_STAGES: tuple[int, ...] = (3, 4)
"""The classifier stages (1-based) whose features the head reads, as C2AM's last two stages."""


def head_features(stage_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """The head's input: stages 3 and 4 of the classifier, stage 4 upsampled (bilinear) to stage 3's
    grid and concatenated: ``(B, C_3 + C_4, h_3, w_3)`` (768 channels for ResNet-18).

    Args:
        stage_features: the four stage outputs ``[(B, C_k, h_k, w_k)]``
            (:meth:`~amecam_lib.models.multi_exit.MultiExitResNet.feature_maps`).
    """
    stage3, stage4 = (stage_features[index - 1].float() for index in HEAD_STAGES)
    upsampled = F.interpolate(stage4, size=stage3.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([stage3, upsampled], dim=1)


class ClassAgnosticHead(nn.Module):
    """C2AM's disentangler: ``P = sigmoid(BN(conv3x3(features)))``, flipped to ``1 - P`` when
    :attr:`flip` is set.

    Args:
        in_channels: channels of :func:`head_features` (768 for ResNet-18).

    Attributes:
        flip: 0-d bool buffer, the polarity decided after training (:func:`border_mean`).
    """

    def __init__(self, in_channels: int = 256 + 512):
        super().__init__()
        self.in_channels = int(in_channels)
        self.activation_head = nn.Conv2d(in_channels, 1, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(1)
        self.register_buffer("flip", torch.tensor(False))

    def raw_map(self, features: torch.Tensor) -> torch.Tensor:
        """``P`` before the polarity flip: ``(B, 1, h, w)`` in [0, 1]."""
        return torch.sigmoid(self.norm(self.activation_head(features)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The class-agnostic foreground map: ``(B, 1, h, w) float32`` in [0, 1]."""
        activation = self.raw_map(features)
        return 1.0 - activation if bool(self.flip) else activation


def pooled_features(features: torch.Tensor, activation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """C2AM's foreground and background representations: the features averaged over the grid,
    weighted by ``P`` and by ``1 - P`` (sum divided by the number of cells, as C2AM).

    Args:
        features: ``(B, C, h, w)``; activation: ``(B, 1, h, w)`` in [0, 1].

    Returns:
        ``(fg, bg)``, each ``(B, C)``.
    """
    cells = features.shape[-2] * features.shape[-1]
    return ((activation * features).sum(dim=(2, 3)) / cells,
            ((1.0 - activation) * features).sum(dim=(2, 3)) / cells)


def border_mean(activation: torch.Tensor) -> float:
    """Mean of ``(B, 1, h, w)`` maps over their outermost ring of cells (C2AM's polarity test: above
    0.5, the map is high on the image frame, i.e. on background, and is flipped)."""
    ring = torch.ones(activation.shape[-2:], dtype=torch.bool, device=activation.device)
    ring[1:-1, 1:-1] = False
    return float(activation[..., ring].mean())
