"""Every CAM the evaluation compares, computed on the SAME trained multi-exit network.

One base, one small module per method, one uniform call, a registry by name (in the shape of
pytorch-grad-cam)::

    base.py           CamNetworks (trained networks), CamBatch (a batch + its shared passes), CamMethod
    exits.py          exit1 .. exit4: n(M_i); the shared multi-exit forward pass EXIT_MAPS
    avg_me.py         avg_me: n(mean n(M_i))                          (Table 2, "Avg. ME")
    m_f.py            m_f: n(M_f), the aggregated map alone (what A decides)
    ame_cam.py        ame_cam, exit2_3: the final CAM with its attention network  (Sec. 2 end; Table 3)
    gradient_pass.py  the one forward + backward pass shared by the gradient baselines
    grad_cam.py       grad_cam: Grad-CAM, last stage
    layer_cam.py      layer_cam (four stages, the LayerCAM paper's fusion), layer_cam_last
    score_cam.py      score_cam: Score-CAM, last stage
    intensity.py      intensity: the slice itself, min-max normalised (no network; type UL)
    avg_me_c2am.py    avg_me_c2am: avg_me refined by C2AM's class-agnostic map  (Table 2, "Avg. ME + C2AM")
    lfi_cam.py        lfi_cam: LFI-CAM's learned attention map (Table 1, "LFI-CAM (2021)")
    swin_mil.py       swin_mil: Swin-MIL's fused instance probability, a network of its own  (Table 1, WSSS)
    unet_fsl.py       unet_fsl: a fully supervised U-Net's probability, the ceiling (Table 1, FSL)
    cf.py             cf_ul, cf_fsl: C&F's Chan-Vese U-Net, without / with masks (Table 1, UL / FSL C&F)
    registry.py       name -> method object; METHODS, CRF_METHODS
    polarity.py       polarity_check: a label-free check of each map's polarity

Names (stable; used in ``results.csv``): ``ame_cam_crf`` (the ``ame_cam`` map; the evaluation
refines its mask with DenseCRF), ``ame_cam``, ``avg_me``, ``m_f``, ``exit1``..``exit4``, ``exit2_3``,
``grad_cam``, ``layer_cam``, ``layer_cam_last``, ``score_cam``, ``swin_mil``, ``intensity``, ``avg_me_c2am``,
``lfi_cam``, ``unet_fsl``, ``cf_ul``, ``cf_fsl`` (each method's paper type, WSSS / UL / FSL:
:data:`SUPERVISION`). The baselines run through pytorch-grad-cam on a wrapper returning the tumour
logit of exit 4 (the classifier's last exit), target ``ClassifierOutputTarget(0)``.

Every map is ``(B, H, W) float32`` in [0, 1], high = tumour by construction (never flipped); with
``EvaluationConfig.restrict_to_brain`` every map is normalised over the brain only and is 0 outside
(``CamBatch(..., restrict_to_brain=True)``). Use one method directly::

    batch = CamBatch(images, CamNetworks(net, {(1, 2, 3, 4): attention}))
    cam = get_method("ame_cam")(batch)

or all of them through :class:`CamMethods` (NumPy out, brain restriction, timings). The formulas
themselves live in :mod:`amecam_lib.equations`; this package imports the models, never the
training code.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from amecam_lib.cams.ame_cam import ALL_EXITS, EXITS_2_3
from amecam_lib.cams.base import CamBatch, CamMethod, CamNetworks, SharedPass, check_attention_normalisation
from amecam_lib.cams.exits import EXIT_MAPS
from amecam_lib.cams.layer_cam import LAYER_CAM_GAMMA, PaperLayerCAM
from amecam_lib.cams.polarity import PolarityReport, polarity_check
from amecam_lib.cams.registry import (AME_METHODS, BASELINE_METHODS, CRF_METHODS, GRADIENT_METHODS, METHODS,
                                      REGISTRY, SUPERVISION, attention_exits, get_method, reference_networks)
from amecam_lib.config import EvaluationConfig
from amecam_lib.equations import fuse
from amecam_lib.models.attention import AttentionNet
from amecam_lib.models.multi_exit import MultiExitResNet

__all__ = ["ALL_EXITS", "AME_METHODS", "BASELINE_METHODS", "CRF_METHODS", "EXITS_2_3", "GRADIENT_METHODS",
           "LAYER_CAM_GAMMA", "METHODS", "REGISTRY", "CamBatch", "CamMethod", "CamMethods", "CamNetworks",
           "PaperLayerCAM", "PolarityReport", "SUPERVISION", "SharedPass", "attention_exits",
           "check_attention_normalisation", "get_method", "polarity_check", "reference_networks"]


class CamMethods:
    """All CAM methods of the evaluation on one trained network, by name, NumPy out.

    Args:
        model: the trained :class:`MultiExitResNet` (frozen; put in eval mode).
        attention: :class:`AttentionNet` over exits 1-4 (needed for ``ame_cam``/``ame_cam_crf``).
        attention_2_3: :class:`AttentionNet` over exits 2 and 3 (needed for ``exit2_3``).
        eval_config: ``EvaluationConfig`` (``restrict_to_brain``, ``score_cam_batch_size``).
        references: the trained reference networks by name (``"unet_fsl"`` for ``unet_fsl``,
            ``"c2am_head"`` for ``avg_me_c2am``, ``"lfi_cam"`` for ``lfi_cam``, ``"cf_ul"`` / ``"cf_fsl"``
            for the C&F rows, ``"swin_mil"`` for ``swin_mil``;
            :func:`amecam_lib.baselines.load_reference_networks`).

    Raises:
        ValueError: an attention network trained with another n(.) than
            ``eval_config.restrict_to_brain`` (its ``restrict_to_brain``, set by ``load_attention``).

    Example::

        cams = CamMethods(net, attention, attention_2_3, preset.evaluation)
        maps = cams.compute(images, methods=("ame_cam", "grad_cam"))   # {name: (B, H, W)}
    """

    def __init__(self, model: MultiExitResNet, attention: AttentionNet | None = None,
                 attention_2_3: AttentionNet | None = None, eval_config: EvaluationConfig | None = None,
                 references: dict[str, nn.Module | None] | None = None):
        self.config = eval_config if eval_config is not None else EvaluationConfig()
        self.networks = CamNetworks(model, {ALL_EXITS: attention, EXITS_2_3: attention_2_3},
                                    score_cam_batch_size=self.config.score_cam_batch_size, references=references)
        self.model = self.networks.model
        self.device = self.networks.device
        self.attention = self.networks.attentions.get(ALL_EXITS)
        self.attention_2_3 = self.networks.attentions.get(EXITS_2_3)
        self.tumour_logit = self.networks.tumour_logit
        self.restrict_to_brain = bool(self.config.restrict_to_brain)
        for exits, trained in self.networks.attentions.items():
            check_attention_normalisation(trained, self.restrict_to_brain, exits)

    def batch(self, images, methods: Sequence[CamMethod] = ()) -> CamBatch:
        """A :class:`CamBatch` of ``images`` on these networks, with this evaluation's n(.)."""
        return CamBatch(images, self.networks, methods, restrict_to_brain=self.restrict_to_brain)

    def compute(self, images, methods: Sequence[str] | None = None,
                timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """CAMs of a batch of slices.

        Work shared between methods is done once per call (one :class:`CamBatch`): one forward of
        the multi-exit network gives the exit maps of every AME-CAM-family method, and one forward +
        backward pass gives every gradient baseline asked for together (``grad_cam``,
        ``layer_cam``, ``layer_cam_last``). Ask for several methods in one call to profit.

        Args:
            images: ``(B, 1, H, W) float32`` in [0, 1] (NumPy or torch).
            methods: names from :data:`METHODS` (default: all). ``ame_cam_crf`` returns the
                ``ame_cam`` map it is made from (the CRF is applied to masks, in the evaluation).
            timings: if given, filled with ``{name: seconds}`` for this batch: what the method
                would cost on its own (a shared pass is counted in full for every method using it).

        Returns:
            ``{name: (B, H, W) float32 in [0, 1]}`` (NumPy), high = tumour; with
            ``EvaluationConfig.restrict_to_brain``, every map min-max normalised over the brain
            (slice > 0) and 0 outside it.

        Raises:
            ValueError: an unknown method name, bad ``images`` shape or values, or a method whose
                attention network was not given.
        """
        names = tuple(METHODS if methods is None else methods)
        unknown = [name for name in names if name not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown CAM method(s) {unknown}; known: {METHODS}")
        cam_methods = tuple(dict.fromkeys(REGISTRY[name] for name in names))   # ame_cam_crf -> ame_cam
        batch = self.batch(images, cam_methods)
        maps: dict[CamMethod, torch.Tensor] = {}
        seconds: dict[CamMethod, float] = {}
        pass_seconds: dict[SharedPass, float] = {}
        for method in cam_methods:
            shared_pass = method.shared_pass
            if shared_pass is not None and not batch.has_run(shared_pass):
                started = time.perf_counter()
                batch.shared(shared_pass)
                pass_seconds[shared_pass] = time.perf_counter() - started
            started = time.perf_counter()
            maps[method] = method(batch)
            seconds[method] = pass_seconds.get(shared_pass, 0.0) + time.perf_counter() - started
        result = {}
        for name in names:
            cam = maps[REGISTRY[name]].detach().float().cpu()
            result[name] = np.ascontiguousarray(cam.clamp(0.0, 1.0).numpy(), dtype=np.float32)
            if timings is not None:
                timings[name] = seconds[REGISTRY[name]]
        return result

    @torch.no_grad()
    def tumour_probability(self, images) -> np.ndarray:
        """The classifier's own slice prediction: exit-4 tumour probability, ``(B,) float32`` in [0, 1]."""
        batch = self.batch(images)
        return torch.sigmoid(self.tumour_logit(batch.images)[:, 0]).float().cpu().numpy()

    def exit_maps(self, images) -> torch.Tensor:
        """Normalised exit maps n(M_1)..n(M_4), ``(B, 4, H, W) float32`` in [0, 1] (bilinear; over
        the brain only, 0 outside, with ``restrict_to_brain``)."""
        return self.batch(images).shared(EXIT_MAPS)

    @torch.no_grad()
    def attention_weights(self, images, exits: Sequence[int] = ALL_EXITS) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention weights S ``(B, n, H, W)`` and fused map M_f ``(B, H, W)`` (for figures).

        Raises:
            ValueError: no attention network over ``exits`` was given.
        """
        exits = tuple(exits)
        batch = self.batch(images)
        attention = batch.attention(exits)
        exit_maps = batch.shared(EXIT_MAPS)
        weights, fused_map = fuse(batch.images, exit_maps[:, [e - 1 for e in exits]], attention)
        return weights.cpu(), fused_map[:, 0].cpu()
