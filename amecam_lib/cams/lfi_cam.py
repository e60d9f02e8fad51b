"""``lfi_cam``: the LFI-CAM baseline of paper Table 1 (WSSS, "LFI-CAM (2021)"; Lee, Park, Oh and Kwak,
"LFI-CAM: Learning Feature Importance for Better Visual Explanation", ICCV 2021).

LFI-CAM's CAM is its network's own attention map ``A = n(ReLU(sum_k w_k F_k))``, the feature maps of
ResNet stage 3 weighted by the importance its Feature Importance Network learned
(:mod:`amecam_lib.models.lfi_cam`; trained on slice labels by :mod:`amecam_lib.baselines.lfi_cam`).
It is read in one forward pass of that network (not of the multi-exit classifier), upsampled
bilinearly to the slice and normalised like every CAM, n(.) (over the brain only, 0 outside, when
the batch restricts maps to the brain: :meth:`CamBatch.normalise`). High = what the network attends
to for its tumour decision; never flipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amecam_lib.cams.base import CamBatch, CamMethod

LFI_CAM = "lfi_cam"
"""The name of the trained network in :attr:`CamNetworks.references <amecam_lib.cams.base.CamNetworks>`."""


class LfiCam(CamMethod):
    """n(upsample(A)): LFI-CAM's attention map at the slice size, ``(B, H, W) float32`` in [0, 1].
    Raises ``ValueError`` when the networks hold no ``lfi_cam``."""

    name = "lfi_cam"
    network = LFI_CAM
    gated = False          # a classifier of its own: the multi-exit classifier's gate is not applied

    @torch.no_grad()
    def __call__(self, batch: CamBatch) -> torch.Tensor:
        attention = batch.networks.reference(LFI_CAM)(batch.images).attention
        upsampled = F.interpolate(attention.float(), size=batch.images.shape[-2:], mode="bilinear",
                                  align_corners=False)
        return batch.normalise(upsampled[:, 0])
