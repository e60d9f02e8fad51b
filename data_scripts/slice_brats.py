"""Slice BraTS volumes into labelled axial slices in a run folder (command-line front of
``amecam_lib.slicing.slice_dataset``).

Example::

    python data_scripts/slice_brats.py --data-dir ../shared/data/brats_sample --out runs/demo \\
        --modalities flair t1ce --preset demo --workers 2
    # crop, don't shrink: a 160 x 192 px window around each brain at the native 1 mm grid
    python data_scripts/slice_brats.py --out runs/crop --crop 160 192

Writes ``OUT/slices/<case_id>/``, ``OUT/manifest.csv`` and ``OUT/split.csv`` and prints the
per-case slice counts. Exits with status 2 and a message on bad input (folders that look like
cases but cannot be read are each named with the reason, unless ``--skip-unreadable``, which
slices the others and lists them in the report), and with status 130 and one line on Ctrl-C
(finished cases are kept; a rerun resumes).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from amecam_lib.config import MODALITIES, PRESET_NAMES, default_data_dir, get_preset  # noqa: E402
from amecam_lib.releases import BratsDataError  # noqa: E402
from amecam_lib.slicing import slice_dataset  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command-line options; unset options keep the preset's value."""
    parser = argparse.ArgumentParser(
        description="Slice BraTS NIfTI cases into labelled axial slices (AME-CAM tutorial, step 01).",
        epilog="Settings not given come from the preset (default: demo, a 160 x 192 px crop of the "
               "1 mm grid; 'paper' keeps the 240 px grid; 'smoke' crops 160 x 192 px at zoom 0.4). "
               "--image-size and --crop "
               "are two geometries: give at most one; either replaces the preset's.")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="BraTS root holding one folder per case (default: $AMECAM_DATA_DIR "
                             "or ../shared/data/brats_sample)")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write")
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES, default=None,
                        help="modalities to slice (default: the preset's, flair)")
    parser.add_argument("--preset", choices=PRESET_NAMES, default="demo",
                        help="preset giving the defaults below (default: demo)")
    geometry = parser.add_mutually_exclusive_group()
    geometry.add_argument("--image-size", type=int, default=None,
                          help="resample the whole slice to this side in pixels (demo: 128, paper: 240)")
    geometry.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), default=None,
                          help="cut an H x W px window around each case's brain at the native grid "
                               "(H along the volume's first axis, W along its second; e.g. 160 192)")
    parser.add_argument("--crop-zoom", type=float, default=None,
                        help="resample the crop window by this factor (e.g. 0.4: 160 x 192 -> 64 x 77 px)")
    parser.add_argument("--tumour-fraction", type=float, default=None,
                        help="slice is tumour when WT area > this fraction of the slice (0.01)")
    parser.add_argument("--min-brain-fraction", type=float, default=None,
                        help="drop slices whose brain area is below this fraction (demo: 0.05)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the patient-level split")
    parser.add_argument("--split-file", type=Path, default=None,
                        help="CSV case_id,split (train/val/test) replacing the seeded split")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo every case, even those already sliced with the same settings")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="slice the readable cases when some folders look like cases but cannot be read "
                             "(empty, nested one level down, partial downloads, dangling links, missing "
                             "files); they are listed in the report. Default: such folders stop the run")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print a library warning (changed split, redone case) as one line, without source lines."""
    print(f"slice_brats: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        print(f"slice_brats: error: --out {args.out} is a file, not a folder", file=sys.stderr)
        return 2
    try:
        preset = get_preset(args.preset).with_overrides(**{
            "data.modalities": tuple(args.modalities) if args.modalities else None,
            "data.image_size": args.image_size,
            "data.crop_size": tuple(args.crop) if args.crop else None,
            "data.crop_zoom": args.crop_zoom,
            "data.tumour_fraction": args.tumour_fraction,
            "data.min_brain_fraction": args.min_brain_fraction,
            "data.seed": args.seed,
        })
    except ValueError as error:  # a geometry that does not fit together, e.g. --crop-zoom without a crop
        print(f"slice_brats: error: {error}", file=sys.stderr)
        return 2
    try:
        data_dir = args.data_dir if args.data_dir is not None else default_data_dir()
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            report = slice_dataset(data_dir, args.out, preset.data, split_file=args.split_file,
                                   workers=args.workers, overwrite=args.overwrite,
                                   skip_unreadable=args.skip_unreadable, progress=not args.no_progress)
    except (BratsDataError, OSError) as error:
        print(f"slice_brats: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slice_brats: interrupted; rerun to resume (finished cases are reused)",
              file=sys.stderr)
        return 130
    print(report.table())
    print(f"wrote {args.out / 'manifest.csv'} and {args.out / 'split.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
