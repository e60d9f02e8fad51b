"""LayerCAM baselines (Jiang et al., IEEE TIP 2021): ``layer_cam`` (four stages) and ``layer_cam_last``.

Per stage, LayerCAM weights every activation by its own positive gradient,
``ReLU(sum_k ReLU(dY/dA_k) * A_k)`` (pytorch-grad-cam's ``LayerCAM``, on the exit-4 tumour logit).

``layer_cam``
    the four residual stages fused as the LayerCAM paper does: each stage's map divided by its
    maximum, the shallow stages (1-3) scaled by ``tanh(2 * map)`` (their Eq. 9, gamma = 2),
    upsampled bilinearly and fused by the element-wise maximum (:class:`PaperLayerCAM`).
``layer_cam_last``
    the last stage only, pytorch-grad-cam's ``LayerCAM`` as it is.

Both are computed in the shared gradient pass; the maps are min-max normalised.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import LayerCAM

from amecam_lib.cams.base import CamNetworks
from amecam_lib.cams.gradient_pass import GradientCamMethod
from amecam_lib.equations import normalise_maps

LAYER_CAM_GAMMA = 2.0  # LayerCAM paper, Eq. 9


class PaperLayerCAM(LayerCAM):
    """pytorch-grad-cam's LayerCAM with the LayerCAM paper's multi-layer fusion.

    Per stage: ``ReLU(sum_k ReLU(grad_k) * A_k)`` (the library's ``get_cam_image``), divided by its
    maximum; shallow stages (all but the last target layer) scaled by ``tanh(gamma * map)``;
    bilinear upsampling to the input size; element-wise maximum over stages; min-max per image.

    Why a subclass: the library's multi-layer step min-max normalises each layer and takes their
    *mean*, with no tanh scaling, and offers no option for the paper's fusion. We override its two
    documented extension points, ``compute_cam_per_layer`` and ``aggregate_multi_layers`` (the
    steps ``BaseCAM.forward`` calls after the forward + backward pass), and reuse everything else.
    """

    gamma = LAYER_CAM_GAMMA

    def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
        activations_list = [a.cpu().data.numpy() for a in self.activations_and_grads.activations]
        grads_list = [g.cpu().data.numpy() for g in self.activations_and_grads.gradients]
        height, width = input_tensor.shape[-2:]
        per_layer = []
        last = len(self.target_layers) - 1
        for index, target_layer in enumerate(self.target_layers):
            cam = np.maximum(self.get_cam_image(input_tensor, target_layer, targets, activations_list[index],
                                                grads_list[index], eigen_smooth), 0)
            peak = cam.reshape(cam.shape[0], -1).max(axis=1)[:, None, None]
            cam = cam / np.where(peak > 0, peak, 1.0)
            if index < last:
                cam = np.tanh(self.gamma * cam)
            upsampled = F.interpolate(torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[:, None],
                                      size=(height, width), mode="bilinear", align_corners=False)
            per_layer.append(upsampled.numpy())
        return per_layer

    def aggregate_multi_layers(self, cam_per_target_layer):
        fused = np.max(np.concatenate(cam_per_target_layer, axis=1), axis=1)
        return normalise_maps(torch.from_numpy(fused)).numpy()


class LayerCam(GradientCamMethod):
    """``layer_cam``: LayerCAM on the four stages with the paper's fusion, ``(B, H, W)`` in [0, 1]."""

    name = "layer_cam"

    def cam_object(self, networks: CamNetworks) -> PaperLayerCAM:
        return PaperLayerCAM(model=networks.tumour_logit, target_layers=list(networks.model.stages))


class LayerCamLast(GradientCamMethod):
    """``layer_cam_last``: LayerCAM on the last stage only, ``(B, H, W)`` in [0, 1]."""

    name = "layer_cam_last"

    def cam_object(self, networks: CamNetworks) -> LayerCAM:
        return LayerCAM(model=networks.tumour_logit, target_layers=list(networks.model.stages)[-1:])
