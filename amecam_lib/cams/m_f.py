"""``m_f``: the aggregated map M_f alone (paper Eq. 2), the part of AME-CAM that A decides.

The final CAM, ``n(mean(n(M_1), ..., n(M_4), M_f))``, has five parts and only M_f depends on the
attention network A; with uniform weights it equals ``avg_me`` exactly, and whatever A learns
moves it by at most 1/5 before the last normalisation. Scored on its own, M_f shows what A did::

    S, M_f = fuse(I, n(M_i), A)      (Eq. 2, amecam_lib.equations.fuse; A over exits 1-4)
    m_f    = n(M_f)                  (normalised like every other map, then thresholded alike)

``m_f`` uses the same attention network as ``ame_cam`` (trained by ``train_attention``).
"""

from __future__ import annotations

import torch

from amecam_lib.cams.ame_cam import ALL_EXITS
from amecam_lib.cams.base import CamBatch, CamMethod
from amecam_lib.cams.exits import EXIT_MAPS
from amecam_lib.equations import fuse


class FusedMap(CamMethod):
    """``m_f``: ``n(M_f)`` with A over exits 1-4, ``(B, H, W) float32`` in [0, 1].

    Calling it raises ``ValueError`` when the networks hold no attention network over exits 1-4,
    or one trained with the other n(.) (``EvaluationConfig.restrict_to_brain``).
    """

    name = "m_f"
    shared_pass = EXIT_MAPS
    exits: tuple[int, ...] = ALL_EXITS

    @torch.no_grad()
    def __call__(self, batch: CamBatch) -> torch.Tensor:
        exit_maps = batch.shared(EXIT_MAPS)
        _, fused_map = fuse(batch.images, exit_maps, batch.attention(self.exits))
        return batch.normalise(fused_map[:, 0])
