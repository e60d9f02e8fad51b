"""The exit maps of the multi-exit network, one method per exit (paper Table 3, single exits).

One forward pass of the multi-exit network gives the four activation maps M_1..M_4 at their native
resolutions; each is upsampled bilinearly to the slice size and min-max normalised, n(M_i) (over
the brain only when the batch restricts maps to the brain, :meth:`CamBatch.normalise`). That pass
(:data:`EXIT_MAPS`) is shared by every method built on the exits (``exit1``..``exit4``,
``avg_me``, ``m_f``, ``ame_cam``, ``exit2_3``): run once per batch.
"""

from __future__ import annotations

import torch

from amecam_lib.cams.base import CamBatch, CamMethod, SharedPass
from amecam_lib.models.multi_exit import N_EXITS, upsample_maps


class ExitMapsPass(SharedPass):
    """n(M_1)..n(M_4) of a batch: ``(B, 4, H, W) float32`` in [0, 1] (bilinear, then min-max over
    the slice, or over the brain with 0 outside: :meth:`CamBatch.normalise`)."""

    name = "exit maps"

    @torch.no_grad()
    def run(self, batch: CamBatch) -> torch.Tensor:
        native_maps = batch.networks.model(batch.images).maps
        return batch.normalise(upsample_maps(list(native_maps), batch.images.shape[-2:]))


EXIT_MAPS = ExitMapsPass()
"""The shared multi-exit forward pass; ``batch.shared(EXIT_MAPS)`` -> ``(B, 4, H, W)``."""


class ExitMap(CamMethod):
    """``exit<i>``: exit i's normalised map n(M_i), ``(B, H, W)``.

    Raises:
        ValueError: ``exit_index`` outside 1..4.
    """

    shared_pass = EXIT_MAPS

    def __init__(self, exit_index: int):
        if not 1 <= exit_index <= N_EXITS:
            raise ValueError(f"exit_index must be in 1..{N_EXITS}, got {exit_index}")
        self.exit_index = exit_index
        self.name = f"exit{exit_index}"

    def __call__(self, batch: CamBatch) -> torch.Tensor:
        return batch.shared(EXIT_MAPS)[:, self.exit_index - 1]
