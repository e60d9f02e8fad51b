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
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from amecam_lib.cams.base import CamBatch, CamMethod, CamNetworks, SharedPass
from amecam_lib.equations import normalise_maps


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

    Subclasses implement :meth:`cam_object`; the map is the library's output, min-max normalised
    (over the brain only when the batch restricts maps to the brain: min-max is invariant to a
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
