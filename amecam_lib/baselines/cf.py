"""The C&F reference rows ``cf_ul`` (UL) and ``cf_fsl`` (FSL): a U-Net trained on the Active Contour
Without Edges (Chan-Vese) energy of its own soft segmentation (paper Table 1, "UL C&F (2020)" and
"FSL C&F (2020)"; Chen and Frey, "Medical image segmentation via unsupervised convolutional neural
network", arXiv:2001.10155, MIDL 2020 short paper).

C&F's idea (:mod:`amecam_lib.losses.acwe`, written by hand): the network's sigmoid ``y`` is the
level set's Heaviside, and the loss is the Chan-Vese energy of ``y`` on the slice itself, so no
label is needed (their "mode 1"); the supervised variant adds their label term, the Active Contour
loss of Chen et al. (CVPR 2019) against the mask, to the same unsupervised loss (their "mode 4":
``L_ACWE + L_label``). The AME-CAM paper names the two rows "UL C&F" and "FSL C&F" without saying
which of C&F's supervised modes it ran; mode 4 is the one trained in one go on labelled data.

What is C&F's and what is ours:

- C&F's: the losses and their weights (area 0.0005, no length term in the unsupervised loss;
  label length and region weights 1), each slice min-max normalised to [0, 1] for the energy, Adam
  at 5e-4, batch 20, no augmentation (the dataclass defaults, :class:`~amecam_lib.config.CfUlConfig`).
- Ours: the network is MONAI's ``BasicUNet`` behind the brain z-score of ``unet_fsl``
  (:class:`~amecam_lib.baselines.unet_fsl.FullySupervisedUNet`; C&F's is a small recurrent residual
  ConvNet with a PReLU output clipped to [0, 1]), its sigmoid is ``y`` and its 0.5 threshold the
  mask (as for every map of the project); the energy is restricted to the brain (pixels > 0) so that
  it does not just separate brain from air (C&F segment bone in whole SPECT slices); the cosine
  schedule of every phase; a preset-scaled budget.
- Which region is tumour (UL only; the energy is blind to it): decided once after training,
  without any mask, by the modality's contrast (:data:`TUMOUR_IS_BRIGHT`): on FLAIR, T2 and T1-CE
  the whole tumour is the brighter of the two regions (oedema and tumour are hyperintense on FLAIR
  and T2; the enhancing tumour on T1-CE), on T1 the darker (hypointense tumour). The soft region
  means ``c_in``, ``c_out`` of the trained network's output are pooled over the brains of
  :data:`ORIENTATION_SLICES` training slices; when the region the network calls "inside" has the
  wrong contrast, the network's ``flip`` buffer is set and its logit negated. For ``cf_fsl`` the
  masks fix the orientation (no flip).

Supervision: ``cf_ul`` reads no mask (images of the training split only;
``tests/test_mask_access.py`` checks it); ``cf_fsl`` reads the training patients' masks through
:func:`amecam_lib.slices.read_training_masks_for_fully_supervised`, never the validation or test
patients'. Neither selects epochs on validation data: ``best.pt`` is the last epoch.

Writes ``RUN/<modality>/cf_ul/`` and ``RUN/<modality>/cf_fsl/`` (``log.csv``, ``last.pt``,
``best.pt``) through :func:`amecam_lib.training.fit` (atomic checkpoints, resume, config
fingerprint with the data's); ``cf_ul``'s ``best.pt`` is rewritten once more with the orientation
(the ``flip`` buffer, and ``orientation`` in its config).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from amecam_lib import distributed
from amecam_lib.atomic import atomic_path
from amecam_lib.baselines.unet_fsl import brain_zscore, random_flips, random_patch, unet_network
from amecam_lib.config import MODALITIES, CfFslConfig, CfUlConfig, Preset
from amecam_lib.device import pick_device, seed_everything
from amecam_lib.equations import brain_region
from amecam_lib.losses.acwe import acwe_loss, active_contour_label_loss
from amecam_lib.phases import (checkpoint_data_config, fit_compute_settings, image_batch, phase_dir, slice_subset,
                               training_loader, training_slices)
from amecam_lib.slices import read_training_masks_for_fully_supervised
from amecam_lib.training import History, fit, load_checkpoint

PHASE_UL = "cf_ul"
"""The unsupervised phase's folder: ``RUN/<modality>/cf_ul/``."""
PHASE_FSL = "cf_fsl"
"""The supervised phase's folder: ``RUN/<modality>/cf_fsl/``."""

ORIENTATION_SLICES = 64
"""How many training slices (evenly spaced over the training set, case by case) ``cf_ul``'s
orientation pools its region means over: a forward pass on whole slices costs about as much as the
demo's epoch on patches, and two pooled means need far fewer than 479 slices."""

TUMOUR_IS_BRIGHT: dict[str, bool] = {"t1": False, "t1ce": True, "t2": True, "flair": True}
"""Label-free prior of ``cf_ul``'s orientation: is the whole tumour the brighter of the two
Chan-Vese regions in this modality? (FLAIR, T2: hyperintense oedema and tumour; T1-CE: enhancing
tumour; T1: hypointense.) Radiology, not the masks."""


class ActiveContourUNet(nn.Module):
    """C&F's segmenter: ``unet_fsl``'s network (MONAI ``BasicUNet`` behind the brain z-score,
    :func:`~amecam_lib.baselines.unet_fsl.unet_network`) and an orientation.

    ``(B, 1, H, W)`` slices in [0, 1] -> ``(B, 1, H, W)`` tumour logits: the U-Net's logit, negated
    when the buffer ``flip`` is set (then the tumour is the region the energy called "outside";
    ``sigmoid(-z) = 1 - sigmoid(z)``).

    Args:
        channels: ``BasicUNet`` features (six numbers); norm: ``"batch"`` or ``"instance"``.
    """

    def __init__(self, channels, norm: str = "batch"):
        super().__init__()
        self.segmenter = unet_network(channels, norm)
        self.register_buffer("flip", torch.zeros((), dtype=torch.bool))

    def contour_logits(self, zscored: torch.Tensor) -> torch.Tensor:
        """The U-Net's raw logit of "inside the contour" for already z-scored slices (training)."""
        return self.segmenter.unet(zscored)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.segmenter(images)
        return torch.where(self.flip, -logits, logits)


def slice_minmax(images: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """C&F's intensity normalisation for the energy: each slice min-max normalised to [0, 1]
    (``(x - min) / (max - min)``; a constant slice gives 0). ``(B, 1, H, W)`` -> same shape float32."""
    images = images.float()
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp(min=eps)


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")


def _evenly_spaced(dataset: Dataset, count: int) -> Dataset:
    """``count`` slices evenly spaced over ``dataset`` (ordered by case, then z), or all of it."""
    if len(dataset) <= count:
        return dataset
    return Subset(dataset, torch.linspace(0, len(dataset) - 1, count).round().long().tolist())


def _views(images: torch.Tensor, masks: torch.Tensor | None, settings: CfUlConfig):
    """Normalise the whole slices (the network's z-score, as at inference; C&F's per-slice min-max
    for the energy; the brain), then cut the same random window and make the same flips of all of
    them and (FSL) of the mask. Returns ``(zscored, intensities, brain, masks or None)``."""
    zscored = brain_zscore(images)
    stacked = [slice_minmax(images), brain_region(images).float()] + ([masks.float()] if masks is not None else [])
    zscored, others = random_patch(zscored, torch.cat(stacked, dim=1), settings.patch_size)
    if settings.flip:
        zscored, others = random_flips(zscored, others)
    return zscored, others[:, :1], others[:, 1:2] > 0.5, (others[:, 2:] if masks is not None else None)


def _energy(net: ActiveContourUNet, zscored: torch.Tensor, intensities: torch.Tensor, brain: torch.Tensor,
            settings: CfUlConfig):
    """The network's soft segmentation and C&F's L_ACWE on the brain (float32)."""
    probability = torch.sigmoid(net.contour_logits(zscored).float())
    loss = acwe_loss(intensities, probability, brain, length_weight=settings.length_weight,
                     area_weight=settings.area_weight)
    return probability, loss


def _fit(model: ActiveContourUNet, train_step, dataset: Dataset, settings: CfUlConfig, phase: str, run_dir, modality,
         preset: Preset, device: torch.device, supervision: str, progress: bool) -> History:
    loader = training_loader(dataset, settings.batch_size, preset, device)
    config = {"phase": phase, "modality": modality, "data": checkpoint_data_config(run_dir, preset),
              phase: dataclasses.asdict(settings), "seed": preset.seed, "supervision": supervision}
    return fit(model, train_step=train_step, train_loader=loader, epochs=settings.epochs, lr=settings.lr,
               min_lr=settings.min_lr, weight_decay=settings.weight_decay, optimizer="adam",
               out_dir=phase_dir(run_dir, modality, phase), config=config, device=device, seed=preset.seed,
               desc=f"C&F ({phase}) {modality}", progress=progress, **fit_compute_settings(preset))


@torch.no_grad()
def pooled_region_means(model: ActiveContourUNet, images, device, batch_size: int = 64) -> tuple[float, float]:
    """``c_in``, ``c_out`` of the network's soft segmentation (its raw "inside the contour", before
    any flip) pooled over the brains of many slices: ``sum y x / sum y`` and ``sum (1-y) x / sum (1-y)``
    with ``x`` each slice min-max normalised (:func:`slice_minmax`), as in the energy. No mask.

    Args:
        model: the trained :class:`ActiveContourUNet` (put in eval mode).
        images: ``(N, 1, H, W)`` slices in [0, 1] (array, tensor, or a dataset of ``(image, ...)``).
        device: where to run it; batch_size: slices per forward.

    Returns:
        ``(c_in, c_out)``, floats in [0, 1].
    """
    model.eval().to(device)
    sums = torch.zeros(4, dtype=torch.float64)
    for start in range(0, len(images), batch_size):
        batch = image_batch(images, start, min(start + batch_size, len(images))).to(device)
        probability = torch.sigmoid(model.contour_logits(brain_zscore(batch)).float())
        brain = brain_region(batch).float()
        intensities = slice_minmax(batch)
        inside, outside = probability * brain, (1 - probability) * brain
        sums += torch.stack([(inside * intensities).sum(), inside.sum(), (outside * intensities).sum(),
                             outside.sum()]).double().cpu()
    return float(sums[0] / sums[1].clamp(min=1e-12)), float(sums[2] / sums[3].clamp(min=1e-12))


def tumour_is_outside(c_in: float, c_out: float, modality: str) -> bool:
    """``cf_ul``'s label-free orientation rule: is the tumour the region the energy called
    "outside"? Yes when the "inside" region's mean intensity ``c_in`` has the wrong contrast for the
    modality (:data:`TUMOUR_IS_BRIGHT`): darker than ``c_out`` on FLAIR / T2 / T1-CE, brighter on T1.
    Equal means: no (keep "inside").

    Raises:
        ValueError: an unknown modality.
    """
    _check_modality(modality)
    return c_in < c_out if TUMOUR_IS_BRIGHT[modality] else c_in > c_out


def train_cf_ul(run_dir: str | Path, modality: str, preset: Preset, device: str | None = None,
                progress: bool = True) -> History:
    """Train C&F without labels (paper Table 1 "UL C&F"): the U-Net on L_ACWE of the training
    split's slices (images only; ``preset.cf_ul``), then fix which region is tumour by
    :data:`TUMOUR_IS_BRIGHT` (see the module docstring) on :data:`ORIENTATION_SLICES` of the
    training slices. Resumes; a finished run returns at once.

    Args:
        run_dir: a sliced run folder; modality: ``t1``, ``t1ce``, ``t2`` or ``flair``.
        preset: settings (``preset.cf_ul``, ``preset.seed``, ``preset.num_workers``).
        device: ``"auto"``/None, ``"cpu"``, ``"cuda"``; progress: tqdm bars.

    Returns:
        the :class:`~amecam_lib.training.History` (``train_loss`` per epoch).

    Raises:
        ValueError: an unknown modality; ``max_slices`` < 1.
    """
    _check_modality(modality)
    settings = preset.cf_ul
    run_device = pick_device(device or "auto")
    train_set = training_slices(run_dir, modality, "train", preset, exclude_ambiguous=False)   # no mask
    dataset = slice_subset(train_set, settings.max_slices, preset.seed, name="preset.cf_ul.max_slices")
    seed_everything(preset.seed)
    model = ActiveContourUNet(settings.channels, settings.norm)

    def train_step(net, batch, step_device):
        images = batch[0].to(step_device, non_blocking=True)
        zscored, intensities, brain, _ = _views(images, None, settings)
        return _energy(net, zscored, intensities, brain, settings)[1]

    history = _fit(model, train_step, dataset, settings, PHASE_UL, run_dir, modality, preset, run_device,
                   "UL: none (the Chan-Vese energy of the slices themselves)", progress)
    best_path = phase_dir(run_dir, modality, PHASE_UL) / "best.pt"
    best = load_checkpoint(best_path)
    model.load_state_dict(best["model"])
    c_in, c_out = pooled_region_means(model, _evenly_spaced(dataset, ORIENTATION_SLICES), run_device)
    flip = tumour_is_outside(c_in, c_out, modality)
    model.flip.fill_(flip)
    best["model"] = model.state_dict()
    best["config"] = {**best["config"], "orientation": {
        "c_in": c_in, "c_out": c_out, "tumour_is_bright": TUMOUR_IS_BRIGHT[modality], "flipped": bool(flip)}}
    if distributed.is_main():
        with atomic_path(best_path) as tmp:
            torch.save(best, tmp)
    return history


def train_cf_fsl(run_dir: str | Path, modality: str, preset: Preset, device: str | None = None,
                 progress: bool = True) -> History:
    """Train C&F with labels (paper Table 1 "FSL C&F"; C&F's mode 4): the U-Net on
    ``acwe_weight * L_ACWE + L_label`` over the training split's slices and whole-tumour masks
    (``preset.cf_fsl``). Resumes; a finished run returns at once.

    Args and returns: as :func:`train_cf_ul`.

    Raises:
        ValueError: an unknown modality; ``max_slices`` < 1.
    """
    _check_modality(modality)
    settings = preset.cf_fsl
    run_device = pick_device(device or "auto")
    train = read_training_masks_for_fully_supervised(run_dir, modality, exclude_ambiguous=False)
    dataset = slice_subset(TensorDataset(torch.from_numpy(train.images), torch.from_numpy(train.masks[:, None])),
                           settings.max_slices, preset.seed, name="preset.cf_fsl.max_slices")
    seed_everything(preset.seed)
    model = ActiveContourUNet(settings.channels, settings.norm)

    def train_step(net, batch, step_device):
        images, masks = (item.to(step_device, non_blocking=True) for item in batch)
        zscored, intensities, brain, masks = _views(images, masks, settings)
        probability, unsupervised = _energy(net, zscored, intensities, brain, settings)
        supervised = active_contour_label_loss(probability, masks, length_weight=settings.label_length_weight,
                                               region_weight=settings.label_region_weight)
        return settings.acwe_weight * unsupervised + supervised

    return _fit(model, train_step, dataset, settings, PHASE_FSL, run_dir, modality, preset, run_device,
                "FSL: the training patients' whole-tumour masks (C&F's L_label) + L_ACWE", progress)


def _load(run_dir, modality: str, phase: str, trainer: str, device) -> ActiveContourUNet:
    path = phase_dir(run_dir, modality, phase) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no C&F checkpoint at {path}; train it first ({trainer}, notebook 05)")
    checkpoint = load_checkpoint(path)
    settings = checkpoint["config"][phase]
    model = ActiveContourUNet(settings["channels"], settings.get("norm", "batch"))
    model.load_state_dict(checkpoint["model"])
    return model.to(pick_device(device)).eval()


def load_cf_ul(run_dir: str | Path, modality: str, device: str | torch.device = "cpu") -> ActiveContourUNet:
    """The trained unsupervised C&F network of a run (``best.pt`` = the last epoch, orientation
    fixed), in eval mode.

    Raises:
        FileNotFoundError: not trained yet (:func:`train_cf_ul`, notebook 05).
    """
    return _load(run_dir, modality, PHASE_UL, "train_cf_ul", device)


def load_cf_fsl(run_dir: str | Path, modality: str, device: str | torch.device = "cpu") -> ActiveContourUNet:
    """The trained supervised C&F network of a run (``best.pt`` = the last epoch), in eval mode.

    Raises:
        FileNotFoundError: not trained yet (:func:`train_cf_fsl`, notebook 05).
    """
    return _load(run_dir, modality, PHASE_FSL, "train_cf_fsl", device)
