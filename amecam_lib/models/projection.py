"""SupCon pretraining network: the multi-exit ResNet's backbone plus a projection head
(paper Sec. 3.2, "we pretrain the classifier using SupCon"; Khosla et al., NeurIPS 2020).

The projection head is the authors' ``C4 -> C4 -> ReLU -> projection_dim`` MLP (C4 = 512 for
ResNet-18). Their code projects to 256 and its first linear layer has no bias; this project's
default (``PretrainConfig.projection_dim``) is SupCon's 128, with a bias. ``PretrainConfig.mode=
"simclr_authors"`` builds the head without that bias (``hidden_bias=False``); its size is
``projection_dim`` in every mode (256 for the authors', see ``config.AUTHORS_PRETRAIN``). The head
is used only during pretraining and thrown away afterwards, so its size and bias never reach the
multi-exit network.

Weight sharing by state-dict prefix: :class:`SupConNet` keeps its encoder under ``backbone.`` --
the very same :class:`~amecam_lib.models.multi_exit.ResNetBackbone` class and prefix that
:class:`~amecam_lib.models.multi_exit.MultiExitResNet` uses -- and its head under ``head.``.
:func:`load_pretrained_backbone` copies every ``backbone.*`` tensor of a SupCon checkpoint into a
multi-exit network (strictly: every backbone tensor must match) and leaves its exits at their
random initialisation, which is what fine-tuning starts from.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from amecam_lib.models.multi_exit import MultiExitResNet, ResNetBackbone

BACKBONE_PREFIX = "backbone."


class ProjectionHead(nn.Module):
    """MLP ``in_dim -> in_dim -> ReLU -> projection_dim`` (out-of-place ReLU).

    Input ``(B, in_dim)`` pooled features; output ``(B, projection_dim)``, *not* normalised (the
    loss L2-normalises them, or not: ``supcon_loss(..., normalise=...)``).
    ``hidden_bias=False``: the first linear layer has no bias, as in the authors' code.
    """

    def __init__(self, in_dim: int = 512, projection_dim: int = 128, hidden_bias: bool = True):
        super().__init__()
        if in_dim < 1 or projection_dim < 1:
            raise ValueError(f"in_dim and projection_dim must be >= 1, got {in_dim}, {projection_dim}")
        self.layers = nn.Sequential(nn.Linear(in_dim, in_dim, bias=hidden_bias), nn.ReLU(inplace=False),
                                    nn.Linear(in_dim, projection_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class SupConNet(nn.Module):
    """Encoder (ResNet backbone, GAP) + projection head, for SupCon / SimCLR pretraining.

    Args:
        arch, norm, in_channels: as :class:`~amecam_lib.models.multi_exit.MultiExitResNet` (they
            must match the network that will be fine-tuned).
        projection_dim: output size of the projection head.
        hidden_bias: bias in the head's first linear layer (False: the authors' head).

    ``net(images (B, 1, H, W) float32 in [0, 1])`` -> projections ``(B, projection_dim) float32``.
    """

    def __init__(self, arch: str = "resnet18", norm: str = "batch", in_channels: int = 1,
                 projection_dim: int = 128, hidden_bias: bool = True):
        super().__init__()
        self.backbone = ResNetBackbone(arch, norm, in_channels)
        self.head = ProjectionHead(self.backbone.channels[-1], projection_dim, hidden_bias=hidden_bias)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled last-stage features ``(B, C_4) float32`` (the representation kept after pretraining)."""
        return self.backbone(images)[-1].mean(dim=(2, 3)).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(images)).float()


def load_pretrained_backbone(net: MultiExitResNet, pretrain_state: Mapping[str, torch.Tensor]) -> int:
    """Copy the ``backbone.*`` weights of a :class:`SupConNet` state dict into ``net``'s backbone.

    The ``head.*`` tensors are ignored, so a head of any size (``projection_dim``) or bias loads.

    Args:
        net: the multi-exit network to initialise (modified in place; exits untouched).
        pretrain_state: ``SupConNet.state_dict()`` (e.g. ``checkpoint["model"]``).

    Returns:
        the number of tensors copied.

    Raises:
        ValueError: the state dict has no ``backbone.`` entries, or its backbone does not fit
            ``net`` (other arch / norm): the missing and unexpected keys are named.
    """
    backbone_state = {key[len(BACKBONE_PREFIX):]: value for key, value in pretrain_state.items()
                      if key.startswith(BACKBONE_PREFIX)}
    if not backbone_state:
        raise ValueError("pretrain state dict holds no 'backbone.*' weights; is it a SupConNet checkpoint?")
    try:
        net.backbone.load_state_dict(backbone_state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"pretrained backbone does not fit this {net.arch}/{net.norm} network: {error}") from error
    return len(backbone_state)
