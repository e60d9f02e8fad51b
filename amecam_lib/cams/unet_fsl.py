"""``unet_fsl``: the fully supervised ceiling (paper Table 1, "FSL, Opt. U-net"; Futrega et al.,
"Optimized U-Net for brain tumor segmentation", arXiv:2110.03352, 2021).

Not a CAM: a U-Net (MONAI's ``BasicUNet``, trained by :mod:`amecam_lib.baselines.unet_fsl` on the
training patients' whole-tumour masks) whose sigmoid output is the map. It goes through the same
threshold (0.5, i.e. logit >= 0) and scores as every CAM, so its row is the ceiling the weakly
supervised rows are read against; the evaluation's gate by the multi-exit classifier
(``gate_by_prediction``) is not applied to it (:attr:`~amecam_lib.cams.base.CamMethod.gated`): a
reference that inherits the weak classifier's misses is no longer the fully supervised ceiling. Its probability is used as it is (no min-max: that would
move the 0.5 threshold); with ``restrict_to_brain`` it is 0 outside the brain, as every map.
"""

from __future__ import annotations

import torch

from amecam_lib.cams.base import CamBatch, CamMethod

UNET_FSL = "unet_fsl"
"""The name of the trained network in :attr:`CamNetworks.references <amecam_lib.cams.base.CamNetworks>`."""


class UnetFsl(CamMethod):
    """``sigmoid(U-Net(I))``, ``(B, H, W)`` in [0, 1]; 0 outside the brain when the batch restricts
    maps to the brain. Raises ``ValueError`` when the networks hold no ``unet_fsl``."""

    name = "unet_fsl"
    supervision = "FSL"
    network = UNET_FSL
    gated = False          # its own segmenter: the weakly supervised classifier's gate is not applied

    @torch.no_grad()
    def __call__(self, batch: CamBatch) -> torch.Tensor:
        probability = torch.sigmoid(batch.networks.reference(UNET_FSL)(batch.images).float())[:, 0]
        if batch.region is not None:
            probability = probability * batch.region[:, 0]
        return probability
