"""One training loop for every phase of AME-CAM (SupCon pretraining, multi-exit fine-tuning,
attention-network training).

A phase supplies what differs -- the model, a ``train_step`` that turns one batch into a loss,
an optional ``evaluate`` -- and :func:`fit` does the rest the same way every time:

* seeding (:func:`amecam_lib.device.seed_everything`) and device placement;
* mixed precision on CUDA only (``torch.autocast`` with bfloat16 where supported, else float16
  with a ``GradScaler``); full float32 on CPU;
* Adam or SGD (momentum) over ``params`` with weight decay, cosine annealing per epoch
  (``CosineAnnealingLR(T_max=epochs, eta_min=min_lr)``: epoch e runs at
  ``min_lr + (lr - min_lr) (1 + cos(pi e / epochs)) / 2``, as in the paper, Sec. 3.2);
* a tqdm bar per epoch with the running mean loss (``TQDM_DISABLE=1`` or ``progress=False``
  silences it);
* ``out_dir/log.csv``: one row per epoch, columns ``epoch, lr, train_loss, seconds`` and then the
  metrics returned by ``evaluate``;
* checkpoints written atomically: ``out_dir/last.pt`` after every epoch (model, optimizer,
  scheduler and grad-scaler state, epoch, history, RNG states, config) and ``out_dir/best.pt``
  (model, epoch, history, config) whenever ``monitor`` improves, or after every epoch when
  ``monitor`` is None (best = last);
* resume: when ``out_dir/last.pt`` exists and was made with the same ``config`` (keys named
  ``epochs`` are ignored at any depth, so a run can be extended), training continues at the next
  epoch with the RNG states restored, so an interrupted run ends with the same weights as an
  uninterrupted one on the same device. A finished run returns its history at once (re-executed
  notebooks stay fast). A ``last.pt`` made with another config is never mixed in: it is renamed
  ``last.superseded.pt`` (``best.pt`` likewise), a warning says so, and training starts fresh;
* a NaN or Inf loss raises :class:`FloatingPointError` naming the epoch and step;
* several processes (``torchrun --nproc_per_node N``, see :mod:`amecam_lib.distributed`): the
  same call, unchanged, trains one model with PyTorch's DistributedDataParallel (DDP). Each
  process computes ``train_step`` on its share of the batch (the loader gives it, e.g. with a
  ``DistributedSampler``, whose epoch ``fit`` sets), DDP averages the gradients, the logged
  loss is the mean over the processes, ``evaluate`` runs on every process with the same weights
  and BatchNorm statistics (rank 0's; it may shard its work) and rank 0's metrics count. Only
  rank 0 writes ``log.csv`` and the checkpoints; ``last.pt`` holds every rank's RNG state, and
  every rank resumes from it (each its own RNG state when the number of processes is the same).
  Training randomness is seeded ``seed + rank`` (rank 0: ``seed``, as in one process).

Contract for phase code::

    def train_step(model, batch, device) -> torch.Tensor   # scalar loss, graph attached
    def evaluate(model, device) -> dict[str, float]        # called under model.eval(), no_grad

Under torchrun ``train_step`` gets the plain model (attributes as usual) but runs inside DDP's
forward, so its collectives (e.g. :func:`amecam_lib.distributed.gather_with_grad`) and the
gradient averaging see the whole step.

``fit`` calls ``model.train()`` before each epoch. A model with a frozen part that must stay in
eval mode (e.g. the classifier's BatchNorm statistics in the attention phase) should override
``train``::

    def train(self, mode=True):
        super().train(mode)
        self.classifier.eval()
        return self
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from amecam_lib import distributed
from amecam_lib.atomic import atomic_path, clean_stale_tmp, write_text
from amecam_lib.device import pick_device, seed_everything
from amecam_lib.progress import tqdm

CHECKPOINT_FORMAT = "amecam-checkpoint-v1"
OPTIMIZERS = ("adam", "sgd")

TrainStep = Callable[[nn.Module, object, torch.device], torch.Tensor]
Evaluate = Callable[[nn.Module, torch.device], Mapping[str, float]]


@dataclass
class History:
    """What :func:`fit` returns: one record per finished epoch and the best epoch.

    Attributes:
        records: dicts with ``epoch`` (1-based), ``lr``, ``train_loss``, ``seconds`` and the
            ``evaluate`` metrics, in epoch order (also in ``out_dir/log.csv``).
        monitor, monitor_mode: the metric that picks ``best.pt`` (None: the last epoch).
        best_epoch, best_value: the epoch saved as ``best.pt`` and its monitor value.
        out_dir: the folder holding ``log.csv``, ``last.pt``, ``best.pt``.
        resumed_epochs: epochs loaded from an existing ``last.pt`` instead of trained now.
    """

    records: list[dict] = field(default_factory=list)
    monitor: str | None = None
    monitor_mode: str = "max"
    best_epoch: int | None = None
    best_value: float | None = None
    out_dir: Path | None = None
    resumed_epochs: int = 0

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> dict:
        """The last epoch's record (``{}`` when no epoch ran)."""
        return self.records[-1] if self.records else {}

    def column(self, name: str) -> list[float]:
        """Values of one column over the epochs, e.g. ``history.column("train_loss")``.

        Raises:
            KeyError: no record has ``name`` (the known columns are listed)."""
        if self.records and all(name not in record for record in self.records):
            raise KeyError(f"no column {name!r}; columns: {list(self.records[0])}")
        return [record.get(name, math.nan) for record in self.records]


def fit(model: nn.Module, *, train_step: TrainStep, train_loader: Iterable, epochs: int, lr: float,
        out_dir: str | Path, config: Mapping, params: Iterable[torch.nn.Parameter] | None = None,
        optimizer: str = "adam", min_lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
        evaluate: Evaluate | None = None, monitor: str | None = None, monitor_mode: str = "max",
        device: str | torch.device | None = "auto", seed: int = 0, desc: str = "train",
        progress: bool = True, mixed_precision: bool = True, channels_last: bool = False,
        sync_batchnorm: bool = False) -> History:
    """Train ``model`` for ``epochs`` epochs with checkpoints and resume (see the module docstring).

    Args:
        model: the network; moved to ``device``. After ``fit`` it holds the *last* epoch's weights
            (load ``out_dir/best.pt`` with :func:`load_checkpoint` for the best).
        train_step: ``(model, batch, device) -> scalar loss`` for one batch of ``train_loader``.
        train_loader: iterable of batches (a ``DataLoader``), iterated once per epoch.
        epochs: number of epochs (>= 1).
        lr, min_lr: initial and final learning rate of the cosine schedule.
        out_dir: folder for ``log.csv``, ``last.pt``, ``best.pt`` (created).
        config: the settings that made this run (nested dicts of plain values, e.g.
            ``preset.to_dict()``), stored in the checkpoints and compared on resume.
        params: parameters to optimise (default: every parameter of ``model`` with
            ``requires_grad``).
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``).
        weight_decay: L2 weight decay of the optimizer.
        evaluate: optional ``(model, device) -> {metric: float}`` run after every epoch.
        monitor: key of ``evaluate``'s dict that selects ``best.pt`` (a tie goes to the later
            epoch); None = last epoch.
        monitor_mode: ``"max"`` (e.g. AUC) or ``"min"`` (e.g. a loss).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``... (:func:`amecam_lib.device.pick_device`).
        seed: seeds Python, NumPy and torch before training (restored RNG states on resume).
        desc: label of the progress bar.
        progress: show tqdm bars.
        mixed_precision: use autocast on CUDA (ignored on CPU).
        channels_last: convert the model to ``torch.channels_last`` memory format (CUDA only).
        sync_batchnorm: under torchrun on CUDA, BatchNorm layers of ``model`` become
            ``SyncBatchNorm`` (statistics of the global batch); ignored in one process, warned
            about and ignored on the CPU (PyTorch's SyncBatchNorm is CUDA-only).

    Returns:
        :class:`History`.

    Raises:
        ValueError: bad ``epochs``, ``optimizer``, ``monitor_mode``; no parameter to train; an
            empty loader; ``monitor`` missing from ``evaluate``'s metrics or not finite.
        FloatingPointError: a NaN or Inf loss (the message names the epoch and step).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if monitor_mode not in ("max", "min"):
        raise ValueError(f"monitor_mode must be 'max' or 'min', got {monitor_mode!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    main = distributed.is_main()
    if main:
        clean_stale_tmp(out_dir)
    progress = progress and main
    config = _plain(config)
    seed_everything(seed + distributed.rank())
    device = pick_device(device)
    model.to(device)
    if channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    if sync_batchnorm and distributed.active():
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            warnings.warn("sync_batchnorm: PyTorch's SyncBatchNorm needs CUDA; on the CPU each process "
                          "normalises with its own share of the batch", stacklevel=2)

    trainable = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("no parameter to train: params is empty or nothing requires grad")
    if optimizer == "adam":
        torch_optimizer = torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)
    else:
        torch_optimizer = torch.optim.SGD(trainable, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(torch_optimizer, T_max=epochs, eta_min=min_lr)
    autocast_dtype = _autocast_dtype(device, mixed_precision)
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None

    history = History(monitor=monitor, monitor_mode=monitor_mode, out_dir=out_dir)
    # Rank 0 decides first (it may set aside a last.pt of another config), then the others read
    # what it left; nobody writes before every rank has read.
    start_epoch = 0
    for turn in (True, False):
        if main == turn:
            start_epoch = _resume(out_dir, model, torch_optimizer, scheduler, scaler, config, epochs, history,
                                  lr=lr, progress=progress)
        distributed.barrier()
    if start_epoch >= epochs:
        return history

    step = _distributed_step(model, train_step, device) if distributed.active() else None
    set_epoch = getattr(getattr(train_loader, "sampler", None), "set_epoch", None)
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        if set_epoch is not None:
            set_epoch(epoch)                  # DistributedSampler: another shuffle every epoch
        model.train()
        epoch_lr = torch_optimizer.param_groups[0]["lr"]
        loss_sum, n_steps = 0.0, 0
        bar = tqdm(train_loader, desc=f"{desc} {epoch + 1}/{epochs}", disable=not progress, leave=True)
        for step_index, batch in enumerate(bar):
            torch_optimizer.zero_grad(set_to_none=True)
            with _autocast(device, autocast_dtype):
                loss = train_step(model, batch, device) if step is None else step(batch, device)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise TypeError(f"{desc}: train_step must return a scalar tensor, got {type(loss).__name__}")
            loss_value = float(loss.detach())
            if step is not None:              # the mean over the processes, the same on every rank
                loss_value = float(distributed.all_reduce_sum(loss.detach().float().reshape(1))) \
                    / distributed.world_size()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"{desc}: loss is {loss_value} at epoch {epoch + 1}, "
                                         f"step {step_index + 1}")
            backward_and_step(loss, torch_optimizer, scaler)
            loss_sum += loss_value
            n_steps += 1
            bar.set_postfix(loss=f"{loss_sum / n_steps:.4f}")
        if n_steps == 0:
            raise ValueError(f"{desc}: train_loader yielded no batch (empty training set?)")
        scheduler.step()
        if step is not None:
            _broadcast_buffers(model)         # every rank evaluates (and rank 0 saves) the same model

        record = {"epoch": epoch + 1, "lr": epoch_lr, "train_loss": loss_sum / n_steps}
        metrics = {}
        if evaluate is not None:
            model.eval()
            with torch.no_grad():
                metrics = {name: float(value) for name, value in evaluate(model, device).items()}
        record["seconds"] = time.perf_counter() - started
        record.update(metrics)
        record = distributed.broadcast_object(record)   # rank 0's record on every rank
        if metrics and progress:
            bar.write(f"{desc} {epoch + 1}/{epochs}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        history.records.append(record)

        improved = _update_best(history, record)
        rng = {"rng": _rng_state()}
        if step is not None:
            states = distributed.all_gather_objects(rng["rng"])
            rng = {"rng": states[0], "rng_by_rank": states}
        if not main:
            continue
        _write_log(out_dir / "log.csv", history.records)
        state = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "epoch": epoch + 1,
                 "epochs": epochs, "history": history.records, "config": config,
                 "best_epoch": history.best_epoch, "best_value": history.best_value,
                 "monitor": monitor, "monitor_mode": monitor_mode}
        _save(out_dir / "last.pt", {**state, "optimizer": torch_optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(),
                                    "scaler": scaler.state_dict() if scaler is not None else {},
                                    **rng})
        if improved:
            _save(out_dir / "best.pt", state)
    distributed.barrier()                     # the checkpoints exist for every rank's next phase
    return history


class BesideFrozenClassifier(nn.Module):
    """A trainable network beside a frozen classifier, as one module for :func:`fit`: ``fit`` moves
    both to the device, the classifier stays in eval mode (its BatchNorm statistics unchanged) and
    out of the optimiser, and checkpoints hold the trainable network only. Subclasses name the
    trainable network's attribute in ``trainable_attribute`` (e.g. ``"attention"``)."""

    trainable_attribute = "trainable"

    def __init__(self, trainable: nn.Module, classifier: nn.Module):
        super().__init__()
        setattr(self, self.trainable_attribute, trainable)
        self.classifier = classifier
        for parameter in self.classifier.parameters():
            parameter.requires_grad_(False)

    @property
    def trainable(self) -> nn.Module:
        return getattr(self, self.trainable_attribute)

    def train(self, mode: bool = True):
        super().train(mode)
        self.classifier.eval()
        return self

    def state_dict(self, *args, **kwargs):
        return self.trainable.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.trainable.load_state_dict(state_dict, strict=strict, assign=assign)


def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      scaler: "torch.amp.GradScaler | None" = None) -> None:
    """One optimiser step from a scalar ``loss``: backward, then ``optimizer.step()``; with a
    float16 ``scaler`` (PyTorch's ``torch.amp.GradScaler``) the loss is scaled first and the step
    skipped when the gradients overflow, as the scaler decides. Used by :func:`fit` and by
    ``data_scripts/bench_gpu.py``, so the benchmark times the step that training takes.
    The caller zeroes the gradients."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def load_checkpoint(path: str | Path, model: nn.Module | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`fit` (``last.pt`` or ``best.pt``).

    Args:
        path: the ``.pt`` file.
        model: if given, its weights are replaced by the checkpoint's (strict).
        map_location: where tensors are loaded.

    Returns:
        the checkpoint dict: ``model`` (state dict), ``epoch``, ``history`` (list of records),
        ``config``, ``best_epoch``, ``best_value``, ... (``last.pt`` adds optimizer, scheduler, RNG).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a checkpoint of this project.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an amecam_lib checkpoint (format {CHECKPOINT_FORMAT})")
    if model is not None:
        model.load_state_dict(checkpoint["model"])
    return checkpoint


# --- helpers ---------------------------------------------------------------------------------------

class _StepModule(nn.Module):
    """``train_step`` as the forward of a module, so that DistributedDataParallel sees the whole
    step (its gradient hooks, and collectives inside ``train_step``) while ``train_step`` keeps
    getting the plain model."""

    def __init__(self, model: nn.Module, train_step: TrainStep):
        super().__init__()
        self.model = model
        self.train_step = train_step

    def forward(self, batch, device):
        return self.train_step(self.model, batch, device)


def _distributed_step(model: nn.Module, train_step: TrainStep, device: torch.device):
    """DDP over ``train_step`` (parameters broadcast from rank 0 now, gradients averaged in every
    backward); returns ``step(batch, device) -> loss``."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DistributedDataParallel(_StepModule(model, train_step), device_ids=device_ids)


def _broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank."""
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer, src=0)


def _plain(config: Mapping) -> dict:
    """Config as JSON-like plain values (tuples -> lists), so it compares equal after a reload."""
    try:
        return json.loads(json.dumps(dict(config)))
    except TypeError as error:
        raise ValueError(f"config must hold plain values (dict/list/str/number/bool/None): {error}") from error


def _without_epochs(value):
    if isinstance(value, dict):
        return {key: _without_epochs(item) for key, item in value.items() if key != "epochs"}
    if isinstance(value, list):
        return [_without_epochs(item) for item in value]
    return value


def _config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    differences = []
    for key in keys:
        name = f"{prefix}{key}"
        if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            differences += _config_differences(old[key], new[key], name + ".")
        elif old.get(key) != new.get(key):
            differences.append(f"{name}: {old.get(key)!r} -> {new.get(key)!r}")
    return differences


def _resume(out_dir: Path, model, optimizer, scheduler, scaler, config: dict, epochs: int,
            history: History, *, lr: float, progress: bool) -> int:
    """Load ``out_dir/last.pt`` into the training state if its config matches; return the number
    of epochs already done (0 for a fresh start)."""
    last_path = out_dir / "last.pt"
    if not last_path.is_file():
        return 0
    checkpoint = load_checkpoint(last_path, map_location="cpu")
    differences = _config_differences(_without_epochs(checkpoint["config"]), _without_epochs(config))
    if differences:
        if not distributed.is_main():
            return 0
        for name in ("last.pt", "best.pt"):
            if (out_dir / name).is_file():
                (out_dir / name).replace(out_dir / name.replace(".pt", ".superseded.pt"))
        warnings.warn(f"{last_path} was made with another config ({'; '.join(differences[:5])}); "
                      "it was renamed last.superseded.pt and training starts fresh", stacklevel=3)
        return 0
    model.load_state_dict(checkpoint["model"])
    history.records = list(checkpoint["history"])
    history.best_epoch, history.best_value = checkpoint["best_epoch"], checkpoint["best_value"]
    done = int(checkpoint["epoch"])
    history.resumed_epochs = min(done, epochs)
    if done >= epochs:
        if progress:
            print(f"{out_dir}: finished run found ({done} epochs), loaded from last.pt")
        return done
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scaler is not None and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    if checkpoint["epochs"] == epochs:
        scheduler.load_state_dict(checkpoint["scheduler"])
    else:
        # The run is being extended: re-plan the cosine schedule over the new number of epochs.
        # Closed form of CosineAnnealingLR at epoch ``done``; later steps continue from it.
        eta_min = scheduler.eta_min
        resumed_lr = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * done / epochs)) / 2
        for group in optimizer.param_groups:
            group["initial_lr"], group["lr"] = lr, resumed_lr
        scheduler.base_lrs = [lr] * len(optimizer.param_groups)
        scheduler.T_max, scheduler.last_epoch = epochs, done
        scheduler._last_lr = [resumed_lr] * len(optimizer.param_groups)
    by_rank = checkpoint.get("rng_by_rank") or []
    _set_rng_state(by_rank[distributed.rank()] if len(by_rank) == distributed.world_size() else checkpoint["rng"])
    if progress:
        print(f"{out_dir}: resuming after epoch {done} of {epochs}")
    return done


def _update_best(history: History, record: dict) -> bool:
    if history.monitor is None:
        history.best_epoch, history.best_value = record["epoch"], None
        return True
    if history.monitor not in record:
        raise ValueError(f"monitor {history.monitor!r} is not among the evaluate metrics {sorted(record)}")
    value = record[history.monitor]
    if not math.isfinite(value):
        raise ValueError(f"monitor {history.monitor!r} is {value} at epoch {record['epoch']}")
    # A tie goes to the later epoch: a small validation set saturates metrics such as AUC early,
    # and the later epoch has trained longer.
    better = (history.best_value is None
              or (value >= history.best_value if history.monitor_mode == "max" else value <= history.best_value))
    if better:
        history.best_epoch, history.best_value = record["epoch"], value
    return better


def _write_log(path: Path, records: list[dict]) -> None:
    columns = list(dict.fromkeys(name for record in records for name in record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    write_text(path, buffer.getvalue())


def _save(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _autocast_dtype(device: torch.device, mixed_precision: bool) -> torch.dtype | None:
    if device.type != "cuda" or not mixed_precision:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _rng_state() -> dict:
    """RNG states as tensors and plain values (loadable with ``weights_only=True``)."""
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "python": [python_state[0], list(python_state[1]), python_state[2]],
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
