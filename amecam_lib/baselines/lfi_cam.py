"""Training of the LFI-CAM baseline ``lfi_cam`` (paper Table 1, WSSS, "LFI-CAM (2021)"; Lee, Park, Oh
and Kwak, "LFI-CAM: Learning Feature Importance for Better Visual Explanation", ICCV 2021).

What LFI-CAM does and what is kept here (the network: :mod:`amecam_lib.models.lfi_cam`; the map:
:mod:`amecam_lib.cams.lfi_cam`):

- LFI-CAM's: one network trained end to end for classification, whose attention branch (the
  Feature Importance Network on the slice masked by each feature map, the attention map as the
  importance-weighted sum of the feature maps) feeds ABN's attention mechanism ``(1 + A) * F`` to
  the perception branch; the only loss is the classification loss of the perception branch (here
  the binary cross-entropy of one tumour logit: the cross-entropy of two classes); the attention
  map is the CAM.
- Ours: a torchvision ResNet-18 (the multi-exit network's ``arch`` and ``norm``), started from the
  run's SupCon encoder (``pretrain/best.pt``, as the multi-exit network is; ``LfiCamConfig.
  init_from_pretrain``), so that the two classifiers of Table 1 start from the same weights; the
  training of the multi-exit network (Adam, cosine schedule, the same batch augmentation, no class
  balancing) with its own budget (``preset.lfi_cam``); the train split's slices and slice labels
  (the loader of every phase), optionally a seeded random subset of them
  (``LfiCamConfig.max_train_slices``). No validation diagnostic: ``best.pt`` is the last epoch.

Supervision: slice labels only; no mask is opened (``tests/test_mask_access.py``).

Writes ``RUN/<modality>/lfi_cam/{log.csv,last.pt,best.pt}`` through :func:`amecam_lib.training.fit`
(atomic checkpoints, resume, a config fingerprint with the data's and the SupCon encoder's, so
re-slicing, another split or another pretraining starts afresh).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from amecam_lib import distributed
from amecam_lib.augment import MRIAugment
from amecam_lib.config import Preset
from amecam_lib.device import pick_device, seed_everything
from amecam_lib.fingerprints import tensors_sha256
from amecam_lib.models.lfi_cam import LfiCamNet
from amecam_lib.models.projection import load_pretrained_backbone
from amecam_lib.phases import (checkpoint_data_config, fit_compute_settings, phase_dir, slice_subset, training_loader,
                               training_slices)
from amecam_lib.training import History, fit, load_checkpoint

PHASE = "lfi_cam"
"""The phase folder: ``RUN/<modality>/lfi_cam/``."""


def lfi_cam_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LFI-CAM's only loss, the perception branch's classification loss: binary cross-entropy with
    logits of the tumour logit (the cross-entropy of two classes), averaged over the batch.

    Args:
        logits: ``(B, 1)`` or ``(B,)`` tumour logits.
        labels: ``(B,)`` slice labels in {0, 1}.

    Returns:
        scalar float32, >= 0.

    Raises:
        ValueError: shapes that do not match, or labels outside {0, 1}.
    """
    logits = logits.reshape(-1).float() if logits.ndim == 2 and logits.shape[1] == 1 else logits.float()
    if logits.ndim != 1 or labels.shape != logits.shape:
        raise ValueError(f"logits must be (B, 1) or (B,) and labels (B,), got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    targets = labels.to(device=logits.device, dtype=torch.float32)
    if not bool(((targets == 0) | (targets == 1)).all()):
        raise ValueError(f"labels must be 0 or 1, got values {sorted(set(targets.tolist()))}")
    return F.binary_cross_entropy_with_logits(logits, targets)


def train_lfi_cam(run_dir: str | Path, modality: str, preset: Preset, device: str | None = None,
                  progress: bool = True) -> History:
    """Train LFI-CAM on the training split's slices and slice labels (see the module docstring).
    Resumes; a finished run returns at once.

    Args:
        run_dir: a sliced run folder.
        modality: ``t1``, ``t1ce``, ``t2`` or ``flair``.
        preset: settings (``preset.lfi_cam``; ``preset.multi_exit.arch/norm``; ``preset.seed``,
            ``preset.num_workers``, ``preset.data.exclude_ambiguous``).
        device: ``"auto"``/None, ``"cpu"``, ``"cuda"``.
        progress: tqdm bars.

    Returns:
        the :class:`~amecam_lib.training.History` (``train_loss`` per epoch).

    Raises:
        ValueError: ``preset.lfi_cam.max_train_slices`` < 1; the SupCon checkpoint does not fit the
            ResNet; errors of the slice loader (missing modality, empty split).
    """
    settings = preset.lfi_cam
    run_device = pick_device(device or "auto")
    train_set = slice_subset(training_slices(run_dir, modality, "train", preset), settings.max_train_slices,
                             preset.seed, name="preset.lfi_cam.max_train_slices")   # images and slice labels only
    loader = training_loader(train_set, settings.batch_size, preset, run_device)
    seed_everything(preset.seed)
    model = LfiCamNet(preset.multi_exit.arch, preset.multi_exit.norm, settings.fin_hidden)
    init = {"checkpoint": None}
    pretrain_path = phase_dir(run_dir, modality, "pretrain") / "best.pt"
    if settings.init_from_pretrain and pretrain_path.is_file():
        pretrained = load_checkpoint(pretrain_path)
        load_pretrained_backbone(model, pretrained["model"])
        init = {"checkpoint": str(pretrain_path), "weights_sha256": tensors_sha256(pretrained["model"])}
    if progress and distributed.is_main():
        print(f"LFI-CAM {modality}: ResNet " + (f"initialised from {pretrain_path}" if init["checkpoint"]
                                                else "at random initialisation"))
    augment = MRIAugment(crop_scale=tuple(settings.crop_scale)) if settings.augment else None

    def train_step(net, batch, step_device):
        images, labels = (item.to(step_device, non_blocking=True) for item in batch)
        if augment is not None:
            images = augment(images)
        return lfi_cam_loss(net(images).logits, labels)

    config = {"phase": PHASE, "modality": modality, "data": checkpoint_data_config(run_dir, preset),
              "lfi_cam": dataclasses.asdict(settings), "arch": preset.multi_exit.arch,
              "norm": preset.multi_exit.norm, "seed": preset.seed, "init": init,
              "supervision": "WSSS: the training slices' labels"}
    return fit(model, train_step=train_step, train_loader=loader, epochs=settings.epochs, lr=settings.lr,
               min_lr=settings.min_lr, weight_decay=settings.weight_decay, optimizer="adam",
               out_dir=phase_dir(run_dir, modality, PHASE), config=config, device=run_device, seed=preset.seed,
               desc=f"LFI-CAM {modality}", progress=progress, **fit_compute_settings(preset))


def load_lfi_cam(run_dir: str | Path, modality: str, device: str | torch.device = "cpu") -> LfiCamNet:
    """The trained LFI-CAM network of a run (``best.pt`` = the last epoch), in eval mode, built with
    the ResNet and FIN width it was trained with.

    Raises:
        FileNotFoundError: not trained yet (:func:`train_lfi_cam`, notebook 05).
    """
    path = phase_dir(run_dir, modality, PHASE) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no LFI-CAM checkpoint at {path}; train it first (train_lfi_cam, notebook 05)")
    checkpoint = load_checkpoint(path)
    config = checkpoint["config"]
    model = LfiCamNet(config["arch"], config["norm"], config["lfi_cam"].get("fin_hidden"))
    model.load_state_dict(checkpoint["model"])
    return model.to(pick_device(device)).eval()
