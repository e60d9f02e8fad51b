"""``score_cam``: Score-CAM (Wang et al., CVPR-W 2020) on the last residual stage, a baseline.

pytorch-grad-cam's ``ScoreCAM`` on the exit-4 tumour logit, no gradients: every channel of the last
stage's activations, upsampled and min-max normalised, masks the slice; the tumour logits of the
masked slices, softmaxed over the channels, weight the channels; ``ReLU(sum_k w_k A_k)``, then
min-max normalised (over the brain only when the batch restricts maps to the brain). One forward per channel (512 for ResNet-18) per slice: slow on a CPU, so the
evaluation runs it on a subset (``EvaluationConfig.score_cam_max_slices``).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import torch
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from amecam_lib.cams.base import CamBatch, CamMethod
from amecam_lib.cams.gradient_pass import UnscaledLayers


class UnscaledScoreCAM(UnscaledLayers, ScoreCAM):
    """pytorch-grad-cam's ``ScoreCAM`` without the library's own min-max of the final map
    (:class:`~amecam_lib.cams.gradient_pass.UnscaledLayers`; the channel masks it scores are still
    the library's, each channel min-max scaled as Score-CAM defines)."""


class ScoreCam(CamMethod):
    """Score-CAM on the last stage, ``(B, H, W)`` in [0, 1].

    Masked slices are scored ``CamNetworks.score_cam_batch_size`` at a time (the library's
    documented ``cam.batch_size``).

    Raises (on call):
        RuntimeError: pytorch-grad-cam failed silently (its ``__exit__`` swallows an IndexError).
    """

    name = "score_cam"

    def __call__(self, batch: CamBatch) -> torch.Tensor:
        networks = batch.networks
        targets = [ClassifierOutputTarget(0)] * batch.images.shape[0]
        cam_maps = None
        with torch.enable_grad(), UnscaledScoreCAM(model=networks.tumour_logit,
                                           target_layers=list(networks.model.stages)[-1:]) as cam:
            cam.batch_size = networks.score_cam_batch_size
            with _without_progress_bars():
                cam_maps = cam(input_tensor=batch.images.detach().clone(), targets=targets)
        if cam_maps is None:
            raise RuntimeError("pytorch-grad-cam failed silently while computing score_cam")
        return batch.normalise(torch.from_numpy(np.asarray(cam_maps, dtype=np.float32)))


@contextlib.contextmanager
def _without_progress_bars():
    """Drop the tqdm bar that pytorch-grad-cam's Score-CAM opens for every slice.

    Neither library has a public switch for it: Score-CAM calls ``tqdm.tqdm(...)`` with no option,
    and tqdm reads ``TQDM_DISABLE`` once, at import. But a bar writes to tqdm's documented default
    ``file``, ``sys.stderr`` as it is when the bar is created; so stderr goes to a buffer that is
    dropped (``contextlib.redirect_stderr``). Python warnings raised meanwhile are recorded under
    the caller's filters and shown afterwards, so none is lost.
    """
    with warnings.catch_warnings(record=True) as caught:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    for warning in caught:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno,
                             warning.file, warning.line)
