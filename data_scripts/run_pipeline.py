#!/usr/bin/env python
"""Run the whole notebook series 01 -> 05 with papermill into one run folder.

Each notebook of ``notebooks/`` is executed in order (kernel ``python3``) with the same
parameters; the executed copies land in the run folder (``RUN/01_slicing.ipynb`` ...), next to
what they wrote (slices, checkpoints, ``results.csv``, figures, NIfTI masks). At the end the
script prints the Table-1-style result (``RUN/results.md``) and the wall time of every notebook
(also written to ``RUN/timings.csv``), and writes ``RUN/report.html``: the executed notebooks as
one self-contained page with a table of contents, the results, the run's settings and the wall
times (:mod:`amecam_lib.report`).

A run folder belongs to one preset, slice geometry and seed (``RUN/run.json``,
:mod:`amecam_lib.run_record`): a run with other ones into the same folder is refused (exit
status 2) before anything is written, and so is a run of another modality into a folder whose
executed notebooks and report it would replace (each modality has its own run folder by default;
``--modality all`` makes one each).

``--modality all`` runs the series for t1, t1ce, t2 and flair, one run folder each
(``OUT/<preset>_<modality>/``, default ``OUT`` = ``runs/<preset>_all``), then writes
``OUT/results.csv``, ``OUT/results_3d.csv`` (the four modalities' rows), ``OUT/results_table1.md``
(the paper's Table 1 with four blocks, beside the paper's numbers) and ``OUT/timings.csv``.

If a notebook fails, the script stops and exits with status 1, naming the notebook, the cell and
the error; the executed notebook (with the traceback in the failing cell) stays in RUN/.

Examples::

    python data_scripts/run_pipeline.py --preset smoke --out /tmp/smoke_run
    python data_scripts/run_pipeline.py --preset demo --modality t1ce --data-dir /data/BraTS2021
    python data_scripts/run_pipeline.py --preset demo --image-size 128   # resample to 128 px instead of the demo's crop
    python data_scripts/run_pipeline.py --preset demo --modality all    # Table 1: t1, t1ce, t2, flair
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import papermill
from papermill.exceptions import PapermillExecutionError

from amecam_lib.atomic import write_text
from amecam_lib.config import MODALITIES, PRESET_NAMES
from amecam_lib.progress import PLAIN_PROGRESS_ENV
from amecam_lib.report import report_settings, table1_markdown, write_report
from amecam_lib.run_record import check_run_folder, run_settings, write_run_record
from amecam_lib.runs import REPO_ROOT, notebook_preset, resolve_data_dir, resolve_run_dir
from amecam_lib.slicing import check_slicing_settings
from amecam_lib.splits import read_split

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = ("01_slicing.ipynb", "02_supcon_pretraining.ipynb", "03_multi_exit.ipynb",
             "04_attentive_aggregation.ipynb", "05_crf_and_evaluation.ipynb")
"""The series, in the order it must run."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESET_NAMES, default="demo",
                        help="settings of every phase (default: demo, CPU-sized)")
    parser.add_argument("--modality", choices=(*MODALITIES, "all"), default="flair",
                        help="the MRI modality to train and evaluate on (default: flair); 'all': the "
                             "series for each of the four, one run folder each under --out, and Table 1")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="BraTS root (default: $AMECAM_DATA_DIR or the bundled sample)")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default: runs/<preset>_<modality> in the repository; with "
                             "--modality all the folder that holds the four run folders)")
    parser.add_argument("--split-file", type=Path, default=None,
                        help="CSV case_id,split with a patient-level split to use instead of the seed")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1 ...")
    geometry = parser.add_mutually_exclusive_group()
    geometry.add_argument("--image-size", type=int, default=None,
                          help="resample whole slices to this side in pixels (default: the preset's geometry)")
    geometry.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), default=None,
                          help="cut an H x W px window around each brain at the native grid instead")
    parser.add_argument("--crop-zoom", type=float, default=None,
                        help="resample the crop window by this factor (default: the preset's, 1 for demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the trainings")
    parser.add_argument("--workers", type=int, default=1, help="processes slicing cases in parallel (01)")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="slice the readable cases when some folders of --data-dir look like cases but "
                             "cannot be read (listed in 01's report); default: such folders stop the run (01)")
    parser.add_argument("--only", nargs="+", choices=[name[:2] for name in NOTEBOOKS], default=None,
                        help="run only these notebooks (e.g. --only 04 05); earlier outputs must exist")
    return parser.parse_args(argv)


def notebook_parameters(args: argparse.Namespace, data_dir: Path, run_dir: Path) -> dict:
    """The papermill parameters of the series; each notebook gets those its ``parameters`` cell
    declares."""
    return {
        "data_dir": str(data_dir),
        "run_dir": str(run_dir),
        "modality": args.modality,
        "preset": args.preset,
        "image_size": args.image_size,
        "crop_size": None if args.crop is None else list(args.crop),
        "crop_zoom": args.crop_zoom,
        "device": args.device,
        "seed": args.seed,
        "split_file": None if args.split_file is None else str(args.split_file.resolve()),
        "workers": args.workers,
        "skip_unreadable": args.skip_unreadable,
        "interactive": False,        # no live kernel: notebooks show static figures, no widgets
    }


def failure_message(notebook: str, error: PapermillExecutionError) -> str:
    """One paragraph naming the notebook, the cell and the error (no full traceback)."""
    source = (error.source or "").strip().splitlines()
    first_line = source[0] if source else ""
    return (f"FAILED: {notebook}, cell {error.exec_count} (cell index {error.cell_index}): "
            f"{error.ename}: {error.evalue}\n  cell starts with: {first_line}")


def run_series(args: argparse.Namespace) -> int:
    """Execute the notebooks; return the process exit status (0 ok, 1 a notebook failed or the
    report could not be written, 2 a bad data folder, run folder, geometry (``--image-size``,
    ``--crop``, ``--crop-zoom``), ``--workers`` or split file (missing, or not ``case_id,split``),
    or a run folder made with another preset, geometry or seed). Exit status 2 comes before
    anything is written: a mistyped setting does not mark the run folder."""
    if args.modality == "all":
        return run_all_modalities(args)
    try:
        data_dir = resolve_data_dir(args.data_dir)
        run_dir = resolve_run_dir(args.out, args.preset, args.modality).resolve()
        if run_dir.exists() and not run_dir.is_dir():
            raise NotADirectoryError(f"--out {run_dir} is a file, not a folder")
        preset = notebook_preset(args.preset, args.modality, image_size=args.image_size,  # a geometry that fits
                                 crop_size=args.crop, crop_zoom=args.crop_zoom, seed=args.seed)
        check_slicing_settings(preset.data, args.workers)    # geometry, workers: before run.json records them
        if args.split_file is not None:
            read_split(args.split_file)                      # exists and reads as case_id,split
        settings = run_settings(preset, seed=args.seed, split_file=args.split_file)
        notices = check_run_folder(run_dir, settings, modality=args.modality)
        run_dir.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as error:        # bad paths or settings, another run's folder: no traceback
        print(f"run_pipeline: {error}", file=sys.stderr)
        return 2
    write_run_record(run_dir, settings, args.modality)
    parameters = notebook_parameters(args, data_dir, run_dir)
    chosen = [name for name in NOTEBOOKS if args.only is None or name[:2] in args.only]
    print(f"run folder: {run_dir}\ndata: {data_dir}\npreset={args.preset} modality={args.modality}",
          flush=True)
    for notice in notices:
        print(f"note: the preset's settings changed since this run folder was made: {notice} (a training "
              f"whose settings differ starts afresh; its old checkpoints are kept as *.superseded.pt)",
              flush=True)
    timings: list[tuple[str, float]] = []
    for name in chosen:
        started = time.perf_counter()
        print(f"\n=== {name} ===", flush=True)
        declared = papermill.inspect_notebook(str(NOTEBOOK_DIR / name))
        try:
            papermill.execute_notebook(str(NOTEBOOK_DIR / name), str(run_dir / name),
                                       parameters={k: v for k, v in parameters.items() if k in declared},
                                       kernel_name="python3",
                                       cwd=str(NOTEBOOK_DIR), progress_bar=True)
        except PapermillExecutionError as error:
            print(failure_message(name, error), file=sys.stderr, flush=True)
            print(f"  executed notebook with the traceback: {run_dir / name}", file=sys.stderr)
            return 1
        timings.append((name, time.perf_counter() - started))
        print(f"{name}: {timings[-1][1]:.1f} s", flush=True)
    timings = merged_timings(run_dir / "timings.csv", timings)
    write_text(run_dir / "timings.csv",
               "notebook,seconds\n" + "".join(f"{n},{s:.1f}\n" for n, s in timings))
    results = run_dir / "results.md"
    if results.is_file():
        print("\n" + results.read_text(encoding="utf-8"))
    print("wall time per notebook:")
    for name, seconds in timings:
        print(f"  {name:<34} {seconds:8.1f} s")
    print(f"  {'total':<34} {sum(s for _, s in timings):8.1f} s")
    try:
        report = write_report(run_dir, settings=report_settings(
            preset, args.modality, seed=args.seed,
            extra={"data": str(data_dir), "run folder": str(run_dir), "device": args.device}))
    except Exception as error:                   # nbconvert, a damaged notebook: say so, the run itself is done
        print(f"run_pipeline: report.html not written: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"report: {report}")
    return 0


def merged_timings(path: Path, timings: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """This run's wall times, plus those of notebooks an earlier run timed and this one did not
    (``--only``), in series order."""
    earlier = {}
    if path.is_file():
        try:
            earlier = dict(pd.read_csv(path)[["notebook", "seconds"]].itertuples(index=False, name=None))
        except (ValueError, KeyError):
            earlier = {}
    merged = {**{n: float(s) for n, s in earlier.items() if n in NOTEBOOKS}, **dict(timings)}
    return [(name, merged[name]) for name in NOTEBOOKS if name in merged]


def run_all_modalities(args: argparse.Namespace) -> int:
    """``--modality all``: the series for each modality into ``OUT/<preset>_<modality>``, then the
    merged tables and Table 1 in ``OUT``; stops at the first failing modality."""
    out = (args.out if args.out is not None else REPO_ROOT / "runs" / f"{args.preset}_all").resolve()
    if out.exists() and not out.is_dir():
        print(f"run_pipeline: --out {out} is a file, not a folder", file=sys.stderr)
        return 2
    seconds: list[tuple[str, float]] = []
    for modality in MODALITIES:
        print(f"\n##### modality {modality} #####", flush=True)
        started = time.perf_counter()
        one = argparse.Namespace(**{**vars(args), "modality": modality, "out": out / f"{args.preset}_{modality}"})
        status = run_series(one)
        if status != 0:
            print(f"run_pipeline: modality {modality} failed (status {status}); Table 1 not written",
                  file=sys.stderr)
            return status
        seconds.append((modality, time.perf_counter() - started))
    run_dirs = [out / f"{args.preset}_{modality}" for modality in MODALITIES]
    results = pd.concat([pd.read_csv(d / "results.csv") for d in run_dirs if (d / "results.csv").is_file()],
                        ignore_index=True)
    write_text(out / "results.csv", results.to_csv(index=False, float_format="%.6f", lineterminator="\n"))
    volume_parts = [pd.read_csv(d / "results_3d.csv") for d in run_dirs if (d / "results_3d.csv").is_file()]
    volumes = pd.concat(volume_parts, ignore_index=True) if volume_parts else None
    if volumes is not None:
        write_text(out / "results_3d.csv", volumes.to_csv(index=False, float_format="%.6f", lineterminator="\n"))
    table = table1_markdown(results, volumes, title=f"Table 1: whole tumour, four modalities ({args.preset} preset)")
    write_text(out / "results_table1.md", table + "\n")
    write_text(out / "timings.csv", "modality,seconds\n" + "".join(f"{m},{t:.1f}\n" for m, t in seconds))
    print("\n" + table)
    print("wall time per modality:")
    for modality, wall in seconds:
        print(f"  {modality:<8} {wall:8.1f} s   report: {out / f'{args.preset}_{modality}' / 'report.html'}")
    print(f"  {'total':<8} {sum(t for _, t in seconds):8.1f} s")
    print(f"Table 1: {out / 'results_table1.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    # The kernels papermill starts inherit this: the library's progress bars are plain text, whose last
    # state the executed notebooks keep (a widget bar's state is not saved: stuck at 0 % in JupyterLab).
    os.environ.setdefault(PLAIN_PROGRESS_ENV, "1")
    return run_series(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
