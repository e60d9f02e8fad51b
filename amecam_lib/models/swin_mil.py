"""Swin-MIL's network (Qian, Li, Lai, Chang, Wei, Fan and Xu, "Transformer based multiple instance
learning for weakly supervised histopathology image segmentation", MICCAI 2022, Sec. 2; the
authors' code: github.com/Nexuslkl/Swin_MIL, ``models/swin_mil.py``), used by the ``swin_mil``
row of paper Table 1 (AME-CAM, "Swin-MIL (2022)", type WSSS).

A slice is a *bag*, its pixels the *instances*. A Swin Transformer encodes the slice; the output
of each of its first three stages (4, 8 and 16 px per token) goes through its own *side output*:
a 1 x 1 convolution to one channel, bilinear upsampling to the slice and a sigmoid, i.e. a
probability of tumour per pixel (the instance scores). The *fused* map is a fixed convex
combination of the three side outputs (the authors' weights 0.3, 0.4, 0.3), so it is a probability
too, and the segmentation is ``fused >= 0.5``. Training (deep supervision) pools every side output
and the fused map into a bag score with the generalised mean and compares each with the slice
label (:mod:`amecam_lib.losses.mil`).

What is timm's and what is ours:

- timm's public building blocks (``timm.layers.PatchEmbed``,
  ``timm.models.swin_transformer.SwinTransformerStage``: window attention, shifted windows, patch
  merging), with random initial weights: **no pretrained weights** (the authors start from
  ImageNet's Swin-T; there is no ImageNet model for one grey MRI channel, and the project trains
  every network from its own slices). ``dynamic_mask=True`` and ``always_partition=True``: the
  shifted-window mask is computed for the size of each input and the windows keep their size, so
  the network runs on any slice size.
- written by hand (Swin-MIL's own idea): the side outputs, the fusion, and in
  :mod:`amecam_lib.losses.mil` the MIL pooling and the deep-supervision loss. The per-stage
  LayerNorm before each side output is that of the Swin backbone the authors use for dense outputs
  (one norm per output stage).
- sizes: timm's blocks would pad each stage to whole windows themselves, but their cached
  shifted-window mask assumes the padding sits after the wrap-around, so we pad the *slice*
  instead, with zeros (air, as the MRI background) at the bottom and right, to a multiple of
  :attr:`SwinMilNet.multiple` (``patch_size * 2 ** (stages - 1) * window_size``): every stage then
  holds whole windows. The maps are cropped back to the slice.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SwinMilOutput(NamedTuple):
    """What :class:`SwinMilNet` returns.

    Attributes:
        sides: ``(B, S, H, W) float32`` in [0, 1]: the side outputs (instance probabilities), one
            per stage, at the slice size.
        fused: ``(B, 1, H, W) float32`` in [0, 1]: their weighted sum with ``side_weights``.
    """

    sides: torch.Tensor
    fused: torch.Tensor


def check_side_weights(side_weights: Sequence[float], stages: int) -> tuple[float, ...]:
    """The fusion weights as a tuple, checked: one per stage, each >= 0, summing to 1 (so the fused
    map of probabilities is a probability and 0.5 stays the decision).

    Raises:
        ValueError: naming ``side_weights``.
    """
    weights = tuple(float(w) for w in side_weights)
    if len(weights) != stages or any(w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"side_weights must be {stages} non-negative numbers summing to 1 (one per stage), "
                         f"got {side_weights}")
    return weights


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, H', W')``, zeros added at the bottom and right so that H' and
    W' are the smallest multiples of ``multiple`` >= H, W (unchanged when they already are)."""
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h))


class SwinMilNet(nn.Module):
    """Swin-MIL: a Swin Transformer (timm blocks, random weights), a side output per stage, their
    fusion (see the module docstring). ``(B, 1, H, W)`` slices in [0, 1] (any H, W) ->
    :class:`SwinMilOutput`.

    Args:
        embed_dim: channels of stage 1 (doubled by each later stage); Swin-T: 96.
        depths: Swin blocks per stage; one side output per stage. Swin-MIL: Swin-T's first
            three stages, (2, 2, 6).
        num_heads: attention heads per stage; Swin-T: (3, 6, 12).
        window_size: side of the attention windows, in tokens; Swin-T: 7.
        patch_size: pixels per token side in stage 1; Swin-T: 4.
        mlp_ratio: hidden width of the blocks' MLP over ``dim``; Swin-T: 4.
        side_weights: fusion weights, one per stage, non-negative, sum 1; the authors' (0.3, 0.4, 0.3).

    Raises:
        ValueError: ``depths`` / ``num_heads`` / ``side_weights`` of different lengths, a
            non-positive size, weights not summing to 1 (each naming the parameter).
    """

    def __init__(self, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6), num_heads: Sequence[int] = (3, 6, 12),
                 window_size: int = 7, patch_size: int = 4, mlp_ratio: float = 4.0,
                 side_weights: Sequence[float] = (0.3, 0.4, 0.3)):
        super().__init__()
        from timm.layers import PatchEmbed
        from timm.models.swin_transformer import SwinTransformerStage

        depths, num_heads = tuple(int(d) for d in depths), tuple(int(h) for h in num_heads)
        if not depths or len(num_heads) != len(depths):
            raise ValueError(f"depths and num_heads need one entry per stage, got depths={depths}, "
                             f"num_heads={num_heads}")
        for name, value in (("embed_dim", embed_dim), ("window_size", window_size), ("patch_size", patch_size),
                            ("depths", min(depths)), ("num_heads", min(num_heads))):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.side_weights = check_side_weights(side_weights, len(depths))
        self.patch_size, self.window_size = int(patch_size), int(window_size)
        self.multiple = self.patch_size * 2 ** (len(depths) - 1) * self.window_size
        """Slices are padded to a multiple of this many pixels: every stage holds whole windows."""
        self.patch_embed = PatchEmbed(img_size=None, patch_size=self.patch_size, in_chans=1, embed_dim=int(embed_dim),
                                      norm_layer=nn.LayerNorm, output_fmt="NHWC", strict_img_size=False)
        dims = [int(embed_dim) * 2 ** stage for stage in range(len(depths))]
        nominal = self.window_size * 2 ** (len(depths) - 1)      # a grid of whole windows; the mask is dynamic
        self.stages = nn.ModuleList(
            SwinTransformerStage(dim=dims[max(stage - 1, 0)], out_dim=dims[stage],
                                 input_resolution=(nominal // 2 ** max(stage - 1, 0),) * 2,
                                 depth=depths[stage], downsample=stage > 0, num_heads=num_heads[stage],
                                 window_size=self.window_size, always_partition=True, dynamic_mask=True,
                                 mlp_ratio=float(mlp_ratio))
            for stage in range(len(depths)))
        # Swin-MIL's side outputs (ours, the paper's idea): LayerNorm + 1 x 1 conv to one channel per stage.
        self.side_norms = nn.ModuleList(nn.LayerNorm(dim) for dim in dims)
        self.side_convs = nn.ModuleList(nn.Conv2d(dim, 1, kernel_size=1) for dim in dims)
        for conv in self.side_convs:                              # the authors' init of the side convs
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def side_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The side outputs before the sigmoid: ``(B, S, H, W)`` logits at the slice size (each
        stage's 1 x 1 conv, bilinearly upsampled to the padded slice, then cropped)."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be (B, 1, H, W), got shape {tuple(images.shape)}")
        height, width = images.shape[-2:]
        padded = pad_to_multiple(images.float(), self.multiple)
        tokens = self.patch_embed(padded)                          # (B, H'/p, W'/p, C), NHWC
        sides = []
        for stage, norm, conv in zip(self.stages, self.side_norms, self.side_convs):
            tokens = stage(tokens)
            side = conv(norm(tokens).permute(0, 3, 1, 2))
            sides.append(F.interpolate(side, size=padded.shape[-2:], mode="bilinear", align_corners=False))
        return torch.cat(sides, dim=1)[..., :height, :width]

    def forward(self, images: torch.Tensor) -> SwinMilOutput:
        sides = torch.sigmoid(self.side_logits(images).float())
        weights = sides.new_tensor(self.side_weights).view(1, -1, 1, 1)
        return SwinMilOutput(sides, (sides * weights).sum(dim=1, keepdim=True))
