"""AME-CAM's activation-aggregation phase: train the attention network A with the C2AM loss
(paper Sec. 2, Eq. 2-3) on top of the frozen multi-exit classifier.

For a slice I and its exit maps M_1..M_n (upsampled to the slice size)::

    n(M_i)  per-image min-max normalisation to [0, 1]             (equations.normalise_maps)
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
    the masked slices themselves, flattened (``(B, S*S)``): the authors' code.
``"encoder"``
    the frozen classifier's stage features of the slice, averaged under M_f (foreground) and under
    1 - M_f (background) at each stage's resolution, L2-normalised per stage and concatenated
    (``(B, 64 + 128 + 256 + 512)`` for ResNet-18): C2AM's choice of backbone features.

Training slices (``AggregationConfig.train_slices``): ``"tumour"`` (default) uses the train-split
slices *labelled* tumour, where a foreground exists to be separated; ``"all"`` uses every train
slice. Only slice labels are used, never masks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from amecam_lib.config import Preset
from amecam_lib.device import pick_device, seed_everything
from amecam_lib.equations import fuse, normalise_maps  # noqa: F401  (also re-exported for callers)
from amecam_lib.losses.c2am import c2am_loss
from amecam_lib.models.attention import AttentionNet
from amecam_lib.models.multi_exit import N_EXITS, MultiExitResNet, upsample_maps
from amecam_lib.phases import checkpoint_data_config, load_multi_exit, phase_dir
from amecam_lib.slices import load_slices
from amecam_lib.training import History, fit, load_checkpoint

FEATURE_CHOICES = ("pixels", "encoder")
TRAIN_SLICE_CHOICES = ("tumour", "all")
ALL_EXITS: tuple[int, ...] = (1, 2, 3, 4)


# --- the operations of Eq. 2-3 ---------------------------------------------------------------------
# n(.) and Eq. 2 (normalise_maps, fuse) live in amecam_lib.equations, imported above.

def c2am_features(images: torch.Tensor, fused_map: torch.Tensor, features: str = "pixels",
                  stage_features: Sequence[torch.Tensor] | None = None,
                  eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background features v^f, v^b of Eq. 3.

    Args:
        images: ``(B, 1, H, W)`` slices in [0, 1].
        fused_map: ``(B, 1, H, W)`` M_f in [0, 1] (gradients flow through it).
        features: ``"pixels"`` (I * M_f and I * (1 - M_f) flattened, the authors' code) or
            ``"encoder"`` (``stage_features`` averaged under M_f and 1 - M_f, C2AM).
        stage_features: for ``"encoder"``: the frozen classifier's stage outputs for ``images``,
            a list of ``(B, C_k, h_k, w_k)`` (``MultiExitResNet.feature_maps``), no gradient needed.
        eps: added to the mask sums of the ``"encoder"`` average.

    Returns:
        ``(fg, bg)``: two ``(B, D)`` float32 tensors (D = H*W for pixels, sum C_k for encoder).

    Raises:
        ValueError: unknown ``features``, or ``"encoder"`` without ``stage_features``.
    """
    if features == "pixels":
        return (images * fused_map).flatten(1), (images * (1.0 - fused_map)).flatten(1)
    if features != "encoder":
        raise ValueError(f"features must be one of {FEATURE_CHOICES}, got {features!r}")
    if not stage_features:
        raise ValueError("features='encoder' needs the classifier's stage_features")
    fg_parts, bg_parts = [], []
    for stage_output in stage_features:
        stage_mask = F.adaptive_avg_pool2d(fused_map, stage_output.shape[-2:])   # area average
        for mask, parts in ((stage_mask, fg_parts), (1.0 - stage_mask, bg_parts)):
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
        images: ``(N, 1, S, S) float32`` in [0, 1] (NumPy or torch).
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


def normalised_exit_maps(native_maps: Sequence[torch.Tensor], size: int | tuple[int, int]) -> torch.Tensor:
    """Upsample native exit maps bilinearly to the slice size and min-max normalise each.

    Args:
        native_maps: n tensors ``(B, 1, h_i, w_i)``.
        size: slice side S (or ``(H, W)``).

    Returns:
        ``(B, n, H, W) float32`` in [0, 1]: the n(M_i) of Eq. 2.
    """
    return normalise_maps(upsample_maps(list(native_maps), size))


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


class _AttentionWithFrozenClassifier(torch.nn.Module):
    """A (trainable) beside the frozen classifier, so that ``fit`` moves both to the device while
    the classifier stays in eval mode and out of the optimiser."""

    def __init__(self, attention: AttentionNet, classifier: MultiExitResNet):
        super().__init__()
        self.attention = attention
        self.classifier = classifier
        for parameter in self.classifier.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.classifier.eval()
        return self

    def state_dict(self, *args, **kwargs):  # checkpoints hold A only
        return self.attention.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.attention.load_state_dict(state_dict, strict=strict, assign=assign)


def aggregation_step(wrapper_model: torch.nn.Module, images: torch.Tensor,
                     native_maps: Sequence[torch.Tensor], settings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward of the aggregation phase: n(M_i) -> S, M_f -> features -> Eq. 3.

    Args:
        wrapper_model: holds ``.attention`` (A) and ``.classifier`` (frozen multi-exit net).
        images: ``(B, 1, S, S)`` on the model's device.
        native_maps: n tensors ``(B, 1, h_i, w_i)`` on the same device.
        settings: an ``AggregationConfig`` (``features``, ``rank_decay``, ``sim_clamp``).

    Returns:
        ``(loss, weights (B, n, S, S), fused_map (B, 1, S, S))``.
    """
    exit_maps_norm = normalised_exit_maps(native_maps, images.shape[-2:])
    weights, fused_map = fuse(images, exit_maps_norm, wrapper_model.attention)
    stage_features = None
    if settings.features == "encoder":
        with torch.no_grad():
            stage_features = [f.float() for f in wrapper_model.classifier.feature_maps(images)]
    fg, bg = c2am_features(images, fused_map, settings.features, stage_features)
    loss = c2am_loss(fg, bg, rank_decay=settings.rank_decay, sim_clamp=tuple(settings.sim_clamp))
    return loss, weights, fused_map


def train_attention(run_dir: str | Path, modality: str, preset: Preset, exits: Sequence[int] = ALL_EXITS,
                    device: str | None = None, progress: bool = True) -> History:
    """Train the attention network A of Eq. 2 with the C2AM loss of Eq. 3 (classifier frozen).

    Reads ``RUN/<modality>/multi_exit/best.pt``; trains on the train split (slices labelled tumour,
    or all, see ``preset.aggregation.train_slices``) with :func:`amecam_lib.training.fit`
    (optimizer ``preset.aggregation.optimizer``: SGD with momentum in the paper; cosine schedule);
    validates every epoch on the val split's tumour-labelled slices with label-free diagnostics:

    - ``val_loss``: Eq. 3 on the val slices (monitor, lower is better);
    - ``weight_exit<i>``: the mean attention weight of exit i over the val slices' brain pixels
      (uniform = 1/n; tells whether A learned anything);
    - ``fg_fraction``: mean fraction of brain pixels with M_f > 0.5.

    Writes ``RUN/<modality>/aggregation/`` (``aggregation_exit2_3/`` for exits (2, 3)):
    ``log.csv``, ``last.pt``, ``best.pt`` (A's weights only). Resumes; a finished run returns at once.

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
        ValueError: bad ``exits``, ``features`` or ``train_slices``; no training slice.
    """
    settings = preset.aggregation
    exits = _check_exits(exits)
    if settings.features not in FEATURE_CHOICES:
        raise ValueError(f"preset.aggregation.features must be one of {FEATURE_CHOICES}, got {settings.features!r}")
    train_slices = settings.train_slices
    if train_slices not in TRAIN_SLICE_CHOICES:
        raise ValueError(f"preset.aggregation.train_slices must be one of {TRAIN_SLICE_CHOICES}, got {train_slices!r}")
    run_device = pick_device(device or "auto")
    classifier = load_multi_exit(run_dir, modality, "best", device=run_device)
    classifier_checkpoint = phase_dir(run_dir, modality, "multi_exit") / "best.pt"
    classifier_state = load_checkpoint(classifier_checkpoint)
    classifier_epoch = int(classifier_state["epoch"])

    train_set = load_slices(run_dir, modality, "train", exclude_ambiguous=preset.data.exclude_ambiguous)
    val_set = load_slices(run_dir, modality, "val", exclude_ambiguous=False)
    train_images = _select(train_set, train_slices)
    val_images = _select(val_set, "tumour")
    if len(train_images) == 0:
        raise ValueError(f"no {train_slices} slice in the train split of {run_dir} ({modality})")

    # Frozen classifier: its exit maps are computed once, at native resolution.
    train_maps = native_exit_maps(classifier, train_images, exits, device=run_device)
    val_maps = native_exit_maps(classifier, val_images, exits, device=run_device) if len(val_images) else None
    loader = DataLoader(TensorDataset(torch.from_numpy(train_images), *train_maps),
                        batch_size=settings.batch_size, shuffle=True, num_workers=preset.num_workers,
                        drop_last=len(train_images) > settings.batch_size)

    seed_everything(preset.seed)
    attention = AttentionNet(n_maps=len(exits), hidden=settings.hidden,
                             final_bn_relu=settings.final_bn_relu)
    model = _AttentionWithFrozenClassifier(attention, classifier)

    def train_step(net, batch, step_device):
        images, *native_maps = (item.to(step_device, non_blocking=True) for item in batch)
        return aggregation_step(net, images, native_maps, settings)[0]

    def evaluate(net, eval_device):
        if val_maps is None:
            return {}
        return _diagnostics(net, val_images, val_maps, exits, settings, eval_device)

    config = {"phase": "aggregation", "modality": modality, "exits": list(exits),
              "data": checkpoint_data_config(run_dir, preset), "aggregation": dataclasses.asdict(settings),
              "seed": preset.seed, "classifier": {"checkpoint": str(classifier_checkpoint),
                                                  "epoch": classifier_epoch,
                                                  "config": classifier_state["config"]}}
    return fit(model, train_step=train_step, train_loader=loader, params=list(attention.parameters()),
               epochs=settings.epochs, lr=settings.lr, min_lr=settings.min_lr,
               weight_decay=settings.weight_decay, optimizer=settings.optimizer, momentum=settings.momentum,
               evaluate=evaluate if val_maps is not None else None,
               monitor="val_loss" if val_maps is not None else None, monitor_mode="min",
               out_dir=aggregation_dir(run_dir, modality, exits), config=config, device=run_device,
               seed=preset.seed, desc=f"attention {modality} exits {''.join(map(str, exits))}",
               progress=progress)


def load_attention(run_dir: str | Path, modality: str, exits: Sequence[int] = ALL_EXITS,
                   which: str = "best", device: str | torch.device = "cpu") -> AttentionNet:
    """The trained attention network of a run, in eval mode.

    Args:
        exits: the exits it was trained on ((1, 2, 3, 4) or e.g. (2, 3)).
        which: ``"best"`` (lowest val C2AM loss) or ``"last"``.

    Raises:
        FileNotFoundError: not trained yet (run :func:`train_attention`, notebook 04).
        ValueError: bad ``which`` or ``exits``.
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
    return attention.to(pick_device(device)).eval()


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


@torch.no_grad()
def _diagnostics(net, val_images: np.ndarray, val_maps: Sequence[torch.Tensor], exits: Sequence[int],
                 settings, device, batch_size: int = 64) -> dict[str, float]:
    """Label-free validation numbers of A (see :func:`train_attention`)."""
    n_maps = len(val_maps)
    loss_sum, weight_sums, fg_sum, brain_sum, n_batches = 0.0, torch.zeros(n_maps), 0.0, 0.0, 0
    for start in range(0, len(val_images), batch_size):
        images = torch.from_numpy(val_images[start:start + batch_size]).to(device)
        native = [maps[start:start + batch_size].to(device) for maps in val_maps]
        loss, weights, fused_map = aggregation_step(net, images, native, settings)
        brain = (images > 0).float()
        loss_sum += float(loss)
        n_batches += 1
        weight_sums += (weights * brain).sum(dim=(0, 2, 3)).cpu()
        fg_sum += float(((fused_map > 0.5).float() * brain).sum())
        brain_sum += float(brain.sum())
    metrics = {"val_loss": loss_sum / max(n_batches, 1)}
    for slot, exit_index in enumerate(exits):
        metrics[f"weight_exit{exit_index}"] = float(weight_sums[slot]) / max(brain_sum, 1.0)
    metrics["fg_fraction"] = fg_sum / max(brain_sum, 1.0)
    return metrics
