"""The one forward + backward pass shared by the gradient baselines (Grad-CAM, LayerCAM).

Every gradient baseline is a pytorch-grad-cam object on the exit-4 tumour logit
(:attr:`CamNetworks.tumour_logit <amecam_lib.cams.base.CamNetworks>`, target
``ClassifierOutputTarget(0)``) hooked on some of the four residual stages. They read the same stage
activations and gradients, so when several are asked for on one batch the pass runs once:

- each method's object hooks its layers (the library's constructor);
- the first object is called as documented, ``cam(input_tensor=..., targets=...)``: it runs the
  forward and backward pass, and every object's hooks record the same activations and gradients;
- the others run the library's own code after the pass, ``compute_cam_per_layer`` then
  ``aggregate_multi_layers`` (the public steps ``BaseCAM.forward`` runs), on what they recorded.

Same maps as calling each object on its own (a test checks it).

n(.) is ours, not the library's: pytorch-grad-cam min-max scales every layer's map itself
(``scale_cam_image``: ``(map - min) / (1e-7 + max - min)``, before resizing), which turns a map that
is constant up to float noise into one that spans [0, 1]; once scaled, our float-noise rule
(:func:`amecam_lib.equations.normalise_maps`) can no longer see that the map was constant. Every
pytorch-grad-cam class used here therefore goes through :class:`UnscaledLayers`: the layers' maps
are upsampled unscaled, and the only min-max is ``normalise_maps``.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from amecam_lib.cams.base import CamBatch, CamMethod, CamNetworks, SharedPass
from amecam_lib.equations import normalise_maps


class UnscaledLayers:
    """Mixin for a pytorch-grad-cam class (``class X(UnscaledLayers, GradCAM)``): the library's
    ``forward`` with its two documented extension points replaced, so that no map is min-max scaled
    by the library.

    ``compute_cam_per_layer``: per target layer, the library's ``get_cam_image`` (the method's own
    formula), ``ReLU``, :meth:`scale_layer` (identity here; the LayerCAM paper's fusion overrides it),
    upsampled bilinearly to the input size (torch, ``align_corners=False``, as the exit maps) --
    without the library's per-layer min-max. ``aggregate_multi_layers``: :meth:`fuse_layers` (the
    mean over layers here), then :func:`amecam_lib.equations.normalise_maps` (constant or
    float-noise maps -> zeros). With one target layer (Grad-CAM, LayerCAM last, Score-CAM) the map
    equals the library's up to that constant-map rule and float rounding (min-max commutes with
    bilinear resizing).
    """

    def scale_layer(self, layer_map: np.ndarray, index: int) -> np.ndarray:
        """One target layer's ``(B, h, w)`` map after ReLU, before upsampling (identity)."""
        return layer_map

    def fuse_layers(self, layer_maps: np.ndarray) -> np.ndarray:
        """``(B, L, H, W)`` upsampled layer maps -> ``(B, H, W)``: the mean over the L layers."""
        return layer_maps.mean(axis=1)

    def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
        activations_list = [a.cpu().data.numpy() for a in self.activations_and_grads.activations]
        grads_list = [g.cpu().data.numpy() for g in self.activations_and_grads.gradients]
        height, width = input_tensor.shape[-2:]
        per_layer = []
        for index, target_layer in enumerate(self.target_layers):
            layer_activations = activations_list[index] if index < len(activations_list) else None
            layer_grads = grads_list[index] if index < len(grads_list) else None   # Score-CAM: none
            layer_map = np.maximum(self.get_cam_image(input_tensor, target_layer, targets, layer_activations,
                                                      layer_grads, eigen_smooth), 0)
            layer_map = np.ascontiguousarray(self.scale_layer(layer_map, index), dtype=np.float32)
            upsampled = F.interpolate(torch.from_numpy(layer_map)[:, None], size=(height, width),
                                      mode="bilinear", align_corners=False)
            per_layer.append(upsampled.numpy())
        return per_layer

    def aggregate_multi_layers(self, cam_per_target_layer):
        fused = self.fuse_layers(np.concatenate(cam_per_target_layer, axis=1))
        return normalise_maps(torch.from_numpy(np.ascontiguousarray(fused, dtype=np.float32))).numpy()


class GradientPass(SharedPass):
    """``{method: (B, H, W) float32 in [0, 1]}`` for every gradient baseline in ``batch.methods``,
    from one forward + backward pass."""

    name = "stage activations and gradients"

    def run(self, batch: CamBatch) -> dict[GradientCamMethod, torch.Tensor]:
        members = [method for method in batch.methods if method.shared_pass is self]
        return self.compute(batch, members) if members else {}

    def compute(self, batch: CamBatch, methods: Sequence[GradientCamMethod]) -> dict[GradientCamMethod, torch.Tensor]:
        """Maps of ``methods`` from ONE forward + backward pass (see the module docstring).

        Raises:
            RuntimeError: pytorch-grad-cam failed silently (its ``__exit__`` swallows an IndexError).
        """
        networks = batch.networks
        targets = [ClassifierOutputTarget(0)] * batch.images.shape[0]
        # An input that requires grad makes the stage outputs require grad even when the
        # network's parameters are frozen (otherwise the library records no gradient).
        input_images = batch.images.detach().clone().requires_grad_(True)
        cam_maps: dict[GradientCamMethod, np.ndarray] = {}
        with torch.enable_grad(), contextlib.ExitStack() as stack:
            cam_objects = {method: stack.enter_context(method.cam_object(networks)) for method in methods}
            driver, *others = methods
            cam_maps[driver] = cam_objects[driver](input_tensor=input_images, targets=targets)
            for method in others:
                per_layer = cam_objects[method].compute_cam_per_layer(input_images, targets, False)
                cam_maps[method] = cam_objects[method].aggregate_multi_layers(per_layer)
        networks.model.zero_grad(set_to_none=True)
        missing = [method.name for method in methods if cam_maps.get(method) is None]
        if missing:
            raise RuntimeError(f"pytorch-grad-cam failed silently while computing {missing}")
        return {method: normalise_maps(torch.from_numpy(np.asarray(cam_maps[method], dtype=np.float32)))
                for method in methods}


GRADIENTS = GradientPass()
"""The shared forward + backward pass of the gradient baselines."""


class GradientCamMethod(CamMethod):
    """A baseline computed by a pytorch-grad-cam class from the stage activations and gradients.

    Subclasses implement :meth:`cam_object` (a pytorch-grad-cam class with :class:`UnscaledLayers`
    mixed in); the map is the library's formula, min-max normalised by ``normalise_maps`` (over the brain only when the batch restricts maps to the brain: min-max is invariant to a
    positive affine change, so renormalising the whole-slice map over the brain equals
    normalising the library's map over the brain).
    """

    shared_pass = GRADIENTS

    def cam_object(self, networks: CamNetworks) -> BaseCAM:
        """A pytorch-grad-cam object on ``networks.tumour_logit``, hooked on this method's stages."""
        raise NotImplementedError

    def __call__(self, batch: CamBatch) -> torch.Tensor:
        maps = batch.shared(GRADIENTS)
        if self not in maps:  # not announced in batch.methods: a pass for this method alone
            maps.update(GRADIENTS.compute(batch, [self]))
        return maps[self] if batch.region is None else batch.normalise(maps[self])
