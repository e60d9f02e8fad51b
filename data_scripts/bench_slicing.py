"""Benchmark slicing: our per-case ``.npy`` storage against the authors' one-JPEG-per-slice approach.

On the same cases, each measured in its own subprocess (so peak memory is that run's own):

1. ``read``: nibabel only reads the volumes each case needs (the sliced modalities and the
   segmentation, ``np.asanyarray(img.dataobj)``): the floor any approach pays;
2. ``ours``: :func:`amecam_lib.slicing.slice_dataset` with ``workers=1`` and ``workers=2``;
3. ``jpeg``: a minimal re-implementation of the authors' approach for comparison: per-volume
   min-max, 8-bit, one JPEG file per slice and modality (PIL, default quality 75), the slice
   label in the folder name.

Each approach runs ``--repeats`` times, the approaches interleaved so that load from other
processes hits them alike; printed per approach: the median and the fastest seconds, cases/s
(from the median), the median as a multiple of the read floor measured in the same run, peak
resident memory (main process and, with workers, the largest worker, from ``getrusage``), and
the storage written (bytes, bytes allocated on disk, file count), then bytes per case. It runs at
the sample's size (7 cases) and at ``N`` cases made by copying the real ones under new IDs.
By default the slices are 240 px with all four modalities and no slice dropped, the authors'
setting. Goal (issue): ours with ``workers=1`` within 1.5x of the read floor, faster than JPEG.

Example::

    python data_scripts/bench_slicing.py --sizes 7 50 --repeats 3
    python data_scripts/bench_slicing.py --sizes 7 21 --modalities flair --image-size 128
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from amecam_lib.config import MODALITIES, DataConfig, default_data_dir  # noqa: E402

RUNS = (("nibabel read only (floor)", "read", 1), ("ours, workers=1", "ours", 1),
        ("ours, workers=2", "ours", 2), ("authors: JPEG per slice", "jpeg", 1))


def measure(mode: str, data_dir: Path, out_dir: Path, workers: int, modalities: list[str],
            image_size: int) -> dict:
    """Run one approach in this process; return seconds, case count and peak RSS (MiB)."""
    import nibabel as nib
    import numpy as np

    from amecam_lib.volumes import find_cases, load_case

    start = time.perf_counter()
    cases = find_cases(data_dir)
    if mode == "read":
        for case in cases:
            for path in [case.images[m] for m in modalities] + [case.seg]:
                np.asanyarray(nib.load(path).dataobj)
    elif mode == "ours":
        from amecam_lib.slicing import slice_dataset

        config = DataConfig(modalities=tuple(modalities), image_size=image_size,
                            min_brain_fraction=0.0)
        slice_dataset(data_dir, out_dir, config, workers=workers, progress=False)
    elif mode == "jpeg":
        from PIL import Image

        for case in cases:
            volumes = load_case(case, modalities)  # same reader; min-max per volume
            tumour_pixels = volumes.whole_tumour.sum(axis=(0, 1))
            for modality, volume in volumes.images.items():
                grey = np.round(volume * 255).astype(np.uint8)
                for z in range(grey.shape[2]):
                    label = "tumor" if tumour_pixels[z] > 0.01 * grey.shape[0] * grey.shape[1] else "normal"
                    folder = out_dir / modality / label
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(grey[:, :, z]).save(folder / f"{case.case_id}_{z}.jpg")
    else:
        raise ValueError(f"unknown mode {mode!r}")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cases": len(cases),
            "rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def storage(folder: Path) -> dict:
    """Bytes written under ``folder``, bytes allocated on disk, and the number of files."""
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    return {"bytes": sum(p.stat().st_size for p in files),
            "allocated": sum(p.stat().st_blocks * 512 for p in files), "files": len(files)}


def make_copies(source_dir: Path, n_cases: int, target_dir: Path) -> Path:
    """``n_cases`` cases copied round-robin from the real ones, renamed ``BraTS2021_9NNNN``."""
    from amecam_lib.releases import RELEASES
    from amecam_lib.volumes import find_cases

    real = find_cases(source_dir)
    brats2021 = next(r for r in RELEASES if r.name == "BraTS 2021")
    for index in range(n_cases):
        case = real[index % len(real)]
        new_id = f"BraTS2021_{90000 + index:05d}"
        folder = target_dir / new_id
        folder.mkdir(parents=True)
        for name, path in case.files().items():
            suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
            shutil.copyfile(path, folder / f"{brats2021.file_stem(new_id, name)}{suffix}")
    return target_dir


def run_in_subprocess(mode, data_dir, out_dir, workers, modalities, image_size) -> dict:
    command = [sys.executable, __file__, "--measure", mode, "--data-dir", str(data_dir),
               "--out", str(out_dir), "--workers", str(workers), "--image-size", str(image_size),
               "--modalities", *modalities]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench(data_dir: Path, n_cases: int, modalities: list[str], image_size: int, work: Path,
          repeats: int) -> None:
    """Measure every approach ``repeats`` times on ``n_cases`` cases and print one table."""
    from amecam_lib.volumes import find_cases

    n_real = len(find_cases(data_dir))
    with tempfile.TemporaryDirectory(dir=work, prefix="bench-") as tmp:
        tmp = Path(tmp)
        cases_dir = data_dir if n_cases == n_real else make_copies(data_dir, n_cases, tmp / "data")
        origin = "the sample" if cases_dir == data_dir else f"copies of the {n_real} sample cases"
        print(f"\n== {n_cases} cases ({origin}), modalities {' '.join(modalities)}, {image_size} px, "
              f"median of {repeats} ==")
        results = {run: [] for run in RUNS}
        sizes = {}
        for _ in range(repeats):
            for run in RUNS:
                _, mode, workers = run
                out = tmp / f"out-{mode}-{workers}"
                results[run].append(run_in_subprocess(mode, cases_dir, out, workers, modalities,
                                                      image_size))
                sizes[mode] = storage(out)
                shutil.rmtree(out, ignore_errors=True)
        floor = statistics.median(r["seconds"] for r in results[RUNS[0]])
        header = f"{'approach':<28}{'median s':>9}{'min s':>8}{'cases/s':>9}{'x floor':>8}" \
                 f"{'RSS main':>10}{'RSS worker':>11}{'MB written':>12}{'MB on disk':>12}{'files':>8}"
        print(header)
        print("-" * len(header))
        medians = {}
        for run in RUNS:
            title, mode, workers = run
            seconds = [r["seconds"] for r in results[run]]
            medians[(mode, workers)] = median = statistics.median(seconds)
            rss_main = max(r["rss_main_mib"] for r in results[run])
            worker = f"{max(r['rss_worker_mib'] for r in results[run]):.0f}" if workers > 1 else "-"
            written = sizes[mode]
            print(f"{title:<28}{median:>9.2f}{min(seconds):>8.2f}{n_cases / median:>9.2f}"
                  f"{median / floor:>8.2f}{rss_main:>10.0f}{worker:>11}"
                  f"{written['bytes'] / 1e6:>12.1f}{written['allocated'] / 1e6:>12.1f}{written['files']:>8}")
        print(f"ours (workers=1) / read floor: {medians[('ours', 1)] / floor:.2f}x (goal <= 1.5); "
              f"ours / JPEG: {medians[('ours', 1)] / medians[('jpeg', 1)]:.2f}x time; RSS in MiB; "
              f"all runs (s): " + "; ".join(
                  f"{mode}{workers}=" + ",".join(f"{r['seconds']:.2f}" for r in results[run])
                  for run in RUNS for _, mode, workers in [run]))
        if sizes["jpeg"]["bytes"]:
            print(f"storage per case: ours {sizes['ours']['bytes'] / n_cases / 1e6:.1f} MB "
                  f"(uint16 codes, lossless at the native grid), JPEG "
                  f"{sizes['jpeg']['bytes'] / n_cases / 1e6:.1f} MB (8-bit, lossy): "
                  f"{sizes['ours']['bytes'] / sizes['jpeg']['bytes']:.1f}x bytes, "
                  f"{sizes['ours']['files']} vs {sizes['jpeg']['files']} files")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark slicing against one-JPEG-per-slice.")
    parser.add_argument("--data-dir", type=Path, default=None, help="BraTS cases (default: the sample)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[7, 50],
                        help="case counts to run at (default: 7 50)")
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES))
    parser.add_argument("--image-size", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each approach; the median is reported (default: 3)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where temporary copies and outputs go (default: system temp)")
    parser.add_argument("--measure", choices=["read", "ours", "jpeg"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    if args.measure:
        print(json.dumps(measure(args.measure, data_dir, args.out, args.workers, args.modalities,
                                 args.image_size)))
        return 0
    for n_cases in args.sizes:
        bench(data_dir, n_cases, args.modalities, args.image_size, args.work_dir, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
