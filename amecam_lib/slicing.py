"""BraTS volumes -> labelled axial slices, stored per case, plus a manifest of every slice.

Paper Sec. 3.1 slices each volume along z; REFERENCE_NOTES "Data" gives the authors' label rule,
which this module follows: a slice is *tumour* (label 1) when its whole-tumour area (WT,
``seg > 0``) is more than ``tumour_fraction`` of the slice at the original grid (> 576 px at
240 x 240 for 1 %), else *normal* (label 0). Slices with ``0 < area <= threshold`` are labelled 0
and flagged ``ambiguous`` so training may leave them out. Slices whose brain area (voxels above
the volume's minimum, i.e. non-zero in BraTS, in any sliced modality) is below
``min_brain_fraction`` of the slice are dropped, and listed in the manifest with the reason:
nothing is dropped silently.

Storage (see ARCHITECTURE.md, "run folder written by slicing") uses one file per case and
modality rather than one per slice: 1,251 cases x 4 modalities make ~6,300 files instead of
~780,000 JPEGs, each readable memory-mapped. Images are stored as ``uint16`` *codes*
``round(v * 65535)`` of the per-volume min-max normalised value ``v`` (storage format 3; format 2
had the same codes but square slices only and no crop in ``case.json``; format 1 stored
``float32``, twice the size). At the native grid this is lossless with respect to the raw
integer intensities whenever the volume's range ``max - min`` is at most 65,535, which always
holds for ``int16``/``uint16``/8-bit data (BraTS stores ``int16``): distinct raw values are at least
one code apart, and ``raw = min + round(code * (max - min) / 65535)`` recovers them exactly. A
wider range (``int32`` or float data) is quantised to steps of ``(max - min) / 65535``: the error
is at most half a step, i.e. below ``1 / 131070`` of the range. Resized slices are quantised the
same way (error <= ``0.5 / 65535`` of the normalised value). A 240 px case with four modalities
takes ~80 MB (4 x 17.9 MB images + 8.9 MB mask; ~100 GB for BraTS 2021); 128 px flair ~7.6 MB::

    RUN/slices/<case_id>/<modality>.npy   (Z_kept, H, W) uint16 codes; v = code / 65535 in [0, 1]
    RUN/slices/<case_id>/wt.npy           (Z_kept, H, W) bool, whole tumour (nearest)
    RUN/slices/<case_id>/slices.csv       this case's manifest rows (without split)
    RUN/slices/<case_id>/case.json        release, modalities, shape, affine, z, image_shape,
                                          crop_box, brain_box, outside_window, settings, sources,
                                          spatial_header (the segmentation's, for the export)
    RUN/manifest.csv                      case_id,z,label,tumour_pixels,brain_pixels,ambiguous,kept,reason,split,row
    RUN/split.csv                         case_id,split

Readers never decode by hand: :func:`decode_images` (used by :mod:`amecam_lib.slices`) turns codes
into ``float32`` in ``[0, 1]`` and refuses any other stored type (a format-1 folder is re-sliced,
never misread: the format is part of the settings in ``case.json``).

Geometry (:class:`~amecam_lib.config.DataConfig`), one of two:

- *resample* (``image_size=S``): row ``r`` of a case's ``.npy`` is ``volume[:, :, z[r]]`` (no
  transpose, no flip), resized to ``S x S`` when ``S`` differs from the grid;
- *crop* (``crop_size=(H, W)``, ``crop_zoom``; "crop, don't shrink"): row ``r`` is
  ``volume[row0:row0 + H, col0:col0 + W, z[r]]``, resized by ``crop_zoom`` when it is not 1. The
  window (``crop_box`` in ``case.json``: ``row0, col0, height, width`` on the original grid) is
  centred on the case's *brain box*, the bounding box of the brain voxels (above the volume's
  minimum in any sliced modality) over all z, then shifted to lie inside the grid
  (:func:`brain_box`, :func:`crop_window`); the same window for every slice of the case. A
  window larger than the grid is a :class:`BratsDataError` naming ``crop_size``. A brain larger
  than the window in a dimension does not stop the run and is never cut silently: the window stays
  centred, ``case.json`` (``outside_window``) and the report (:attr:`CaseReport.brain_outside`,
  :attr:`CaseReport.tumour_outside`, a line of :meth:`SlicingReport.table`) say how many brain
  and tumour voxels fall outside it, and :func:`slice_dataset` warns naming the case and the
  numbers. Rule for what was cut: the stored whole-tumour masks, hence the slice metrics, hold
  the tumour inside the window only; the NIfTI export puts predictions back on the original grid
  with 0 outside the window, so a 3-D score on the original grid counts cut tumour as missed.

Either way the manifest counts on the original grid: ``tumour_pixels`` and ``brain_pixels`` are
pixels of the whole original slice, and the label rule's slice area is the original
``X * Y`` (57,600 px in BraTS), whatever is stored. Each case folder is written whole into a temporary
folder and renamed (:func:`amecam_lib.atomic.atomic_dir`); a rerun reuses a case made with the
same settings from source files of the same *content* (the SHA-256 of each sliced modality and of
the segmentation, :func:`source_fingerprint`, stored in ``case.json``; a file replaced by another of
the same size and time is a changed file) whose ``.npy`` files are all present and complete (header
and file size checked, :func:`open_stored_array`), and redoes one whose sources changed or whose
files are incomplete (saying why). A run never deletes slices silently (:func:`plan_cases`): a case folder holding the
requested modalities and more is reused as it is (slicing ``t1ce`` into a folder sliced with all
four keeps the other three); one made with another geometry or label rule, or lacking a requested
modality, is a :class:`RunFolderConflict` naming what would be lost, unless ``overwrite=True``,
which redoes every case with exactly the requested settings. A rerun that changes
``RUN/split.csv`` (another seed or split file) warns and counts the cases that moved
(:attr:`SlicingReport.split_moved`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import multiprocessing
import signal
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from amecam_lib.atomic import atomic_dir, atomic_path, clean_stale_tmp
from amecam_lib.config import MODALITIES, DataConfig, zoomed_size
from amecam_lib.fingerprints import file_sha256
from amecam_lib.progress import tqdm
from amecam_lib.releases import BratsDataError
from amecam_lib.splits import make_split, read_split, read_split_file, write_split
from amecam_lib.volumes import CaseFiles, UnreadableCase, load_case, scan_cases, usable_cases

SLICE_FORMAT = 3
"""Version of the per-case storage layout (3: ``uint16`` codes of ``(H, W)`` slices, resampled or
cropped, ``image_shape`` and ``crop_box`` in ``case.json``; 2: square slices only; 1: ``float32``
images); a change makes reruns redo every case."""

IMAGE_CODE_MAX = 65535
"""Stored image code of the normalised value 1.0 (``uint16`` maximum); code 0 is 0.0."""

CODE_DTYPE = np.dtype(np.uint16)
"""Type of the stored image codes."""

MAX_IMAGE_SIZE = 1024
"""Largest accepted ``image_size`` (pixels), and side of stored crops: 4x the 240 px BraTS grid,
rounded up. One 1024 px case stores ~300 MB per modality; a larger side is almost surely a typo
(it would allocate gigabytes to terabytes)."""

MIN_IMAGE_SIZE = 8
"""Smallest accepted side of a stored slice and of a crop window (pixels)."""

MANIFEST_COLUMNS: tuple[str, ...] = (
    "case_id", "z", "label", "tumour_pixels", "brain_pixels", "ambiguous", "kept", "reason",
    "split", "row")
"""Columns of ``RUN/manifest.csv``; ``slices.csv`` in each case folder has all but ``split``."""

_CASE_COLUMNS = tuple(c for c in MANIFEST_COLUMNS if c != "split")


@dataclass(frozen=True)
class CaseReport:
    """What slicing did with one case.

    Attributes:
        case_id, release, split: the case, its BraTS release and its split.
        slices: axial slices in the volume (kept + dropped).
        tumour: kept slices labelled 1 (WT area > threshold).
        normal: kept slices with no tumour pixel.
        ambiguous: kept slices with 0 < WT area <= threshold (labelled 0).
        dropped: slices dropped for too little brain (listed in the manifest, ``kept=0``).
        reused: ``True`` when an earlier run's folder with the same settings was kept.
        seconds: wall time spent on the case (s).
        redone_because: why an earlier folder with the same settings was *not* reused (e.g. a
            missing or truncated ``.npy`` file); empty otherwise.
        brain_extent: ``(height, width)`` of the brain box on the original grid (pixels);
            ``(0, 0)`` for a case without brain voxels.
        brain_outside, tumour_outside: brain and whole-tumour voxels outside the crop window (all
            z); 0 without a crop. Non-zero when the brain is larger than ``crop_size``.
    """

    case_id: str
    release: str
    split: str
    slices: int
    tumour: int
    normal: int
    ambiguous: int
    dropped: int
    reused: bool
    seconds: float
    redone_because: str = ""
    brain_extent: tuple[int, int] = (0, 0)
    brain_outside: int = 0
    tumour_outside: int = 0

    @property
    def cut(self) -> bool:
        """Whether brain or tumour voxels fall outside the crop window."""
        return self.brain_outside > 0 or self.tumour_outside > 0


@dataclass
class SlicingReport:
    """Summary of :func:`slice_dataset`: one :class:`CaseReport` per case, sorted by case ID.

    ``tumour + normal + ambiguous + dropped == slices`` for every case. ``split_moved`` lists the
    cases whose split differs from the ``split.csv`` the run folder held before (empty on a first
    run or when the split is unchanged). ``crop_size`` is the crop window (None: resampled).
    ``skipped`` lists the folders that look like cases but could not be read, left out with
    ``skip_unreadable=True`` (:class:`~amecam_lib.volumes.UnreadableCase`: folder and reason).
    """

    run_dir: Path
    cases: list[CaseReport] = field(default_factory=list)
    seconds: float = 0.0
    split_moved: list[str] = field(default_factory=list)
    crop_size: tuple[int, int] | None = None
    skipped: list[UnreadableCase] = field(default_factory=list)

    @property
    def cut_cases(self) -> list[str]:
        """Cases whose brain or tumour reaches outside the crop window (counted, never hidden)."""
        return [case.case_id for case in self.cases if case.cut]

    @property
    def cases_per_second(self) -> float:
        """Cases handled per second of wall time (reused cases included)."""
        return len(self.cases) / self.seconds if self.seconds > 0 else float("inf")

    @property
    def no_tumour_cases(self) -> list[str]:
        """Cases with no kept slice labelled tumour (allowed; counted, not hidden)."""
        return [case.case_id for case in self.cases if case.tumour == 0]

    @property
    def no_slice_cases(self) -> list[str]:
        """Cases with no kept slice at all: every slice dropped for too little brain, as with a
        blank or constant volume. They give no training or test slice (named, never hidden)."""
        return [case.case_id for case in self.cases if case.dropped == case.slices]

    def totals(self) -> dict[str, int]:
        """Slice counts summed over all cases, plus the number of cases and of reused cases."""
        keys = ("slices", "tumour", "normal", "ambiguous", "dropped")
        totals = {key: sum(getattr(case, key) for case in self.cases) for key in keys}
        totals["cases"] = len(self.cases)
        totals["reused"] = sum(case.reused for case in self.cases)
        return totals

    def table(self) -> str:
        """Plain-text table of the per-case counts and the totals (for the CLI and notebooks)."""
        header = ("case_id", "release", "split", "slices", "tumour", "normal", "ambiguous",
                  "dropped", "seconds")
        rows = [(c.case_id, c.release, c.split, c.slices, c.tumour, c.normal, c.ambiguous,
                 c.dropped, "reused" if c.reused else f"{c.seconds:.2f}") for c in self.cases]
        totals = self.totals()
        rows.append(("TOTAL", f"{totals['cases']} cases", "", totals["slices"], totals["tumour"],
                     totals["normal"], totals["ambiguous"], totals["dropped"], f"{self.seconds:.2f}"))
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip()
                 for row in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.insert(len(lines) - 1, lines[1])
        lines.append(f"{self.cases_per_second:.2f} cases/s; {totals['reused']} case(s) reused; "
                     f"cases without a tumour slice: {', '.join(self.no_tumour_cases) or 'none'}")
        if self.no_slice_cases:
            lines.append(f"NO SLICE KEPT of {len(self.no_slice_cases)} case(s), every slice dropped for too "
                         f"little brain (a blank or constant volume?): {', '.join(self.no_slice_cases)}")
        if self.skipped:
            lines.append(f"SKIPPED {len(self.skipped)} unreadable case folder(s) (skip_unreadable=True):")
            lines.extend(f"skipped {entry}" for entry in self.skipped)
        lines.extend(f"redone {c.case_id}: {c.redone_because}" for c in self.cases
                     if c.redone_because)
        lines.extend(f"cut {c.case_id}: {cut_message(c, self.crop_size)}" for c in self.cases if c.cut)
        if self.split_moved:
            lines.append(f"split.csv changed: {len(self.split_moved)} case(s) moved to another "
                         f"split ({', '.join(self.split_moved[:5])}"
                         f"{' ...' if len(self.split_moved) > 5 else ''})")
        return "\n".join(lines)


def label_slices(tumour_pixels: np.ndarray, slice_pixels: int,
                 tumour_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Slice-level labels from whole-tumour areas (authors' rule, REFERENCE_NOTES "Data").

    Args:
        tumour_pixels: ``(Z,)`` int, WT pixels of each axial slice at the original grid.
        slice_pixels: pixels of one slice at the original grid (57,600 at 240 x 240).
        tumour_fraction: threshold as a fraction of the slice (0.01 -> 576 px at 240 x 240).

    Returns:
        ``labels`` ``(Z,) int64``: 1 where ``tumour_pixels > tumour_fraction * slice_pixels``;
        ``ambiguous`` ``(Z,) bool``: ``0 < tumour_pixels <= threshold`` (labelled 0).
    """
    tumour_pixels = np.asarray(tumour_pixels)
    labels = (tumour_pixels > tumour_fraction * slice_pixels).astype(np.int64)
    ambiguous = (tumour_pixels > 0) & (labels == 0)
    return labels, ambiguous


def brain_box(brain_in_plane: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box of the ``True`` pixels of an ``(X, Y)`` bool map (e.g. the brain of a case
    projected over z): ``(row0, col0, height, width)``, or ``None`` when no pixel is set."""
    rows = np.flatnonzero(np.any(brain_in_plane, axis=1))
    cols = np.flatnonzero(np.any(brain_in_plane, axis=0))
    if rows.size == 0:
        return None
    return (int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))


def crop_window(box: tuple[int, int, int, int] | None, grid: tuple[int, int],
                crop_size: tuple[int, int], case_id: str = "") -> tuple[int, int, int, int]:
    """The crop window of a case: ``crop_size`` centred on its brain box, shifted inside the grid.

    Per axis, with the box starting at ``b0`` and ``e`` pixels long and a window of ``n`` pixels:
    ``start = b0 + floor((e - n) / 2)`` (centred; when ``e - n`` is odd the extra pixel of margin
    goes after the box), then clamped to ``[0, grid - n]``. A box longer than the window keeps it
    centred (the box is cut on both sides). No box (no brain voxel): the window is centred on the
    grid.

    Args:
        box: ``(row0, col0, height, width)`` of :func:`brain_box`, or None.
        grid: ``(X, Y)`` in-plane size of the original grid.
        crop_size: ``(H, W)`` window.
        case_id: named in the error.

    Returns:
        ``(row0, col0, H, W)`` on the original grid.

    Raises:
        BratsDataError: the window is larger than the grid (message names ``crop_size``).
    """
    height, width = (int(n) for n in crop_size)
    if height > grid[0] or width > grid[1]:
        raise BratsDataError(
            f"crop_size=({height}, {width}) is larger than the in-plane grid {grid[0]} x {grid[1]}"
            f"{f' of case {case_id}' if case_id else ''}: choose a crop_size of at most the grid "
            f"(or resample with image_size)")
    starts = []
    for axis, size in enumerate((height, width)):
        if box is None:
            start = (grid[axis] - size) // 2
        else:
            start = box[axis] + (box[axis + 2] - size) // 2
        starts.append(int(min(max(start, 0), grid[axis] - size)))
    return (starts[0], starts[1], height, width)


def cut_message(case: "CaseReport", crop_size: tuple[int, int] | None) -> str:
    """What a crop cut from one case, and the cure, in one sentence (warnings and the table)."""
    window = "the crop window" if crop_size is None else f"crop_size=({crop_size[0]}, {crop_size[1]})"
    suggested = ""
    if crop_size is not None:
        # the brain box rounded up to a multiple of 16 px, never below the current window
        larger = [max(n, -(-e // 16) * 16) for n, e in zip(crop_size, case.brain_extent)]
        suggested = f"; use a larger crop_size, e.g. ({larger[0]}, {larger[1]})"
    return (f"the brain ({case.brain_extent[0]} x {case.brain_extent[1]} px in-plane) is larger than "
            f"{window}: {case.brain_outside} brain voxel(s) and {case.tumour_outside} tumour voxel(s) "
            f"fall outside the window and are left out of the stored slices (slice masks and slice "
            f"metrics hold the tumour inside the window; the NIfTI export puts 0 outside it, so 3-D "
            f"scores count cut tumour as missed){suggested}")


def slice_dataset(data_dir: str | Path, out_dir: str | Path, config: DataConfig, *,
                  split_file: str | Path | None = None, workers: int = 1, overwrite: bool = False,
                  skip_unreadable: bool = False, progress: bool = True) -> SlicingReport:
    """Slice every case under ``data_dir`` into the run folder ``out_dir``.

    Args:
        data_dir: BraTS root (case folders, see :func:`amecam_lib.volumes.find_cases`).
        out_dir: run folder; ``slices/``, ``manifest.csv`` and ``split.csv`` are written in it.
        config: ``modalities``, the geometry (``image_size`` S, px; or ``crop_size`` and
            ``crop_zoom``), ``tumour_fraction``, ``min_brain_fraction``, and the split's
            ``val_fraction``, ``test_fraction``, ``seed``.
        split_file: optional CSV ``case_id,split`` that replaces the seeded split.
        workers: processes that slice cases in parallel (1 = in this process).
        overwrite: redo every case with exactly these settings and modalities, even when an
            up-to-date folder exists, replacing a folder made with other settings or other
            modalities (whose ``<modality>.npy`` files are then deleted).
        skip_unreadable: slice the readable cases when some folders look like cases but cannot
            be read (:func:`~amecam_lib.volumes.scan_cases`: empty, nested one level down, only
            partial downloads, a dangling link, a missing file...); they are left out of the
            split, named with the reason in a warning and in :attr:`SlicingReport.skipped`.
            Default: such folders stop the run before anything is written.
        progress: show a tqdm bar (cases/s); ``TQDM_DISABLE=1`` also hides it.

    Returns:
        :class:`SlicingReport` with per-case counts and timing.

    Raises:
        BratsDataError: bad settings (e.g. ``image_size`` outside ``[8, MAX_IMAGE_SIZE]``); a
            ``crop_size`` larger than a case's grid (naming ``crop_size`` and the case);
            ``out_dir`` is a file; or any data error of
            :func:`~amecam_lib.volumes.find_cases`, :func:`~amecam_lib.volumes.load_case`,
            :func:`~amecam_lib.splits.read_split_file` or
            :func:`~amecam_lib.splits.split_sizes` (the first failing case stops the run; cases
            finished before it are kept and reused by the next run).
        UnreadableCasesError: (a :class:`BratsDataError`) without ``skip_unreadable``, folders
            of ``data_dir`` that look like cases but cannot be read; raised before anything is
            written, naming every folder and why.
        RuntimeError: a worker process died (e.g. killed by the OS when out of memory); the run
            stops instead of waiting forever.
        RunFolderConflict: (a :class:`BratsDataError`) without ``overwrite``, a case folder of the
            run was made with other settings (geometry, label rule) or lacks a requested modality:
            slicing would delete what it holds (see :func:`plan_cases`). Raised before anything
            is written; the message names the cases, what differs, and what would be lost.

    Warns (``UserWarning``) when the run folder's existing ``split.csv`` is replaced by a
    different split (the moved cases are in :attr:`SlicingReport.split_moved`: models trained on
    the old split must not be evaluated on the new one), when a case folder with the same
    settings is redone because a stored file is missing or incomplete, and when a case's brain
    is larger than ``crop_size`` (the case, its brain and tumour voxels outside the window, and a
    larger ``crop_size``; see the module docstring for what is cut), when a case keeps no slice
    at all (every slice dropped for too little brain, as with a blank or constant volume: the
    case, its split and ``min_brain_fraction``; also in :attr:`SlicingReport.no_slice_cases`),
    and when unreadable case folders are skipped (``skip_unreadable``; each named with the reason).
    """
    _check_config(config, workers)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BratsDataError(f"run folder {out_dir} is a file, not a folder")
    scan = scan_cases(data_dir)
    cases = usable_cases(scan, skip_unreadable=skip_unreadable)
    case_ids = [case.case_id for case in cases]
    if split_file is not None:
        assignment = read_split_file(split_file, case_ids)
    else:
        assignment = make_split(case_ids, config.val_fraction, config.test_fraction, config.seed)
    slices_dir = out_dir / "slices"
    case_settings = plan_cases(slices_dir, case_ids, slice_settings(config), overwrite=overwrite)
    slices_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(slices_dir)
    split_moved = _split_changes(out_dir / "split.csv", assignment)
    write_split(out_dir / "split.csv", assignment)
    strays = sorted(p.name for p in slices_dir.iterdir()
                    if p.is_dir() and not p.name.startswith(".") and p.name not in assignment)
    if strays:
        warnings.warn(f"{slices_dir} holds folders of cases not in {data_dir}, left out of the "
                      f"manifest: {strays[:5]}{' ...' if len(strays) > 5 else ''}", stacklevel=2)

    tasks = [(case, case_settings[case.case_id], slices_dir, overwrite) for case in cases]
    results: dict[str, CaseReport] = {}
    bar_options = {} if progress else {"disable": True}
    with tqdm(total=len(tasks), unit="case", desc="slicing", **bar_options) as bar:
        for case_report in _run_tasks(tasks, workers):
            results[case_report.case_id] = case_report
            if case_report.redone_because:
                bar.set_postfix_str(f"redid {case_report.case_id}", refresh=False)
                warnings.warn(f"case {case_report.case_id}: {case_report.redone_because}; "
                              f"sliced it again", stacklevel=2)
            if case_report.cut:
                warnings.warn(f"case {case_report.case_id}: {cut_message(case_report, config.crop_size)}",
                              stacklevel=2)
            if case_report.slices and case_report.dropped == case_report.slices:
                warnings.warn(
                    f"case {case_report.case_id}: no slice kept: every one of its {case_report.slices} "
                    f"slices has brain (voxels above the volume's minimum in {', '.join(config.modalities)}) "
                    f"on less than min_brain_fraction={config.min_brain_fraction:g} of the slice; is a "
                    f"volume blank or constant? The case gives no slice to its split "
                    f"({assignment[case_report.case_id]})", stacklevel=2)
            bar.update(1)

    _write_manifest(out_dir / "manifest.csv", slices_dir, assignment)
    report = SlicingReport(run_dir=out_dir, split_moved=split_moved, crop_size=config.crop_size,
                           skipped=list(scan.unreadable))
    report.cases = [dataclasses.replace(results[case_id], split=assignment[case_id])
                    for case_id in case_ids]
    report.seconds = time.perf_counter() - start
    return report


class RunFolderConflict(BratsDataError):
    """Slicing into this run folder would delete slices made with other settings or of other
    modalities (the message says which and what to do instead)."""


def plan_cases(slices_dir: str | Path, case_ids: list[str], settings: dict, *,
               overwrite: bool = False) -> dict[str, dict]:
    """The settings each case of a run folder is sliced (or reused) with; refuse what would delete.

    A case folder holds the modalities it was sliced with, all made with one brain box (the brain
    of every sliced modality decides the crop window). Per case, with ``settings`` the requested
    :func:`slice_settings`:

    - no folder yet, or ``overwrite``: the requested settings (``overwrite`` replaces the folder,
      other modalities included: the caller asked for it);
    - a folder of an older storage format (unreadable now): the requested settings; the case is
      redone (and :func:`slice_dataset` warns, the case's ``redone_because`` says why);
    - a folder with the same geometry and label rule whose modalities include every requested
      one: the folder's own settings, so it is reused, or redone with all its modalities when a
      file changed; a subset of the stored modalities never deletes the others;
    - a folder made with another geometry or label rule, or lacking a requested modality: a
      conflict. Redoing it would delete what it holds (and leave the models trained on it, under
      ``RUN/<modality>/``, matching no slices), so nothing is written and
      :class:`RunFolderConflict` names the cases, what differs and what would be lost.

    Args:
        slices_dir: ``RUN/slices``.
        case_ids: the cases to slice.
        settings: the requested :func:`slice_settings`.
        overwrite: replace every case folder with the requested settings.

    Returns:
        ``{case_id: settings}``: the :func:`slice_settings` each case in ``case_ids`` is made with.

    Raises:
        RunFolderConflict: a conflict as above (without ``overwrite``).
    """
    slices_dir = Path(slices_dir)
    planned: dict[str, dict] = {}
    other_settings: dict[str, list[str]] = {}
    missing_modalities: dict[str, tuple[list[str], list[str]]] = {}
    for case_id in case_ids:
        planned[case_id] = settings
        stored = None if overwrite else _stored_settings(slices_dir / case_id)
        if stored is None or stored.get("format") != settings["format"]:
            continue
        differences = [f"{key} {stored.get(key)!r} (requested {settings[key]!r})"
                       for key in settings if key not in ("format", "modalities")
                       and stored.get(key) != settings[key]]
        stored_modalities = list(stored.get("modalities") or [])
        if differences:
            other_settings[case_id] = differences
        elif not set(settings["modalities"]) <= set(stored_modalities):
            missing_modalities[case_id] = (stored_modalities, [m for m in settings["modalities"]
                                                                if m not in stored_modalities])
        else:
            planned[case_id] = stored
    if other_settings or missing_modalities:
        raise RunFolderConflict(_conflict_message(slices_dir, settings, other_settings, missing_modalities))
    return planned


def _stored_settings(case_folder: Path) -> dict | None:
    """The ``settings`` of a case folder's ``case.json``; None when there is no readable one."""
    try:
        info = json.loads((case_folder / "case.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    settings = info.get("settings") if isinstance(info, dict) else None
    return settings if isinstance(settings, dict) else None


def _conflict_message(slices_dir: Path, settings: dict, other_settings: dict[str, list[str]],
                      missing_modalities: dict[str, tuple[list[str], list[str]]]) -> str:
    """The refusal of :func:`plan_cases`: which cases, what differs, what would be lost, the cure."""
    run_dir = slices_dir.parent
    conflicting = [*other_settings, *missing_modalities]
    lost = sorted({m for c in conflicting for m in (_stored_settings(slices_dir / c) or {}).get("modalities", [])})
    lines = [f"refusing to slice into {run_dir}: it holds slices that this run would delete "
             f"({', '.join(f'{m}.npy' for m in lost)} of {len(conflicting)} case(s)); models trained on "
             f"them (under {', '.join(str(run_dir / m) for m in lost)}) would then match no slices."]
    if other_settings:
        case_id, differences = next(iter(other_settings.items()))
        lines.append(f"{len(other_settings)} case folder(s) were sliced with other settings, e.g. "
                     f"{case_id}: {'; '.join(differences)}.")
    if missing_modalities:
        case_id, (stored, missing) = next(iter(missing_modalities.items()))
        lines.append(f"{len(missing_modalities)} case folder(s) lack a requested modality, e.g. {case_id}: "
                     f"{', '.join(stored)} stored, {', '.join(missing)} requested. A case folder is sliced "
                     f"with all its modalities at once (they share one brain box and crop window): to "
                     f"have several side by side, slice them together into a new run folder "
                     f"(modalities=(...); slice_brats.py --modalities t1 t1ce t2 flair), then run the "
                     f"notebooks for each modality with that run_dir.")
    lines.append("Or use another run folder (run_dir=... / --out; by default each preset and modality "
                 "has its own, runs/<preset>_<modality>), or pass overwrite=True (slice_brats.py "
                 "--overwrite) to replace these slices knowingly.")
    return "\n".join(lines)


def _split_changes(path: Path, assignment: dict[str, str]) -> list[str]:
    """Cases whose split in ``assignment`` differs from the run folder's ``split.csv`` (sorted).

    Warns when the existing file differs: cases moved, added or removed, or an unreadable file
    being replaced. Returns ``[]`` when there is no file yet.
    """
    if not path.exists():
        return []
    try:
        previous = read_split(path)
    except BratsDataError as error:
        warnings.warn(f"replacing an unreadable {path} ({error})", stacklevel=3)
        return []
    moved = sorted(case_id for case_id, split in assignment.items()
                   if case_id in previous and previous[case_id] != split)
    added = len(set(assignment) - set(previous))
    removed = len(set(previous) - set(assignment))
    if moved or added or removed:
        examples = ", ".join(f"{case_id}: {previous[case_id]} -> {assignment[case_id]}"
                             for case_id in moved[:3])
        more = " ..." if len(moved) > 3 else ""
        warnings.warn(
            f"{path} changed: {len(moved)} case(s) moved to another split"
            f"{f' ({examples}{more})' if moved else ''}"
            f", {added} added, {removed} removed; models trained on the old split must not be "
            f"evaluated on the new one", stacklevel=3)
    return moved


def _run_tasks(tasks: list, workers: int):
    """Yield the :class:`CaseReport` of every task (in completion order).

    ``workers == 1``: in this process. Otherwise a :class:`~concurrent.futures.ProcessPoolExecutor`
    (rather than ``multiprocessing.Pool``, whose ``imap`` waits forever when the OS kills a
    worker) with at most ``2 * workers`` cases in flight, so pending work does not pile up in
    memory. On any error the cases not yet started are cancelled.
    """
    if workers == 1 or len(tasks) == 1:
        yield from map(_slice_case, tasks)
        return
    n_workers = min(workers, len(tasks))
    executor = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context(),
                                   initializer=_ignore_interrupts)
    waiting = iter(tasks)
    try:
        running = {executor.submit(_slice_case, task) for _, task in zip(range(2 * n_workers), waiting)}
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    case_report = future.result()
                except BrokenProcessPool as error:
                    raise RuntimeError(
                        f"a slicing worker process died unexpectedly (killed by the operating "
                        f"system, e.g. out of memory?) while slicing with workers={workers}; "
                        f"rerun with fewer workers (finished cases are reused)") from error
                yield case_report
                next_task = next(waiting, None)
                if next_task is not None:
                    running.add(executor.submit(_slice_case, next_task))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _ignore_interrupts() -> None:
    """Worker initialiser: Ctrl-C is handled by the parent alone (which cancels the pending
    cases and lets the running ones finish), so workers print no tracebacks of their own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def slice_settings(config: DataConfig) -> dict:
    """The settings a case folder depends on (stored in ``case.json``, compared on reruns; a
    changed geometry redoes the case)."""
    return {"format": SLICE_FORMAT, "modalities": list(config.modalities),
            "image_size": None if config.image_size is None else int(config.image_size),
            "crop_size": None if config.crop_size is None else [int(n) for n in config.crop_size],
            "crop_zoom": float(config.crop_zoom), "tumour_fraction": float(config.tumour_fraction),
            "min_brain_fraction": float(config.min_brain_fraction)}


def describe_geometry(config: DataConfig) -> str:
    """One line saying what slices a config stores, e.g. ``"160 x 192 px window around the brain
    at the native grid, zoom 0.4 -> 64 x 77 px"`` or ``"whole slice resampled to 128 x 128 px"``."""
    height, width = config.image_shape
    if config.crop_size is None:
        return f"whole slice resampled to {height} x {width} px"
    zoom = "" if config.crop_zoom == 1.0 else f", zoom {config.crop_zoom:g} -> {height} x {width} px"
    return (f"{config.crop_size[0]} x {config.crop_size[1]} px window around the brain at the native "
            f"grid{zoom}")


def _stored_shape(settings: dict) -> tuple[int, int]:
    """``(H, W)`` of the stored slices made with ``settings`` (:attr:`DataConfig.image_shape`)."""
    if settings["crop_size"] is None:
        return (settings["image_size"], settings["image_size"])
    return tuple(zoomed_size(n, settings["crop_zoom"]) for n in settings["crop_size"])


def check_slicing_settings(config: DataConfig, workers: int = 1) -> None:
    """Check the slicing settings before anything is read or written.

    :func:`slice_dataset` runs this first; ``data_scripts/run_pipeline.py`` runs it before it
    records the settings in ``RUN/run.json``, so that a mistyped geometry does not mark a run
    folder with settings nothing was ever sliced with.

    Raises:
        BratsDataError: ``modalities`` empty, repeated or unknown; ``image_size`` not an integer
            in ``[MIN_IMAGE_SIZE, MAX_IMAGE_SIZE]``; ``crop_size`` not two such integers;
            ``crop_zoom`` that makes a side of the stored slices leave that range;
            ``tumour_fraction`` or ``min_brain_fraction`` outside ``[0, 1)``; ``workers`` not an
            integer >= 1. The message names the setting and the value given.
    """
    _check_config(config, workers)


def _check_config(config: DataConfig, workers: int) -> None:
    unknown = [m for m in config.modalities if m not in MODALITIES]
    if not config.modalities or unknown or len(set(config.modalities)) != len(config.modalities):
        raise BratsDataError(f"modalities must be distinct names from {MODALITIES}, got "
                             f"{tuple(config.modalities)}")
    if config.crop_size is None:
        if (int(config.image_size) != config.image_size or config.image_size < MIN_IMAGE_SIZE
                or config.image_size > MAX_IMAGE_SIZE):
            raise BratsDataError(f"image_size must be an integer in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] "
                                 f"(pixels), got {config.image_size}")
    else:
        crop = config.crop_size
        if (len(crop) != 2 or any(int(n) != n or not MIN_IMAGE_SIZE <= n <= MAX_IMAGE_SIZE for n in crop)):
            raise BratsDataError(f"crop_size must be two integers (H, W) in [{MIN_IMAGE_SIZE}, "
                                 f"{MAX_IMAGE_SIZE}] (pixels of the original grid), got {crop}")
        if not (config.crop_zoom > 0 and min(config.image_shape) >= MIN_IMAGE_SIZE
                and max(config.image_shape) <= MAX_IMAGE_SIZE):
            raise BratsDataError(f"crop_zoom={config.crop_zoom} makes {config.image_shape[0]} x "
                                 f"{config.image_shape[1]} px slices from crop_size={tuple(crop)}; "
                                 f"each side must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]")
    if not 0.0 <= config.tumour_fraction < 1.0:
        raise BratsDataError(f"tumour_fraction must be in [0, 1), got {config.tumour_fraction}")
    if not 0.0 <= config.min_brain_fraction < 1.0:
        raise BratsDataError(
            f"min_brain_fraction must be in [0, 1), got {config.min_brain_fraction}")
    if int(workers) != workers or workers < 1:
        raise BratsDataError(f"workers must be an integer >= 1, got {workers}")


def source_fingerprint(case: CaseFiles, modalities: list[str]) -> dict:
    """What a case folder is made from: name, size and SHA-256 of each source file (the sliced
    modalities and the segmentation), stored in ``case.json`` (``sources``) and compared on reruns.

    The content decides, not the size or modification time: a file replaced by another of the same
    size and time redoes the case. Each file is read once per slicing run (about 0.1 s for a BraTS
    case of four ``.nii.gz`` modalities; see the README for the measured cost).

    Returns:
        ``{name: {"file": file name, "bytes": size, "sha256": 64 hex digits}}``, names the
        modalities and ``"seg"``.
    """
    files = {m: case.images[m] for m in modalities} | {"seg": case.seg}
    return {name: {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}
            for name, path in files.items()}


def _slice_case(task) -> CaseReport:
    """Slice one case into ``slices_dir/<case_id>`` (or reuse it); return its counts.

    One vectorised pass per volume on the intensities as stored (no float copy of the volume):
    per-slice tumour and brain counts with ``np.count_nonzero(axis=(0, 1))`` (on the whole
    original slice, crop or not), the brain box and crop window, then the kept slices encoded
    straight to ``uint16`` codes (:func:`image_codes`). Only the small report travels back to the
    parent process: the per-slice rows stay in the case's ``slices.csv``, so memory does not grow
    with the number of cases.
    """
    case, settings, slices_dir, overwrite = task
    start = time.perf_counter()
    target = slices_dir / case.case_id
    sources = source_fingerprint(case, settings["modalities"])
    redone_because = ""
    if not overwrite:
        records, info, redone_because = _reusable_records(target, settings, sources)
        if records is not None:
            return _case_report(case, records, True, time.perf_counter() - start, info=info)

    volumes = load_case(case, settings["modalities"], normalise=False)
    n_x, n_y, n_z = volumes.shape
    slice_pixels = n_x * n_y
    whole_tumour = volumes.whole_tumour
    tumour_pixels = np.count_nonzero(whole_tumour, axis=(0, 1))
    # brain: above the volume's minimum (normalised value > 0) in any sliced modality
    brain = None
    for image in volumes.images.values():
        above_minimum = image > image.min()
        brain = above_minimum if brain is None else np.logical_or(brain, above_minimum, out=brain)
    brain_pixels = np.count_nonzero(brain, axis=(0, 1))
    box = brain_box(np.any(brain, axis=2))
    crop_box, outside = None, {"brain_voxels": 0, "tumour_voxels": 0}
    if settings["crop_size"] is not None:
        crop_box = crop_window(box, (n_x, n_y), settings["crop_size"], case.case_id)
        inside = np.s_[crop_box[0]:crop_box[0] + crop_box[2], crop_box[1]:crop_box[1] + crop_box[3]]
        outside = {"brain_voxels": int(brain_pixels.sum() - np.count_nonzero(brain[inside])),
                   "tumour_voxels": int(tumour_pixels.sum() - np.count_nonzero(whole_tumour[inside]))}
    del brain
    labels, ambiguous = label_slices(tumour_pixels, slice_pixels, settings["tumour_fraction"])
    kept = brain_pixels >= settings["min_brain_fraction"] * slice_pixels
    kept_z = np.flatnonzero(kept)
    rows = np.full(n_z, -1, dtype=np.int64)
    rows[kept_z] = np.arange(kept_z.size)
    reason = f"brain area < {settings['min_brain_fraction']:g} of the slice"
    records = [
        {"case_id": case.case_id, "z": z, "label": label, "tumour_pixels": tumour,
         "brain_pixels": brain_count, "ambiguous": int(is_ambiguous), "kept": int(is_kept),
         "reason": "" if is_kept else reason, "row": row}
        for z, (label, tumour, brain_count, is_ambiguous, is_kept, row) in enumerate(zip(
            labels.tolist(), tumour_pixels.tolist(), brain_pixels.tolist(), ambiguous.tolist(),
            kept.tolist(), rows.tolist()))]

    shape = _stored_shape(settings)
    as_box = (lambda b: None if b is None else dict(zip(("row0", "col0", "height", "width"), b)))
    info = {"case_id": case.case_id, "release": case.release.name,
            "modalities": settings["modalities"], "original_shape": list(volumes.shape),
            "affine": volumes.affine.tolist(), "image_size": settings["image_size"],
            "image_shape": list(shape), "crop_box": as_box(crop_box), "crop_zoom": settings["crop_zoom"],
            "brain_box": as_box(box), "outside_window": outside, "z": kept_z.tolist(),
            "image_storage": f"{CODE_DTYPE.name} codes; value in [0, 1] = code / {IMAGE_CODE_MAX}",
            "slice_axes": ("row r of each .npy = volume[:, :, z[r]] resized to image_shape"
                           if crop_box is None else
                           "row r of each .npy = volume[row0:row0+height, col0:col0+width, z[r]] "
                           "(crop_box) resized to image_shape"),
            "settings": settings, "sources": sources, "spatial_header": volumes.spatial_header}
    with atomic_dir(target) as folder:
        for modality in settings["modalities"]:
            np.save(folder / f"{modality}.npy",
                    image_codes(volumes.images[modality], kept_z, shape, window=crop_box))
        np.save(folder / "wt.npy", resize_masks(axial_stack(_window(whole_tumour, crop_box), kept_z), shape))
        (folder / "slices.csv").write_text(_to_csv(records, _CASE_COLUMNS), encoding="utf-8")
        (folder / "case.json").write_text(_json_text(info), encoding="utf-8")
    return _case_report(case, records, False, time.perf_counter() - start, redone_because, info=info)


def _window(volume: np.ndarray, crop_box: tuple[int, int, int, int] | None) -> np.ndarray:
    """The crop window of an ``(X, Y, Z)`` volume as a view (the volume itself without a crop)."""
    if crop_box is None:
        return volume
    row0, col0, height, width = crop_box
    return volume[row0:row0 + height, col0:col0 + width, :]


def image_codes(volume: np.ndarray, z: np.ndarray, size: int | tuple[int, int],
                window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Stored form of a volume's axial slices: ``uint16`` codes of the min-max normalised values.

    ``code = round(v * 65535)`` with ``v = (raw - min) / (max - min)`` over the whole volume
    (the normalisation of :func:`amecam_lib.volumes.normalise_min_max`; a constant volume gives
    all zeros). At the native grid, integer data of at most 16 bits goes through an exact
    per-value lookup table (the code of every possible raw value computed in float64, then one
    gather that also transposes each slice), which is lossless: see the module docstring. Other
    data (``int32``, float) is rounded from float64. When ``size`` differs from the grid (or
    the window), the slices are resampled as :func:`resize_images` does (on the raw values in
    ``float32``, which commutes with the min-max map), then normalised and encoded
    (:func:`encode_unit_images`). With ``window`` the slices are cut to it first; the min and max
    are still those of the whole volume.

    Args:
        volume: ``(X, Y, Z)`` real array as stored (e.g. ``int16``, any memory order), finite.
        z: ``(K,)`` int, axial indices to keep, in storage order.
        size: ``(H, W)`` of the stored slices in pixels, or one side S for ``(S, S)``.
        window: ``(row0, col0, height, width)`` crop window on the grid, or None (whole slice).

    Returns:
        ``(K, H, W) uint16``; row ``r`` is ``volume[row0:row0 + height, col0:col0 + width, z[r]]``
        (the whole ``volume[:, :, z[r]]`` without a window), resized when its size differs.
    """
    volume = np.asarray(volume)
    if not volume.dtype.isnative:
        volume = volume.astype(volume.dtype.newbyteorder("="))
    z = np.asarray(z, dtype=np.int64)
    shape = _shape(size)
    low, high = volume.min().item(), volume.max().item()
    if z.size == 0 or high <= low:
        return np.zeros((z.size, *shape), dtype=CODE_DTYPE)
    volume = _window(volume, window)
    n_x, n_y = volume.shape[:2]
    native = (n_x, n_y) == shape
    if native and volume.dtype.kind in "iu" and volume.dtype.itemsize <= 2:
        index_type = np.dtype(f"u{volume.dtype.itemsize}")
        raw_values = np.arange(2 ** (8 * index_type.itemsize), dtype=index_type).view(volume.dtype)
        table = np.clip((raw_values - np.float64(low)) * (IMAGE_CODE_MAX / (high - low)),
                        0, IMAGE_CODE_MAX)
        table = np.rint(table).astype(CODE_DTYPE)
        indices = volume.view(index_type)
        codes = np.empty((z.size, n_x, n_y), dtype=CODE_DTYPE)
        for row, index in enumerate(z.tolist()):
            np.take(table, indices[:, :, index], out=codes[row], mode="clip")
        return codes
    if native:
        normalised = (axial_stack(volume, z).astype(np.float64) - low) / (high - low)
        return encode_unit_images(normalised)
    # Resampling weights are non-negative and sum to one, so resampling commutes with the
    # min-max map: resample the raw values, then normalise the (smaller) result.
    resampled = _resample(axial_stack(volume, z).astype(np.float32), shape).astype(np.float64)
    normalised = np.clip((resampled - low) / (high - low), 0.0, 1.0, out=resampled)
    return encode_unit_images(normalised)


def encode_unit_images(images: np.ndarray) -> np.ndarray:
    """``uint16`` codes ``round(v * 65535)`` of values ``v`` in ``[0, 1]`` (any shape).

    Computed in float64, where ``v * 65535`` is exact for ``float32`` input, so the code is the
    correctly rounded one and ``|code / 65535 - v| <= 0.5 / 65535``.

    Raises:
        ValueError: a value outside ``[0, 1]`` or NaN (never silently clipped).
    """
    images = np.asarray(images)
    if images.size and not (images.min() >= 0.0 and images.max() <= 1.0):
        raise ValueError(f"image values must be in [0, 1] to be encoded, got "
                         f"[{images.min()}, {images.max()}]")
    return np.rint(images.astype(np.float64) * IMAGE_CODE_MAX).astype(CODE_DTYPE)


def decode_images(codes: np.ndarray, source: str | Path = "") -> np.ndarray:
    """Stored image codes -> ``float32`` values ``code / 65535`` in ``[0, 1]`` (any shape).

    The division is done in float32 (correctly rounded), so code 0 is exactly 0.0 and code 65535
    exactly 1.0.

    Args:
        codes: ``uint16`` array (e.g. a memory-mapped row of ``RUN/slices/<case>/<modality>.npy``).
        source: file the codes come from, named in the error.

    Raises:
        BratsDataError: ``codes`` is not ``uint16`` (e.g. a ``float32`` file of storage format 1:
            re-slice the run, never reinterpret it).
    """
    if codes.dtype != CODE_DTYPE:
        raise BratsDataError(
            f"{source or 'stored images'}: expected {CODE_DTYPE.name} codes (slice storage format "
            f"{SLICE_FORMAT}), found {codes.dtype}; the run was sliced with an older format: "
            f"rerun slicing (slice_dataset / data_scripts/slice_brats.py) to redo it")
    return np.divide(codes, np.float32(IMAGE_CODE_MAX), dtype=np.float32)


def axial_stack(volume: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The axial slices ``volume[:, :, z[r]]`` stacked as a C-contiguous ``(len(z), X, Y)`` array.

    One transposing copy (NIfTI volumes are Fortran-ordered, so each axial slice is contiguous
    but transposed with respect to C order); a run of consecutive ``z`` is taken as a view first,
    avoiding the extra copy of fancy indexing.
    """
    z = np.asarray(z, dtype=np.int64)
    if z.size and np.array_equal(z, np.arange(z[0], z[0] + z.size)):
        selected = volume[:, :, int(z[0]):int(z[0]) + z.size]
    else:
        selected = volume[:, :, z]
    return np.ascontiguousarray(np.moveaxis(selected, -1, 0))


def _shape(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(H, W)`` from an ``(H, W)`` pair or one side ``S``."""
    if np.ndim(size) == 0:
        return (int(size), int(size))
    rows, cols = size
    return (int(rows), int(cols))


def resize_images(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resample image slices to ``(H, W)`` pixels: bilinear, antialiased when shrinking.

    Uses Pillow's resampling (``Image.resize(..., BILINEAR)`` on 32-bit float images), whose
    filter widens with the reduction factor; ``torch.nn.functional.interpolate(mode="bilinear",
    antialias=True, align_corners=False)`` reproduces it to ~1e-6. Pillow rather than torch
    because importing torch costs ~700 MB of memory in every worker process; one call per slice
    (a dense or sparse-tap numpy matrix product was measured no faster at 240 -> 128 px). The
    weights are non-negative and sum to one, so values stay in ``[0, 1]`` (clipped against
    rounding).

    Rows stay rows: Pillow sizes are ``(width, height)``, so the call is given ``(W, H)``.

    Args:
        images: ``(Z, h, w) float32`` in ``[0, 1]``.
        size: output ``(H, W)`` in pixels, or one side S for ``(S, S)``.

    Returns:
        ``(Z, H, W) float32`` in ``[0, 1]``.
    """
    resized = _resample(images, size)
    return np.clip(resized, 0.0, 1.0, out=resized)


def _resample(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """:func:`resize_images` without the clipping: ``(Z, h, w)`` real -> ``(Z, H, W) float32``."""
    rows, cols = _shape(size)
    resized = np.empty((images.shape[0], rows, cols), dtype=np.float32)
    for index, image in enumerate(images):
        resized[index] = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32)).resize(
            (cols, rows), Image.Resampling.BILINEAR)
    return resized


def resize_masks(masks: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resample mask slices to ``(H, W)`` pixels: nearest neighbour, pixel-centre aligned.

    Output pixel ``o`` takes input pixel ``floor((o + 0.5) * H / S)`` along each axis: the
    pixel-centre rule of Pillow's ``NEAREST`` (same grid as :func:`resize_images`) and of torch's
    ``mode="nearest-exact"`` (torch's plain ``"nearest"`` shifts masks by up to half a pixel).
    Written as one numpy gather for all slices (no library call per slice is needed for it).

    Args:
        masks: ``(Z, h, w) bool``.
        size: output ``(H, W)`` in pixels, or one side S for ``(S, S)``.

    Returns:
        ``(Z, H, W) bool`` (``masks`` itself when already ``H x W``).
    """
    masks = np.asarray(masks, dtype=bool)
    n_rows, n_cols = masks.shape[1:]
    out_rows, out_cols = _shape(size)
    if (n_rows, n_cols) == (out_rows, out_cols):
        return masks
    rows = _nearest_indices(n_rows, out_rows)
    cols = _nearest_indices(n_cols, out_cols)
    return masks[:, rows[:, None], cols[None, :]]


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Input index of each output pixel centre: ``floor((o + 0.5) * n_in / n_out)``, exact in
    integers as ``((2 o + 1) * n_in) // (2 n_out)``."""
    return np.minimum((2 * np.arange(n_out) + 1) * n_in // (2 * n_out), n_in - 1)


def open_stored_array(path: str | Path, shape: tuple[int, ...] | None = None,
                      dtype: np.dtype | None = None) -> np.ndarray:
    """Memory-map one stored ``.npy`` file of a run folder after checking it is complete.

    Only the header is read (``np.load(mmap_mode="r")``, which also checks that the file is at
    least as long as the header says); no slice data is read.

    Args:
        path: e.g. ``RUN/slices/<case_id>/flair.npy``.
        shape: expected shape (e.g. ``(Z_kept, H, W)``), or ``None`` for any.
        dtype: expected type (``uint16`` codes, ``bool`` masks), or ``None`` for any.

    Returns:
        The read-only memory map.

    Raises:
        BratsDataError: the file is missing, truncated or not a ``.npy`` file, or its shape or
            type differs from the expected one; the message names the file and says to rerun
            slicing.
    """
    array, problem = _map_stored_array(Path(path), shape, dtype)
    if array is None:
        raise BratsDataError(f"{problem}: rerun slicing (slice_dataset / "
                             f"data_scripts/slice_brats.py) to redo the case")
    return array


def _map_stored_array(path: Path, shape: tuple[int, ...] | None,
                      dtype: np.dtype | None) -> tuple[np.ndarray | None, str]:
    """``(memory map, "")`` of a complete ``.npy`` file, else ``(None, what is wrong)``."""
    if not path.is_file():
        return None, f"{path} is missing"
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as error:
        return None, f"{path} is truncated or corrupt ({error})"
    if shape is not None and tuple(array.shape) != tuple(shape):
        return None, f"{path} holds shape {tuple(array.shape)}, expected {tuple(shape)}"
    if dtype is not None and array.dtype != np.dtype(dtype):
        return None, f"{path} holds {array.dtype}, expected {np.dtype(dtype)}"
    return array, ""


def _reusable_records(target: Path, settings: dict,
                      sources: dict) -> tuple[list[dict] | None, dict | None, str]:
    """The stored rows and ``case.json`` of a complete case folder made with ``settings`` from
    ``sources``.

    Returns ``(rows, info, "")`` when the folder can be reused; ``(None, None, "")`` when there is
    no such folder or it was made with other settings (only with ``overwrite``: :func:`plan_cases`
    refuses that otherwise); ``(None, None, reason)`` when it was made in an older storage format,
    from source files that changed, or with these settings but a ``.npy`` file is missing,
    truncated or of the wrong shape or type (redone, and the caller says so).
    """
    info_path, rows_path = target / "case.json", target / "slices.csv"
    if not (info_path.is_file() and rows_path.is_file()):
        return None, None, ""
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except ValueError:
        return None, None, ""
    stored = info.get("settings") or {}
    if stored.get("format") != settings["format"]:
        return None, None, (f"it was stored in slice format {stored.get('format')} "
                            f"(now {settings['format']})")
    if stored != settings:
        return None, None, ""
    stored_sources = info.get("sources") or {}
    if stored_sources != sources:
        if any("sha256" not in (entry or {}) for entry in stored_sources.values()) or not stored_sources:
            return None, None, ("its case.json records no content hash (sha256) of its source files "
                                "(sliced by an older version)")
        changed = sorted(name for name in sources if stored_sources.get(name) != sources[name])
        return None, None, (f"the content of its source file(s) changed ({', '.join(changed) or 'list of files'}: "
                            f"sha256 differs from case.json)")
    try:
        records = _read_case_rows(rows_path)
    except (ValueError, KeyError, TypeError) as error:
        return None, None, f"{rows_path} is unreadable ({error!r})"
    shape = _stored_shape(settings)
    n_kept = sum(1 for record in records if record["kept"])
    expected = {f"{m}.npy": CODE_DTYPE for m in settings["modalities"]} | {"wt.npy": np.dtype(bool)}
    for name, dtype in expected.items():
        array, problem = _map_stored_array(target / name, (n_kept, *shape), dtype)
        del array  # close the memory map: only the header was needed
        if problem:
            return None, None, problem
    return records, info, ""


def _read_case_rows(path: Path) -> list[dict]:
    """Rows of a case's ``slices.csv`` with integer columns as ``int``."""
    with path.open(newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    integer_columns = ("z", "label", "tumour_pixels", "brain_pixels", "ambiguous", "kept", "row")
    for record in records:
        for column in integer_columns:
            record[column] = int(record[column])
    return records


def _case_report(case: CaseFiles, records: list[dict], reused: bool, seconds: float,
                 redone_because: str = "", info: dict | None = None) -> CaseReport:
    """Counts of one case (split filled in by the caller); brain box and voxels outside the crop
    window from its ``case.json`` contents ``info``."""
    kept = [r for r in records if r["kept"]]
    box = (info or {}).get("brain_box") or {"height": 0, "width": 0}
    outside = (info or {}).get("outside_window") or {"brain_voxels": 0, "tumour_voxels": 0}
    return CaseReport(
        case_id=case.case_id, release=case.release.name, split="", slices=len(records),
        tumour=sum(r["label"] == 1 for r in kept),
        normal=sum(r["tumour_pixels"] == 0 for r in kept),
        ambiguous=sum(bool(r["ambiguous"]) for r in kept),
        dropped=len(records) - len(kept), reused=reused, seconds=seconds,
        redone_because=redone_because, brain_extent=(int(box["height"]), int(box["width"])),
        brain_outside=int(outside["brain_voxels"]), tumour_outside=int(outside["tumour_voxels"]))


def _write_manifest(path: Path, slices_dir: Path, assignment: dict[str, str]) -> None:
    """Assemble ``manifest.csv`` from the cases' ``slices.csv`` files, one case at a time,
    written atomically (a reader never sees a half manifest)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for case_id in sorted(assignment):
            with (slices_dir / case_id / "slices.csv").open(newline="", encoding="utf-8") as rows:
                writer.writerows({**row, "split": assignment[case_id]} for row in csv.DictReader(rows))


def _to_csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _json_text(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


__all__ = ["CODE_DTYPE", "CaseReport", "IMAGE_CODE_MAX", "MANIFEST_COLUMNS", "MAX_IMAGE_SIZE",
           "MIN_IMAGE_SIZE", "SLICE_FORMAT", "SlicingReport", "axial_stack", "brain_box", "crop_window",
           "cut_message", "decode_images", "describe_geometry", "encode_unit_images", "image_codes",
           "label_slices", "open_stored_array", "plan_cases", "resize_images", "resize_masks",
           "RunFolderConflict", "slice_dataset", "slice_settings"]
