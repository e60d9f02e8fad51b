"""The fully supervised ceiling ``unet_fsl``: a U-Net trained on the training patients' whole-tumour
masks (paper Table 1, "FSL, Opt. U-net"; Futrega, Milesi, Marcinkiewicz and Ribalta, "Optimized
U-Net for brain tumor segmentation", arXiv:2110.03352, 2021, an nnU-Net-style network).

The network and the loss come from MONAI: ``monai.networks.nets.BasicUNet`` (2-D, one grey channel
in, one tumour logit out; its width ``UnetFslConfig.channels`` scaled by the preset), behind the
Optimized U-Net's z-score of the brain's intensities (:func:`brain_zscore`, per slice here), and
``monai.losses.DiceCELoss`` (sigmoid, Dice over the whole batch + binary cross-entropy,
the loss of nnU-Net and of the Optimized U-Net). Ours, not the Optimized U-Net's: 2-D slices of one
modality (theirs: 3-D patches of the four modalities), the run's own slices (same crop geometry
and per-volume min-max as every other method; predicted whole), Adam with the cosine schedule of
every phase, random flips and the Optimized U-Net's intensity augmentation (contrast, brightness,
noise: :func:`random_intensity`; not its zoom and blur), optionally random patches of the slices
(``UnetFslConfig.patch_size``), and a preset-scaled budget (``smoke``: 1 epoch of a tiny U-Net on
whole slices; ``demo``: 6 epochs of a small one on 96 x 96 patches; ``paper``: 30 epochs of MONAI's
default width on whole slices).

Supervision: the **only** training of the project that reads masks, and only the training
patients', through :func:`amecam_lib.slices.read_training_masks_for_fully_supervised`. No
validation masks are read: ``best.pt`` is the last epoch. Its row is marked FSL in every table: a
reference for the ceiling, not a competitor of the weakly supervised rows (paper Sec. 4.1).

Scale: the training split is read into memory (images and masks); fine for the sample and a GPU
node's RAM at a few hundred patients, not for all 1,251 BraTS 2021 cases at 240 px (a lazy
dataset with masks would be the next step).

Writes ``RUN/<modality>/unet_fsl/{log.csv,last.pt,best.pt}`` through
:func:`amecam_lib.training.fit` (atomic checkpoints, resume, a config fingerprint with the data's,
so re-slicing or another split starts afresh).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from amecam_lib.config import Preset
from amecam_lib.device import pick_device, seed_everything
from amecam_lib.phases import checkpoint_data_config, fit_compute_settings, phase_dir, training_loader
from amecam_lib.slices import read_training_masks_for_fully_supervised
from amecam_lib.training import History, fit, load_checkpoint

PHASE = "unet_fsl"
"""The phase folder: ``RUN/<modality>/unet_fsl/``."""


def brain_zscore(images: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The Optimized U-Net's (and nnU-Net's) input normalisation, per slice: z-score over the brain
    (non-zero pixels), 0 outside; what MONAI's ``NormalizeIntensity(nonzero=True)`` does to one image
    (tests check the two agree). ``(B, 1, H, W)`` -> same shape float32. Our slices are min-max
    normalised per volume, so a patient whose volume maximum is an outlier has a darker brain; the
    z-score removes that, which the CAMs get from their own min-max n(.)."""
    images = images.float()
    brain = images > 0
    count = brain.sum(dim=(1, 2, 3), keepdim=True).clamp(min=1)
    mean = (images * brain).sum(dim=(1, 2, 3), keepdim=True) / count
    std = ((((images - mean) * brain) ** 2).sum(dim=(1, 2, 3), keepdim=True) / count).sqrt()
    return torch.where(brain, (images - mean) / (std + eps), torch.zeros_like(images))


class FullySupervisedUNet(nn.Module):
    """MONAI's 2-D ``BasicUNet`` behind :func:`brain_zscore`: ``(B, 1, H, W)`` slices in [0, 1] ->
    ``(B, 1, H, W)`` tumour logits (any H, W: MONAI pads the skip connections of odd sizes).

    Args:
        channels: ``BasicUNet`` features (six numbers).
        norm: ``"batch"`` (running statistics, so a network trained on patches normalises whole
            slices the same way) or MONAI's default ``"instance"`` (statistics of each input).
    """

    def __init__(self, channels, norm: str = "batch"):
        super().__init__()
        from monai.networks.nets import BasicUNet

        self.unet = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1,
                              features=tuple(int(c) for c in channels), norm=norm)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.unet(brain_zscore(images))


def unet_network(channels, norm: str = "batch") -> FullySupervisedUNet:
    """The fully supervised network (:class:`FullySupervisedUNet`)."""
    return FullySupervisedUNet(channels, norm)


def random_flips(images: torch.Tensor, masks: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The same random left-right / front-back flips (probability 1/2 each, per batch) of slices
    ``(B, C, H, W)`` and, when given, their masks (same H, W); returns ``(images, masks or None)``.
    Used by ``unet_fsl``, ``cf_ul``/``cf_fsl`` and ``swin_mil``."""
    for axis in (-2, -1):
        if torch.rand(()) < 0.5:
            images = images.flip(axis)
            masks = masks.flip(axis) if masks is not None else None
    return images, masks


def random_intensity(images: torch.Tensor, scale=(0.65, 1.5), shift=(-0.3, 0.3),
                     noise_std=(0.0, 0.2)) -> torch.Tensor:
    """The Optimized U-Net's (and nnU-Net's) intensity augmentation, on brain-z-scored slices
    ``(B, 1, H, W)`` float32: per slice a random contrast factor (uniform in ``scale``), brightness
    shift (uniform in ``shift``, in brain SDs) and Gaussian noise (SD uniform in ``noise_std``), on
    the brain pixels only (non-zero after :func:`brain_zscore`); the air stays 0, as at inference.

    Written here rather than with MONAI's ``RandScaleIntensity`` / ``RandShiftIntensity`` /
    ``RandGaussianNoise`` because those change the air too and act on one image at a time. Why it
    is on: a patient whose tumour is far less bright than the training patients' (leave-one-out
    over the 5 non-test sample patients, their masks used: README "Reference rows").
    """
    batch = images.shape[0]
    factor = torch.empty(batch, 1, 1, 1, device=images.device).uniform_(*scale)
    offset = torch.empty(batch, 1, 1, 1, device=images.device).uniform_(*shift)
    noise = torch.randn_like(images) * torch.empty(batch, 1, 1, 1, device=images.device).uniform_(*noise_std)
    return torch.where(images != 0, images * factor + offset + noise, images)


def random_patch(images: torch.Tensor, masks: torch.Tensor, patch_size,
                 tumour_fraction: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One random ``patch_size`` window (the same for the batch) of slices and masks ``(B, 1, H, W)``.

    With probability ``tumour_fraction`` (and a tumour pixel in the batch) the window is centred on
    a tumour pixel drawn at random (shifted to stay inside the slice): nnU-Net's foreground
    oversampling (a third of its patches), so that the Dice term sees tumour often enough; otherwise
    its position is uniform. A side larger than the slice keeps the whole side; None: unchanged.
    """
    if patch_size is None:
        return images, masks
    height, width = (min(int(p), n) for p, n in zip(patch_size, images.shape[-2:]))
    row_range, col_range = images.shape[-2] - height, images.shape[-1] - width
    tumour = torch.nonzero(masks > 0) if tumour_fraction > 0 and torch.rand(()) < tumour_fraction else None
    if tumour is not None and len(tumour):
        centre = tumour[int(torch.randint(0, len(tumour), ()))]
        row = min(max(int(centre[-2]) - height // 2, 0), row_range)
        col = min(max(int(centre[-1]) - width // 2, 0), col_range)
    else:
        row = int(torch.randint(0, row_range + 1, ()))
        col = int(torch.randint(0, col_range + 1, ()))
    window = (..., slice(row, row + height), slice(col, col + width))
    return images[window], masks[window]


def train_unet_fsl(run_dir: str | Path, modality: str, preset: Preset, device: str | None = None,
                   progress: bool = True) -> History:
    """Train the fully supervised U-Net on the training split's slices and masks (see the module
    docstring). Resumes; a finished run returns at once.

    Args:
        run_dir: a sliced run folder.
        modality: ``t1``, ``t1ce``, ``t2`` or ``flair``.
        preset: settings (``preset.unet_fsl``, ``preset.seed``, ``preset.num_workers``).
        device: ``"auto"``/None, ``"cpu"``, ``"cuda"``.
        progress: tqdm bars.

    Returns:
        the :class:`~amecam_lib.training.History` (``train_loss`` per epoch).
    """
    settings = preset.unet_fsl
    run_device = pick_device(device or "auto")
    train = read_training_masks_for_fully_supervised(run_dir, modality, exclude_ambiguous=False)
    dataset = TensorDataset(torch.from_numpy(train.images), torch.from_numpy(train.masks[:, None]))
    loader = training_loader(dataset, settings.batch_size, preset, run_device)   # DistributedSampler under torchrun
    seed_everything(preset.seed)
    model = unet_network(settings.channels, settings.norm)
    from monai.losses import DiceCELoss

    loss_function = DiceCELoss(sigmoid=True, batch=True)

    def train_step(net, batch, step_device):
        images, masks = (item.to(step_device, non_blocking=True) for item in batch)
        masks = masks.float()
        images = brain_zscore(images)              # on the whole slice, as at inference, then the patch
        images, masks = random_patch(images, masks, settings.patch_size, settings.patch_tumour_fraction)
        if settings.flip:
            images, masks = random_flips(images, masks)
        if settings.intensity_augment:
            images = random_intensity(images)
        return loss_function(net.unet(images), masks)

    config = {"phase": PHASE, "modality": modality, "data": checkpoint_data_config(run_dir, preset),
              "unet_fsl": dataclasses.asdict(settings), "seed": preset.seed,
              "supervision": "FSL: the training patients' whole-tumour masks"}
    return fit(model, train_step=train_step, train_loader=loader, epochs=settings.epochs, lr=settings.lr,
               min_lr=settings.min_lr, weight_decay=settings.weight_decay, optimizer="adam",
               out_dir=phase_dir(run_dir, modality, PHASE), config=config, device=run_device, seed=preset.seed,
               desc=f"U-Net (FSL) {modality}", progress=progress, **fit_compute_settings(preset))


def load_unet_fsl(run_dir: str | Path, modality: str, device: str | torch.device = "cpu") -> nn.Module:
    """The trained fully supervised U-Net of a run (``best.pt`` = the last epoch), in eval mode.

    Raises:
        FileNotFoundError: not trained yet (:func:`train_unet_fsl`, notebook 05).
    """
    path = phase_dir(run_dir, modality, PHASE) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no U-Net checkpoint at {path}; train it first (train_unet_fsl, notebook 05)")
    checkpoint = load_checkpoint(path)
    model = unet_network(checkpoint["config"]["unet_fsl"]["channels"], checkpoint["config"]["unet_fsl"].get("norm", "batch"))
    model.load_state_dict(checkpoint["model"])
    return model.to(pick_device(device)).eval()
