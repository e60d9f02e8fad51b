"""``grad_cam``: Grad-CAM (Selvaraju et al., ICCV 2017) on the last residual stage, a baseline.

pytorch-grad-cam's ``GradCAM`` on the exit-4 tumour logit: each channel k of the last stage's
activations A_k is weighted by its gradient averaged over the pixels, ``ReLU(sum_k w_k A_k)``,
upsampled to the slice size; then min-max normalised. Computed in the shared gradient pass.
"""

from __future__ import annotations

from pytorch_grad_cam import GradCAM

from amecam_lib.cams.base import CamNetworks
from amecam_lib.cams.gradient_pass import GradientCamMethod, UnscaledLayers


class UnscaledGradCAM(UnscaledLayers, GradCAM):
    """pytorch-grad-cam's ``GradCAM`` without the library's own min-max (:class:`UnscaledLayers`)."""


class GradCam(GradientCamMethod):
    """Grad-CAM on the last stage, ``(B, H, W)`` in [0, 1]."""

    name = "grad_cam"

    def cam_object(self, networks: CamNetworks) -> UnscaledGradCAM:
        return UnscaledGradCAM(model=networks.tumour_logit, target_layers=list(networks.model.stages)[-1:])
