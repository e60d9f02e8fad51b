"""Hand-set stand-ins for the trained networks, so that CAM tests know every answer by hand.

``FixedExitsNet(native_maps)``
    a "multi-exit network" whose exit maps are given tensors whatever the slice (counts its calls).
``LinearStagesNet()``
    four residual "stages" at full resolution, each a fixed 1x1 convolution, for the gradient and
    score baselines. With x the slice (one channel)::

        stages 1-3: x            stage 4: two channels [x, 1 - x]
        exits 1-3:  M_i = x      exit 4:  M_4 = ch0 - ch1 = 2x - 1,  tumour logit = mean(2x - 1)

    so d logit / d stage-4 output = (+1/HW, -1/HW) per pixel and d logit / d x = 2/HW.
``FixedWeights(n, chosen)``, ``HalfHalf()``
    stand-ins for the attention network A: all weight on one map, or 1/2 on each of two.
"""

from __future__ import annotations

import torch
from torch import nn

from amecam_lib.models.multi_exit import ExitOutput


class FixedExitsNet(nn.Module):
    def __init__(self, native_maps: list[torch.Tensor]):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))   # a parameter, so that the device can be read
        self.native_maps = [torch.as_tensor(m, dtype=torch.float32) for m in native_maps]
        self.calls = 0

    def forward(self, images: torch.Tensor) -> ExitOutput:
        self.calls += 1
        batch = images.shape[0]
        maps = [(m + self.anchor).expand(batch, 1, *m.shape) for m in self.native_maps]
        return ExitOutput(logits=torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1), maps=maps)


def _conv(weights: list[list[float]], bias: list[float]) -> nn.Conv2d:
    out_channels, in_channels = len(weights), len(weights[0])
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weights).reshape(out_channels, in_channels, 1, 1))
        conv.bias.copy_(torch.tensor(bias))
    return conv


class LinearStagesNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1, self.layer2, self.layer3 = (_conv([[1.0]], [0.0]) for _ in range(3))
        self.layer4 = _conv([[1.0], [-1.0]], [0.0, 1.0])
        self.exits = nn.ModuleList([_conv([[1.0]], [0.0]) for _ in range(3)] + [_conv([[1.0, -1.0]], [0.0])])

    @property
    def stages(self) -> tuple[nn.Module, ...]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def forward(self, images: torch.Tensor) -> ExitOutput:
        features, maps = images, []
        for stage, exit_conv in zip(self.stages, self.exits):
            features = stage(features)
            maps.append(exit_conv(features))
        return ExitOutput(logits=torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1), maps=maps)


class FixedWeights(nn.Module):
    def __init__(self, n_maps: int, chosen: int):
        super().__init__()
        self.n_maps, self.chosen = n_maps, chosen

    def forward(self, masked_images: torch.Tensor) -> torch.Tensor:
        weights = torch.zeros_like(masked_images)
        weights[:, self.chosen] = 1.0
        return weights


class HalfHalf(nn.Module):
    def forward(self, masked_images: torch.Tensor) -> torch.Tensor:
        return torch.full_like(masked_images, 0.5)
