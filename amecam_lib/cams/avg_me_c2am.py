"""``avg_me_c2am``: paper Table 2, "Avg. ME + C2AM": the average of the exit maps refined by C2AM's
class-agnostic activation map (Xie et al., CVPR 2022).

What is C2AM's:

- the class-agnostic map ``P`` itself: a disentangler (3x3 conv + BN + sigmoid) on backbone
  features, trained with C2AM's contrastive loss (paper Eq. 3, SimMin + SimMax with rank weights)
  on unlabelled slices, its polarity fixed by C2AM's border rule
  (:mod:`amecam_lib.models.c2am_head`, trained by :mod:`amecam_lib.baselines.c2am_refine`);
- how it refines a CAM: C2AM turns ``P`` into *background cues*, ``1 - P``, and a pixel is
  foreground when its CAM score beats its background cue (C2AM's WSSS evaluation takes the arg max
  over ``[1 - P, CAM]``).

What is ours (the smallest version that runs on this project's networks): the CAM is ``avg_me``
(n(mean n(M_i)), Table 2's "Avg. ME"); the backbone is the frozen multi-exit classifier (C2AM
fine-tunes its backbone too); and the arg max is written as one map, so that it goes through the
evaluation's threshold like every other method::

    refined = (avg_me + P) / 2          refined >= 0.5  <=>  avg_me >= 1 - P

(0 outside the brain when the batch restricts maps to the brain). No min-max after the mean:
that would move the decision. The paper reports that this refinement *hurt* (T1 Dice 0.617 ->
0.484) because C2AM's map separates brain from air rather than tumour from brain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amecam_lib.cams.base import CamBatch, CamMethod
from amecam_lib.cams.exits import EXIT_MAPS
from amecam_lib.equations import average_exits
from amecam_lib.models.c2am_head import head_features

C2AM_HEAD = "c2am_head"
"""The name of the trained head in :attr:`CamNetworks.references <amecam_lib.cams.base.CamNetworks>`."""


def class_agnostic_map(batch: CamBatch) -> torch.Tensor:
    """C2AM's foreground map ``P`` of the batch's slices, upsampled (bilinear) to the slice size:
    ``(B, H, W) float32`` in [0, 1]."""
    head = batch.networks.reference(C2AM_HEAD)
    features = head_features(batch.networks.model.feature_maps(batch.images))
    activation = head(features)
    return F.interpolate(activation, size=batch.images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


class AverageExitsC2am(CamMethod):
    """``(avg_me + P) / 2``, ``(B, H, W)`` in [0, 1] (see the module docstring). Raises
    ``ValueError`` when the networks hold no ``c2am_head``."""

    name = "avg_me_c2am"
    shared_pass = EXIT_MAPS
    network = C2AM_HEAD

    @torch.no_grad()
    def __call__(self, batch: CamBatch) -> torch.Tensor:
        average = average_exits(batch.shared(EXIT_MAPS), batch.region)
        refined = (average + class_agnostic_map(batch).clamp(0.0, 1.0)) / 2.0
        if batch.region is not None:
            refined = refined * batch.region[:, 0]
        return refined
