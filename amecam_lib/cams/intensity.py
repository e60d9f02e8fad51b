"""``intensity``: no network at all, the slice itself min-max normalised.

A sanity floor for every CAM: on FLAIR the tumour is bright, so this baseline is strong there.
"""

from __future__ import annotations

import torch

from amecam_lib.cams.base import CamBatch, CamMethod


class Intensity(CamMethod):
    """``n(I)``: the slice, min-max normalised per image (over the brain only when the batch
    restricts maps to the brain), ``(B, H, W)`` in [0, 1]."""

    name = "intensity"
    supervision = "UL"        # no network, no label: a floor, like the paper's UL row

    def __call__(self, batch: CamBatch) -> torch.Tensor:
        return batch.normalise(batch.images[:, 0])
