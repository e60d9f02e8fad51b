"""LFI-CAM's network: a classifier whose attention map is its CAM (Lee, Park, Oh and Kwak, "LFI-CAM:
Learning Feature Importance for Better Visual Explanation", ICCV 2021, Sec. 3; arXiv:2105.00937).
The AME-CAM paper compares against it in Table 1 (WSSS, slice labels only).

LFI-CAM's idea, written here by hand (it is the cited paper's own contribution; no library ships it)::

    F = feature extractor(I)                    (B, C, h, w)   here: ResNet stages 1-3 (C = 256 for ResNet-18)
    X_k = n(F_k) * I_hw                          (B, C, h, w)   the slice masked by each normalised feature map
    w = softmax(FIN(X))                          (B, C)         Feature Importance Network: one weight per map
    A = n(ReLU(sum_k w_k F_k))                   (B, 1, h, w)   the attention map = the CAM
    logit = perception((1 + A) * F)              (B, 1)         ABN's attention mechanism, then the classifier

``n(.)`` is a per-map min-max over the map's pixels. The Feature Importance Network learns what
Score-CAM measures with one forward pass per channel (how much the image masked by a feature map
counts), and the attention map is the importance-weighted sum of the feature maps; the whole network
is trained end to end with the classification loss only. What follows the authors' released code
where the paper leaves a choice open: the slice is brought to the feature maps' size (bilinear) and
masked there, rather than each map being upsampled to the slice (the same masked images at the
feature resolution; the FIN is a CNN over the C masked images stacked as channels); the FIN is
conv3x3-BN-conv3x3-BN-ReLU-conv3x3-BN-conv3x3-BN-ReLU then global average pooling; a feature map
that is constant over its pixels normalises to 1 where it is non-zero and 0 where it is zero; an
attention map that is constant keeps its value.

Ours (see :mod:`amecam_lib.baselines.lfi_cam` for the training): the backbone is the project's
torchvision ResNet (:class:`~amecam_lib.models.multi_exit.ResNetBackbone`, same state-dict names as
the SupCon network, so the run's pretrained encoder loads into it); the perception branch is the
ResNet's stage 4, global average pooling and one tumour logit (ABN's perception branch, on which
LFI-CAM's code is built; the released LFI-CAM code classifies ``(1 + A) * F`` with pooling and a
linear layer directly); the FIN's hidden width is a setting (``LfiCamConfig.fin_hidden``; the
authors': C).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from amecam_lib.models.multi_exit import ResNetBackbone, disable_inplace_relu

FEATURE_STAGE = 3
"""The ResNet stage whose output is LFI-CAM's feature maps F (1/16 of the slice, as the ImageNet
ResNets of LFI-CAM and ABN)."""


class LfiOutput(NamedTuple):
    """What :class:`LfiCamNet` returns.

    Attributes:
        logits: ``(B, 1) float32``, the perception branch's tumour logit.
        attention: ``(B, 1, h, w) float32`` in [0, 1], the attention map A (LFI-CAM's CAM) at the
            feature resolution (1/16 of the slice).
        weights: ``(B, C) float32``, the FIN's feature importance (softmax: positive, sum 1).
    """

    logits: torch.Tensor
    attention: torch.Tensor
    weights: torch.Tensor


def _check_maps(name: str, tensor: torch.Tensor) -> None:
    if tensor.ndim != 4:
        raise ValueError(f"{name} must be (B, C, h, w), got {tuple(tensor.shape)}")


def normalise_feature_maps(features: torch.Tensor) -> torch.Tensor:
    """LFI-CAM's n(F_k): each feature map min-max normalised over its own pixels (differentiable).

    Args:
        features: ``(B, C, h, w)`` float.

    Returns:
        ``(B, C, h, w) float32`` in [0, 1]; a map constant over its pixels gives 1 where it is
        non-zero and 0 where it is zero (the authors' code: 0/0 -> 1, zero activations -> 0).

    Raises:
        ValueError: ``features`` is not 4-D.
    """
    _check_maps("features", features)
    features = features.float()
    low = features.amin(dim=(2, 3), keepdim=True)
    span = features.amax(dim=(2, 3), keepdim=True) - low
    varying = span > 0
    normalised = (features - low) / torch.where(varying, span, torch.ones_like(span))
    return torch.where(varying, normalised, (features != 0).float())


def masked_inputs(images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The FIN's input: the slice masked by each normalised feature map, ``X_k = n(F_k) * I_hw``.

    Args:
        images: ``(B, 1, H, W)`` slices in [0, 1] (more channels are averaged to grey, as the
            authors do with RGB).
        features: ``(B, C, h, w)`` feature maps.

    Returns:
        ``(B, C, h, w) float32``: ``I_hw`` is the slice resized (bilinear, ``align_corners=False``)
        to the feature maps' ``h x w``.

    Raises:
        ValueError: either is not 4-D, or their batch sizes differ.
    """
    _check_maps("images", images)
    _check_maps("features", features)
    if images.shape[0] != features.shape[0]:
        raise ValueError(f"images and features must have the same batch size, got {images.shape[0]} "
                         f"and {features.shape[0]}")
    grey = images.float().mean(dim=1, keepdim=True)
    resized = F.interpolate(grey, size=features.shape[-2:], mode="bilinear", align_corners=False)
    return normalise_feature_maps(features) * resized


def attention_map(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """LFI-CAM's attention map: ``A = n(ReLU(sum_k w_k F_k))``, min-max over each map's pixels.

    Args:
        features: ``(B, C, h, w)`` feature maps F.
        weights: ``(B, C)`` feature importance w (any real values; the FIN gives a softmax).

    Returns:
        ``(B, 1, h, w) float32``, in [0, 1] when the weighted sum varies; a constant map keeps its
        (non-negative) value, as in the authors' code.

    Raises:
        ValueError: ``features`` is not 4-D or ``weights`` not ``(B, C)`` of the same B and C.
    """
    _check_maps("features", features)
    if weights.shape != features.shape[:2]:
        raise ValueError(f"weights must be {tuple(features.shape[:2])} (B, C) to match features, "
                         f"got {tuple(weights.shape)}")
    summed = F.relu(torch.einsum("bc,bchw->bhw", weights.float(), features.float()))[:, None]
    low = summed.amin(dim=(2, 3), keepdim=True)
    span = summed.amax(dim=(2, 3), keepdim=True) - low
    varying = span > 0
    normalised = (summed - low) / torch.where(varying, span, torch.ones_like(span))
    return torch.where(varying, normalised, summed)


class FeatureImportanceNetwork(nn.Module):
    """LFI-CAM's FIN: the C masked images -> C feature-importance weights (softmax over the maps).

    conv3x3(C -> hidden) BN conv3x3(hidden -> hidden) BN ReLU conv3x3(hidden -> hidden) BN
    conv3x3(hidden -> C) BN ReLU, global average pooling, softmax over the C outputs (the authors'
    released code; no bias before BN).

    Args:
        channels: C, the number of feature maps.
        hidden: width of the three hidden convolutions (default C, the authors').

    ``fin(masked (B, C, h, w))`` -> ``(B, C) float32`` weights, positive, summing to 1.

    Raises:
        ValueError: ``channels`` or ``hidden`` < 1.
    """

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = channels if hidden is None else int(hidden)
        if channels < 1 or hidden < 1:
            raise ValueError(f"channels and hidden must be >= 1, got {channels}, {hidden}")
        self.channels, self.hidden = int(channels), hidden

        def conv(c_in, c_out):
            return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)

        self.layers = nn.Sequential(
            conv(channels, hidden), nn.BatchNorm2d(hidden), conv(hidden, hidden), nn.BatchNorm2d(hidden), nn.ReLU(),
            conv(hidden, hidden), nn.BatchNorm2d(hidden), conv(hidden, channels), nn.BatchNorm2d(channels), nn.ReLU())

    def forward(self, masked: torch.Tensor) -> torch.Tensor:
        if masked.ndim != 4 or masked.shape[1] != self.channels:
            raise ValueError(f"masked must be (B, {self.channels}, h, w), got {tuple(masked.shape)}")
        return torch.softmax(self.layers(masked).mean(dim=(2, 3)).float(), dim=1)


class LfiCamNet(nn.Module):
    """LFI-CAM on a torchvision ResNet: feature extractor (stages 1-3), attention branch (FIN and
    the attention map), perception branch (stage 4, GAP, one tumour logit). See the module docstring.

    Args:
        arch, norm: the ResNet (:class:`~amecam_lib.models.multi_exit.ResNetBackbone`; they must match
            a SupCon checkpoint to load it).
        fin_hidden: the FIN's hidden width (None: C, the authors').

    ``net(images (B, 1, H, W) float32 in [0, 1])`` -> :class:`LfiOutput`.

    State dict: ``backbone.*`` (torchvision names, as the SupCon network: its pretrained encoder loads
    with :func:`amecam_lib.models.projection.load_pretrained_backbone`), ``fin.*``, ``classifier.*``.
    """

    def __init__(self, arch: str = "resnet18", norm: str = "batch", fin_hidden: int | None = None):
        super().__init__()
        self.backbone = ResNetBackbone(arch, norm, in_channels=1)
        channels = self.backbone.channels[FEATURE_STAGE - 1]
        self.fin = FeatureImportanceNetwork(channels, fin_hidden)
        self.classifier = nn.Linear(self.backbone.channels[-1], 1)
        disable_inplace_relu(self)

    @property
    def arch(self) -> str:
        return self.backbone.arch

    @property
    def norm(self) -> str:
        return self.backbone.norm

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The feature extractor: stem and stages 1-3 of the ResNet, ``(B, C, H/16, W/16)``.

        Raises:
            ValueError: ``images`` is not ``(B, 1, H, W)``.
        """
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be (B, 1, H, W), got {tuple(images.shape)}")
        backbone = self.backbone
        features = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(images.expand(-1, 3, -1, -1)))))
        for stage in backbone.stages[:FEATURE_STAGE]:
            features = stage(features)
        return features

    def forward(self, images: torch.Tensor) -> LfiOutput:
        features = self.features(images)
        weights = self.fin(masked_inputs(images, features))
        attention = attention_map(features, weights)
        attended = (1.0 + attention) * features                     # ABN's attention mechanism
        for stage in self.backbone.stages[FEATURE_STAGE:]:          # the perception branch
            attended = stage(attended)
        logits = self.classifier(attended.mean(dim=(2, 3)).float())
        return LfiOutput(logits=logits, attention=attention, weights=weights)
