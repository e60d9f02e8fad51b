#!/usr/bin/env python
"""Benchmark the two big trainings of the paper preset, and project its wall time on 1 and N GPUs.

What it measures
    images/s of one *training step* (forward + backward + optimizer step) of

    * SupCon pretraining: ``phases.pretrain_network`` (the ResNet encoder + projection head the
      preset builds), two views of every slice made on the device by ``augment.TwoViews`` and
      ``phases.global_supcon_loss`` (in one process: ``losses.supcon.supcon_loss``). An *image*
      is one slice of the batch; the network sees its two views, 2 x batch forward passes;
    * multi-exit training: ``models.multi_exit.MultiExitResNet``, the batch augmentation
      ``augment.MRIAugment`` and Eq. 1, ``losses.exits.multi_exit_loss``,

    with the optimizer, learning rate and weight decay of the preset's phase, at each
    ``--batch-size`` (slices per process), without and with mixed precision (AMP: ``torch.autocast``
    with bfloat16 where the GPU supports it, else float16 with a ``GradScaler``, as
    ``training.fit`` does; AMP is off on the CPU and its rows say "n/a on CPU"). On CUDA the
    networks are in ``channels_last`` when the preset's ``compute.channels_last`` says so.
    ``--warmup`` steps (allocations, cuDNN's algorithm search) run first and are not timed;
    then ``--steps`` steps are timed (CUDA synchronised before and after). Peak GPU memory is
    ``torch.cuda.max_memory_allocated`` over warm-up and timed steps ("n/a" on the CPU).

What it projects, and what it assumes
    The wall time of the preset's SupCon and multi-exit trainings on the full BraTS 2021 training
    set: 1,251 cases of 155 axial slices (193,905 slices), split by the preset's fractions
    (``splits.split_sizes``: 999 training cases, 154,845 slices for the paper preset, which keeps
    every slice: ``min_brain_fraction=0``), times the preset's epochs, divided by the measured
    images/s. The rate used for each phase is that of the largest measured batch not above the
    preset's batch, with AMP as the preset sets it (``compute.mixed_precision``) where the device
    has it. Assumptions, stated in the output too:

    * the data loader keeps up with the GPU (``bench_loader.py`` measures the loader alone);
    * N GPUs scale linearly: time on N GPUs = time on 1 GPU / N (gradient all-reduce, SyncBatchNorm
      and the gathering of SupCon projections are not measured here);
    * not counted: the multi-exit validation after every epoch, the attention network (phase 2),
      the evaluation of the test split, and the slicing.

    On the CPU the columns say "1 CPU" / "N CPUs": what this CPU (and N of them) would take, a check
    of the script, not a GPU figure.

Usage::

    python data_scripts/bench_gpu.py                               # paper sizes, default device, 8 GPUs projected
    python data_scripts/bench_gpu.py --device cuda --gpus 8 --batch-size 64 256 512
    python data_scripts/bench_gpu.py --device cpu --batch-size 4 --image-size 64 --steps 2   # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from amecam_lib.augment import MRIAugment, TwoViews  # noqa: E402
from amecam_lib.config import PRESET_NAMES, Preset, get_preset  # noqa: E402
from amecam_lib.device import pick_device, seed_everything  # noqa: E402
from amecam_lib.losses.exits import multi_exit_loss  # noqa: E402
from amecam_lib.models.multi_exit import MultiExitResNet  # noqa: E402
from amecam_lib.phases import global_supcon_loss, pretrain_network  # noqa: E402
from amecam_lib.splits import split_sizes  # noqa: E402
from amecam_lib.training import backward_and_step  # noqa: E402

BRATS2021_CASES = 1251
"""Training cases of BraTS 2021 (RSNA-ASNR-MICCAI)."""
SLICES_PER_CASE = 155
"""Axial slices of every BraTS volume (240 x 240 x 155)."""
BRATS2021_SLICES = BRATS2021_CASES * SLICES_PER_CASE     # 193,905
PHASES: tuple[str, ...] = ("supcon", "multi_exit")


@dataclass
class Row:
    """One measured (or not measurable) setting."""

    phase: str
    batch: int
    amp: str                     # "off", "bf16", "fp16"
    images_per_s: float | None = None
    seconds_per_step: float | None = None
    peak_gib: float | None = None
    note: str = ""               # why there is no figure ("n/a on CPU", "out of memory")


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``training.fit`` uses on this device: bfloat16 where supported, else
    float16; None on the CPU (no AMP)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _optimizer(params, settings, momentum: float) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(params, lr=settings.lr, momentum=momentum, weight_decay=settings.weight_decay)


def build_step(phase: str, preset: Preset, device: torch.device):
    """``(model, optimizer, step)`` of one phase; ``step(images, labels) -> loss`` is the phase's
    train_step (as in :mod:`amecam_lib.phases`)."""
    seed_everything(preset.seed)
    if phase == "supcon":
        settings = preset.pretrain
        model = pretrain_network(preset.multi_exit.arch, preset.multi_exit.norm, dataclasses.asdict(settings))
        two_views = TwoViews(MRIAugment(crop_scale=tuple(settings.crop_scale)))
        use_labels = settings.mode == "supcon"
        authors = settings.mode == "simclr_authors"

        def step(net, images, labels):
            views = two_views(images)                                   # (B, 2, 1, H, W)
            projections = net(views.flatten(0, 1)).view(images.shape[0], 2, -1)
            return global_supcon_loss(projections, labels if use_labels else None,
                                      temperature=settings.temperature, normalise=not authors)
        momentum = 0.0 if authors else 0.9
    elif phase == "multi_exit":
        settings = preset.multi_exit
        model = MultiExitResNet(settings.arch, settings.norm)
        augment = MRIAugment(crop_scale=tuple(settings.crop_scale)) if settings.augment else None

        def step(net, images, labels):
            if augment is not None:
                images = augment(images)
            return multi_exit_loss(net(images).logits, labels, weights=settings.exit_weights)
        momentum = 0.9
    else:
        raise ValueError(f"unknown phase {phase!r}; choose from {PHASES}")
    model.to(device).train()
    if device.type == "cuda" and preset.compute.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, _optimizer(model.parameters(), settings, momentum), step


def measure(phase: str, preset: Preset, device: torch.device, batch: int, image_shape: tuple[int, int],
            dtype: torch.dtype | None, warmup: int, steps: int) -> Row:
    """Time ``steps`` training steps after ``warmup`` untimed ones; see the module docstring."""
    amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    row = Row(phase, batch, amp)
    model = optimizer = None
    try:
        if device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        model, optimizer, step = build_step(phase, preset, device)
        generator = torch.Generator().manual_seed(preset.seed)
        images = torch.rand(batch, 1, *image_shape, generator=generator).to(device)
        labels = (torch.arange(batch) % 2).to(device)                 # both classes in every batch
        if device.type == "cuda" and preset.compute.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        autocast = (lambda: torch.autocast(device_type=device.type, dtype=dtype)) if dtype is not None \
            else contextlib.nullcontext

        def one_step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = step(model, images, labels)
            if not torch.isfinite(loss.detach()):
                raise FloatingPointError(f"{phase}: loss is {float(loss)}")
            backward_and_step(loss, optimizer, scaler)

        for _ in range(warmup):
            one_step()
        _sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            one_step()
        _sync(device)
        elapsed = time.perf_counter() - started
        row.seconds_per_step = elapsed / steps
        row.images_per_s = batch * steps / elapsed
        if device.type == "cuda":
            row.peak_gib = torch.cuda.max_memory_allocated(device) / 2**30
    except torch.cuda.OutOfMemoryError:
        row.note = "out of memory"
    finally:
        del model, optimizer
        if device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
    return row


def training_slices(preset: Preset, cases: int = BRATS2021_CASES) -> tuple[int, int]:
    """``(training cases, training slices)`` of the full data set under the preset's split."""
    train_cases = split_sizes(cases, preset.data.val_fraction, preset.data.test_fraction)["train"]
    return train_cases, train_cases * SLICES_PER_CASE


def projection_rate(rows: list[Row], phase: str, preset_batch: int, amp: str) -> Row | None:
    """The row a phase's projection uses: the largest measured batch not above the preset's
    (else the smallest measured), with the given AMP setting."""
    measured = [r for r in rows if r.phase == phase and r.amp == amp and r.images_per_s]
    if not measured:
        return None
    within = [r for r in measured if r.batch <= preset_batch]
    return max(within, key=lambda r: r.batch) if within else min(measured, key=lambda r: r.batch)


def format_duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.1f} h ({hours / 24:.1f} days)" if hours >= 48 else f"{hours:.1f} h"


def _fmt(value: float | None, spec: str, missing: str) -> str:
    return missing if value is None or not math.isfinite(value) else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--preset", choices=PRESET_NAMES, default="paper",
                        help="settings benchmarked and projected: models, optimizers, epochs, batch sizes, "
                             "image size (default: paper)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=None,
                        help="slices per step, per process, for both phases (default: the preset's SupCon and "
                             "multi-exit batch sizes, and their shares on --gpus GPUs)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="square slice side in pixels (default: the preset's slice shape, 240 x 240 for paper)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per setting (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (default 2)")
    parser.add_argument("--gpus", type=int, default=8, help="N of the N-GPU projection (default 8)")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--amp", choices=("both", "on", "off"), default="both",
                        help="with and without mixed precision (default both)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.gpus < 1:
        parser.error("need --steps >= 1, --warmup >= 0, --gpus >= 1")
    if args.batch_size and min(args.batch_size) < 2:
        parser.error("--batch-size must be >= 2 (SupCon needs positives and both classes)")

    preset = get_preset(args.preset)
    device = pick_device(args.device)
    image_shape = (args.image_size, args.image_size) if args.image_size else tuple(preset.data.image_shape)
    preset_batches = {"supcon": preset.pretrain.batch_size, "multi_exit": preset.multi_exit.batch_size}
    if args.batch_size:
        batches = {phase: sorted(set(args.batch_size)) for phase in PHASES}
    else:
        batches = {phase: sorted({b, max(2, b // args.gpus)}) for phase, b in preset_batches.items()}
    dtype = amp_dtype(device)
    amp_settings = {"both": [False, True], "on": [True], "off": [False]}[args.amp]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    print(f"AME-CAM training-step benchmark: preset {preset.name}, device {device} ({name}), torch "
          f"{torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"slices {image_shape[0]} x {image_shape[1]} px, {args.warmup} warm-up step(s) not timed, "
          f"{args.steps} timed step(s); channels_last "
          f"{'on' if device.type == 'cuda' and preset.compute.channels_last else 'off'}")
    print("images/s = slices of the batch per second (forward + backward + optimizer step); a SupCon slice "
          "goes through the network as two views\n")

    rows: list[Row] = []
    for phase in args.phases:
        for batch in batches[phase]:
            for use_amp in amp_settings:
                if use_amp and dtype is None:
                    rows.append(Row(phase, batch, "on", note=f"n/a on {device.type.upper()}"))
                    continue
                rows.append(measure(phase, preset, device, batch, image_shape, dtype if use_amp else None,
                                    args.warmup, args.steps))
                print(f"  measured {phase} batch {batch} AMP {rows[-1].amp}", file=sys.stderr, flush=True)

    print("| phase | batch | AMP | images/s | s/step | peak GPU memory (GiB) |")
    print("|---|---:|---|---:|---:|---:|")
    for row in rows:
        if row.note:
            print(f"| {row.phase} | {row.batch} | {row.amp} | {row.note} | {row.note} | {row.note} |")
        else:
            print(f"| {row.phase} | {row.batch} | {row.amp} | {row.images_per_s:.2f} | "
                  f"{row.seconds_per_step:.3f} | {_fmt(row.peak_gib, '.2f', 'n/a')} |")

    # Projection of the full data set.
    train_cases, train_slices = training_slices(preset)
    amp_used = ("bf16" if dtype == torch.bfloat16 else "fp16") if preset.compute.mixed_precision and dtype \
        else "off"
    epochs = {"supcon": preset.pretrain.epochs, "multi_exit": preset.multi_exit.epochs}
    print(f"\nProjected wall time of preset '{preset.name}' on full BraTS 2021: {BRATS2021_CASES:,} cases, "
          f"{BRATS2021_SLICES:,} slices; training split {train_cases:,} cases = {train_slices:,} slices")
    kind = "GPU" if device.type == "cuda" else device.type.upper()    # on the CPU: this CPU, N of them
    print(f"| phase | epochs | rate used (batch, AMP) | images/s | 1 {kind} | {args.gpus} {kind}s |")
    print("|---|---:|---|---:|---:|---:|")
    total, complete = 0.0, True
    for phase in args.phases:
        row = projection_rate(rows, phase, preset_batches[phase], amp_used)
        if row is None:
            complete = False
            print(f"| {phase} | {epochs[phase]} | not measured (AMP {amp_used}) | n/a | n/a | n/a |")
            continue
        seconds = epochs[phase] * train_slices / row.images_per_s
        total += seconds
        print(f"| {phase} | {epochs[phase]} | batch {row.batch}, AMP {row.amp} | {row.images_per_s:.2f} | "
              f"{format_duration(seconds)} | {format_duration(seconds / args.gpus)} |")
    if complete:
        print(f"| total | | | | {format_duration(total)} | {format_duration(total / args.gpus)} |")
    print(f"\nAssumptions: {args.gpus} {kind}s scale linearly (time / {args.gpus}; all-reduce, SyncBatchNorm and the "
          "SupCon gather not measured); the data loader keeps up; not counted: multi-exit validation, the attention "
          "network, evaluation, slicing.")
    if preset.data.min_brain_fraction > 0 or preset.data.exclude_ambiguous:
        print(f"The preset drops some slices (min_brain_fraction={preset.data.min_brain_fraction}, "
              f"exclude_ambiguous={preset.data.exclude_ambiguous}): {SLICES_PER_CASE} slices per case is an "
              "upper bound.")
    if device.type != "cuda":
        print(f"Measured on the {device.type.upper()}: these are not GPU figures; run on a GPU for those.")
    if image_shape != tuple(preset.data.image_shape) or any(
            preset_batches[p] not in [r.batch for r in rows if r.phase == p and r.images_per_s] for p in args.phases):
        print(f"Not the preset's sizes (image {preset.data.image_shape[0]} x {preset.data.image_shape[1]} px, batch "
              + ", ".join(f"{p} {preset_batches[p]}" for p in args.phases)
              + "): the projection scales a rate measured at other sizes.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
