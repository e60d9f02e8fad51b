#!/usr/bin/env python
"""Train and evaluate AME-CAM on a sliced run folder, in one process or many (torchrun).

The phases are the library calls notebooks 02-05 make, in order, with the preset built the way
the notebooks build it (``amecam_lib.runs.notebook_preset``), so this script and the notebooks
read and resume each other's checkpoints:

  pretrain      SupCon pretraining        phases.pretrain_supcon          -> RUN/<m>/pretrain/
  multi_exit    Eq. 1                     phases.train_multi_exit         -> RUN/<m>/multi_exit/
  aggregation   A over exits 1-4 and 2+3  aggregation.train_attention     -> RUN/<m>/aggregation*/
  references    unet_fsl, avg_me_c2am,    baselines.train_reference_networks -> RUN/<m>/unet_fsl/, c2am_head/,
                lfi_cam                                                      lfi_cam/
  evaluate      every CAM method, scores  evaluation.evaluate             -> RUN/results.csv ...

Slice first, once, in one process (many cores: ``--workers``)::

    python data_scripts/slice_brats.py --data-dir $BRATS --out RUN --preset paper --modalities flair --workers 32

Then, on one GPU (or the CPU)::

    python data_scripts/train.py --preset paper --run-dir RUN --modality flair --data-dir $BRATS

or on the 8 GPUs of one node, the same command under torchrun::

    torchrun --standalone --nproc_per_node 8 data_scripts/train.py --preset paper --run-dir RUN --modality flair --data-dir $BRATS

Batch sizes are global (the paper's 512 for SupCon is 64 per GPU on 8 GPUs). Rank 0 alone writes
logs, checkpoints and tables; a run that stops (killed, out of time) is resumed by the same
command from each phase's ``last.pt``. Without torchrun it is one process, exactly as the
notebooks run. ``--set pretrain.epochs=1`` (repeatable) changes any preset setting.
Exit status: 0 done, 2 bad arguments or run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from amecam_lib import distributed
from amecam_lib.config import MODALITIES, PRESET_NAMES

PHASES: tuple[str, ...] = ("pretrain", "multi_exit", "aggregation", "references", "evaluate")
"""The phases, in the order they run."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--run-dir", type=Path, required=True, help="a sliced run folder (slice_brats.py / notebook 01)")
    parser.add_argument("--preset", choices=PRESET_NAMES, default="paper", help="settings (default: paper)")
    parser.add_argument("--modality", nargs="+", default=["flair"], choices=(*MODALITIES, "all"),
                        help="modalities to train, one model each, in turn (default flair; 'all': the four)")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES),
                        help="phases to run (default: all, in order)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="BraTS root the run was sliced from, for the 3-D scores (default: $AMECAM_DATA_DIR)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (under torchrun: GPU LOCAL_RANK)")
    geometry = parser.add_mutually_exclusive_group()
    geometry.add_argument("--image-size", type=int, default=None, help="as slice_brats.py (default: the preset's)")
    geometry.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), default=None,
                          help="as slice_brats.py (default: the preset's)")
    parser.add_argument("--crop-zoom", type=float, default=None, help="as slice_brats.py")
    parser.add_argument("--seed", type=int, default=None, help="seed of the trainings (default: the preset's, 0)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a preset setting, e.g. pretrain.epochs=1 or compute.sync_batchnorm=false "
                             "(VALUE read as JSON when it parses, else as text); repeatable")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    args.modality = list(MODALITIES) if "all" in args.modality else list(dict.fromkeys(args.modality))
    return args


def parse_settings(pairs: list[str]) -> dict:
    """``["pretrain.epochs=1", "compute.channels_last=false"]`` -> ``{"pretrain.epochs": 1, ...}``.

    Raises:
        ValueError: an item without ``=``.
    """
    settings = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key:
            raise ValueError(f"--set needs KEY=VALUE, got {pair!r}")
        try:
            settings[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            settings[key.strip()] = text
    return settings


def build_preset(args: argparse.Namespace, modality: str):
    """The preset of one modality, as the notebooks build it, with ``--set`` on top."""
    from amecam_lib.runs import notebook_preset

    return notebook_preset(args.preset, modality, image_size=args.image_size, crop_size=args.crop,
                           crop_zoom=args.crop_zoom, seed=args.seed, **parse_settings(args.settings))


def check_preset(args: argparse.Namespace, preset) -> None:
    """Check one modality's preset against the run folder before any phase starts.

    Raises:
        ValueError: an ``epochs`` setting that is not an integer >= 1 (the message names it as
            ``--set phase.epochs``); a slice geometry (``--preset``, ``--image-size``, ``--crop``,
            ``--crop-zoom``) other than the one ``--run-dir`` was sliced with (its ``run.json``,
            else its stored slices): the phases would train on the stored slices while recording
            the other geometry.
    """
    from amecam_lib.run_record import earlier_settings, run_settings

    for phase in preset.PHASES:
        epochs = getattr(getattr(preset, phase), "epochs", 1)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"--set {phase}.epochs={epochs!r}: epochs must be an integer >= 1")
    sliced = (earlier_settings(args.run_dir) or {}).get("geometry")
    wanted = run_settings(preset, seed=preset.seed)["geometry"]
    if sliced is not None and sliced != wanted:
        raise ValueError(f"{args.run_dir} was sliced with the geometry {sliced}; --preset {args.preset} with "
                         f"--image-size / --crop / --crop-zoom gives {wanted}: pass the geometry it was sliced "
                         f"with, or slice again into another run folder")


def run_phases(args: argparse.Namespace, context: distributed.Context) -> list[tuple[str, str, float]]:
    """Run the chosen phases for every modality; return ``(modality, phase, seconds)``."""
    # Imported when needed: the evaluation pulls in the CAM, CRF and metric libraries (seconds
    # per process at every start, restarts included).
    from amecam_lib.phases import pretrain_supcon, train_multi_exit

    progress = not args.no_progress
    device = str(context.device)
    timings = []
    for modality in args.modality:
        preset = build_preset(args, modality)
        for phase in PHASES:
            if phase not in args.phases:
                continue
            started = time.perf_counter()
            if context.is_main:
                print(f"\n=== {modality}: {phase} ({context.world_size} process(es), {context.device}) ===",
                      flush=True)
            if phase == "pretrain":
                pretrain_supcon(args.run_dir, modality, preset, device=device, progress=progress)
            elif phase == "multi_exit":
                train_multi_exit(args.run_dir, modality, preset, device=device, progress=progress)
            elif phase == "aggregation":
                from amecam_lib.aggregation import train_attention

                train_attention(args.run_dir, modality, preset, exits=(1, 2, 3, 4), device=device, progress=progress)
                train_attention(args.run_dir, modality, preset, exits=(2, 3), device=device, progress=progress)
            elif phase == "references":
                from amecam_lib.baselines import train_reference_networks

                train_reference_networks(args.run_dir, modality, preset, device=device, progress=progress)
            else:
                from amecam_lib.evaluation import evaluate

                evaluate(args.run_dir, modality, preset, device=device, progress=progress, data_dir=args.data_dir)
            distributed.barrier()
            timings.append((modality, phase, time.perf_counter() - started))
    return timings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.run_dir / "manifest.csv").is_file():
        print(f"train.py: {args.run_dir} is not a sliced run folder (no manifest.csv); slice it first with "
              f"data_scripts/slice_brats.py", file=sys.stderr)
        return 2
    try:
        for modality in args.modality:
            check_preset(args, build_preset(args, modality))
    except (KeyError, ValueError) as error:
        print(f"train.py: {error}", file=sys.stderr)
        return 2
    context = distributed.setup(args.device)
    try:
        timings = run_phases(args, context)
    finally:
        distributed.cleanup()
    if context.is_main:
        results = args.run_dir / "results.md"
        if "evaluate" in args.phases and results.is_file():
            print("\n" + results.read_text(encoding="utf-8"))
        print("wall time per phase:")
        for modality, phase, seconds in timings:
            print(f"  {modality:<6} {phase:<12} {seconds:9.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
