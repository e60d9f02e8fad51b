"""AME-CAM's final map (paper Sec. 2 end): ``ame_cam`` on exits 1-4 and the ablation ``exit2_3``.

For the selected exits, with their own trained attention network A::

    S, M_f = fuse(I, n(M_i), A)                 (Eq. 2, amecam_lib.equations.fuse)
    final  = n(mean(n(M_i) ..., M_f))           (amecam_lib.equations.final_cam)

(n(.) over the brain only, 0 outside, when the batch restricts maps to the brain.) M_f alone is
the method ``m_f`` (:mod:`amecam_lib.cams.m_f`).

``exit2_3`` is Table 3's "M2 + M3": the same on exits 2 and 3 only, with a second attention
network trained on those two exits (``train_attention(exits=(2, 3))``). ``ame_cam_crf`` is the
``ame_cam`` map itself (the evaluation turns it into a mask with DenseCRF).
"""

from __future__ import annotations

from typing import Sequence

import torch

from amecam_lib.cams.base import CamBatch, CamMethod
from amecam_lib.cams.exits import EXIT_MAPS
from amecam_lib.equations import final_cam, fuse

ALL_EXITS: tuple[int, ...] = (1, 2, 3, 4)
EXITS_2_3: tuple[int, ...] = (2, 3)


class AmeCam(CamMethod):
    """The final CAM over ``exits``, with the attention network trained on those exits.

    Args:
        name: the method's name (``"ame_cam"``, ``"exit2_3"``).
        exits: 1-based exits, sorted (the key of the attention network in
            :attr:`CamNetworks.attentions <amecam_lib.cams.base.CamNetworks>`).

    Calling it raises ``ValueError`` when the networks hold no attention network over ``exits``.
    """

    shared_pass = EXIT_MAPS

    def __init__(self, name: str, exits: Sequence[int]):
        self.name = name
        self.exits = tuple(exits)

    @torch.no_grad()
    def __call__(self, batch: CamBatch) -> torch.Tensor:
        selected = batch.shared(EXIT_MAPS)[:, [exit_index - 1 for exit_index in self.exits]]
        _, fused_map = fuse(batch.images, selected, batch.attention(self.exits))
        return final_cam(selected, fused_map, batch.region)
