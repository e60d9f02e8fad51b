"""Benchmark the training data loader: slices/s delivered by ``SliceDataset`` + ``DataLoader``.

Reads the train split of a sliced run folder in two ways and prints slices/s for each (median
over ``--repeats`` full passes, shuffled, batch ``--batch-size``):

- ``lazy``: :meth:`amecam_lib.slices.SliceDataset.from_run`, which reads each slice's ``uint16``
  codes from the memory-mapped per-case ``.npy`` and decodes it to ``float32`` per item (what
  training on the full dataset uses);
- ``in memory``: ``SliceDataset(load_slices(...))`` (what the demo sizes use), plus the time
  :func:`~amecam_lib.slices.load_slices` takes to read and decode the split.

Compare the figures with the model's training images/s printed by
``data_scripts/bench_multi_exit.py``: the loader keeps up when it delivers more slices/s.

Usage::

    python data_scripts/bench_loader.py --run-dir runs/demo_flair --modality flair
    python data_scripts/bench_loader.py --image-size 128   # slices the sample into a temp folder
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from amecam_lib.config import DataConfig, default_data_dir  # noqa: E402


def loader_rate(dataset, batch_size: int, num_workers: int, repeats: int) -> tuple[float, int]:
    """Median slices/s over ``repeats`` shuffled passes through ``dataset``; and the slice count."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        seen = 0
        for images, _labels in loader:
            seen += images.shape[0]
        rates.append(seen / (time.perf_counter() - start))
    return statistics.median(rates), len(dataset)


def bench(run_dir: Path, modality: str, batch_size: int, num_workers: int, repeats: int) -> None:
    """Print slices/s of the lazy and the in-memory dataset over the train split of ``run_dir``."""
    from amecam_lib.slices import SliceDataset, load_slices

    lazy = SliceDataset.from_run(run_dir, modality, "train")
    rate, n_slices = loader_rate(lazy, batch_size, num_workers, repeats)
    size = lazy[0][0].shape[-1]
    print(f"train split of {run_dir}: {n_slices} slices of {size} px ({modality}), batch "
          f"{batch_size}, num_workers={num_workers}, median of {repeats} passes")
    print(f"{'lazy (memory-mapped uint16, decoded per item)':<50}{rate:>10.0f} slices/s")
    start = time.perf_counter()
    slice_set = load_slices(run_dir, modality, "train")
    seconds = time.perf_counter() - start
    rate, _ = loader_rate(SliceDataset(slice_set), batch_size, num_workers, repeats)
    print(f"{'in memory (load_slices, then SliceDataset)':<50}{rate:>10.0f} slices/s "
          f"(load_slices: {seconds:.2f} s, {n_slices / seconds:.0f} slices/s, "
          f"{slice_set.images.nbytes / 1e6:.0f} MB float32)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the training data loader (slices/s).")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="a sliced run folder (default: slice the sample into a temp folder)")
    parser.add_argument("--data-dir", type=Path, default=None, help="BraTS cases (default: the sample)")
    parser.add_argument("--modality", default="flair")
    parser.add_argument("--image-size", type=int, default=128, help="when slicing (pixels)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.run_dir is not None:
        bench(args.run_dir, args.modality, args.batch_size, args.num_workers, args.repeats)
        return 0
    from amecam_lib.slicing import slice_dataset

    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        config = DataConfig(modalities=(args.modality,), image_size=args.image_size)
        slice_dataset(args.data_dir or default_data_dir(), tmp, config, progress=False)
        bench(Path(tmp), args.modality, args.batch_size, args.num_workers, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
