"""``avg_me``: the plain average of the exits, no attention (paper Table 2, "Avg. ME")."""

from __future__ import annotations

import torch

from amecam_lib.cams.base import CamBatch, CamMethod
from amecam_lib.cams.exits import EXIT_MAPS
from amecam_lib.equations import average_exits


class AverageExits(CamMethod):
    """``n(mean(n(M_1), ..., n(M_4)))``, ``(B, H, W)`` (:func:`amecam_lib.equations.average_exits`)."""

    name = "avg_me"
    shared_pass = EXIT_MAPS

    def __call__(self, batch: CamBatch) -> torch.Tensor:
        return average_exits(batch.shared(EXIT_MAPS), batch.region)
