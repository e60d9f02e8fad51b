"""``swin_mil``: paper Table 1, "Swin-MIL (2022)", type WSSS (Qian et al., "Transformer based multiple
instance learning for weakly supervised histopathology image segmentation", MICCAI 2022).

Not a CAM of the classifier: a network of its own (:class:`~amecam_lib.models.swin_mil.SwinMilNet`,
trained by :mod:`amecam_lib.baselines.swin_mil` from the training slices' labels) whose *fused
instance map* is the segmentation: the weighted sum (0.3, 0.4, 0.3) of its three side outputs, each
a sigmoid probability per pixel, so itself a probability. Swin-MIL's segmentation is
``fused >= 0.5`` (the authors' test code), which is exactly the evaluation's threshold when the map
is used **as it is**: no min-max (that would move the 0.5 decision and turn every slice's most
likely pixel into tumour), as ``unet_fsl``. With ``restrict_to_brain`` it is 0 outside the brain,
as every map.
"""

from __future__ import annotations

import torch

from amecam_lib.cams.base import CamBatch, CamMethod

SWIN_MIL = "swin_mil"
"""The name of the trained network in :attr:`CamNetworks.references <amecam_lib.cams.base.CamNetworks>`."""


class SwinMil(CamMethod):
    """Swin-MIL's fused instance probability, ``(B, H, W)`` float32 in [0, 1]; 0 outside the brain
    when the batch restricts maps to the brain. Raises ``ValueError`` when the networks hold no
    ``swin_mil``."""

    name = "swin_mil"
    supervision = "WSSS"
    network = SWIN_MIL
    gated = False          # a classifier of its own: the multi-exit classifier's gate is not applied

    @torch.no_grad()
    def __call__(self, batch: CamBatch) -> torch.Tensor:
        fused = batch.networks.reference(SWIN_MIL)(batch.images).fused.float()[:, 0]
        if batch.region is not None:
            fused = fused * batch.region[:, 0]
        return fused
