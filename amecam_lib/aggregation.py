"""AME-CAM's activation-aggregation phase: train the attention network A with the C2AM loss
(paper Sec. 2, Eq. 2-3) on top of the frozen multi-exit classifier.

For a slice I and its exit maps M_1..M_n (upsampled to the slice size)::

    n(M_i)  per-image min-max normalisation to [0, 1]             (equations.normalise_maps;
            over the brain pixels only, 0 outside, with restrict_to_brain, see below)
    S       = A([I * n(M_i)]_i)   softmax over i at every pixel      (Eq. 2, equations.fuse)
    M_f     = sum_i S_i * n(M_i)  in [0, 1]                           (equations.fuse)
    v^f, v^b = features of I * M_f and of I * (1 - M_f)               (:func:`c2am_features`)
    loss    = SimMin(v^f, v^b) + SimMax(v^f, v^f) + SimMax(v^b, v^b)  (Eq. 3, losses.c2am)

Only A trains; the classifier stays frozen (and in eval mode, so its BatchNorm statistics do not
move). Because the classifier never changes, the exit maps of the training slices are computed
once, at their native (small) resolution, and only upsampled per batch, so an epoch costs little
more than A itself.

Two choices of C2AM features (``AggregationConfig.features``):

``"pixels"``
    the masked slices themselves, flattened (``(B, H*W)``): the authors' code; the dataclass
    default, used by the ``paper`` and ``smoke`` presets.
``"encoder"``
    the frozen classifier's stage features of the slice, averaged under M_f (foreground) and under
    1 - M_f (background) at each stage's resolution, L2-normalised per stage and concatenated
    (``(B, 64 + 128 + 256 + 512)`` for ResNet-18): C2AM's choice of backbone features; the ``demo``
    preset's. Where they are pooled (``AggregationConfig.pool_region``): ``"slice"`` (default)
    weighs every pixel by M_f and by 1 - M_f, so the air around the head is background;
    ``"brain"`` (the ``demo`` preset) weighs by ``M_f * brain`` and ``(1 - M_f) * brain``, so both
    sides are brain tissue and "foreground = brain, background = air" cannot satisfy Eq. 3 (see
    :func:`c2am_features`). ``pool_region`` does nothing for ``"pixels"``: the air is 0 in both
    masked slices already.

n(.) (``EvaluationConfig.restrict_to_brain``): A is trained on the maps it will be used with. With
``restrict_to_brain`` the exit maps are normalised over the brain only (0 outside) here as in the
evaluation; the setting is stored in A's checkpoint, and :func:`load_attention` /
:class:`~amecam_lib.cams.CamMethods` refuse an A trained with the other one.

After training, :func:`train_attention` writes ``attention_weights.csv`` beside the checkpoints
(:func:`attention_weight_report`): how far the trained A is from uniform weights, on the val
split's tumour slices. With uniform weights the final CAM *is* ``avg_me``.

Training slices (``AggregationConfig.train_slices``): ``"tumour"`` (default) uses the train-split
slices *labelled* tumour, where a foreground exists to be separated; ``"all"`` uses every train
slice. Only slice labels are used, never masks.

At scale (``preset.compute.lazy_slices``, and always under torchrun): the slices are read lazily
from the memory-mapped store and the frozen classifier's exit maps are computed per batch
(:func:`frozen_exit_maps`) instead of once for the whole split, so no process holds the split or
its maps in memory; the validation diagnostics and the attention-weight report are shared out by
batch over the processes (:func:`amecam_lib.distributed.batch_shard`) and summed. Same maps, same
loss; only the order of floating-point sums differs.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from amecam_lib import distributed
from amecam_lib.atomic import write_text
from amecam_lib.config import Preset
from amecam_lib.device import pick_device, seed_everything
from amecam_lib.equations import brain_region, fuse, normalise_maps  # noqa: F401  (also re-exported)
from amecam_lib.losses.c2am import c2am_loss
from amecam_lib.models.attention import AttentionNet
from amecam_lib.models.multi_exit import N_EXITS, MultiExitResNet, upsample_maps
from amecam_lib.phases import (checkpoint_data_config, fit_compute_settings, image_batch, lazy_slices,
                               load_multi_exit, phase_dir, training_loader)
from amecam_lib.slices import SliceDataset, load_slices
from amecam_lib.fingerprints import tensors_sha256
from amecam_lib.training import BesideFrozenClassifier, History, fit, load_checkpoint

FEATURE_CHOICES = ("pixels", "encoder")
POOL_REGION_CHOICES = ("slice", "brain")
ATTENTION_REPORT = "attention_weights.csv"
"""File name of the attention-weight report in ``RUN/<modality>/aggregation*/``."""
ATTENTION_REPORT_COLUMNS: tuple[str, ...] = ("exit", "mean_weight", "uniform_weight", "mean_abs_deviation",
                                             "n_slices", "brain_pixels")
TRAIN_SLICE_CHOICES = ("tumour", "all")
ALL_EXITS: tuple[int, ...] = (1, 2, 3, 4)


# --- the operations of Eq. 2-3 ---------------------------------------------------------------------
# n(.) and Eq. 2 (normalise_maps, fuse) live in amecam_lib.equations, imported above.

def c2am_features(images: torch.Tensor, fused_map: torch.Tensor, features: str = "pixels",
                  stage_features: Sequence[torch.Tensor] | None = None,
                  eps: float = 1e-6, region: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background features v^f, v^b of Eq. 3.

    Why ``region`` (``AggregationConfig.pool_region="brain"``): pooled over the whole slice, the
    background ``1 - M_f`` holds the air around the head, which looks like nothing else in the
    slice. Eq. 3 is then satisfied best by ``M_f`` = the brain and ``1 - M_f`` = the air (the
    paper's own remark on C2AM, Sec. 4.2: it "tended to segment the brain region instead of the
    tumor region"). Pooled over the brain only, ``fg = M_f * brain`` and ``bg = (1 - M_f) * brain``,
    both sides are brain tissue, and the only contrast left to separate is inside the brain.

    Args:
        images: ``(B, 1, H, W)`` slices in [0, 1].
        fused_map: ``(B, 1, H, W)`` M_f in [0, 1] (gradients flow through it).
        features: ``"pixels"`` (I * M_f and I * (1 - M_f) flattened, the authors' code) or
            ``"encoder"`` (``stage_features`` averaged under M_f and 1 - M_f, C2AM).
        stage_features: for ``"encoder"``: the frozen classifier's stage outputs for ``images``,
            a list of ``(B, C_k, h_k, w_k)`` (``MultiExitResNet.feature_maps``), no gradient needed.
        eps: added to the mask sums of the ``"encoder"`` average.
        region: for ``"encoder"``: optional ``(B, 1, H, W)`` bool (or float in [0, 1]) brain mask;
            the masks become ``M_f * region`` and ``(1 - M_f) * region`` at full size, then are
            area-averaged to each stage's resolution (a stage cell half in the air counts half).
            Ignored for ``"pixels"``: the air is 0 in both masked slices already.

    Returns:
        ``(fg, bg)``: two ``(B, D)`` float32 tensors (D = H*W for pixels, sum C_k for encoder).

    Raises:
        ValueError: unknown ``features``, or ``"encoder"`` without ``stage_features``, or a
            ``region`` of another shape than ``fused_map``.
    """
    if features == "pixels":
        return (images * fused_map).flatten(1), (images * (1.0 - fused_map)).flatten(1)
    if features != "encoder":
        raise ValueError(f"features must be one of {FEATURE_CHOICES}, got {features!r}")
    if not stage_features:
        raise ValueError("features='encoder' needs the classifier's stage_features")
    fg_full, bg_full = fused_map, 1.0 - fused_map
    if region is not None:
        if region.shape != fused_map.shape:
            raise ValueError(f"region must be {tuple(fused_map.shape)} like fused_map, got {tuple(region.shape)}")
        inside = region.to(fused_map.dtype)
        fg_full, bg_full = fg_full * inside, bg_full * inside
    fg_parts, bg_parts = [], []
    for stage_output in stage_features:
        size = stage_output.shape[-2:]
        for full, parts in ((fg_full, fg_parts), (bg_full, bg_parts)):
            mask = F.adaptive_avg_pool2d(full, size)                             # area average
            pooled = (stage_output * mask).sum(dim=(2, 3)) / (mask.sum(dim=(2, 3)) + eps)
            parts.append(F.normalize(pooled, dim=1))
    return torch.cat(fg_parts, dim=1), torch.cat(bg_parts, dim=1)


# --- frozen exit maps -------------------------------------------------------------------------------

@torch.no_grad()
def native_exit_maps(model: MultiExitResNet, images, exits: Sequence[int] = ALL_EXITS,
                     device: str | torch.device | None = None, batch_size: int = 64) -> list[torch.Tensor]:
    """Exit maps of many slices at their native resolution, computed once (the classifier is frozen).

    Args:
        model: trained multi-exit network (put in eval mode here).
        images: ``(N, 1, H, W) float32`` in [0, 1] (NumPy or torch).
        exits: which exits (1-based).
        device: where to run the network (default: the model's device).

    Returns:
        one ``(N, 1, h_i, w_i) float32`` CPU tensor per selected exit (raw logits per pixel).
    """
    device = next(model.parameters()).device if device is None else pick_device(device)
    model.eval().to(device)
    image_tensor = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    chunks: list[list[torch.Tensor]] = [[] for _ in exits]
    for start in range(0, len(image_tensor), batch_size):
        output = model(image_tensor[start:start + batch_size].to(device))
        for slot, exit_index in enumerate(exits):
            chunks[slot].append(output.maps[exit_index - 1].float().cpu())
    return [torch.cat(parts) for parts in chunks]


@torch.no_grad()
def frozen_exit_maps(classifier: MultiExitResNet, images: torch.Tensor,
                     exits: Sequence[int] = ALL_EXITS) -> list[torch.Tensor]:
    """The frozen classifier's exit maps of one batch, at native resolution, in float32 (autocast
    off): what :func:`native_exit_maps` stores for the whole split, computed when needed.

    Args:
        classifier: trained multi-exit network in eval mode, on ``images``' device.
        images: ``(B, 1, H, W)`` slices.

    Returns:
        one ``(B, 1, h_i, w_i) float32`` tensor per selected exit, on ``images``' device.
    """
    with torch.autocast(device_type=images.device.type, enabled=False):
        output = classifier(images.float())
    return [output.maps[exit_index - 1].float() for exit_index in exits]


def normalised_exit_maps(native_maps: Sequence[torch.Tensor], size: int | tuple[int, int],
                         region: torch.Tensor | None = None) -> torch.Tensor:
    """Upsample native exit maps bilinearly to the slice size and min-max normalise each.

    Args:
        native_maps: n tensors ``(B, 1, h_i, w_i)``.
        size: slice side S (or ``(H, W)``).
        region: optional ``(B, 1, H, W) bool`` brain (:func:`~amecam_lib.equations.brain_region`):
            n(.) over its pixels only, 0 outside (``EvaluationConfig.restrict_to_brain``).

    Returns:
        ``(B, n, H, W) float32`` in [0, 1]: the n(M_i) of Eq. 2.
    """
    return normalise_maps(upsample_maps(list(native_maps), size), region)


# --- training --------------------------------------------------------------------------------------

def aggregation_dir(run_dir: str | Path, modality: str, exits: Sequence[int] = ALL_EXITS) -> Path:
    """``RUN/<modality>/aggregation`` for all four exits, ``RUN/<modality>/aggregation_exit2_3`` for
    exits (2, 3), and so on.

    Raises:
        ValueError: exits empty, repeated, unsorted or outside 1..4.
    """
    exits = _check_exits(exits)
    name = "aggregation" if exits == ALL_EXITS else "aggregation_exit" + "_".join(map(str, exits))
    return phase_dir(run_dir, modality, name)


class _AttentionWithFrozenClassifier(BesideFrozenClassifier):
    """A (trainable) beside the frozen classifier; checkpoints hold A only."""

    trainable_attribute = "attention"


def aggregation_step(wrapper_model: torch.nn.Module, images: torch.Tensor,
                     native_maps: Sequence[torch.Tensor], settings,
                     restrict_to_brain: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward of the aggregation phase: n(M_i) -> S, M_f -> features -> Eq. 3.

    Args:
        wrapper_model: holds ``.attention`` (A) and ``.classifier`` (frozen; for ``"encoder"``
            features it needs ``feature_maps(images)``, see ``MultiExitResNet``).
        images: ``(B, 1, H, W)`` on the model's device.
        native_maps: n tensors ``(B, 1, h_i, w_i)`` on the same device.
        settings: an ``AggregationConfig`` (``features``, ``pool_region``, ``rank_decay``, ``sim_clamp``).
        restrict_to_brain: n(M_i) over the brain only, 0 outside (``EvaluationConfig.restrict_to_brain``).

    Returns:
        ``(loss, weights (B, n, H, W), fused_map (B, 1, H, W))``.
    """
    brain = brain_region(images)
    exit_maps_norm = normalised_exit_maps(native_maps, images.shape[-2:], brain if restrict_to_brain else None)
    weights, fused_map = fuse(images, exit_maps_norm, wrapper_model.attention)
    stage_features = None
    if settings.features == "encoder":
        with torch.no_grad():
            stage_features = [f.float() for f in wrapper_model.classifier.feature_maps(images)]
    pool_region = brain if settings.pool_region == "brain" else None
    fg, bg = c2am_features(images, fused_map, settings.features, stage_features, region=pool_region)
    loss = c2am_loss(fg, bg, rank_decay=settings.rank_decay, sim_clamp=tuple(settings.sim_clamp))
    return loss, weights, fused_map


def train_attention(run_dir: str | Path, modality: str, preset: Preset, exits: Sequence[int] = ALL_EXITS,
                    device: str | None = None, progress: bool = True) -> History:
    """Train the attention network A of Eq. 2 with the C2AM loss of Eq. 3 (classifier frozen).

    Reads ``RUN/<modality>/multi_exit/best.pt``; trains on the train split (slices labelled tumour,
    or all, see ``preset.aggregation.train_slices``) with :func:`amecam_lib.training.fit`
    (optimizer ``preset.aggregation.optimizer``: SGD in the paper, here with
    ``preset.aggregation.momentum``; cosine schedule);
    validates every epoch on the val split's tumour-labelled slices with label-free diagnostics:

    - ``val_loss``: Eq. 3 on the val slices (monitor, lower is better);
    - ``weight_exit<i>``: the mean attention weight of exit i over the val slices' brain pixels
      (uniform = 1/n; tells whether A learned anything);
    - ``fg_fraction``: mean fraction of brain pixels with M_f > 0.5.

    n(.) of the exit maps: as the evaluation's, ``preset.evaluation.restrict_to_brain`` (over the
    brain only when set); stored in the checkpoint's config (``restrict_to_brain``), checked by
    :func:`load_attention`.

    Writes ``RUN/<modality>/aggregation/`` (``aggregation_exit2_3/`` for exits (2, 3)):
    ``log.csv``, ``last.pt``, ``best.pt`` (A's weights only), and ``attention_weights.csv``
    (:func:`attention_weight_report` of ``best.pt``, when the val split has tumour slices).
    Resumes; a finished run returns at once (the report is rewritten, it is cheap).

    Args:
        run_dir: run folder with the sliced data and a trained multi-exit network.
        modality: ``t1``, ``t1ce``, ``t2`` or ``flair``.
        preset: settings (``preset.aggregation``, ``preset.seed``, ``preset.num_workers``).
        exits: which exits A aggregates (1-based, sorted): (1, 2, 3, 4) or e.g. (2, 3).
        device: ``"auto"``/None, ``"cpu"``, ``"cuda"``.
        progress: tqdm bars.

    Returns:
        the :class:`~amecam_lib.training.History`.

    Raises:
        FileNotFoundError: no trained multi-exit network.
        ValueError: bad ``exits``, ``features``, ``pool_region`` or ``train_slices``; no training slice.
    """
    settings = preset.aggregation
    exits = _check_exits(exits)
    restrict_to_brain = bool(preset.evaluation.restrict_to_brain)
    if settings.features not in FEATURE_CHOICES:
        raise ValueError(f"preset.aggregation.features must be one of {FEATURE_CHOICES}, got {settings.features!r}")
    if settings.pool_region not in POOL_REGION_CHOICES:
        raise ValueError(f"preset.aggregation.pool_region must be one of {POOL_REGION_CHOICES}, "
                         f"got {settings.pool_region!r}")
    train_slices = settings.train_slices
    if train_slices not in TRAIN_SLICE_CHOICES:
        raise ValueError(f"preset.aggregation.train_slices must be one of {TRAIN_SLICE_CHOICES}, got {train_slices!r}")
    run_device = pick_device(device or "auto")
    classifier = load_multi_exit(run_dir, modality, "best", device=run_device)
    classifier_checkpoint = phase_dir(run_dir, modality, "multi_exit") / "best.pt"
    classifier_state = load_checkpoint(classifier_checkpoint)
    classifier_epoch = int(classifier_state["epoch"])

    lazy = lazy_slices(preset)
    if lazy:     # read per item from the store; exit maps per batch (frozen_exit_maps)
        train_images = _select_lazy(SliceDataset.from_run(run_dir, modality, "train",
                                                          exclude_ambiguous=preset.data.exclude_ambiguous),
                                    train_slices)
        val_images = _select_lazy(SliceDataset.from_run(run_dir, modality, "val"), "tumour")
    else:
        train_images = _select(load_slices(run_dir, modality, "train", exclude_ambiguous=preset.data.exclude_ambiguous,
                                           with_masks=False), train_slices)
        val_images = _select(load_slices(run_dir, modality, "val", exclude_ambiguous=False, with_masks=False),
                             "tumour")
    if len(train_images) == 0:
        raise ValueError(f"no {train_slices} slice in the train split of {run_dir} ({modality})")

    if lazy:
        train_maps, val_maps = None, None
        loader = training_loader(train_images, settings.batch_size, preset, run_device,
                                 drop_last=len(train_images) > settings.batch_size)
    else:
        # Frozen classifier: its exit maps are computed once, at native resolution.
        train_maps = native_exit_maps(classifier, train_images, exits, device=run_device)
        val_maps = native_exit_maps(classifier, val_images, exits, device=run_device) if len(val_images) else None
        loader = DataLoader(TensorDataset(torch.from_numpy(train_images), *train_maps),
                            batch_size=settings.batch_size, shuffle=True, num_workers=preset.num_workers,
                            drop_last=len(train_images) > settings.batch_size)
    has_val = len(val_images) > 0

    seed_everything(preset.seed)
    attention = AttentionNet(n_maps=len(exits), hidden=settings.hidden,
                             final_bn_relu=settings.final_bn_relu)
    model = _AttentionWithFrozenClassifier(attention, classifier)

    def train_step(net, batch, step_device):
        if lazy:                      # (images, labels) -> exit maps of the frozen classifier now
            images = batch[0].to(step_device, non_blocking=True)
            native_maps = frozen_exit_maps(net.classifier, images, exits)
        else:
            images, *native_maps = (item.to(step_device, non_blocking=True) for item in batch)
        return aggregation_step(net, images, native_maps, settings, restrict_to_brain)[0]

    def evaluate(net, eval_device):
        if not has_val:
            return {}
        return _diagnostics(net, val_images, val_maps, exits, settings, eval_device, restrict_to_brain)

    config = {"phase": "aggregation", "modality": modality, "exits": list(exits),
              "data": checkpoint_data_config(run_dir, preset), "aggregation": dataclasses.asdict(settings),
              "restrict_to_brain": restrict_to_brain,
              "seed": preset.seed, "classifier": {"checkpoint": str(classifier_checkpoint),
                                                  "epoch": classifier_epoch,
                                                  "config": classifier_state["config"],
                                                  "weights_sha256": tensors_sha256(classifier_state["model"])}}
    out_dir = aggregation_dir(run_dir, modality, exits)
    history = fit(model, train_step=train_step, train_loader=loader, params=list(attention.parameters()),
               epochs=settings.epochs, lr=settings.lr, min_lr=settings.min_lr,
               weight_decay=settings.weight_decay, optimizer=settings.optimizer, momentum=settings.momentum,
               evaluate=evaluate if has_val else None,
               monitor="val_loss" if has_val else None, monitor_mode="min",
               out_dir=out_dir, config=config, device=run_device,
               seed=preset.seed, desc=f"attention {modality} exits {''.join(map(str, exits))}",
               progress=progress, **fit_compute_settings(preset))
    if has_val:
        best = load_attention(run_dir, modality, exits, device=run_device, restrict_to_brain=restrict_to_brain)
        table = attention_weight_table(best, val_images, val_maps, exits, restrict_to_brain, device=run_device,
                                       classifier=classifier)
        if distributed.is_main():
            write_text(out_dir / ATTENTION_REPORT, _csv_text(table))
    return history


def load_attention(run_dir: str | Path, modality: str, exits: Sequence[int] = ALL_EXITS,
                   which: str = "best", device: str | torch.device = "cpu",
                   restrict_to_brain: bool | None = None) -> AttentionNet:
    """The trained attention network of a run, in eval mode.

    Its ``restrict_to_brain`` attribute holds the n(.) it was trained with (the checkpoint's
    ``config.restrict_to_brain``; a checkpoint written before that setting existed was trained
    with n(.) over the whole slice: False). :class:`~amecam_lib.cams.CamMethods` refuses it with
    an evaluation of the other setting.

    Args:
        exits: the exits it was trained on ((1, 2, 3, 4) or e.g. (2, 3)).
        which: ``"best"`` (lowest val C2AM loss) or ``"last"``.
        restrict_to_brain: if given, the n(.) it will be used with
            (``preset.evaluation.restrict_to_brain``); another one is refused here already.

    Raises:
        FileNotFoundError: not trained yet (run :func:`train_attention`, notebook 04).
        ValueError: bad ``which`` or ``exits``; ``restrict_to_brain`` given and not the one it was
            trained with (the message names ``EvaluationConfig.restrict_to_brain``); the run's
            classifier (``multi_exit/best.pt``) is not the one it was trained on (its weights'
            sha256 differs from the one in the checkpoint's config: retrain A, notebook 04).
    """
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    path = aggregation_dir(run_dir, modality, exits) / f"{which}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no attention checkpoint at {path}; train it first (train_attention, notebook 04)")
    checkpoint = load_checkpoint(path)
    settings = checkpoint["config"]["aggregation"]
    attention = AttentionNet(n_maps=len(checkpoint["config"]["exits"]), hidden=settings.get("hidden", 32),
                             final_bn_relu=settings.get("final_bn_relu", False))
    attention.load_state_dict(checkpoint["model"])
    attention.restrict_to_brain = bool(checkpoint["config"].get("restrict_to_brain", False))
    _check_trained_on_this_classifier(path, checkpoint["config"], phase_dir(run_dir, modality, "multi_exit") / "best.pt")
    if restrict_to_brain is not None and attention.restrict_to_brain != bool(restrict_to_brain):
        raise ValueError(f"{path} was trained with EvaluationConfig.restrict_to_brain={attention.restrict_to_brain}, "
                         f"asked for restrict_to_brain={bool(restrict_to_brain)}; retrain it with the same "
                         f"preset (train_attention reads preset.evaluation.restrict_to_brain) or change the setting")
    return attention.to(pick_device(device)).eval()


def _check_trained_on_this_classifier(path: Path, config: dict, classifier_path: Path) -> None:
    """Refuse an attention network trained on another classifier than ``classifier_path`` (the exit maps
    it learnt to weigh came from that network). Skipped when either weight fingerprint is unknown (a
    checkpoint written before it was recorded, or no classifier checkpoint)."""
    trained_on = (config.get("classifier") or {}).get("weights_sha256")
    if trained_on is None or not classifier_path.is_file():
        return
    if tensors_sha256(load_checkpoint(classifier_path)["model"]) != trained_on:
        raise ValueError(f"{path} was trained on the exit maps of another classifier than {classifier_path} "
                         f"(its weights' sha256 differs): retrain the attention network (train_attention, notebook 04)")


# --- what A changed ---------------------------------------------------------------------------------

def attention_weight_summary(weights: torch.Tensor, brain: torch.Tensor) -> dict[str, np.ndarray]:
    """How far the attention weights are from uniform, inside the brain.

    Uniform weights are ``1/n`` at every pixel; with them ``M_f`` is the plain mean of the n(M_i)
    and the final CAM equals ``avg_me`` exactly. ``|S_i - 1/n| = 0`` everywhere means A changed
    nothing.

    Args:
        weights: ``(B, n, H, W)`` attention weights S (softmax over n).
        brain: ``(B, 1, H, W) bool`` pixels to average over (the brain, slice > 0).

    Returns:
        ``{"mean_weight": (n,), "mean_abs_deviation": (n,)}`` float64 arrays: per exit, the mean
        of ``S_i`` and of ``|S_i - 1/n|`` over the brain pixels of all slices; ``"brain_pixels"``:
        their number (an array of one int). No brain pixel: NaN means (never a division by 0).

    Raises:
        ValueError: ``brain`` not ``(B, 1, H, W)`` beside ``weights``.
    """
    if weights.ndim != 4 or brain.shape != (weights.shape[0], 1, *weights.shape[2:]):
        raise ValueError(f"weights must be (B, n, H, W) and brain (B, 1, H, W); got {tuple(weights.shape)} "
                         f"and {tuple(brain.shape)}")
    inside = brain.to(weights.device, torch.float64)
    pixels = float(inside.sum())
    n_maps = weights.shape[1]
    weights = weights.double()
    if pixels == 0:
        nan = np.full(n_maps, np.nan)
        return {"mean_weight": nan, "mean_abs_deviation": nan.copy(), "brain_pixels": np.array([0])}
    mean_weight = (weights * inside).sum(dim=(0, 2, 3)) / pixels
    deviation = ((weights - 1.0 / n_maps).abs() * inside).sum(dim=(0, 2, 3)) / pixels
    return {"mean_weight": mean_weight.cpu().numpy(), "mean_abs_deviation": deviation.cpu().numpy(),
            "brain_pixels": np.array([int(pixels)])}


@torch.no_grad()
def attention_weight_table(attention, images, native_maps: Sequence[torch.Tensor] | None, exits: Sequence[int],
                           restrict_to_brain: bool = False, device: str | torch.device = "cpu",
                           batch_size: int = 64, classifier: MultiExitResNet | None = None) -> pd.DataFrame:
    """The attention-weight report of A on given slices (:func:`attention_weight_summary`).

    Args:
        attention: A over ``len(exits)`` maps (put in eval mode).
        images: ``(N, 1, H, W) float32`` slices (NumPy or torch).
            Or a dataset whose items start with a ``(1, H, W)`` image (lazy, at scale).
        native_maps: their exit maps at native resolution, one ``(N, 1, h_i, w_i)`` per exit
            (:func:`native_exit_maps`); None: computed per batch by ``classifier``.
        exits: the exits A aggregates (1-based), the rows of the table.
        restrict_to_brain: the n(.) of the exit maps A is fed (as in training).
        classifier: the frozen multi-exit network, when ``native_maps`` is None.

    Under torchrun every process computes its share of the batches and every process returns
    the whole table (weighted sums over the batches, added over the processes).

    Returns:
        one row per exit, columns :data:`ATTENTION_REPORT_COLUMNS`: ``exit``, ``mean_weight``
        (mean S_i over the brain pixels), ``uniform_weight`` (1/n), ``mean_abs_deviation``
        (mean |S_i - 1/n| there), ``n_slices``, ``brain_pixels``.
    """
    exits = _check_exits(exits)
    run_device = pick_device(device)
    if isinstance(attention, torch.nn.Module):
        attention = attention.to(run_device).eval()
    if native_maps is None and classifier is not None:
        classifier = classifier.to(run_device).eval()
    n_maps = len(exits)
    # Per batch: the summary's means times its brain pixels (sums), added up; then divided.
    totals = torch.zeros(2 * n_maps + 1, dtype=torch.float64)
    for start, stop in distributed.batch_shard(len(images), batch_size):
        batch_images = image_batch(images, start, stop).float().to(run_device)
        brain = brain_region(batch_images)
        native = (frozen_exit_maps(classifier, batch_images, exits) if native_maps is None
                  else [maps[start:stop].to(run_device) for maps in native_maps])
        exit_maps_norm = normalised_exit_maps(native, batch_images.shape[-2:], brain if restrict_to_brain else None)
        weights, _ = fuse(batch_images, exit_maps_norm, attention)
        summary = attention_weight_summary(weights.cpu(), brain.cpu())
        pixels = float(summary["brain_pixels"][0])
        if pixels:
            totals += torch.from_numpy(np.concatenate([summary["mean_weight"] * pixels,
                                                       summary["mean_abs_deviation"] * pixels, [pixels]]))
    totals = distributed.all_reduce_sum(totals).numpy()
    pixels = totals[-1]
    mean_weight, deviation = ((totals[:n_maps] / pixels, totals[n_maps:2 * n_maps] / pixels) if pixels
                              else (np.full(n_maps, np.nan), np.full(n_maps, np.nan)))
    return pd.DataFrame({"exit": list(exits), "mean_weight": mean_weight,
                         "uniform_weight": 1.0 / n_maps, "mean_abs_deviation": deviation,
                         "n_slices": len(images), "brain_pixels": int(pixels)},
                        columns=list(ATTENTION_REPORT_COLUMNS))


def attention_weight_report(run_dir: str | Path, modality: str, preset: Preset, exits: Sequence[int] = ALL_EXITS,
                            device: str | None = None, write: bool = True) -> pd.DataFrame:
    """What the trained A (``best.pt``) does, on the val split's tumour-labelled slices (no mask used).

    Per exit i: the mean weight ``S_i`` inside the brain (pixels > 0) and the mean ``|S_i - 1/n|``
    there. Read it against ``1/n``: uniform weights mean A changed nothing, and then ``ame_cam``
    equals ``avg_me`` exactly (and ``m_f`` too). :func:`train_attention` writes it after training.

    Args:
        run_dir, modality: the run (trained classifier and A over ``exits``).
        preset: settings (``preset.evaluation.restrict_to_brain``: the n(.) A is fed).
        exits: the exits of A ((1, 2, 3, 4) or (2, 3)).
        device: ``"auto"``/None, ``"cpu"``, ``"cuda"``.
        write: write ``RUN/<modality>/aggregation*/attention_weights.csv`` (atomically).

    Returns:
        the table of :func:`attention_weight_table`.

    Raises:
        FileNotFoundError: classifier or A not trained.
        ValueError: the val split has no tumour-labelled slice; A trained with another n(.).
    """
    exits = _check_exits(exits)
    restrict_to_brain = bool(preset.evaluation.restrict_to_brain)
    run_device = pick_device(device or "auto")
    attention = load_attention(run_dir, modality, exits, device=run_device, restrict_to_brain=restrict_to_brain)
    classifier = load_multi_exit(run_dir, modality, "best", device=run_device)
    val_images = _select(load_slices(run_dir, modality, "val", exclude_ambiguous=False, with_masks=False),
                         "tumour")
    if len(val_images) == 0:
        raise ValueError(f"the val split of {run_dir} has no tumour-labelled {modality} slice")
    native_maps = native_exit_maps(classifier, val_images, exits, device=run_device)
    table = attention_weight_table(attention, val_images, native_maps, exits, restrict_to_brain, device=run_device)
    if write:
        write_text(aggregation_dir(run_dir, modality, exits) / ATTENTION_REPORT, _csv_text(table))
    return table


def read_attention_report(run_dir: str | Path, modality: str, exits: Sequence[int] = ALL_EXITS) -> pd.DataFrame:
    """``RUN/<modality>/aggregation*/attention_weights.csv`` as a table (see :func:`attention_weight_report`).

    Raises:
        FileNotFoundError: not written yet (:func:`train_attention` writes it).
    """
    path = aggregation_dir(run_dir, modality, exits) / ATTENTION_REPORT
    if not path.is_file():
        raise FileNotFoundError(f"no attention-weight report at {path}; run train_attention (notebook 04)")
    return pd.read_csv(path)


# --- helpers ---------------------------------------------------------------------------------------

def _check_exits(exits: Sequence[int]) -> tuple[int, ...]:
    exits = tuple(int(e) for e in exits)
    if not exits or list(exits) != sorted(set(exits)) or not all(1 <= e <= N_EXITS for e in exits):
        raise ValueError(f"exits must be distinct, sorted, within 1..{N_EXITS}; got {exits}")
    return exits


def _select(slice_set, which: str) -> np.ndarray:
    images = np.asarray(slice_set.images, dtype=np.float32)
    if which == "tumour":
        images = images[np.asarray(slice_set.labels) == 1]
    return np.ascontiguousarray(images)


def _select_lazy(dataset: SliceDataset, which: str) -> Dataset:
    """:func:`_select` without loading: the tumour-labelled items of a lazy dataset (a Subset)."""
    if which != "tumour":
        return dataset
    return Subset(dataset, np.flatnonzero(dataset.labels == 1).tolist())


def _csv_text(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6f", lineterminator="\n")
    return buffer.getvalue()


@torch.no_grad()
def _diagnostics(net, val_images: np.ndarray, val_maps: Sequence[torch.Tensor], exits: Sequence[int],
                 settings, device, restrict_to_brain: bool = False, batch_size: int = 64) -> dict[str, float]:
    """Label-free validation numbers of A (see :func:`train_attention`). ``val_images``: an array,
    or a lazy dataset with ``val_maps=None`` (exit maps per batch from ``net.classifier``); under
    torchrun each process takes its share of the batches and the sums are added up."""
    n_maps = len(exits)
    loss_sum, weight_sums, fg_sum, brain_sum, n_batches = 0.0, torch.zeros(n_maps), 0.0, 0.0, 0
    for start, stop in distributed.batch_shard(len(val_images), batch_size):
        images = image_batch(val_images, start, stop).to(device)
        native = (frozen_exit_maps(net.classifier, images, exits) if val_maps is None
                  else [maps[start:stop].to(device) for maps in val_maps])
        loss, weights, fused_map = aggregation_step(net, images, native, settings, restrict_to_brain)
        brain = (images > 0).float()
        loss_sum += float(loss)
        n_batches += 1
        weight_sums += (weights * brain).sum(dim=(0, 2, 3)).cpu()
        fg_sum += float(((fused_map > 0.5).float() * brain).sum())
        brain_sum += float(brain.sum())
    if distributed.active():
        totals = distributed.all_reduce_sum(torch.tensor([loss_sum, n_batches, fg_sum, brain_sum,
                                                          *weight_sums.tolist()], dtype=torch.float64))
        loss_sum, n_batches, fg_sum, brain_sum = (float(value) for value in totals[:4])
        weight_sums = totals[4:]
    metrics = {"val_loss": loss_sum / max(n_batches, 1)}
    for slot, exit_index in enumerate(exits):
        metrics[f"weight_exit{exit_index}"] = float(weight_sums[slot]) / max(brain_sum, 1.0)
    metrics["fg_fraction"] = fg_sum / max(brain_sum, 1.0)
    return metrics
