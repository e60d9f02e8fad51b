"""Every CAM the evaluation compares, computed on the SAME trained multi-exit network.

AME-CAM and its ablations (paper Sec. 2 end, Tables 2-3), from the exit maps M_1..M_4:

``ame_cam``
    the final CAM: mean of n(M_1)..n(M_4) and the aggregated map M_f, min-max normalised per image.
``ame_cam_crf``
    the same CAM; the evaluation turns it into a mask with DenseCRF instead of a threshold.
``avg_me``
    plain mean of n(M_1)..n(M_4), normalised (Table 2, "Avg. ME").
``exit1`` .. ``exit4``
    one exit's normalised map n(M_i) (Table 3, single exits).
``exit2_3``
    the attention method on exits 2 and 3 only (Table 3, "M2 + M3"): mean of n(M_2), n(M_3) and
    their own aggregated map (a second attention network trained on those two exits).

Baselines through pytorch-grad-cam (Grad-CAM, LayerCAM, Score-CAM), on a wrapper that returns the
tumour logit of exit 4 (the classifier's last exit), target ``ClassifierOutputTarget(0)``:

``grad_cam``
    Grad-CAM (Selvaraju et al. 2017) on the last stage.
``layer_cam``
    LayerCAM (Jiang et al., TIP 2021) on the four residual stages, fused as the LayerCAM paper
    does: each stage's map divided by its maximum, the shallow stages (1-3) scaled by
    ``tanh(2 * map)`` (their Eq. 9, gamma = 2), upsampled bilinearly and fused by the
    element-wise maximum. pytorch-grad-cam's own multi-layer aggregation min-max normalises each
    layer and takes the *mean*, with no tanh scaling; we override that step (``_PaperLayerCAM``).
``layer_cam_last``
    LayerCAM on the last stage only.
``score_cam``
    Score-CAM (Wang et al. 2020) on the last stage (one forward per channel: slow on CPU, so the
    evaluation runs it on a subset, ``EvaluationConfig.score_cam_max_slices``).

And ``intensity``: no network at all, the slice itself min-max normalised (a sanity floor; on
FLAIR the tumour is bright, so this baseline is strong there).

Polarity: every map is high where the method says tumour *by construction* (exit maps are the
tumour logit per pixel; Grad-CAM-type maps are ReLU'd evidence for the tumour logit). No map is
ever flipped. :func:`polarity_check` gives a label-free check the notebooks show.

Every map is ``(B, S, S) float32`` in [0, 1]. With ``EvaluationConfig.restrict_to_brain`` every
method's map is set to 0 where the slice is 0 (outside the skull-stripped brain), the same for all.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import pytorch_grad_cam.score_cam as score_cam_module
from pytorch_grad_cam import GradCAM, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from amecam_lib.aggregation import fuse, normalise_maps, normalised_exit_maps
from amecam_lib.config import EvaluationConfig
from amecam_lib.models.attention import AttentionNet
from amecam_lib.models.multi_exit import N_EXITS, ExitLogit, MultiExitResNet

AME_METHODS: tuple[str, ...] = ("ame_cam", "avg_me", "exit1", "exit2", "exit3", "exit4", "exit2_3")
BASELINE_METHODS: tuple[str, ...] = ("grad_cam", "layer_cam", "layer_cam_last", "score_cam")
GRADIENT_METHODS: tuple[str, ...] = ("grad_cam", "layer_cam", "layer_cam_last")
"""Baselines computed from one shared forward + backward pass (see :meth:`CamMethods.compute`)."""
CRF_METHODS: dict[str, str] = {"ame_cam_crf": "ame_cam"}
"""Mask-level methods -> the CAM they refine with DenseCRF."""
METHODS: tuple[str, ...] = ("ame_cam_crf", *AME_METHODS, *BASELINE_METHODS, "intensity")
"""Every method name, stable (used in ``results.csv``)."""
EXITS_2_3: tuple[int, ...] = (2, 3)
LAYER_CAM_GAMMA = 2.0  # LayerCAM paper, Eq. 9


class _PaperLayerCAM(LayerCAM):
    """pytorch-grad-cam's LayerCAM with the LayerCAM paper's multi-layer fusion.

    Per stage: ``ReLU(sum_k ReLU(grad_k) * A_k)`` (the library's ``get_cam_image``), divided by its
    maximum; shallow stages (all but the last target layer) scaled by ``tanh(gamma * map)``;
    bilinear upsampling to the input size; element-wise maximum over stages; min-max per image.
    """

    gamma = LAYER_CAM_GAMMA

    def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
        activations_list = [a.cpu().data.numpy() for a in self.activations_and_grads.activations]
        grads_list = [g.cpu().data.numpy() for g in self.activations_and_grads.gradients]
        height, width = input_tensor.shape[-2:]
        per_layer = []
        last = len(self.target_layers) - 1
        for index, target_layer in enumerate(self.target_layers):
            cam = np.maximum(self.get_cam_image(input_tensor, target_layer, targets, activations_list[index],
                                                grads_list[index], eigen_smooth), 0)
            peak = cam.reshape(cam.shape[0], -1).max(axis=1)[:, None, None]
            cam = cam / np.where(peak > 0, peak, 1.0)
            if index < last:
                cam = np.tanh(self.gamma * cam)
            upsampled = F.interpolate(torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[:, None],
                                      size=(height, width), mode="bilinear", align_corners=False)
            per_layer.append(upsampled.numpy())
        return per_layer

    def aggregate_multi_layers(self, cam_per_target_layer):
        fused = np.max(np.concatenate(cam_per_target_layer, axis=1), axis=1)
        return normalise_maps(torch.from_numpy(fused)).numpy()


class CamMethods:
    """All CAM methods of the evaluation on one trained network.

    Args:
        model: the trained :class:`MultiExitResNet` (frozen; put in eval mode).
        attention: :class:`AttentionNet` over exits 1-4 (needed for ``ame_cam``/``ame_cam_crf``).
        attention_2_3: :class:`AttentionNet` over exits 2 and 3 (needed for ``exit2_3``).
        eval_config: ``EvaluationConfig`` (``restrict_to_brain``, ``score_cam_batch_size``).

    Example::

        cams = CamMethods(net, attention, attention_2_3, preset.evaluation)
        maps = cams.compute(images, methods=("ame_cam", "grad_cam"))   # {name: (B, S, S)}
    """

    def __init__(self, model: MultiExitResNet, attention: AttentionNet | None = None,
                 attention_2_3: AttentionNet | None = None, eval_config: EvaluationConfig | None = None):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.attention = attention.to(self.device).eval() if attention is not None else None
        self.attention_2_3 = attention_2_3.to(self.device).eval() if attention_2_3 is not None else None
        self.config = eval_config if eval_config is not None else EvaluationConfig()
        self.tumour_logit = ExitLogit(model, exit_index=N_EXITS).eval()

    # -- public ------------------------------------------------------------------------------------

    def compute(self, images, methods: Sequence[str] | None = None,
                timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """CAMs of a batch of slices.

        Work shared between methods is done once per call: one forward of the multi-exit network
        gives the exit maps of every AME-CAM-family method, and one forward + backward pass gives
        every gradient baseline asked for together (``grad_cam``, ``layer_cam``, ``layer_cam_last``
        read the same stage activations and gradients; each is then computed by its own
        pytorch-grad-cam class). Ask for several methods in one call to profit.

        Args:
            images: ``(B, 1, S, S) float32`` in [0, 1] (NumPy or torch).
            methods: names from :data:`METHODS` (default: all). ``ame_cam_crf`` returns the
                ``ame_cam`` map it is made from (the CRF is applied to masks, in the evaluation).
            timings: if given, filled with ``{name: seconds}`` for this batch: what the method
                would cost on its own (a shared pass is counted in full for every method using it).

        Returns:
            ``{name: (B, S, S) float32 in [0, 1]}`` (NumPy), high = tumour.

        Raises:
            ValueError: an unknown method name, bad ``images`` shape or values, or a method whose
                attention network was not given.
        """
        methods = tuple(METHODS if methods is None else methods)
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown CAM method(s) {unknown}; known: {METHODS}")
        image_tensor = self._images(images)
        sources = tuple(dict.fromkeys(CRF_METHODS.get(m, m) for m in methods))
        maps: dict[str, torch.Tensor] = {}
        seconds: dict[str, float] = {}
        gradient_sources = [m for m in sources if m in GRADIENT_METHODS]
        if gradient_sources:
            started = time.perf_counter()
            maps.update(self._gradient_baselines(gradient_sources, image_tensor))
            seconds.update(dict.fromkeys(gradient_sources, time.perf_counter() - started))
        exit_maps, exit_seconds = None, 0.0
        for source in sources:
            if source in maps:
                continue
            started = time.perf_counter()
            if source in AME_METHODS:
                if exit_maps is None:
                    exit_maps = self.exit_maps(image_tensor)
                    exit_seconds = time.perf_counter() - started
                    started = time.perf_counter()
                maps[source] = self._ame_family(source, image_tensor, exit_maps)
                seconds[source] = exit_seconds + time.perf_counter() - started
            else:  # score_cam or intensity
                maps[source] = (self._baseline(source, image_tensor) if source in BASELINE_METHODS
                                else normalise_maps(image_tensor[:, 0]))
                seconds[source] = time.perf_counter() - started
        brain = (image_tensor[:, 0] > 0).float().cpu() if self.config.restrict_to_brain else None
        result = {}
        for method in methods:
            cam = maps[CRF_METHODS.get(method, method)].detach().float().cpu()
            if brain is not None:
                cam = cam * brain
            result[method] = np.ascontiguousarray(cam.clamp(0.0, 1.0).numpy(), dtype=np.float32)
            if timings is not None:
                timings[method] = seconds[CRF_METHODS.get(method, method)]
        return result

    @torch.no_grad()
    def tumour_probability(self, images) -> np.ndarray:
        """The classifier's own slice prediction: exit-4 tumour probability, ``(B,) float32`` in [0, 1]."""
        image_tensor = self._images(images)
        return torch.sigmoid(self.tumour_logit(image_tensor)[:, 0]).float().cpu().numpy()

    @torch.no_grad()
    def exit_maps(self, images) -> torch.Tensor:
        """Normalised exit maps n(M_1)..n(M_4), ``(B, 4, S, S) float32`` in [0, 1] (bilinear)."""
        image_tensor = self._images(images)
        return normalised_exit_maps(self.model(image_tensor).maps, image_tensor.shape[-2:])

    @torch.no_grad()
    def attention_weights(self, images, exits: Sequence[int] = (1, 2, 3, 4)) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention weights S ``(B, n, S, S)`` and fused map M_f ``(B, S, S)`` (for figures)."""
        image_tensor = self._images(images)
        exit_maps = self.exit_maps(image_tensor)
        attention = self._attention_for(tuple(exits))
        weights, fused_map = fuse(image_tensor, exit_maps[:, [e - 1 for e in exits]], attention)
        return weights.cpu(), fused_map[:, 0].cpu()

    # -- AME-CAM family ----------------------------------------------------------------------------

    def _ame_family(self, method: str, images: torch.Tensor, exit_maps: torch.Tensor) -> torch.Tensor:
        if method.startswith("exit") and method != "exit2_3":
            return exit_maps[:, int(method[-1]) - 1]
        if method == "avg_me":
            return normalise_maps(exit_maps.mean(dim=1))
        exits = (1, 2, 3, 4) if method == "ame_cam" else EXITS_2_3
        return self._final_cam(images, exit_maps, exits)

    @torch.no_grad()
    def _final_cam(self, images: torch.Tensor, exit_maps: torch.Tensor, exits: tuple[int, ...]) -> torch.Tensor:
        """Paper Sec. 2 end: mean of the selected n(M_i) and their M_f, min-max normalised."""
        selected = exit_maps[:, [e - 1 for e in exits]]
        _, fused_map = fuse(images, selected, self._attention_for(exits))
        return normalise_maps(torch.cat([selected, fused_map], dim=1).mean(dim=1))

    def _attention_for(self, exits: tuple[int, ...]) -> AttentionNet:
        attention = self.attention if exits == (1, 2, 3, 4) else self.attention_2_3
        if attention is None:
            name = "attention" if exits == (1, 2, 3, 4) else "attention_2_3"
            raise ValueError(f"CamMethods needs {name} (trained with train_attention(exits={exits})) "
                             "for this method")
        return attention

    # -- baselines -----------------------------------------------------------------------------------

    def _gradient_baselines(self, methods: Sequence[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Grad-CAM / LayerCAM maps of ``methods`` (subset of :data:`GRADIENT_METHODS`) from ONE
        forward + backward pass.

        Every method's pytorch-grad-cam object hooks its layers; the first one runs the pass (its
        hooks and the others' record the same activations and gradients), the others then run
        their own ``compute_cam_per_layer`` + ``aggregate_multi_layers`` (the library's code after
        the pass) on what they recorded. Same maps as calling each object on its own.
        """
        stages = list(self.model.stages)
        specs = {"grad_cam": (GradCAM, stages[-1:]), "layer_cam": (_PaperLayerCAM, stages),
                 "layer_cam_last": (LayerCAM, stages[-1:])}
        targets = [ClassifierOutputTarget(0)] * images.shape[0]
        # An input that requires grad makes the stage outputs require grad even when the
        # network's parameters are frozen (otherwise the library records no gradient).
        input_images = images.detach().clone().requires_grad_(True)
        cam_maps: dict[str, np.ndarray] = {}
        with torch.enable_grad(), contextlib.ExitStack() as stack:
            cam_objects = {method: stack.enter_context(specs[method][0](model=self.tumour_logit,
                                                                        target_layers=specs[method][1]))
                           for method in methods}
            driver, *others = methods
            cam_maps[driver] = cam_objects[driver](input_tensor=input_images, targets=targets)
            for method in others:
                per_layer = cam_objects[method].compute_cam_per_layer(input_images, targets, False)
                cam_maps[method] = cam_objects[method].aggregate_multi_layers(per_layer)
        self.model.zero_grad(set_to_none=True)
        missing = [m for m in methods if cam_maps.get(m) is None]
        if missing:  # pytorch-grad-cam's __exit__ swallows an IndexError
            raise RuntimeError(f"pytorch-grad-cam failed silently while computing {missing}")
        return {method: normalise_maps(torch.from_numpy(np.asarray(cam_maps[method], dtype=np.float32)))
                for method in methods}

    def _baseline(self, method: str, images: torch.Tensor) -> torch.Tensor:
        if method in GRADIENT_METHODS:
            return self._gradient_baselines([method], images)[method]
        if method != "score_cam":
            raise ValueError(f"unknown baseline {method!r}")
        targets = [ClassifierOutputTarget(0)] * images.shape[0]
        cam_maps = None
        with torch.enable_grad(), ScoreCAM(model=self.tumour_logit, target_layers=list(self.model.stages)[-1:]) as cam:
            cam.batch_size = self.config.score_cam_batch_size
            with _quiet_tqdm():
                cam_maps = cam(input_tensor=images.detach().clone(), targets=targets)
        if cam_maps is None:  # pytorch-grad-cam's __exit__ swallows an IndexError
            raise RuntimeError("pytorch-grad-cam failed silently while computing score_cam")
        return normalise_maps(torch.from_numpy(np.asarray(cam_maps, dtype=np.float32)))

    # -- helpers ---------------------------------------------------------------------------------------

    def _images(self, images) -> torch.Tensor:
        image_tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
        if image_tensor.ndim != 4 or image_tensor.shape[1] != 1:
            raise ValueError(f"images must be (B, 1, S, S), got {tuple(image_tensor.shape)}")
        image_tensor = image_tensor.float()
        if not torch.isfinite(image_tensor).all():
            raise ValueError("images contain NaN or infinite values")
        return image_tensor.to(self.device)


@contextlib.contextmanager
def _quiet_tqdm():
    """Silence the tqdm bar that pytorch-grad-cam's Score-CAM opens for every slice.

    tqdm reads ``TQDM_DISABLE`` once, at import, so setting it here would do nothing; instead the
    ``tqdm`` module seen by ``pytorch_grad_cam.score_cam`` is swapped for one whose bars are
    disabled, and restored afterwards.
    """
    original = score_cam_module.tqdm
    score_cam_module.tqdm = SimpleNamespace(tqdm=functools.partial(original.tqdm, disable=True))
    try:
        yield
    finally:
        score_cam_module.tqdm = original


# --- label-free polarity / sanity check ----------------------------------------------------------

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
        images: ``(N, 1, S, S) float32`` in [0, 1].
        maps: ``{method: (N, S, S) float32 in [0, 1]}`` for the same slices (:meth:`CamMethods.compute`).
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
