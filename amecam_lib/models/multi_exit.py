"""The multi-exit ResNet of AME-CAM's activation-extraction phase (paper Sec. 2, Fig. 1, Eq. 1).

A torchvision ResNet (ResNet-18 in the paper; any torchvision ResNet through ``arch``) gets one
*internal classifier* after each of its four residual stages: a 1x1 convolution from the stage's
C_i channels to one channel (with bias). Its output is the activation map M_i of exit i, and the
global average of M_i, GAP(M_i), is exit i's tumour logit. Deeper exits see coarser maps::

    input 240 x 240 -> M_1 60 x 60, M_2 30 x 30, M_3 15 x 15, M_4 8 x 8   (ResNet-18: C = 64/128/256/512)
    input 160 x 192 -> M_1 40 x 48, M_2 20 x 24, M_3 10 x 12, M_4 5 x 6   (the demo preset's crop)
    input  64 x 77  -> M_1 16 x 20, M_2  8 x 10, M_3  4 x 5,  M_4 2 x 3   (the smoke preset's)

A grey MRI slice ``(B, 1, H, W)`` is repeated to three channels inside the network, so that
ImageNet weights could be loaded into :attr:`MultiExitResNet.backbone` by a user (nothing is
downloaded here: ``weights=None``). Every ReLU is out-of-place, because in-place ReLUs break the
backward hooks that gradient-based CAM libraries (pytorch-grad-cam) put on the stages.

State-dict layout (shared with :class:`amecam_lib.models.projection.SupConNet`)::

    backbone.conv1 / backbone.bn1 / backbone.layer1..layer4   torchvision names, no ``fc``
    exits.0 .. exits.3                                          the four 1x1 exit convolutions
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tv_models

NORMS = ("batch", "instance")
N_EXITS = 4


class ExitOutput(NamedTuple):
    """What :class:`MultiExitResNet` returns.

    Attributes:
        logits: ``(B, 4) float32``, exit i's tumour logit GAP(M_i) in column i - 1 (shallow to deep).
        maps: four activation maps M_1..M_4, each ``(B, 1, h_i, w_i) float32`` (unbounded logits
            per pixel; ``h_i = S / 4, S / 8, S / 16, S / 32`` rounded up).
    """

    logits: torch.Tensor
    maps: list[torch.Tensor]


def _norm_layer(norm: str):
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "instance":
        # The authors' code: InstanceNorm without learnable affine parameters.
        return functools.partial(nn.InstanceNorm2d, affine=False)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def disable_inplace_relu(module: nn.Module) -> nn.Module:
    """Set ``inplace=False`` on every ``nn.ReLU`` inside ``module`` (returned for chaining).

    torchvision's ResNets use in-place ReLUs; pytorch-grad-cam's backward hooks fail on them."""
    for child in module.modules():
        if isinstance(child, nn.ReLU):
            child.inplace = False
    return module


class ResNetBackbone(nn.Module):
    """The convolutional part of a torchvision ResNet: stem and four residual stages, no ``fc``.

    Args:
        arch: a torchvision ResNet builder name (``"resnet18"``, ``"resnet34"``, ``"resnet50"``...).
        norm: ``"batch"`` (BatchNorm2d) or ``"instance"`` (InstanceNorm2d, affine=False, the
            authors' code).
        in_channels: 1 (grey slice, repeated to 3 channels in :meth:`forward`) or 3.

    Attributes:
        channels: output channels of the four stages (``(64, 128, 256, 512)`` for ResNet-18,
            ``(256, 512, 1024, 2048)`` for ResNet-50), read from the built stages.

    Raises:
        ValueError: unknown ``arch`` or ``norm``, or ``in_channels`` not 1 or 3.
    """

    def __init__(self, arch: str = "resnet18", norm: str = "batch", in_channels: int = 1):
        super().__init__()
        builder = getattr(tv_models, arch, None) if arch.startswith("resnet") else None
        if builder is None:
            raise ValueError(f"arch must name a torchvision ResNet (e.g. 'resnet18', 'resnet50'), got {arch!r}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey, repeated to 3) or 3, got {in_channels}")
        resnet = builder(weights=None, norm_layer=_norm_layer(norm))
        self.arch, self.norm, self.in_channels = arch, norm, in_channels
        # Same attribute names as torchvision, so that its state dict (minus fc) loads unchanged.
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        disable_inplace_relu(self)
        self.channels: tuple[int, ...] = tuple(
            [m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels for stage in self.stages)

    @property
    def stages(self) -> tuple[nn.Module, ...]:
        """The four residual stages (``layer1..layer4``), e.g. as CAM target layers."""
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs of a batch of slices.

        Args:
            images: ``(B, in_channels, H, W) float32``, intensities in [0, 1].

        Returns:
            four tensors ``(B, C_i, h_i, w_i)``, stages 1..4.

        Raises:
            ValueError: ``images`` is not 4-D with ``in_channels`` channels.
        """
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"images must be (B, {self.in_channels}, H, W), got {tuple(images.shape)}")
        if self.in_channels == 1:
            images = images.expand(-1, 3, -1, -1)
        features = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        stage_outputs = []
        for stage in self.stages:
            features = stage(features)
            stage_outputs.append(features)
        return stage_outputs


class MultiExitResNet(nn.Module):
    """ResNet with one internal classifier (exit) after each residual stage (paper Sec. 2).

    Args:
        arch, norm, in_channels: see :class:`ResNetBackbone`.

    Calling the network on ``images (B, 1, H, W) float32 in [0, 1]`` returns an :class:`ExitOutput`.
    """

    def __init__(self, arch: str = "resnet18", norm: str = "batch", in_channels: int = 1):
        super().__init__()
        self.backbone = ResNetBackbone(arch, norm, in_channels)
        self.exits = nn.ModuleList(nn.Conv2d(channels, 1, kernel_size=1, bias=True)
                                   for channels in self.backbone.channels)

    @property
    def arch(self) -> str:
        return self.backbone.arch

    @property
    def norm(self) -> str:
        return self.backbone.norm

    @property
    def stages(self) -> tuple[nn.Module, ...]:
        """The four residual stages of the backbone (targets for Grad-CAM / LayerCAM)."""
        return self.backbone.stages

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The four stage outputs ``(B, C_i, h_i, w_i)`` for ``images (B, 1, H, W)``."""
        return self.backbone(images)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled last-stage features ``(B, C_4) float32`` (512 for ResNet-18): the representation
        that SupCon pretrains."""
        return self.backbone(images)[-1].mean(dim=(2, 3)).float()

    def forward(self, images: torch.Tensor) -> ExitOutput:
        """Exit maps and exit logits of a batch (paper Eq. 1: logit_i = GAP(M_i)).

        Args:
            images: ``(B, 1, H, W) float32`` slices in [0, 1].

        Returns:
            :class:`ExitOutput` with ``logits (B, 4) float32`` and ``maps`` 4 x ``(B, 1, h_i, w_i)``.
        """
        exit_maps = [exit_conv(stage_output).float()
                     for exit_conv, stage_output in zip(self.exits, self.backbone(images))]
        exit_logits = torch.cat([exit_map.mean(dim=(2, 3)) for exit_map in exit_maps], dim=1)
        return ExitOutput(logits=exit_logits, maps=exit_maps)


class ExitLogit(nn.Module):
    """Wraps a :class:`MultiExitResNet` so that it returns one exit's tumour logit ``(B, 1)``.

    pytorch-grad-cam expects a model that returns class scores; use it with
    ``ClassifierOutputTarget(0)`` (the tumour logit). ``exit_index`` counts from 1 (shallow) to 4
    (deep, the usual classifier output).

    Raises:
        ValueError: ``exit_index`` outside 1..4.
    """

    def __init__(self, net: MultiExitResNet, exit_index: int = N_EXITS):
        super().__init__()
        if not 1 <= exit_index <= N_EXITS:
            raise ValueError(f"exit_index must be in 1..{N_EXITS}, got {exit_index}")
        self.net, self.exit_index = net, exit_index

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).logits[:, self.exit_index - 1:self.exit_index]


def upsample_maps(exit_maps: Sequence[torch.Tensor], size: int | tuple[int, int]) -> torch.Tensor:
    """Bring exit maps to the input resolution (paper Sec. 2: maps are upsampled bilinearly).

    Args:
        exit_maps: ``n`` tensors ``(B, 1, h_i, w_i)`` (e.g. :attr:`ExitOutput.maps`).
        size: output side ``S`` in pixels, or ``(H, W)``.

    Returns:
        ``(B, n, H, W) float32``, bilinear, ``align_corners=False``, values not normalised.

    Raises:
        ValueError: empty list, a map that is not ``(B, 1, h, w)``, or batch sizes that differ.
    """
    if len(exit_maps) == 0:
        raise ValueError("exit_maps is empty")
    out_size = (size, size) if isinstance(size, int) else tuple(size)
    batch = exit_maps[0].shape[0]
    for index, exit_map in enumerate(exit_maps):
        if exit_map.ndim != 4 or exit_map.shape[1] != 1 or exit_map.shape[0] != batch:
            raise ValueError(f"exit map {index + 1} must be ({batch}, 1, h, w), got {tuple(exit_map.shape)}")
    return torch.cat([F.interpolate(exit_map.float(), size=out_size, mode="bilinear", align_corners=False)
                      for exit_map in exit_maps], dim=1)
