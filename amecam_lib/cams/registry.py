"""Every CAM method by its stable name (the names used in ``results.csv``), and the reference rows
beside them (``avg_me_c2am``, paper Table 2; ``lfi_cam``, Table 1's LFI-CAM baseline; ``swin_mil``, Table 1's Swin-MIL; ``unet_fsl``,
the fully supervised ceiling of Table 1; ``cf_ul`` and ``cf_fsl``, Table 1's C&F rows, unsupervised and
supervised).

``ame_cam_crf`` is the ``ame_cam`` method object itself: its map is the AME-CAM map, and the
evaluation turns it into a mask with DenseCRF instead of a threshold (:data:`CRF_METHODS`).
Two names bound to one object are computed once when asked for together.
"""

from __future__ import annotations

from amecam_lib.cams.ame_cam import ALL_EXITS, EXITS_2_3, AmeCam
from amecam_lib.cams.avg_me import AverageExits
from amecam_lib.cams.avg_me_c2am import AverageExitsC2am
from amecam_lib.cams.base import CamMethod
from amecam_lib.cams.cf import CfFsl, CfUl
from amecam_lib.cams.exits import EXIT_MAPS, ExitMap
from amecam_lib.cams.grad_cam import GradCam
from amecam_lib.cams.gradient_pass import GRADIENTS
from amecam_lib.cams.intensity import Intensity
from amecam_lib.cams.layer_cam import LayerCam, LayerCamLast
from amecam_lib.cams.lfi_cam import LfiCam
from amecam_lib.cams.m_f import FusedMap
from amecam_lib.cams.score_cam import ScoreCam
from amecam_lib.cams.swin_mil import SwinMil
from amecam_lib.cams.unet_fsl import UnetFsl

_AME_CAM = AmeCam("ame_cam", exits=ALL_EXITS)

REGISTRY: dict[str, CamMethod] = {
    "ame_cam_crf": _AME_CAM,
    "ame_cam": _AME_CAM,
    "avg_me": AverageExits(),
    "m_f": FusedMap(),
    "exit1": ExitMap(1),
    "exit2": ExitMap(2),
    "exit3": ExitMap(3),
    "exit4": ExitMap(4),
    "exit2_3": AmeCam("exit2_3", exits=EXITS_2_3),
    "grad_cam": GradCam(),
    "layer_cam": LayerCam(),
    "layer_cam_last": LayerCamLast(),
    "score_cam": ScoreCam(),
    "swin_mil": SwinMil(),
    "intensity": Intensity(),
    "avg_me_c2am": AverageExitsC2am(),
    "lfi_cam": LfiCam(),
    "unet_fsl": UnetFsl(),
    "cf_ul": CfUl(),
    "cf_fsl": CfFsl(),
}
"""name -> method object (call it on a :class:`~amecam_lib.cams.base.CamBatch`)."""

METHODS: tuple[str, ...] = tuple(REGISTRY)
"""Every method name, stable (used in ``results.csv``), in the order of the tables."""
CRF_METHODS: dict[str, str] = {"ame_cam_crf": "ame_cam"}
"""Mask-level methods -> the CAM they refine with DenseCRF (the same method object)."""
AME_METHODS: tuple[str, ...] = tuple(name for name, method in REGISTRY.items()
                                     if method.shared_pass is EXIT_MAPS and name not in CRF_METHODS
                                     and method.network is None)
"""AME-CAM and its ablations: the methods built on the exit maps."""
GRADIENT_METHODS: tuple[str, ...] = tuple(name for name, method in REGISTRY.items() if method.shared_pass is GRADIENTS)
"""Baselines computed from one shared forward + backward pass."""
BASELINE_METHODS: tuple[str, ...] = (*GRADIENT_METHODS, "score_cam")
"""The pytorch-grad-cam baselines."""


SUPERVISION: dict[str, str] = {name: method.supervision for name, method in REGISTRY.items()}
"""name -> the paper's Table 1 type: ``"WSSS"`` (slice labels), ``"UL"`` (no label: ``intensity``,
``cf_ul``), ``"FSL"`` (trained on masks: ``unet_fsl``, the ceiling; ``cf_fsl``)."""


def reference_networks(names) -> set[str]:
    """The trained reference networks (beyond the classifier and the attention networks) that the
    methods ``names`` need, e.g. ``{"unet_fsl"}`` for ``("ame_cam", "unet_fsl")``, ``{"swin_mil"}`` for
    ``("swin_mil",)``. Unknown names
    are ignored."""
    return {REGISTRY[name].network for name in names if name in REGISTRY and REGISTRY[name].network is not None}


def attention_exits(names) -> set[tuple[int, ...]]:
    """The attention networks (by the exits they aggregate) that the methods ``names`` need, e.g.
    ``{(1, 2, 3, 4)}`` for ``("ame_cam", "m_f", "grad_cam")``. Unknown names are ignored."""
    return {tuple(REGISTRY[name].exits) for name in names
            if name in REGISTRY and getattr(REGISTRY[name], "exits", None) is not None}


def get_method(name: str) -> CamMethod:
    """The method object named ``name``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown CAM method {name!r}; known: {METHODS}")
    return REGISTRY[name]
