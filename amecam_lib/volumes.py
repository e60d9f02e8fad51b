"""Find BraTS cases on disk, load their NIfTI volumes with nibabel, validate them, normalise them.

A *case* is one patient: four MRI modalities (t1, t1ce, t2, flair) and one segmentation, all on
one voxel grid. :func:`find_cases` lists the cases under a data folder (file names from
:mod:`amecam_lib.releases`); :func:`load_case` reads the volumes and checks everything a
silent error could hide (PITFALLS "Data"): missing files, files on different grids, unreadable or
truncated files, NaN/Inf intensities, and label values the release does not use.

Intensities are min-max normalised per volume and per modality to ``[0, 1]`` (authors' code;
REFERENCE_NOTES "Data"); a constant volume becomes all zeros, never NaN.

:func:`read_whole_tumour_for_evaluation` is the one reader of expert masks for *scoring*: the
evaluation (per-patient 3-D scores) calls it on the test patients; no training phase does.

This module does not import torch.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from amecam_lib.config import MODALITIES
from amecam_lib.fingerprints import file_sha256
from amecam_lib.releases import RELEASES, BratsDataError, Release, detect_release, strip_nifti_suffix

AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference (mm) between two affines that still counts as the same grid."""

SPATIAL_HEADER_FIELDS: tuple[str, ...] = (
    "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y",
    "qoffset_z", "srow_x", "srow_y", "srow_z", "pixdim", "xyzt_units", "dim_info")
"""NIfTI-1 header fields that place a volume in space: the qform (code, quaternion, offsets; its
voxel sizes and handedness are in ``pixdim``), the sform (code, three rows), the voxel sizes
(``pixdim``), the units of space and time (``xyzt_units``) and the frequency / phase / slice
dimensions (``dim_info``). A viewer picks the qform or the sform by their codes, so a mask
written with the source's affine but other codes may be placed differently: exported masks copy
these fields from the case's segmentation (:func:`spatial_header`,
:func:`amecam_lib.export.export_case_masks`)."""


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case, found by :func:`find_cases`.

    Attributes:
        case_id: the case folder's name, e.g. ``"BraTS2021_00006"``.
        folder: the case folder.
        release: the release its folder name matches.
        images: project modality name -> NIfTI file, for all four modalities.
        seg: the segmentation NIfTI file.
    """

    case_id: str
    folder: Path
    release: Release
    images: dict[str, Path]
    seg: Path

    def files(self) -> dict[str, Path]:
        """All five files: modalities in :data:`MODALITIES` order, then ``"seg"``."""
        return {**self.images, "seg": self.seg}


@dataclass(frozen=True)
class CaseVolumes:
    """The loaded, validated volumes of one case.

    Attributes:
        case_id: case folder name.
        release: its release.
        shape: voxel grid ``(X, Y, Z)``; axial slices run along the last axis Z.
        affine: ``(4, 4) float64`` voxel -> world (mm) matrix, shared by all five files.
        images: modality -> ``(X, Y, Z) float32`` in ``[0, 1]`` (per-volume min-max), or the
            stored intensities when loaded with ``normalise=False``.
        seg: ``(X, Y, Z) uint8`` label map with values in ``release.labels``.
        spatial_header: the segmentation file's :func:`spatial_header` (qform, sform, their
            codes, voxel sizes, units), JSON-ready.
    """

    case_id: str
    release: Release
    shape: tuple[int, int, int]
    affine: np.ndarray
    images: dict[str, np.ndarray]
    seg: np.ndarray
    spatial_header: dict = field(default_factory=dict)

    @property
    def whole_tumour(self) -> np.ndarray:
        """``(X, Y, Z) bool`` whole tumour (WT): every non-zero label."""
        return self.seg > 0


@dataclass(frozen=True)
class UnreadableCase:
    """A folder that looks like a case but cannot be read as one (:func:`scan_cases`).

    Attributes:
        folder: the entry of the data folder (a folder, or a symbolic link).
        reason: why it cannot be read, e.g. ``"empty folder"``.
    """

    folder: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.folder.name}: {self.reason}"


@dataclass(frozen=True)
class CaseScan:
    """What :func:`scan_cases` found in a data folder.

    Attributes:
        data_dir: the folder scanned.
        cases: the readable cases, sorted by case ID.
        unreadable: the folders that look like cases but cannot be read, sorted by name.
    """

    data_dir: Path
    cases: list[CaseFiles]
    unreadable: list[UnreadableCase]

    def unreadable_message(self, skipped: bool) -> str:
        """One message naming every unreadable folder and why (empty when there is none)."""
        if not self.unreadable:
            return ""
        listing = "\n".join(f"  {entry}" for entry in self.unreadable)
        if skipped:
            return (f"skipped {len(self.unreadable)} folder(s) of {self.data_dir} that look like BraTS cases "
                    f"but cannot be read (skip_unreadable=True):\n{listing}")
        return (f"{len(self.unreadable)} folder(s) of {self.data_dir} look like BraTS cases but cannot be read:\n"
                f"{listing}\nFix or remove them, or skip them knowingly with skip_unreadable=True "
                f"(--skip-unreadable); the skipped folders are then listed in the report.")


class UnreadableCasesError(BratsDataError):
    """Folders that look like BraTS cases cannot be read (the message names each and why)."""


def scan_cases(data_dir: str | Path) -> CaseScan:
    """Every case under ``data_dir``, and every folder that looks like one but cannot be read.

    An entry of ``data_dir`` (not hidden) *looks like a case* when its name matches a BraTS
    release (:data:`amecam_lib.releases.RELEASES`; a folder or a symbolic link, dangling or not)
    or when it is a folder holding ``.nii``/``.nii.gz`` files; files (``README.md``,
    ``manifest.csv``) and other folders without NIfTI files (``notes/``) are not cases and are
    ignored. A case-like entry that cannot be read is listed with the reason, never dropped
    silently:

    - a symbolic link whose target does not exist, or that leads to a file;
    - an empty folder, or a folder that cannot be listed;
    - a folder without NIfTI file: the case nested one level down (the subfolder is named), or
      only other files (named; ``.part``/``.crdownload`` ones are an incomplete download);
    - a folder with NIfTI files whose name matches no release, or that lacks a modality or the
      segmentation, or holds one twice (:func:`find_case_files`).

    File endings are matched case-insensitively (``.NII.GZ`` is ``.nii.gz``): archives made on
    Windows or macOS, whose file systems ignore case, give such names; nibabel reads them, and
    the same data folder must give the same cases on every system.

    Raises:
        BratsDataError: ``data_dir`` is missing or not a folder.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BratsDataError(f"data folder {data_dir} does not exist or is not a folder")
    cases, unreadable = [], []
    for entry in sorted(data_dir.iterdir()):
        if entry.name.startswith(".") or not _looks_like_a_case(entry):
            continue
        reason = _unreadable_reason(entry)
        if reason is None:
            try:
                cases.append(find_case_files(entry))
                continue
            except BratsDataError as error:
                reason = str(error)
        unreadable.append(UnreadableCase(entry, reason))
    return CaseScan(data_dir, sorted(cases, key=lambda case: case.case_id), unreadable)


def find_cases(data_dir: str | Path, *, skip_unreadable: bool = False) -> list[CaseFiles]:
    """List the cases under ``data_dir``, sorted by case ID.

    A case is an immediate, non-hidden subfolder of ``data_dir`` named as a release of
    :data:`amecam_lib.releases.RELEASES` names its cases, holding its four modalities and its
    segmentation (``.nii``/``.nii.gz``, any case of the ending); other files (``README.md``,
    ``manifest.csv``) and folders without NIfTI files are ignored. Folders that look like cases
    but cannot be read (:func:`scan_cases`: empty, nested one level down, only partial
    downloads, a dangling symbolic link, a missing file...) stop the run with every one of them
    named, unless ``skip_unreadable``.

    Args:
        data_dir: the BraTS root folder.
        skip_unreadable: leave such folders out, with a warning naming each and why.

    Returns:
        one :class:`CaseFiles` per case, sorted by ``case_id``.

    Raises:
        BratsDataError: ``data_dir`` missing or not a folder; no case found (never an empty
            dataset).
        UnreadableCasesError: (a ``BratsDataError``) without ``skip_unreadable``, folders that
            look like cases but cannot be read: a folder matching no known layout, a missing
            modality or segmentation (the message names the case and the expected file), a
            modality present as both ``.nii`` and ``.nii.gz``, and the cases above.

    Warns:
        UserWarning: a BraTS 2020 case whose segmentation has a non-standard name (see
            :mod:`amecam_lib.releases`); the warning names the file used. With
            ``skip_unreadable``, the folders skipped.
    """
    return usable_cases(scan_cases(data_dir), skip_unreadable=skip_unreadable)


def usable_cases(scan, *, skip_unreadable: bool = False) -> list[CaseFiles]:
    """The readable cases of a :func:`scan_cases` result, the rule :func:`find_cases` and
    :func:`amecam_lib.slicing.slice_dataset` share: unreadable folders stop the run
    (:class:`UnreadableCasesError` listing each) unless ``skip_unreadable``, which warns and names
    them; no readable case at all is an error (:func:`check_some_cases`). The warning points at the
    caller of the public function (``stacklevel=3``)."""
    if scan.unreadable and not skip_unreadable:
        raise UnreadableCasesError(scan.unreadable_message(skipped=False))
    if scan.unreadable:
        warnings.warn(scan.unreadable_message(skipped=True), stacklevel=3)
    check_some_cases(scan)
    return scan.cases


def check_some_cases(scan: CaseScan) -> None:
    """Refuse an empty dataset: no readable case in ``scan`` is a ``BratsDataError`` with a hint."""
    if scan.cases:
        return
    data_dir = scan.data_dir
    nested = sorted(entry.name for entry in data_dir.iterdir() if entry.is_dir() and any(
        child.is_dir() and _holds_nifti(child) for child in entry.iterdir()))
    hint = (" (it holds NIfTI files itself: pass the folder that contains the case folders)"
            if _holds_nifti(data_dir) else
            f" (case folders were found one level down, in {nested}: pass that folder)"
            if nested else "")
    skipped = f" ({len(scan.unreadable)} unreadable folder(s) skipped)" if scan.unreadable else ""
    raise BratsDataError(
        f"no BraTS case found in {data_dir}: expected subfolders holding .nii/.nii.gz files{hint}{skipped}")


def _looks_like_a_case(entry: Path) -> bool:
    """Named as a release names its cases (any entry but a plain file), or a folder of NIfTI files."""
    if entry.is_symlink() or entry.is_dir():
        if any(release.matches(entry.name) for release in RELEASES):
            return True
    try:
        return entry.is_dir() and _holds_nifti(entry)
    except OSError:
        return False


INCOMPLETE_DOWNLOAD_SUFFIXES: tuple[str, ...] = (".part", ".crdownload", ".download", ".partial", ".tmp")
"""Endings of files a browser or downloader leaves while a download is unfinished."""


def _unreadable_reason(entry: Path) -> str | None:
    """Why a case-like entry cannot be read as a case folder, or None when its files can be looked up."""
    if entry.is_symlink() and not entry.exists():
        return f"a symbolic link to {entry.readlink()}, which does not exist"
    if not entry.is_dir():
        return "not a folder"
    try:
        children = sorted(entry.iterdir())
    except OSError as error:
        return f"cannot be listed ({type(error).__name__}: {error})"
    if not children:
        return "empty folder"
    if _holds_nifti(entry):
        return None
    nested = [child.name for child in children if child.is_dir() and _holds_nifti(child)]
    if nested:
        return (f"holds no .nii/.nii.gz file itself; the case files are one level down, in {nested[0]}/: "
                f"move them up into {entry.name}/")
    names = [child.name + ("/" if child.is_dir() else "") for child in children]
    shown = ", ".join(names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")
    partial = any(name.lower().endswith(INCOMPLETE_DOWNLOAD_SUFFIXES) for name in names)
    return (f"holds no .nii/.nii.gz file, only {shown}"
            f"{' (an unfinished download?)' if partial else ''}")


def find_case_files(case_dir: str | Path) -> CaseFiles:
    """The five files of the case in ``case_dir`` (see :func:`find_cases` for the rules).

    Raises:
        BratsDataError: as :func:`find_cases`, for this one case.
    """
    case_dir = Path(case_dir)
    case_id = case_dir.name
    release = detect_release(case_id)
    images = {}
    for modality in MODALITIES:
        path = _resolve(case_dir, release.file_stem(case_id, modality))
        if path is None:
            raise BratsDataError(
                f"case {case_id}: missing {modality} file "
                f"{release.file_stem(case_id, modality)}.nii.gz (or .nii) in {case_dir}")
        images[modality] = path
    seg = _resolve(case_dir, release.file_stem(case_id, "seg"))
    if seg is None:
        seg = _fallback_seg(case_dir, release, set(images.values()))
    return CaseFiles(case_id=case_id, folder=case_dir, release=release, images=images, seg=seg)


def load_case(case: CaseFiles, modalities: tuple[str, ...] | list[str] = MODALITIES, *,
              normalise: bool = True) -> CaseVolumes:
    """Load, validate and normalise the volumes of one case.

    The headers of all five files are checked (same shape and affine); only the requested
    modalities and the segmentation are read (``np.asanyarray(img.dataobj)``, which keeps the
    stored integer type, unlike ``get_fdata``).

    Args:
        case: from :func:`find_cases`.
        modalities: project modality names to load (a subset of :data:`MODALITIES`).
        normalise: ``True`` (default): min-max normalise each image (:func:`normalise_min_max`).
            ``False``: keep the intensities as stored (e.g. ``int16``, Fortran-ordered as nibabel
            reads them), still checked for NaN/Inf; the slicer uses this to encode them exactly.

    Returns:
        :class:`CaseVolumes` with ``images[m]`` ``(X, Y, Z) float32`` in ``[0, 1]`` (raw stored
        type when ``normalise=False``) and ``seg`` ``(X, Y, Z) uint8``.

    Raises:
        BratsDataError: an unknown modality; an unreadable, truncated or corrupt file; a file
            that is not 3-D; files on different grids (shape or affine, the message names the
            file); NaN or Inf intensities; a non-integer label value; a label value outside
            ``case.release.labels`` (the message names case, file and values).
    """
    for modality in modalities:
        if modality not in case.images:
            raise BratsDataError(
                f"case {case.case_id}: modality {modality!r} does not exist in {case.release.name}; "
                f"it has {', '.join(case.images)}")
    headers = {name: _open(path) for name, path in case.files().items()}
    shape, affine = _check_same_grid(case, headers)
    images = {}
    for modality in modalities:
        raw = _read(case.images[modality], headers[modality])
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            raise BratsDataError(
                f"case {case.case_id}: {case.images[modality]}: NaN or Inf intensities")
        images[modality] = normalise_min_max(raw) if normalise else raw
    seg = check_labels(_read(case.seg, headers["seg"]), case.release, case.seg, case.case_id)
    return CaseVolumes(case_id=case.case_id, release=case.release, shape=shape, affine=affine,
                       images=images, seg=seg, spatial_header=spatial_header(headers["seg"].header))


def spatial_header(header: nib.Nifti1Header) -> dict:
    """The fields of a NIfTI header that place the volume in space (:data:`SPATIAL_HEADER_FIELDS`),
    as plain Python numbers and lists (for ``case.json``); :func:`amecam_lib.export.export_case_masks`
    writes them back unchanged. A NIfTI-2 or Analyze header gives the fields it has."""
    fields = {}
    for name in SPATIAL_HEADER_FIELDS:
        try:
            fields[name] = np.asarray(header[name]).tolist()
        except (KeyError, ValueError):
            continue
    return fields


@dataclass(frozen=True)
class EvaluationTruth:
    """The expert whole-tumour mask of one case, read for scoring (evaluation only).

    Attributes:
        case_id: case folder name.
        whole_tumour: ``(X, Y, Z) bool`` ``seg > 0`` on the case's full original grid.
        affine: ``(4, 4) float64`` voxel -> world (mm).
        voxel_spacing_mm: ``(x, y, z)`` voxel size in mm from the segmentation's NIfTI header
            (``pixdim``; 1 mm in BraTS).
    """

    case_id: str
    whole_tumour: np.ndarray
    affine: np.ndarray
    voxel_spacing_mm: tuple[float, float, float]


def read_whole_tumour_for_evaluation(data_dir: str | Path, case_id: str,
                                     expected_sha256: str | None = None) -> EvaluationTruth:
    """EVALUATION ONLY: read one case's expert segmentation as the ground truth of a 3-D score.

    The weakly supervised method never sees a segmentation while it trains (slice labels come
    from :mod:`amecam_lib.slicing`); this reader exists so that the evaluation can score the
    predicted volumes of the *test* patients against the full original segmentation,
    ``WT = seg > 0``, everywhere (tumour outside a crop window or on dropped slices included).
    No training phase may call it.

    Only the segmentation is read (via :func:`load_case` with no modality: every header is still
    checked to lie on one grid, the labels are validated against the release).

    Args:
        data_dir: the BraTS root the run was sliced from.
        case_id: the case folder's name.
        expected_sha256: SHA-256 of the segmentation the case was sliced from (``case.json``,
            ``sources["seg"]``); the file found must have it. The same folder name is no proof of
            the same patient: another data folder, or a case replaced since, would be scored against
            another truth. None: not checked (a folder sliced before hashes were recorded).

    Returns:
        :class:`EvaluationTruth`.

    Raises:
        BratsDataError: no folder ``data_dir/case_id``; a segmentation whose SHA-256 differs from
            ``expected_sha256``; or as :func:`load_case`.
    """
    case_dir = Path(data_dir) / case_id
    if not case_dir.is_dir():
        raise BratsDataError(
            f"case {case_id} not found in {data_dir}: the 3-D scores read its original segmentation; "
            f"pass data_dir= the BraTS folder this run was sliced from")
    case = find_case_files(case_dir)
    if expected_sha256 is not None and file_sha256(case.seg) != expected_sha256:
        raise BratsDataError(
            f"{case.seg} is not the segmentation case {case_id} was sliced from (its sha256 differs from the one "
            f"in the run's case.json): pass data_dir= the BraTS folder this run was sliced from, or slice again")
    volumes = load_case(case, modalities=())
    zooms = _open(case.seg).header.get_zooms()[:3]
    return EvaluationTruth(case_id=case_id, whole_tumour=volumes.whole_tumour, affine=volumes.affine,
                           voxel_spacing_mm=tuple(float(v) for v in zooms))


def normalise_min_max(volume: np.ndarray) -> np.ndarray:
    """Min-max normalise a whole volume to ``[0, 1]``.

    Args:
        volume: any-shape real array (e.g. ``(X, Y, Z) int16`` raw MRI intensities), finite.

    Returns:
        ``float32`` array of the same shape in ``[0, 1]``: ``(v - min) / (max - min)``; all zeros
        when ``max == min`` (constant or all-zero volume), never NaN.
    """
    volume = np.asarray(volume)
    low, high = float(volume.min()), float(volume.max())
    if high <= low:
        return np.zeros(volume.shape, dtype=np.float32)
    normalised = volume.astype(np.float32)  # keeps the memory order (NIfTI: Fortran)
    normalised -= np.float32(low)
    normalised *= np.float32(1.0 / (high - low))
    return np.clip(normalised, 0.0, 1.0, out=normalised)


def check_labels(seg: np.ndarray, release: Release, path: str | Path, case_id: str) -> np.ndarray:
    """Validate a segmentation's values and return it as ``uint8``.

    Args:
        seg: label map as stored (any integer type, or float holding whole numbers).
        release: the case's release; its ``labels`` are the allowed values.
        path, case_id: used in error messages.

    Returns:
        ``seg`` as ``uint8`` (same shape).

    Raises:
        BratsDataError: a NaN/Inf or non-integer value, or values outside ``release.labels``
            (the message lists them).
    """
    if seg.dtype.kind == "f":
        if not np.isfinite(seg).all():
            raise BratsDataError(f"case {case_id}: {path}: NaN or Inf in the segmentation")
        fractional = seg[seg != np.round(seg)]
        if fractional.size:
            raise BratsDataError(
                f"case {case_id}: {path}: non-integer label values, e.g. {fractional[:3].tolist()}")
    elif seg.dtype.kind not in "iub":
        raise BratsDataError(f"case {case_id}: {path}: label map of unsupported type {seg.dtype}")
    present = set(_unique_values(seg))
    unexpected = sorted(present - release.labels)
    if unexpected:
        raise BratsDataError(
            f"case {case_id}: {path}: unexpected label values {unexpected} "
            f"({release.name} uses {sorted(release.labels)})")
    return seg.astype(np.uint8, copy=False)


def _unique_values(seg: np.ndarray) -> list[int]:
    """Distinct values of an integer-valued label map.

    Label maps span a few values (BraTS: 0..4), so the minimum, the maximum and one equality
    test per value in between (~3 ms on a 240 x 240 x 155 volume) replace ``np.unique`` (a sort,
    ~50 ms). A wider span falls back to ``np.unique`` of the non-zero voxels.
    """
    low, high = int(seg.min()), int(seg.max())
    if high - low <= _SMALL_LABEL_SPAN:
        return [value for value in range(low, high + 1)
                if value in (low, high) or bool((seg == value).any())]
    nonzero = seg[seg != 0]
    values = {int(v) for v in np.unique(nonzero)}
    if nonzero.size < seg.size:
        values.add(0)
    return sorted(values)


_SMALL_LABEL_SPAN = 16


def _holds_nifti(folder: Path) -> bool:
    return any(entry.is_file() and strip_nifti_suffix(entry.name) is not None
               for entry in folder.iterdir())


def _resolve(case_dir: Path, stem: str) -> Path | None:
    """The file ``stem.nii.gz`` or ``stem.nii`` in ``case_dir`` (ending in any letter case);
    ``None`` if there is none.

    Raises:
        BratsDataError: two such files (e.g. ``.nii`` and ``.nii.gz``), or a symbolic link of that
            name whose target does not exist.
    """
    found = sorted(entry for entry in case_dir.iterdir() if strip_nifti_suffix(entry.name) == stem)
    dangling = [entry for entry in found if not entry.exists()]
    if dangling:
        raise BratsDataError(f"case {case_dir.name}: {dangling[0].name} is a symbolic link to "
                             f"{dangling[0].readlink()}, which does not exist")
    found = [entry for entry in found if entry.is_file()]
    if len(found) > 1:
        raise BratsDataError(
            f"case {case_dir.name}: both {found[0].name} and {found[1].name} exist; keep one")
    return found[0] if found else None


def _fallback_seg(case_dir: Path, release: Release, modality_files: set[Path]) -> Path:
    """Segmentation under a non-standard name (BraTS 2020 case 355), or an error."""
    expected = f"{release.file_stem(case_dir.name, 'seg')}.nii.gz (or .nii)"
    if release.seg_fallback:
        candidates = sorted(
            entry for entry in case_dir.iterdir()
            if entry.is_file() and entry not in modality_files
            and strip_nifti_suffix(entry.name) is not None and "seg" in entry.name.lower())
        if len(candidates) == 1:
            warnings.warn(
                f"case {case_dir.name}: segmentation {expected} not found; using "
                f"{candidates[0].name} instead (known quirk of the official {release.name} release)",
                stacklevel=3)
            return candidates[0]
        if len(candidates) > 1:
            raise BratsDataError(
                f"case {case_dir.name}: segmentation {expected} not found and several other "
                f"candidates exist: {[c.name for c in candidates]}")
    raise BratsDataError(f"case {case_dir.name}: missing segmentation file {expected} in {case_dir}")


# Errors nibabel and gzip raise on truncated, corrupt or non-NIfTI files.
_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError)


def _open(path: Path) -> nib.Nifti1Image:
    try:
        return nib.load(path)
    except _READ_ERRORS as error:
        raise BratsDataError(f"cannot read {path}: {type(error).__name__}: {error}") from error


def _read(path: Path, image: nib.Nifti1Image) -> np.ndarray:
    try:
        return np.asanyarray(image.dataobj)
    except _READ_ERRORS as error:
        raise BratsDataError(
            f"cannot read {path} (truncated or corrupt?): {type(error).__name__}: {error}") from error


def _check_same_grid(case: CaseFiles, headers: dict[str, nib.Nifti1Image]):
    """Shape ``(X, Y, Z)`` and affine shared by all files of a case, or an error naming the odd file."""
    reference_name = next(iter(headers))
    reference = headers[reference_name]
    for name, image in headers.items():
        path = case.files()[name]
        if len(image.shape) != 3:
            raise BratsDataError(f"{path}: expected a 3-D volume, got shape {image.shape}")
        if image.shape != reference.shape:
            raise BratsDataError(
                f"{path}: shape {image.shape} differs from {reference_name}'s {reference.shape} "
                f"in case {case.case_id}")
        if not np.allclose(image.affine, reference.affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
            raise BratsDataError(
                f"{path}: affine differs from {reference_name}'s in case {case.case_id} "
                f"(files not on one grid)")
    return tuple(int(n) for n in reference.shape), np.asarray(reference.affine, dtype=np.float64)
