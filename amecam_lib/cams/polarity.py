"""A label-free check that a map points at what the classifier calls tumour (no ground truth).

Every method's map is high where the method says tumour *by construction* (exit maps are the
tumour logit per pixel; Grad-CAM-type maps are ReLU'd evidence for the tumour logit); no map is
ever flipped. :func:`polarity_check` checks it on the data: the notebooks show its table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from amecam_lib.models.multi_exit import N_EXITS, ExitLogit, MultiExitResNet


@dataclass(frozen=True)
class PolarityReport:
    """Label-free polarity check of one method (see :func:`polarity_check`).

    Attributes:
        method: the method name.
        n_slices: slices the classifier calls tumour (exit-4 probability >= 0.5) that were used.
        logit_gap: mean of ``logit(keep high region) - logit(keep the rest)``; > 0 when the map's
            high region holds what the classifier sees as tumour (right polarity).
        fraction_positive: fraction of those slices with a positive gap.
        high_fraction: mean fraction of the slice the map marks (>= threshold).
    """

    method: str
    n_slices: int
    logit_gap: float
    fraction_positive: float
    high_fraction: float


@torch.no_grad()
def polarity_check(model: MultiExitResNet, images, maps: dict[str, np.ndarray],
                   threshold: float = 0.5) -> list[PolarityReport]:
    """Does each map point at what the classifier calls tumour? No ground truth used.

    For every slice the classifier calls tumour (exit-4 probability >= 0.5), keep only the pixels
    the map marks (map >= ``threshold``) and, separately, only the others, and compare the exit-4
    tumour logits of the two images (a deletion / insertion test in the spirit of RISE, Petsiuk et
    al. 2018). A map with the right polarity keeps the tumour in its high region, so the gap
    ``logit(high) - logit(rest)`` is positive; a flipped map gives a negative gap.

    Args:
        model: the trained multi-exit network.
        images: ``(N, 1, H, W) float32`` in [0, 1].
        maps: ``{method: (N, H, W) float32 in [0, 1]}`` for the same slices (:meth:`amecam_lib.cams.CamMethods.compute`).
        threshold: the mask threshold.

    Returns:
        one :class:`PolarityReport` per method (``n_slices`` 0 and NaN-free zeros if the classifier
        calls no slice tumour).

    Raises:
        ValueError: a map whose shape differs from the images'.
    """
    device = next(model.parameters()).device
    model.eval()
    image_tensor = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float()
    tumour_logit = ExitLogit(model, exit_index=N_EXITS)
    called_tumour = torch.sigmoid(tumour_logit(image_tensor.to(device))[:, 0]).cpu() >= 0.5
    reports = []
    for method, cam in maps.items():
        cam_tensor = torch.as_tensor(np.asarray(cam)).float()
        if cam_tensor.shape != image_tensor[:, 0].shape:
            raise ValueError(f"map {method!r} has shape {tuple(cam_tensor.shape)}, images {tuple(image_tensor.shape)}")
        chosen = called_tumour.nonzero().flatten()
        if len(chosen) == 0:
            reports.append(PolarityReport(method, 0, 0.0, 0.0, 0.0))
            continue
        high = (cam_tensor[chosen] >= threshold).float()[:, None]
        kept_images = image_tensor[chosen]
        logit_high = tumour_logit((kept_images * high).to(device))[:, 0].cpu()
        logit_rest = tumour_logit((kept_images * (1.0 - high)).to(device))[:, 0].cpu()
        gap = logit_high - logit_rest
        reports.append(PolarityReport(method=method, n_slices=int(len(chosen)), logit_gap=float(gap.mean()),
                                      fraction_positive=float((gap > 0).float().mean()),
                                      high_fraction=float(high.mean())))
    return reports
