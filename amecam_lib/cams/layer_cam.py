"""LayerCAM baselines (Jiang et al., IEEE TIP 2021): ``layer_cam`` (four stages) and ``layer_cam_last``.

Per stage, LayerCAM weights every activation by its own positive gradient,
``ReLU(sum_k ReLU(dY/dA_k) * A_k)`` (pytorch-grad-cam's ``LayerCAM``, on the exit-4 tumour logit).

``layer_cam``
    the four residual stages fused as the LayerCAM paper does: each stage's map divided by its
    maximum, the shallow stages (1-3) scaled by ``tanh(2 * map)`` (their Eq. 9, gamma = 2),
    upsampled bilinearly and fused by the element-wise maximum (:class:`PaperLayerCAM`).
``layer_cam_last``
    the last stage only, pytorch-grad-cam's ``LayerCAM`` (its formula; our min-max, see
    :class:`~amecam_lib.cams.gradient_pass.UnscaledLayers`).

Both are computed in the shared gradient pass; the maps are min-max normalised.
"""

from __future__ import annotations

import numpy as np
from pytorch_grad_cam import LayerCAM

from amecam_lib.cams.base import CamNetworks
from amecam_lib.cams.gradient_pass import GradientCamMethod, UnscaledLayers

LAYER_CAM_GAMMA = 2.0  # LayerCAM paper, Eq. 9


class UnscaledLayerCAM(UnscaledLayers, LayerCAM):
    """pytorch-grad-cam's ``LayerCAM`` without the library's own min-max (:class:`UnscaledLayers`)."""


class PaperLayerCAM(UnscaledLayerCAM):
    """pytorch-grad-cam's LayerCAM with the LayerCAM paper's multi-layer fusion.

    Per stage: ``ReLU(sum_k ReLU(grad_k) * A_k)`` (the library's ``get_cam_image``), divided by its
    maximum; shallow stages (all but the last target layer) scaled by ``tanh(gamma * map)``;
    bilinear upsampling to the input size; element-wise maximum over stages; min-max per image
    (``normalise_maps``).

    Why a subclass: the library's multi-layer step min-max normalises each layer and takes their
    *mean*, with no tanh scaling, and offers no option for the paper's fusion. We override its two
    documented extension points, ``compute_cam_per_layer`` and ``aggregate_multi_layers`` (the
    steps ``BaseCAM.forward`` calls after the forward + backward pass; :class:`UnscaledLayers`),
    and reuse everything else.
    """

    gamma = LAYER_CAM_GAMMA

    def scale_layer(self, layer_map: np.ndarray, index: int) -> np.ndarray:
        peak = layer_map.reshape(layer_map.shape[0], -1).max(axis=1)[:, None, None]
        layer_map = layer_map / np.where(peak > 0, peak, 1.0)
        return np.tanh(self.gamma * layer_map) if index < len(self.target_layers) - 1 else layer_map

    def fuse_layers(self, layer_maps: np.ndarray) -> np.ndarray:
        return layer_maps.max(axis=1)


class LayerCam(GradientCamMethod):
    """``layer_cam``: LayerCAM on the four stages with the paper's fusion, ``(B, H, W)`` in [0, 1]."""

    name = "layer_cam"

    def cam_object(self, networks: CamNetworks) -> PaperLayerCAM:
        return PaperLayerCAM(model=networks.tumour_logit, target_layers=list(networks.model.stages))


class LayerCamLast(GradientCamMethod):
    """``layer_cam_last``: LayerCAM on the last stage only, ``(B, H, W)`` in [0, 1]."""

    name = "layer_cam_last"

    def cam_object(self, networks: CamNetworks) -> UnscaledLayerCAM:
        return UnscaledLayerCAM(model=networks.tumour_logit, target_layers=list(networks.model.stages)[-1:])
