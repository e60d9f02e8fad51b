"""Training of Swin-MIL for the ``swin_mil`` row (paper Table 1, "Swin-MIL (2022)", type WSSS; Qian,
Li, Lai, Chang, Wei, Fan and Xu, "Transformer based multiple instance learning for weakly supervised
histopathology image segmentation", MICCAI 2022; the authors' code: github.com/Nexuslkl/Swin_MIL).

What Swin-MIL does and what is kept here (the network: :mod:`amecam_lib.models.swin_mil`; the loss:
:mod:`amecam_lib.losses.mil`; the map: :mod:`amecam_lib.cams.swin_mil`):

- Swin-MIL's: a Swin Transformer whose first three stages each feed a side output (1 x 1 conv,
  upsampling, sigmoid: a tumour probability per pixel); the fused map, the weighted sum of the side
  outputs (0.3, 0.4, 0.3); MIL pooling of every map into a slice score by the generalised mean
  (r = 4); the loss, the BCE of the slice scores with the slice label, summed over the side
  outputs and the fused map (deep supervision); Adam with the authors' weight decay 5e-4.
- Ours: the Swin blocks are timm's with **random initial weights** (the authors fine-tune an
  ImageNet Swin-T; no pretrained weights here, the project trains every network on its own
  slices), one grey channel in, sizes scaled by the preset (``preset.swin_mil``); one learning
  rate for all layers with the cosine schedule of every phase (the authors: 1e-5, the side outputs
  a hundredth of it, for fine-tuning); batch and epochs sized by the preset; random flips;
  optionally a fixed subset of the training slices (``max_train_slices``); optionally the MIL pooling
  over the brain pixels only (``pool_region="brain"``, the ``demo`` preset's; Swin-MIL pools over
  the whole image, right for histopathology where every pixel is tissue, see
  :mod:`amecam_lib.losses.mil`).
  No validation diagnostic: ``best.pt`` is the last epoch (the authors keep the epoch of best
  validation F1, which needs masks).

Supervision: the training split's slice labels only (:func:`amecam_lib.phases.training_slices`),
never a mask (tests/test_mask_access.py runs it with every mask reader disabled).

Writes ``RUN/<modality>/swin_mil/{log.csv,last.pt,best.pt}`` through
:func:`amecam_lib.training.fit` (atomic checkpoints, resume, a config fingerprint with the data's,
so re-slicing or another split starts afresh).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.utils.data import Dataset

from amecam_lib.baselines.unet_fsl import random_flips
from amecam_lib.config import Preset, SwinMilConfig
from amecam_lib.device import pick_device, seed_everything
from amecam_lib.losses.mil import deep_mil_loss
from amecam_lib.models.swin_mil import SwinMilNet
from amecam_lib.phases import (checkpoint_data_config, fit_compute_settings, phase_dir, slice_subset, training_loader,
                               training_slices)
from amecam_lib.training import History, fit, load_checkpoint

PHASE = "swin_mil"
"""The phase folder: ``RUN/<modality>/swin_mil/``."""

POOL_REGIONS = ("slice", "brain")
"""The values of :attr:`~amecam_lib.config.SwinMilConfig.pool_region`."""

NETWORK_FIELDS = ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "mlp_ratio", "side_weights")
"""The :class:`~amecam_lib.config.SwinMilConfig` fields that build the network."""


def swin_mil_network(settings: SwinMilConfig | dict) -> SwinMilNet:
    """The Swin-MIL network of ``settings`` (a :class:`~amecam_lib.config.SwinMilConfig` or a
    checkpoint's ``config["swin_mil"]`` dict), random weights."""
    values = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    return SwinMilNet(**{name: values[name] for name in NETWORK_FIELDS})


def train_swin_mil(run_dir: str | Path, modality: str, preset: Preset, device: str | None = None,
                   progress: bool = True) -> History:
    """Train Swin-MIL on the training split's slices and slice labels (see the module docstring).
    Resumes; a finished run returns at once.

    Args:
        run_dir: a sliced run folder.
        modality: ``t1``, ``t1ce``, ``t2`` or ``flair``.
        preset: settings (``preset.swin_mil``, ``preset.seed``, ``preset.num_workers``,
            ``preset.data.exclude_ambiguous``).
        device: ``"auto"``/None, ``"cpu"``, ``"cuda"``.
        progress: tqdm bars.

    Returns:
        the :class:`~amecam_lib.training.History` (``train_loss`` per epoch: the summed BCE of the
        side outputs and the fused map).

    Raises:
        ValueError: bad ``preset.swin_mil`` settings (naming the field); errors of ``load_slices``.
    """
    settings = preset.swin_mil
    if settings.pool_region not in POOL_REGIONS:
        raise ValueError(f"preset.swin_mil.pool_region must be one of {POOL_REGIONS}, got {settings.pool_region!r}")
    run_device = pick_device(device or "auto")
    train_set: Dataset = training_slices(run_dir, modality, "train", preset)     # images and slice labels only
    train_set = slice_subset(train_set, settings.max_train_slices, preset.seed, labels=train_set.labels,
                             name="preset.swin_mil.max_train_slices")
    loader = training_loader(train_set, settings.batch_size, preset, run_device)
    seed_everything(preset.seed)
    model = swin_mil_network(settings)

    def train_step(net, batch, step_device):
        images, batch_labels = (item.to(step_device, non_blocking=True) for item in batch)
        if settings.flip:
            images, _ = random_flips(images)
        output = net(images)
        region = images > 0 if settings.pool_region == "brain" else None
        return deep_mil_loss(output.sides, output.fused, batch_labels, r=settings.pool_exponent, region=region)

    config = {"phase": PHASE, "modality": modality, "data": checkpoint_data_config(run_dir, preset),
              "swin_mil": dataclasses.asdict(settings), "seed": preset.seed, "train_slices": int(len(train_set)),
              "supervision": "WSSS: the training slices' labels"}
    return fit(model, train_step=train_step, train_loader=loader, epochs=settings.epochs, lr=settings.lr,
               min_lr=settings.min_lr, weight_decay=settings.weight_decay, optimizer="adam",
               out_dir=phase_dir(run_dir, modality, PHASE), config=config, device=run_device, seed=preset.seed,
               desc=f"Swin-MIL {modality}", progress=progress, **fit_compute_settings(preset))


def load_swin_mil(run_dir: str | Path, modality: str, device: str | torch.device = "cpu") -> SwinMilNet:
    """The trained Swin-MIL network of a run (``best.pt`` = the last epoch), in eval mode.

    Raises:
        FileNotFoundError: not trained yet (:func:`train_swin_mil`, notebook 05).
    """
    path = phase_dir(run_dir, modality, PHASE) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no Swin-MIL checkpoint at {path}; train it first (train_swin_mil, notebook 05)")
    checkpoint = load_checkpoint(path)
    model = swin_mil_network(checkpoint["config"]["swin_mil"])
    model.load_state_dict(checkpoint["model"])
    return model.to(pick_device(device)).eval()
