"""Reference rows that need a training of their own, beside AME-CAM's phases (notebook 05):

    unet_fsl.py     the fully supervised ceiling: MONAI's BasicUNet on the training patients' masks
                    (paper Table 1, FSL, Opt. U-net; Futrega et al. 2021)
    c2am_refine.py  C2AM's class-agnostic head for "Avg. ME + C2AM" (paper Table 2; Xie et al. 2022)
    lfi_cam.py      LFI-CAM's network, trained on slice labels (paper Table 1, WSSS; Lee et al. 2021)
    cf.py           C&F's Chan-Vese U-Nets: cf_ul (no label) and cf_fsl (+ the training masks)
                    (paper Table 1, UL / FSL C&F; Chen and Frey 2020)
    swin_mil.py     Swin-MIL from the slice labels: timm Swin blocks, side outputs, MIL loss
                    (paper Table 1, WSSS, Swin-MIL; Qian et al. 2022)

Their maps are CAM methods like the others (:mod:`amecam_lib.cams.unet_fsl`,
:mod:`amecam_lib.cams.avg_me_c2am`, :mod:`amecam_lib.cams.lfi_cam`, :mod:`amecam_lib.cams.cf`,
:mod:`amecam_lib.cams.swin_mil`); this package
trains and loads the networks they read.
:func:`train_reference_networks` trains what a list of methods needs; :func:`load_reference_networks`
loads it for :class:`~amecam_lib.cams.CamMethods` (``references=``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from amecam_lib.cams import CRF_METHODS, reference_networks
from amecam_lib.config import Preset

__all__ = ["REFERENCE_PHASES", "load_reference_networks", "train_reference_networks"]


# name -> the module that trains and loads it (``train_<name>`` / ``load_<name>`` in
# ``amecam_lib.baselines.<module>``), in the order they are trained. One line per reference network.
REFERENCE_PHASES: dict[str, tuple[str, str, str]] = {
    "c2am_head": ("c2am_refine", "train_c2am_head", "load_c2am_head"),
    "unet_fsl": ("unet_fsl", "train_unet_fsl", "load_unet_fsl"),
    "lfi_cam": ("lfi_cam", "train_lfi_cam", "load_lfi_cam"),
    "cf_ul": ("cf", "train_cf_ul", "load_cf_ul"),
    "cf_fsl": ("cf", "train_cf_fsl", "load_cf_fsl"),
    "swin_mil": ("swin_mil", "train_swin_mil", "load_swin_mil"),
}


def _phases():
    import importlib

    phases = {}
    for name, (module, train, load) in REFERENCE_PHASES.items():
        loaded = importlib.import_module(f"amecam_lib.baselines.{module}")
        phases[name] = (getattr(loaded, train), getattr(loaded, load))
    return phases


def _needed(methods: Sequence[str]) -> list[str]:
    names = reference_networks(CRF_METHODS.get(method, method) for method in methods)
    return [name for name in REFERENCE_PHASES if name in names]


def train_reference_networks(run_dir: str | Path, modality: str, preset: Preset, methods: Sequence[str] | None = None,
                             device: str | None = None, progress: bool = True) -> dict:
    """Train (or resume, or find finished) every reference network that ``methods`` need
    (default ``preset.evaluation.methods``): ``{name: History}``."""
    methods = preset.evaluation.methods if methods is None else methods
    phases = _phases()
    return {name: phases[name][0](run_dir, modality, preset, device=device, progress=progress)
            for name in _needed(methods)}


def load_reference_networks(run_dir: str | Path, modality: str, methods: Sequence[str],
                            device: str | torch.device = "cpu") -> dict[str, nn.Module]:
    """The trained reference networks that ``methods`` need, by name (``CamMethods(references=...)``).

    Raises:
        FileNotFoundError: one of them is not trained yet (:func:`train_reference_networks`).
    """
    phases = _phases()
    return {name: phases[name][1](run_dir, modality, device=device) for name in _needed(methods)}
