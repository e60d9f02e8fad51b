"""``cf_ul`` and ``cf_fsl``: C&F's Chan-Vese U-Nets (paper Table 1, "UL C&F (2020)" and "FSL C&F
(2020)"; Chen and Frey, "Medical image segmentation via unsupervised convolutional neural network",
arXiv:2001.10155, 2020).

Not CAMs: a U-Net trained on the Active Contour Without Edges energy of its own soft segmentation
(``cf_ul``, no label; trained by :mod:`amecam_lib.baselines.cf`) or on that energy plus C&F's label
term on the training patients' masks (``cf_fsl``), whose sigmoid is the map. The energy is defined
on the brain only, so the map is 0 outside the brain whatever ``restrict_to_brain`` says (the
network's output there was never trained, for ``cf_ul``). The probability is used as it is (no
min-max: that would move the 0.5 threshold, C&F's contour); the same threshold and scores as every
map follow, but not the gate by the multi-exit classifier's slice prediction (a segmenter of its
own, like ``unet_fsl``).
"""

from __future__ import annotations

import torch

from amecam_lib.cams.base import CamBatch, CamMethod
from amecam_lib.equations import brain_region

CF_UL = "cf_ul"
"""The name of the unsupervised network in :attr:`CamNetworks.references <amecam_lib.cams.base.CamNetworks>`."""
CF_FSL = "cf_fsl"
"""The name of the supervised network in :attr:`CamNetworks.references <amecam_lib.cams.base.CamNetworks>`."""


class ChanVeseUNetMap(CamMethod):
    """``sigmoid(net(I))`` times the brain (``I > 0``), ``(B, H, W)`` float32 in [0, 1], for the
    reference network :attr:`network` (its logit already oriented: tumour = high). Raises
    ``ValueError`` when the networks hold none. Not gated by the multi-exit classifier's slice
    prediction (``gated = False``, where the evaluation has that gate): a segmenter of its own."""

    gated = False

    @torch.no_grad()
    def __call__(self, batch: CamBatch) -> torch.Tensor:
        probability = torch.sigmoid(batch.networks.reference(self.network)(batch.images).float())[:, 0]
        return probability * brain_region(batch.images)[:, 0].to(probability.dtype)


class CfUl(ChanVeseUNetMap):
    """``cf_ul``: C&F trained without any label (type UL)."""

    name = "cf_ul"
    supervision = "UL"
    network = CF_UL


class CfFsl(ChanVeseUNetMap):
    """``cf_fsl``: C&F trained with the training patients' masks too (type FSL)."""

    name = "cf_fsl"
    supervision = "FSL"
    network = CF_FSL
