"""Benchmark phase 1: is the multi-exit network cheap, and does the data loader keep up?

Prints, in one run:

1. training throughput (images/s: forward + backward + Adam step) of the multi-exit ResNet-18 and
   of a plain torchvision ResNet-18 (one logit, BCE) at the same input size and batch: median
   over ``--repeats`` repeats of ``--steps`` steps, the two models interleaved so that load from
   other processes hits both alike. Goal: multi-exit overhead <= 10 %.
2. the training loader's slices/s over the train split of a sliced run (``SliceDataset`` +
   ``DataLoader``), without augmentation, with per-slice augmentation inside the dataset, and with
   the batched augmentation that the phases use (applied to each batch after loading), next to the
   model's images/s.

Usage::

    python data_scripts/bench_multi_exit.py --image-size 128 --batch-size 32
    python data_scripts/bench_multi_exit.py --run-dir runs/demo_flair --device cuda

Without ``--run-dir`` the BraTS sample (``$AMECAM_DATA_DIR``) is sliced into a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from amecam_lib.augment import MRIAugment  # noqa: E402
from amecam_lib.config import default_data_dir, get_preset  # noqa: E402
from amecam_lib.device import pick_device, seed_everything  # noqa: E402
from amecam_lib.losses.exits import multi_exit_loss  # noqa: E402
from amecam_lib.models.multi_exit import MultiExitResNet  # noqa: E402
from amecam_lib.slices import SliceDataset, load_slices  # noqa: E402


class PlainResNet(torch.nn.Module):
    """torchvision ResNet-18 with one output logit; grey input repeated to 3 channels."""

    def __init__(self):
        super().__init__()
        self.resnet = torchvision.models.resnet18(weights=None, num_classes=1)

    def forward(self, images):
        return self.resnet(images.expand(-1, 3, -1, -1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_steps(model, loss_fn, images, labels, optimizer, steps, device) -> float:
    """Images per second over ``steps`` training steps."""
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()
    _sync(device)
    return steps * images.shape[0] / (time.perf_counter() - started)


def bench_models(image_shape: tuple[int, int], batch_size: int, device: torch.device, repeats: int,
                 steps: int) -> dict:
    seed_everything(0)
    images = torch.rand(batch_size, 1, *image_shape, device=device)
    labels = torch.randint(0, 2, (batch_size,), device=device)
    models = {
        "multi-exit ResNet-18": (MultiExitResNet().to(device).train(),
                                 lambda out, y: multi_exit_loss(out.logits, y)),
        "plain ResNet-18": (PlainResNet().to(device).train(),
                            lambda out, y: F.binary_cross_entropy_with_logits(out[:, 0], y.float())),
    }
    optimizers = {name: torch.optim.Adam(model.parameters(), lr=1e-4) for name, (model, _) in models.items()}
    for name, (model, loss_fn) in models.items():            # warm-up (allocations, cuDNN choice)
        _train_steps(model, loss_fn, images, labels, optimizers[name], 2, device)
    rates = {name: [] for name in models}
    for _ in range(repeats):
        for name, (model, loss_fn) in models.items():
            rates[name].append(_train_steps(model, loss_fn, images, labels, optimizers[name], steps, device))
    return {name: statistics.median(values) for name, values in rates.items()}


def bench_loader(run_dir: Path, modality: str, batch_size: int, num_workers: int, device: torch.device,
                 max_batches: int) -> dict:
    train_set = load_slices(run_dir, modality, "train")
    augment = MRIAugment()

    def per_slice(image):
        return augment(torch.as_tensor(image))

    variants = {
        "no augmentation": (SliceDataset(train_set), None),
        "per-slice augmentation in the dataset": (SliceDataset(train_set, transform=per_slice), None),
        "batched augmentation on the device": (SliceDataset(train_set), augment),
    }
    rates = {}
    for name, (dataset, batch_augment) in variants.items():
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers)
        n_slices, started = 0, time.perf_counter()
        for index, (images, _labels) in enumerate(loader):
            images = images.to(device)
            if batch_augment is not None:
                images = batch_augment(images)
            n_slices += images.shape[0]
            if index + 1 >= max_batches:
                break
        _sync(device)
        rates[name] = n_slices / (time.perf_counter() - started)
    return rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=128, help="slice side in pixels (default 128)")
    parser.add_argument("--image-shape", action="append", default=None, metavar="HxW",
                        help="slice shape(s) for the model benchmark, e.g. --image-shape 128x128 --image-shape "
                             "160x192: each is timed in the same run and compared with the first (default: "
                             "the --image-size square)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per model (median reported)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per repeat")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="sliced run folder for the loader benchmark (default: slice the sample to a temp dir)")
    parser.add_argument("--modality", default="flair")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--loader-batches", type=int, default=20, help="batches timed per loader variant")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    shapes = [_shape(text) for text in args.image_shape] if args.image_shape else [(args.image_size, args.image_size)]
    print(f"device {device}, batch {args.batch_size}, torch threads {torch.get_num_threads()}")

    first_rate = None
    for shape in shapes:
        model_rates = bench_models(shape, args.batch_size, device, args.repeats, args.steps)
        multi, plain = model_rates["multi-exit ResNet-18"], model_rates["plain ResNet-18"]
        for name, rate in model_rates.items():
            print(f"train  {shape[0]} x {shape[1]} px  {name:<24s} {rate:9.1f} images/s "
                  f"(median of {args.repeats} x {args.steps} steps)")
        print(f"multi-exit overhead at {shape[0]} x {shape[1]} px: {100 * (plain / multi - 1):+.1f} % time per image "
              "(goal <= 10 %)")
        first_rate = multi if first_rate is None else first_rate
        if len(shapes) > 1:
            print(f"  {shape[0]} x {shape[1]} px costs {first_rate / multi:.2f}x the time per image of "
                  f"{shapes[0][0]} x {shapes[0][1]} px (same run)")

    with tempfile.TemporaryDirectory(prefix="amecam_bench_") as scratch:
        run_dir = args.run_dir
        if run_dir is None:
            from amecam_lib.slicing import slice_dataset

            run_dir = Path(scratch)
            config = get_preset("demo").with_overrides(image_size=args.image_size,  # square, whatever demo's geometry
                                                       modalities=(args.modality,)).data
            slice_dataset(default_data_dir(), run_dir, config, workers=1, progress=False)
        loader_rates = bench_loader(run_dir, args.modality, args.batch_size, args.num_workers, device,
                                    args.loader_batches)
    for name, rate in loader_rates.items():
        print(f"loader {name:<40s} {rate:9.1f} slices/s ({rate / multi:5.1f} x the multi-exit model)")
    return 0


def _shape(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"bench_multi_exit: --image-shape must look like 160x192, got {text!r}") from None
    if height < 32 or width < 32:
        raise SystemExit(f"bench_multi_exit: --image-shape {text} is too small (ResNet-18 needs >= 32 px)")
    return height, width


if __name__ == "__main__":
    sys.exit(main())
