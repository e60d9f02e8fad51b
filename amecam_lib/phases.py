"""The two trainings of AME-CAM's activation-extraction phase, wired to a run folder
(paper Sec. 2 and 3.2; notebooks 02 and 03).

1. :func:`pretrain_supcon` -- SupCon (Khosla et al. 2020) on the train split: two augmented views
   of every slice, labels as positives (``preset.pretrain.mode``: ``"supcon"``, the paper;
   ``"simclr"``, no labels; ``"simclr_authors"``, no labels and no L2 normalisation, the authors'
   code, see :class:`~amecam_lib.config.PretrainConfig`). Writes
   ``RUN/<modality>/pretrain/{log.csv,last.pt,best.pt}``.
2. :func:`train_multi_exit` -- the multi-exit ResNet, backbone initialised from the pretrained one,
   trained with Eq. 1 (Adam, cosine schedule; ``preset.multi_exit``), validated every epoch on the
   val split (Eq. 1 loss, accuracy and ROC AUC per exit); ``best.pt`` is the epoch with the best
   ``preset.multi_exit.select_by``: the highest ``auc_exit4`` (the authors' choice; ``paper``
   preset) or the lowest ``val_loss`` (``demo`` and ``smoke``). :func:`best_multi_exit_choice`
   says which, read from ``best.pt``. Writes
   ``RUN/<modality>/multi_exit/{log.csv,last.pt,best.pt,val_metrics.csv}``.

Both go through :func:`amecam_lib.training.fit`, so both resume, and both return at once when
already finished. The backbone's ``arch`` and ``norm`` come from ``preset.multi_exit`` in both
phases, so that the pretrained weights fit the network that is fine-tuned.

Under ``torchrun`` (:mod:`amecam_lib.distributed`; entry point ``data_scripts/train.py``) both run
unchanged on every process: the batch sizes are global (each process loads its share through a
``DistributedSampler``), the training slices are read lazily from the memory-mapped store
(:meth:`~amecam_lib.slices.SliceDataset.from_run`, never a copy of the split per process), SupCon
gathers the projections of every process (:func:`amecam_lib.distributed.gather_with_grad`) so the
loss is that of the global batch, and the validation of :func:`train_multi_exit` is sharded by
batch and gathered. ``preset.compute`` (:class:`~amecam_lib.config.ComputeConfig`) holds the GPU
speed settings and the BatchNorm choice.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, WeightedRandomSampler

from amecam_lib import distributed
from amecam_lib.atomic import write_text
from amecam_lib.augment import MRIAugment, TwoViews
from amecam_lib.config import PRETRAIN_MODES, Preset
from amecam_lib.device import pick_device, seed_everything
from amecam_lib.losses.exits import multi_exit_loss
from amecam_lib.losses.supcon import supcon_loss
from amecam_lib.models.multi_exit import N_EXITS, MultiExitResNet
from amecam_lib.models.projection import SupConNet, load_pretrained_backbone
from amecam_lib.runs import check_modality
from amecam_lib.fingerprints import tensors_sha256
from amecam_lib.slices import SliceDataset, data_fingerprint, load_slices, split_fingerprint
from amecam_lib.training import History, fit, load_checkpoint

CLASS_BALANCES = ("none", "pos_weight", "sampler")
EMBED_SOURCES = ("pretrain", "untrained", "multi_exit")


def phase_dir(run_dir: str | Path, modality: str, phase: str) -> Path:
    """``RUN/<modality>/<phase>``: where a phase of one modality keeps its checkpoints and logs."""
    return Path(run_dir) / check_modality(modality) / phase


SELECT_MODES = {f"auc_exit{N_EXITS}": "max", "val_loss": "min"}
"""Metrics that may pick the multi-exit ``best.pt`` (``MultiExitConfig.select_by``) and their direction."""
SELECT_DESCRIPTIONS = {f"auc_exit{N_EXITS}": f"highest, ROC AUC of exit {N_EXITS} on the val split",
                       "val_loss": "lowest, Eq. 1 on the val split"}
"""What each :data:`SELECT_MODES` metric is, in words (for :func:`best_multi_exit_choice`)."""


def checkpoint_data_config(run_dir: str | Path, preset: Preset) -> dict:
    """The data settings stored in a checkpoint's config, with the fingerprint of RUN/split.csv and
    that of the slices' content (:func:`~amecam_lib.slices.data_fingerprint`: split, every case's
    source file hashes and slicing settings): re-slicing with another split, or from changed source
    files, makes the next run start fresh instead of resuming a model trained on other slices (or
    one that saw today's test patients)."""
    return {**dataclasses.asdict(preset.data), "split_fingerprint": split_fingerprint(run_dir),
            "data_fingerprint": data_fingerprint(run_dir)}


def pretrain_network(arch: str, norm: str, pretrain_settings: dict) -> SupConNet:
    """The :class:`SupConNet` a pretraining with these settings trains (``dataclasses.asdict`` of a
    :class:`~amecam_lib.config.PretrainConfig`, or a checkpoint's ``config["pretrain"]``): head of
    ``projection_dim``, without the first layer's bias for ``mode="simclr_authors"``."""
    return SupConNet(arch, norm, projection_dim=int(pretrain_settings["projection_dim"]),
                     hidden_bias=pretrain_settings.get("mode") != "simclr_authors")


def pretrain_supcon(run_dir: str | Path, modality: str, preset: Preset, device: str | None = None,
                    progress: bool = True) -> History:
    """SupCon (or SimCLR) pretraining of the ResNet encoder on the train split (paper Sec. 3.2).

    Every batch of slices gives two views (:class:`amecam_lib.augment.TwoViews`, applied to the
    batch on ``device``); the projections go to :func:`amecam_lib.losses.supcon.supcon_loss` with
    the slice labels (``mode="supcon"``) or without (``"simclr"``, ``"simclr_authors"``), L2-normalised
    except in ``"simclr_authors"``, which also drops the head's first bias and uses SGD without
    momentum when ``optimizer="sgd"`` (other modes: momentum 0.9). The optimizer, learning rate and
    projection size are ``preset.pretrain``'s in every mode (the authors' values:
    :data:`amecam_lib.config.AUTHORS_PRETRAIN`). No validation metric: ``best.pt`` is the last epoch.

    Args:
        run_dir: a sliced run folder (``RUN/slices``, ``RUN/manifest.csv``).
        modality: ``t1``, ``t1ce``, ``t2`` or ``flair`` (must have been sliced).
        preset: settings; uses ``preset.pretrain``, ``preset.multi_exit.arch/norm``,
            ``preset.data.exclude_ambiguous``, ``preset.num_workers``, ``preset.seed``.
        device: ``"auto"``/None, ``"cpu"``, ``"cuda"``.
        progress: tqdm bars.

    Returns:
        the :class:`~amecam_lib.training.History` (``train_loss`` per epoch).

    Raises:
        ValueError: unknown ``preset.pretrain.mode``; errors of ``load_slices`` (missing modality,
            empty split).
    """
    settings = preset.pretrain
    if settings.mode not in PRETRAIN_MODES:
        raise ValueError(f"preset.pretrain.mode must be one of {PRETRAIN_MODES}, got {settings.mode!r}")
    run_device = pick_device(device or "auto")
    train_set = training_slices(run_dir, modality, "train", preset)
    loader = training_loader(train_set, settings.batch_size, preset, run_device)
    seed_everything(preset.seed)                      # same initial weights for a given seed
    model = pretrain_network(preset.multi_exit.arch, preset.multi_exit.norm, dataclasses.asdict(settings))
    two_views = TwoViews(MRIAugment(crop_scale=tuple(settings.crop_scale)))
    use_labels = settings.mode == "supcon"
    authors = settings.mode == "simclr_authors"

    def train_step(net, batch, step_device):
        images, labels = (item.to(step_device, non_blocking=True) for item in batch)
        views = two_views(images)                                   # (B, 2, 1, H, W)
        projections = net(views.flatten(0, 1)).view(images.shape[0], 2, -1)
        return global_supcon_loss(projections, labels if use_labels else None,
                                  temperature=settings.temperature, normalise=not authors)

    config = {"phase": "pretrain", "modality": modality, "data": checkpoint_data_config(run_dir, preset),
              "pretrain": dataclasses.asdict(settings), "arch": preset.multi_exit.arch,
              "norm": preset.multi_exit.norm, "seed": preset.seed}
    return fit(model, train_step=train_step, train_loader=loader, epochs=settings.epochs, lr=settings.lr,
               min_lr=settings.min_lr, weight_decay=settings.weight_decay, optimizer=settings.optimizer,
               momentum=0.0 if authors else 0.9, out_dir=phase_dir(run_dir, modality, "pretrain"),
               config=config, device=run_device, seed=preset.seed, desc=f"{settings.mode} {modality}",
               progress=progress, **fit_compute_settings(preset))


def global_supcon_loss(projections: torch.Tensor, labels: torch.Tensor | None = None,
                       temperature: float = 0.07, normalise: bool = True) -> torch.Tensor:
    """SupCon / SimCLR loss (:func:`~amecam_lib.losses.supcon.supcon_loss`) of the *global* batch.

    Under torchrun every process holds ``(B_r, V, D)`` projections of its share of the batch; they
    are gathered in rank order (:func:`amecam_lib.distributed.gather_with_grad`, the gradient
    flowing back to each process's own part) with their labels, and every process computes the
    loss of the whole batch: 8 processes x 64 slices give the loss of one process with the 512
    slices, and, after DistributedDataParallel averages the gradients, its gradient. In one
    process: ``supcon_loss`` itself.

    Args:
        projections: ``(B_r, V, D)`` projections of V views of this process's slices.
        labels: ``(B_r,)`` slice labels (SupCon) or None (SimCLR: positives are the other views).
        temperature, normalise: as :func:`~amecam_lib.losses.supcon.supcon_loss`.
    """
    projections = distributed.gather_with_grad(projections)
    labels = None if labels is None else distributed.gather_tensor(labels)
    return supcon_loss(projections, labels=labels, temperature=temperature, normalise=normalise)


def train_multi_exit(run_dir: str | Path, modality: str, preset: Preset, device: str | None = None,
                     progress: bool = True) -> History:
    """Train the multi-exit ResNet with Eq. 1 and keep the epoch with the best validation metric
    ``preset.multi_exit.select_by`` as ``best.pt`` (highest ``auc_exit4`` or lowest ``val_loss``;
    a tie goes to the later epoch).

    Initialised from ``RUN/<modality>/pretrain/best.pt`` when ``preset.multi_exit.init_from_pretrain``
    is set and that file exists (a message says which start was used). Augmentation
    (``preset.multi_exit.augment``) is applied to each batch on the device. Class balance
    (``preset.multi_exit.class_balance``): ``"none"`` is the paper's plain CE; ``"pos_weight"``
    weights tumour slices by n_normal / n_tumour of the train split; ``"sampler"`` draws slices
    with probability inverse to their class frequency.

    Validation on the full val split after every epoch: ``val_loss`` (Eq. 1), ``acc_exit1..4``,
    ``auc_exit1..4`` (see :func:`evaluate_exits`). At the end, ``val_metrics.csv`` holds the best
    epoch's accuracy and AUC per exit.

    Args / Raises: as :func:`pretrain_supcon`; in addition ValueError when the val split has one
    class only (ROC AUC undefined), an unknown ``class_balance`` or ``select_by``.
    """
    settings = preset.multi_exit
    if settings.class_balance not in CLASS_BALANCES:
        raise ValueError(f"preset.multi_exit.class_balance must be one of {CLASS_BALANCES}, "
                         f"got {settings.class_balance!r}")
    if settings.select_by not in SELECT_MODES:
        raise ValueError(f"preset.multi_exit.select_by must be one of {tuple(SELECT_MODES)}, "
                         f"got {settings.select_by!r}")
    run_device = pick_device(device or "auto")
    train_set = training_slices(run_dir, modality, "train", preset)
    val_set = SliceDataset.from_run(run_dir, modality, "val") if lazy_slices(preset) \
        else load_slices(run_dir, modality, "val", exclude_ambiguous=False, with_masks=False)
    _check_two_classes(np.asarray(val_set.labels), f"val split of {run_dir} ({modality})")
    train_labels = np.asarray(train_set.labels)
    pos_weight = None
    if settings.class_balance == "pos_weight":
        n_tumour = int(train_labels.sum())
        if n_tumour == 0:
            raise ValueError(f"train split of {run_dir} ({modality}) has no tumour slice")
        pos_weight = (len(train_labels) - n_tumour) / n_tumour
    loader = training_loader(train_set, settings.batch_size, preset, run_device, balance=settings.class_balance)

    seed_everything(preset.seed)                      # same exit initialisation for a given seed
    model = MultiExitResNet(settings.arch, settings.norm)
    init = {"checkpoint": None}
    pretrain_path = phase_dir(run_dir, modality, "pretrain") / "best.pt"
    progress_here = progress and distributed.is_main()
    if settings.init_from_pretrain and pretrain_path.is_file():
        pretrain_checkpoint = load_checkpoint(pretrain_path)
        load_pretrained_backbone(model, pretrain_checkpoint["model"])
        init = {"checkpoint": str(pretrain_path), "trained_epochs": pretrain_checkpoint["epoch"],
                "pretrain_config": pretrain_checkpoint["config"],
                "weights_sha256": tensors_sha256(pretrain_checkpoint["model"])}   # retrained: start afresh
        if progress_here:
            print(f"multi-exit {modality}: backbone initialised from {pretrain_path}")
    elif progress_here:
        reason = "init_from_pretrain is off" if not settings.init_from_pretrain else f"no {pretrain_path}"
        print(f"multi-exit {modality}: random initialisation ({reason})")
    augment = MRIAugment(crop_scale=tuple(settings.crop_scale)) if settings.augment else None

    def train_step(net, batch, step_device):
        images, labels = (item.to(step_device, non_blocking=True) for item in batch)
        if augment is not None:
            images = augment(images)
        return multi_exit_loss(net(images).logits, labels, weights=settings.exit_weights, pos_weight=pos_weight)

    def evaluate(net, eval_device):
        return evaluate_exits(net, val_set, device=eval_device, exit_weights=settings.exit_weights,
                              name=f"val split ({modality})")

    out_dir = phase_dir(run_dir, modality, "multi_exit")
    config = {"phase": "multi_exit", "modality": modality, "data": checkpoint_data_config(run_dir, preset),
              "multi_exit": dataclasses.asdict(settings), "seed": preset.seed, "init": init}
    history = fit(model, train_step=train_step, train_loader=loader, epochs=settings.epochs, lr=settings.lr,
                  min_lr=settings.min_lr, weight_decay=settings.weight_decay, optimizer=settings.optimizer,
                  out_dir=out_dir, config=config, evaluate=evaluate, monitor=settings.select_by,
                  monitor_mode=SELECT_MODES[settings.select_by], device=run_device, seed=preset.seed,
                  desc=f"multi-exit {modality}", progress=progress, **fit_compute_settings(preset))
    best = history.records[history.best_epoch - 1]
    rows = ["exit,accuracy,auc"] + [f"{i},{best[f'acc_exit{i}']:.6f},{best[f'auc_exit{i}']:.6f}"
                                    for i in range(1, N_EXITS + 1)]
    if distributed.is_main():
        write_text(out_dir / "val_metrics.csv", "\n".join(rows) + "\n")
    return history


def load_multi_exit(run_dir: str | Path, modality: str, which: str = "best",
                    device: str | torch.device = "cpu") -> MultiExitResNet:
    """The trained multi-exit network of a run, in eval mode, built with the arch/norm it was trained with.

    Args:
        which: ``"best"`` (the epoch chosen by ``MultiExitConfig.select_by``, see
            :func:`best_multi_exit_choice`) or ``"last"``.

    Raises:
        FileNotFoundError: no such checkpoint (run :func:`train_multi_exit` / notebook 03 first).
        ValueError: ``which`` not ``"best"``/``"last"``.
    """
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    path = phase_dir(run_dir, modality, "multi_exit") / f"{which}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no multi-exit checkpoint at {path}; train it first (train_multi_exit, notebook 03)")
    checkpoint = load_checkpoint(path)
    settings = checkpoint["config"]["multi_exit"]
    model = MultiExitResNet(settings["arch"], settings["norm"])
    model.load_state_dict(checkpoint["model"])
    return model.to(pick_device(device)).eval()


def best_multi_exit_choice(run_dir: str | Path, modality: str) -> str:
    """How ``RUN/<modality>/multi_exit/best.pt`` was chosen, read from the checkpoint itself, e.g.
    ``"best.pt = epoch 5 of 5, chosen by val_loss (lowest, Eq. 1 on the val split) = 0.4123"``.

    The metric is the one the run was trained with (``MultiExitConfig.select_by``, stored in the
    checkpoint), not today's preset.

    Raises:
        FileNotFoundError: no ``best.pt`` (train it first).
    """
    path = phase_dir(run_dir, modality, "multi_exit") / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no multi-exit checkpoint at {path}; train it first (train_multi_exit, notebook 03)")
    checkpoint = load_checkpoint(path)
    metric = checkpoint.get("monitor") or checkpoint["config"]["multi_exit"].get("select_by", f"auc_exit{N_EXITS}")
    described = SELECT_DESCRIPTIONS.get(metric, "")
    value = checkpoint.get("best_value")
    return (f"best.pt = epoch {checkpoint['epoch']} of {checkpoint['epochs']}, chosen by {metric}"
            + (f" ({described})" if described else "") + ("" if value is None else f" = {value:.4f}"))


@torch.no_grad()
def exit_logits(model: MultiExitResNet, images, device: str | torch.device | None = None,
                batch_size: int = 128) -> torch.Tensor:
    """Tumour logit GAP(M_i) of every exit for many slices, in batches.

    Under torchrun every process computes its share of the batches
    (:func:`amecam_lib.distributed.batch_shard`) and every process gets all the logits, in order.

    Args:
        model: a multi-exit network (put in eval mode here).
        images: ``(N, 1, H, W) float32`` in [0, 1] (NumPy or torch), or a dataset whose items
            start with a ``(1, H, W)`` image (a lazy :class:`~amecam_lib.slices.SliceDataset`).
        device: where to compute (default: the model's device).

    Returns:
        ``(N, 4) float32`` CPU tensor, column i - 1 = exit i.
    """
    device = next(model.parameters()).device if device is None else pick_device(device)
    model.eval().to(device)
    chunks = [(start, model(image_batch(images, start, stop).to(device)).logits.float().cpu())
              for start, stop in distributed.batch_shard(len(images), batch_size)]
    if distributed.active():
        chunks = [chunk for shard in distributed.all_gather_objects(chunks) for chunk in shard]
    chunks = [logits for _, logits in sorted(chunks, key=lambda chunk: chunk[0])]
    return torch.cat(chunks) if chunks else torch.zeros((0, N_EXITS))


def image_batch(images, start: int, stop: int) -> torch.Tensor:
    """Slices ``start:stop`` of ``(N, 1, H, W)`` images (NumPy, torch, or a dataset whose items
    start with a ``(1, H, W)`` image) as one ``(stop - start, 1, H, W) float32`` tensor."""
    if isinstance(images, Dataset):
        return torch.stack([images[index][0] for index in range(start, stop)])
    if isinstance(images, torch.Tensor):
        return images[start:stop]
    return torch.from_numpy(np.ascontiguousarray(images[start:stop]))


def predict_exits(model: MultiExitResNet, images, device: str | torch.device | None = None,
                  batch_size: int = 128) -> np.ndarray:
    """Tumour probability ``sigmoid(GAP(M_i))`` of every exit: ``(N, 4) float32`` in [0, 1]
    (arguments as :func:`exit_logits`)."""
    return torch.sigmoid(exit_logits(model, images, device, batch_size)).numpy()


def evaluate_exits(model: MultiExitResNet, slice_set, device: str | torch.device | None = None,
                   exit_weights=None, batch_size: int = 128, name: str = "evaluation set") -> dict[str, float]:
    """Classification quality of every exit on a :class:`~amecam_lib.slices.SliceSet`.

    Accuracy thresholds each exit's probability at 0.5; ROC AUC is scikit-learn's
    ``roc_auc_score`` on the probabilities. ``slice_set`` may also be a lazy
    :class:`~amecam_lib.slices.SliceDataset` (``labels`` and items); under torchrun the forward
    passes are shared out (:func:`exit_logits`) and every process gets the same metrics.

    Returns:
        ``{"val_loss": Eq. 1 on the set, "acc_exit1".."acc_exit4", "auc_exit1".."auc_exit4"}``,
        floats (accuracy and AUC in [0, 1]).

    Raises:
        ValueError: the set holds a single class (AUC undefined); the message names ``name``
            and the class counts.
    """
    labels = np.asarray(slice_set.labels).astype(np.int64)
    _check_two_classes(labels, name)
    images = slice_set if isinstance(slice_set, Dataset) else slice_set.images
    logits = exit_logits(model, images, device=device, batch_size=batch_size)
    probabilities = torch.sigmoid(logits).numpy()
    metrics = {"val_loss": float(multi_exit_loss(logits, torch.from_numpy(labels), weights=exit_weights))}
    for index in range(N_EXITS):
        metrics[f"acc_exit{index + 1}"] = float(((probabilities[:, index] >= 0.5) == labels).mean())
    for index in range(N_EXITS):
        metrics[f"auc_exit{index + 1}"] = float(roc_auc_score(labels, probabilities[:, index]))
    return metrics


@torch.no_grad()
def embed(run_dir: str | Path, modality: str, images, which: str = "pretrain",
          device: str | torch.device = "cpu", batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """Pooled encoder features of slices, for the PCA figure of notebook 02.

    Args:
        images: ``(N, 1, H, W) float32`` in [0, 1].
        which: ``"pretrain"`` (SupCon encoder, ``pretrain/best.pt``), ``"untrained"`` (the same
            architecture at random initialisation from ``seed``: the baseline) or
            ``"multi_exit"`` (the fine-tuned backbone, ``multi_exit/best.pt``).

    Returns:
        ``(N, C_4) float32`` (512 for ResNet-18), the GAP of the last stage, before any head.

    Raises:
        ValueError: unknown ``which``. FileNotFoundError: the needed checkpoint is missing.
    """
    if which not in EMBED_SOURCES:
        raise ValueError(f"which must be one of {EMBED_SOURCES}, got {which!r}")
    if which == "multi_exit":
        encoder = load_multi_exit(run_dir, modality, "best", device)
    else:
        path = phase_dir(run_dir, modality, "pretrain") / "best.pt"
        checkpoint = load_checkpoint(path) if (which == "pretrain" or path.is_file()) else None
        arch, norm = (checkpoint["config"]["arch"], checkpoint["config"]["norm"]) if checkpoint else ("resnet18", "batch")
        settings = checkpoint["config"]["pretrain"] if checkpoint else {"mode": "supcon", "projection_dim": 128}
        seed_everything(seed)
        encoder = pretrain_network(arch, norm, settings)
        if which == "pretrain":
            encoder.load_state_dict(checkpoint["model"])
    encoder = encoder.to(pick_device(device)).eval()
    image_tensor = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    features = [encoder.encode(image_tensor[start:start + batch_size].to(pick_device(device))).cpu()
                for start in range(0, len(image_tensor), batch_size)]
    return torch.cat(features).numpy().astype(np.float32)


# --- helpers ---------------------------------------------------------------------------------------

def _check_two_classes(labels: np.ndarray, name: str) -> None:
    counts = np.bincount(labels.astype(np.int64), minlength=2)
    if len(labels) == 0 or (counts[:2] == 0).any():
        raise ValueError(f"ROC AUC is undefined on the {name}: it holds {counts[0]} normal and {counts[1]} "
                         "tumour slices; both classes are needed (change the split seed or fractions)")


# --- data for the trainings (one process or many) ---------------------------------------------------

def training_slices(run_dir: str | Path, modality: str, split: str, preset: Preset,
                    exclude_ambiguous: bool | None = None) -> SliceDataset:
    """The slices a training phase reads, as a :class:`~amecam_lib.slices.SliceDataset`.

    Lazy (memory-mapped, one slice decoded per item: :meth:`SliceDataset.from_run`) when
    ``preset.compute.lazy_slices`` is set or under torchrun, so no process holds a copy of the
    split; otherwise the split loaded into memory (:func:`load_slices`). Both give the same slices
    in the same order (case ID, then z). Slice labels only: no mask file is opened.

    Args:
        exclude_ambiguous: default ``preset.data.exclude_ambiguous``.
    """
    exclude = preset.data.exclude_ambiguous if exclude_ambiguous is None else exclude_ambiguous
    if lazy_slices(preset):
        return SliceDataset.from_run(run_dir, modality, split, exclude_ambiguous=exclude)
    return SliceDataset(load_slices(run_dir, modality, split, exclude_ambiguous=exclude, with_masks=False))


def slice_subset(dataset: Dataset, max_slices: int | None, seed: int, labels=None,
                 name: str = "max_slices") -> Dataset:
    """At most ``max_slices`` of a training set's slices, drawn once without replacement, for the
    baselines that train on a fixed subset in a short preset (``lfi_cam``, ``swin_mil``, ``cf_ul``,
    ``cf_fsl``).

    The draw is a ``torch.Generator`` seeded with ``seed``, so the same seed gives the same slices
    on any machine. With ``labels`` (one 0/1 slice label per item) it is stratified by class:
    the tumour slices get ``round(max_slices * share)`` (at least one, and at least one normal slice
    left when there are normal slices), the normal slices the rest, so exactly ``max_slices`` are
    kept; without, a plain random draw. The indices are sorted (case, then z, as in the dataset).

    Args:
        dataset: any map-style dataset of ``N`` slices.
        max_slices: the number of slices to keep; None or ``>= N``: all of them.
        seed: the draw's seed (``preset.seed``).
        labels: optional ``(N,)`` 0/1 slice labels (int or bool).
        name: the setting's name, for the error message (e.g. ``"preset.swin_mil.max_train_slices"``).

    Returns:
        ``dataset`` itself when nothing is dropped; otherwise a :class:`~torch.utils.data.Subset`
        with a ``labels`` list when ``labels`` was given or ``dataset`` has ``labels``.

    Raises:
        ValueError: ``max_slices`` < 1 (< 2 with ``labels``: one slice per class), or ``labels`` not of
            length ``N`` or not 0/1 (naming ``name``).
    """
    size = len(dataset)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (size,) or not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{name}: labels must be {size} values in {{0, 1}}, got shape {labels.shape}")
        labels = labels.astype(np.int64)
    least = 1 if labels is None else 2
    if max_slices is not None and max_slices < least:
        raise ValueError(f"{name} must be >= {least} or None, got {max_slices}")
    if max_slices is None or max_slices >= size:
        return dataset
    generator = torch.Generator().manual_seed(int(seed))
    if labels is None:
        indices = torch.randperm(size, generator=generator)[:max_slices].tolist()
    else:
        tumour, normal = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
        take_tumour = max(1, round(max_slices * len(tumour) / size)) if len(tumour) else 0
        if len(normal):
            take_tumour = min(take_tumour, max_slices - 1)                 # leave room for one normal slice
        take_tumour = min(take_tumour, len(tumour))
        indices = []
        for members, take in ((tumour, take_tumour), (normal, min(len(normal), max_slices - take_tumour))):
            order = torch.randperm(len(members), generator=generator)[:take]
            indices += members[order.numpy()].tolist()
    indices = sorted(int(index) for index in indices)
    subset = Subset(dataset, indices)
    source = labels if labels is not None else getattr(dataset, "labels", None)
    if source is not None:
        subset.labels = [source[index] for index in indices]
    return subset


def lazy_slices(preset: Preset) -> bool:
    """Whether the trainings read slices lazily: ``preset.compute.lazy_slices``, or under torchrun."""
    return bool(preset.compute.lazy_slices) or distributed.active()


def loader_settings(preset: Preset, device: torch.device) -> dict:
    """DataLoader worker and memory settings: ``preset.num_workers`` on the CPU; on CUDA
    ``preset.compute.cuda_num_workers`` (if set), pinned memory and persistent workers as
    ``preset.compute`` says."""
    if torch.device(device).type != "cuda":
        return {"num_workers": preset.num_workers}
    compute = preset.compute
    workers = preset.num_workers if compute.cuda_num_workers is None else compute.cuda_num_workers
    return {"num_workers": workers, "pin_memory": compute.pin_memory, "persistent_workers": workers > 0}


def fit_compute_settings(preset: Preset) -> dict:
    """The :func:`~amecam_lib.training.fit` arguments that ``preset.compute`` sets."""
    compute = preset.compute
    return {"mixed_precision": compute.mixed_precision, "channels_last": compute.channels_last,
            "sync_batchnorm": compute.sync_batchnorm}


def training_loader(dataset: Dataset, batch_size: int, preset: Preset, device: torch.device,
                    balance: str = "none", drop_last: bool = False) -> DataLoader:
    """The shuffled training loader of a phase.

    One process: ``batch_size`` slices per batch, shuffled by the global torch RNG (class
    balance ``"sampler"``: a :class:`WeightedRandomSampler`), as always. Under torchrun:
    ``batch_size`` is the global batch; each process gets ``batch_size / world_size`` slices of
    a :class:`DistributedSampler` (seed ``preset.seed``; :func:`~amecam_lib.training.fit` sets its
    epoch; the last batch is padded with repeated slices so every process holds the same number).

    Raises:
        ValueError: ``batch_size`` not divisible by the number of processes; ``balance="sampler"``
            under torchrun (use ``"pos_weight"``, which weighs the loss instead).
    """
    settings = loader_settings(preset, device)
    if distributed.active():
        if balance == "sampler":
            raise ValueError("class_balance='sampler' is not supported under torchrun; use 'pos_weight' "
                             "(weights the loss instead of the sampling) or 'none' (the paper)")
        sampler = DistributedSampler(dataset, shuffle=True, seed=preset.seed)
        return DataLoader(dataset, batch_size=distributed.per_rank_batch_size(batch_size), sampler=sampler,
                          drop_last=drop_last, **settings)
    if balance == "sampler":
        labels = np.asarray(dataset.labels).astype(np.int64)
        class_counts = np.bincount(labels, minlength=2).astype(np.float64)
        weights = 1.0 / class_counts[labels]
        sampler = WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(labels), replacement=True)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **settings)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=drop_last, **settings)
