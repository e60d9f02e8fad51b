"""Training of C2AM's class-agnostic head for ``avg_me_c2am`` (paper Table 2, "Avg. ME + C2AM";
Xie et al., "C2AM: Contrastive learning of class-agnostic activation map for weakly supervised
object localization and semantic segmentation", CVPR 2022).

What C2AM does and what is kept here (the method itself: :mod:`amecam_lib.cams.avg_me_c2am`):

- C2AM's: the disentangler (:class:`~amecam_lib.models.c2am_head.ClassAgnosticHead`: 3x3 conv,
  BN, sigmoid) on the backbone's last two stages; the foreground / background features pooled
  under ``P`` and ``1 - P`` (:func:`~amecam_lib.models.c2am_head.pooled_features`); the
  contrastive loss over the batch, paper Eq. 3 (:func:`amecam_lib.losses.c2am.c2am_loss`, rank
  decay and clamp of ``preset.aggregation``, as for the attention network); no label and no mask;
  after training, the polarity by C2AM's border rule (a map high on the image frame is flipped).
- Ours: the backbone is the frozen multi-exit classifier of notebook 03 (C2AM fine-tunes its own,
  an unsupervised ResNet-50), so its features are computed once (or per batch at scale) and only
  the head trains (Adam, cosine schedule, ``preset.c2am_refine``); the training slices are the
  train split's, every slice (C2AM's data are unlabelled images). No val diagnostic:
  ``best.pt`` is the last epoch.

Writes ``RUN/<modality>/c2am_head/{log.csv,last.pt,best.pt}`` (fit's checkpoints, resume, config
with the data's and the classifier's fingerprints); ``best.pt`` is rewritten once more with the
polarity (the head's ``flip`` buffer) and ``border_mean`` in its config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from amecam_lib import distributed
from amecam_lib.atomic import atomic_path
from amecam_lib.config import Preset
from amecam_lib.device import pick_device, seed_everything
from amecam_lib.fingerprints import tensors_sha256
from amecam_lib.losses.c2am import c2am_loss
from amecam_lib.models.c2am_head import ClassAgnosticHead, border_mean, head_features, pooled_features
from amecam_lib.models.multi_exit import MultiExitResNet
from amecam_lib.phases import (checkpoint_data_config, fit_compute_settings, image_batch, lazy_slices,
                               load_multi_exit, phase_dir, training_loader, training_slices)
from amecam_lib.training import BesideFrozenClassifier, History, fit, load_checkpoint

PHASE = "c2am_head"
"""The phase folder: ``RUN/<modality>/c2am_head/``."""


class _HeadWithFrozenClassifier(BesideFrozenClassifier):
    """The head (trained) beside the frozen classifier; checkpoints hold the head only."""

    trainable_attribute = "head"


@torch.no_grad()
def classifier_head_features(classifier: MultiExitResNet, images, device, batch_size: int = 64) -> torch.Tensor:
    """:func:`~amecam_lib.models.c2am_head.head_features` of many slices, in batches: ``(N, C, h, w)``
    float32 on the CPU (``images``: ``(N, 1, H, W)`` array or a dataset of ``(image, label)``)."""
    classifier.eval().to(device)
    parts = [head_features(classifier.feature_maps(image_batch(images, start, min(start + batch_size, len(images)))
                                                   .to(device))).cpu()
             for start in range(0, len(images), batch_size)]
    return torch.cat(parts)


def train_c2am_head(run_dir: str | Path, modality: str, preset: Preset, device: str | None = None,
                    progress: bool = True) -> History:
    """Train C2AM's class-agnostic head on the frozen classifier's features (see the module
    docstring), then fix its polarity. Resumes; a finished run returns at once.

    Raises:
        FileNotFoundError: no trained multi-exit network (notebook 03).
    """
    settings = preset.c2am_refine
    aggregation = preset.aggregation
    run_device = pick_device(device or "auto")
    classifier = load_multi_exit(run_dir, modality, "best", device=run_device)
    classifier_path = phase_dir(run_dir, modality, "multi_exit") / "best.pt"
    classifier_state = load_checkpoint(classifier_path)
    train_set = training_slices(run_dir, modality, "train", preset)       # images and slice labels only
    lazy = lazy_slices(preset)
    if lazy:
        loader = training_loader(train_set, settings.head_batch_size, preset, run_device)
    else:
        features = classifier_head_features(classifier, train_set, run_device)
        loader = DataLoader(TensorDataset(features), batch_size=settings.head_batch_size, shuffle=True,
                            num_workers=preset.num_workers)
    with torch.no_grad():
        channels = head_features(classifier.feature_maps(image_batch(train_set, 0, 1).to(run_device))).shape[1]
    seed_everything(preset.seed)
    head = ClassAgnosticHead(channels)
    model = _HeadWithFrozenClassifier(head, classifier)

    def batch_features(net, batch, step_device):
        if lazy:
            with torch.no_grad():
                return head_features(net.classifier.feature_maps(batch[0].to(step_device, non_blocking=True)))
        return batch[0].to(step_device, non_blocking=True)

    def train_step(net, batch, step_device):
        features = batch_features(net, batch, step_device)
        fg, bg = pooled_features(features, net.head.raw_map(features))
        return c2am_loss(fg, bg, rank_decay=aggregation.rank_decay, sim_clamp=tuple(aggregation.sim_clamp))

    config = {"phase": PHASE, "modality": modality, "data": checkpoint_data_config(run_dir, preset),
              "c2am_refine": dataclasses.asdict(settings), "rank_decay": aggregation.rank_decay,
              "sim_clamp": list(aggregation.sim_clamp), "in_channels": int(channels), "seed": preset.seed,
              "classifier": {"checkpoint": str(classifier_path), "epoch": int(classifier_state["epoch"]),
                             "weights_sha256": tensors_sha256(classifier_state["model"])}}
    out_dir = phase_dir(run_dir, modality, PHASE)
    history = fit(model, train_step=train_step, train_loader=loader, params=list(head.parameters()),
                  epochs=settings.head_epochs, lr=settings.head_lr, optimizer="adam", out_dir=out_dir, config=config,
                  device=run_device, seed=preset.seed, desc=f"C2AM head {modality}", progress=progress,
                  **fit_compute_settings(preset))
    # C2AM's polarity rule on the trained head: high on the image frame (background) -> flip.
    best_path = out_dir / "best.pt"
    best = load_checkpoint(best_path)
    head.load_state_dict(best["model"])
    head.to(run_device).eval()
    with torch.no_grad():
        if lazy:
            rings = [border_mean(head.raw_map(batch_features(model, batch, run_device))) for batch in loader]
        else:
            rings = [border_mean(head.raw_map(batch[0].to(run_device))) for batch in loader]
    ring = float(sum(rings) / len(rings))
    head.flip.fill_(ring > 0.5)
    best["model"] = head.state_dict()
    best["config"] = {**best["config"], "polarity": {"border_mean": ring, "flipped": ring > 0.5}}
    if distributed.is_main():
        with atomic_path(best_path) as tmp:
            torch.save(best, tmp)
    return history


def load_c2am_head(run_dir: str | Path, modality: str, device: str | torch.device = "cpu") -> ClassAgnosticHead:
    """The trained class-agnostic head of a run (polarity fixed), in eval mode.

    Raises:
        FileNotFoundError: not trained yet (:func:`train_c2am_head`, notebook 05).
        ValueError: trained on another classifier than the run's ``multi_exit/best.pt``.
    """
    path = phase_dir(run_dir, modality, PHASE) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no C2AM head checkpoint at {path}; train it first (train_c2am_head, notebook 05)")
    checkpoint = load_checkpoint(path)
    classifier_path = phase_dir(run_dir, modality, "multi_exit") / "best.pt"
    trained_on = (checkpoint["config"].get("classifier") or {}).get("weights_sha256")
    if trained_on and classifier_path.is_file() and tensors_sha256(load_checkpoint(classifier_path)["model"]) != trained_on:
        raise ValueError(f"{path} was trained on the features of another classifier than {classifier_path}: "
                         f"retrain it (train_c2am_head)")
    head = ClassAgnosticHead(int(checkpoint["config"]["in_channels"]))
    head.load_state_dict(checkpoint["model"])
    return head.to(pick_device(device)).eval()
