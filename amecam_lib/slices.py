"""Read a sliced run folder: the manifest, one case's geometry, and slices for training and evaluation.

The run folder is written by :func:`amecam_lib.slicing.slice_dataset` (layout in that module and
in ARCHITECTURE.md). Two ways to get slices:

- :func:`load_slices` reads one split of one modality into memory as a :class:`SliceSet`
  (images, labels, whole-tumour masks for evaluation, case IDs, z): right for the demo sizes and
  for evaluation;
- :meth:`SliceDataset.from_run` keeps only an index in memory and reads each slice from the
  memory-mapped per-case ``.npy`` file when asked (``np.load(mmap_mode="r")``), so training on
  all 1,251 BraTS 2021 cases does not need every slice in RAM.

Images are stored as ``uint16`` codes (:mod:`amecam_lib.slicing`, storage format 2) and decoded
here to ``float32`` ``code / 65535`` (:func:`amecam_lib.slicing.decode_images`): in bulk by
:func:`load_slices` and :func:`read_case_images`, one slice at a time by a lazy
:class:`SliceDataset`. A folder of the older ``float32`` format raises an error naming the file.

A stored file that is missing or truncated raises an error naming it (rerun slicing to redo the
case). :func:`split_fingerprint` gives a short hash of ``RUN/split.csv``, :func:`data_fingerprint` one of
everything the slices are made from (split, source file contents, slicing settings), for checkpoint configs.

Both give a torch :class:`SliceDataset` whose items are ``(image (1, H, W) float32, label int64)``;
labels are the slice-level tumour labels (the only supervision AME-CAM uses, paper Sec. 2).
``(H, W)`` is the run's stored slice shape (:attr:`CaseInfo.image_shape`): ``(S, S)`` when the
slices were resampled to ``image_size``, the zoomed crop window with ``crop_size``.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from amecam_lib.config import MODALITIES
from amecam_lib.releases import BratsDataError
from amecam_lib.slicing import MANIFEST_COLUMNS, decode_images, open_stored_array
from amecam_lib.splits import SPLITS, read_split

SPLIT_CHOICES: tuple[str, ...] = (*SPLITS, "all")
"""Values accepted for ``split``: one split, or ``"all"`` for every kept slice."""

_OPEN_FILES = 64  # memory maps kept open per process by a lazy SliceDataset (LRU)


@dataclass(frozen=True)
class SliceSet:
    """The slices of one split and one modality, in memory, ordered by case ID then z.

    Attributes:
        images: ``(N, 1, H, W) float32`` in ``[0, 1]``.
        labels: ``(N,) int64`` in ``{0, 1}``: 1 = whole-tumour area above the threshold.
        masks: ``(N, H, W) bool`` whole tumour at image size (inside the crop window for a
            cropped run); for evaluation only, never weakly supervised training; None when
            loaded with ``with_masks=False`` (what the weakly supervised trainings do).
        case_ids: ``(N,)`` str, the case of each slice.
        z: ``(N,) int64`` axial index of each slice in its volume.
        ambiguous: ``(N,) bool``, ``0 < tumour area <= threshold`` (labelled 0).
        modality, split: what was loaded.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None
    case_ids: np.ndarray
    z: np.ndarray
    ambiguous: np.ndarray
    modality: str
    split: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class CaseInfo:
    """Geometry of one sliced case, from ``RUN/slices/<case_id>/case.json``.

    Attributes:
        case_id, release: the case and its BraTS release.
        modalities: modalities stored for it.
        original_shape: voxel grid ``(X, Y, Z)`` of the NIfTI volumes.
        affine: ``(4, 4) float64`` voxel -> world (mm), as in the NIfTI files.
        z: ``(Z_kept,) int64``: row ``r`` of the case's ``.npy`` files is axial slice ``z[r]``.
        image_shape: ``(H, W)`` of the stored slices in pixels.
        crop_box: ``(row0, col0, height, width)`` of the crop window on the original grid: row
            ``r`` is ``volume[row0:row0 + height, col0:col0 + width, z[r]]`` resized to
            ``image_shape``; ``None`` when the whole slice was resampled (:attr:`window`).
        brain_outside, tumour_outside: brain and whole-tumour voxels outside the crop window (0
            without a crop, or when the brain fits).
        settings: the slicing settings the folder was made with.
        spatial_header: the source segmentation's NIfTI spatial header fields
            (:func:`amecam_lib.volumes.spatial_header`: qform, sform, their codes, pixdim, units);
            empty for a folder sliced before they were stored.
        sources: the source files it was sliced from, ``{name: {"file", "bytes", "sha256"}}`` for
            the sliced modalities and ``"seg"`` (:func:`amecam_lib.slicing.source_fingerprint`).
    """

    case_id: str
    release: str
    modalities: tuple[str, ...]
    original_shape: tuple[int, int, int]
    affine: np.ndarray
    z: np.ndarray
    image_shape: tuple[int, int]
    crop_box: tuple[int, int, int, int] | None
    settings: dict
    brain_outside: int = 0
    tumour_outside: int = 0
    spatial_header: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)

    @property
    def window(self) -> tuple[int, int, int, int]:
        """``(row0, col0, height, width)`` of the original grid that the stored slices show: the
        crop box, or the whole slice ``(0, 0, X, Y)``."""
        return self.crop_box if self.crop_box is not None else (0, 0, *self.original_shape[:2])

    @property
    def voxel_spacing_mm(self) -> tuple[float, float]:
        """In-plane spacing of the original grid in mm, ``(x, y)``: the lengths of the affine's
        first two columns (1 mm in BraTS)."""
        return (float(np.linalg.norm(self.affine[:3, 0])), float(np.linalg.norm(self.affine[:3, 1])))

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        """mm per stored pixel along rows and columns: the voxel spacing times window / stored
        size per axis (``240 / 128`` mm for BraTS resampled to 128 px; ``160 / 64 = 2.5`` and
        ``192 / 77`` mm for a 160 x 192 crop at zoom 0.4; 1 mm for a crop at zoom 1)."""
        _, _, height, width = self.window
        spacing_x, spacing_y = self.voxel_spacing_mm
        return (spacing_x * height / self.image_shape[0], spacing_y * width / self.image_shape[1])


def read_manifest(run_dir: str | Path) -> pd.DataFrame:
    """``RUN/manifest.csv`` as a DataFrame: one row per axial slice of every case.

    Columns (:data:`amecam_lib.slicing.MANIFEST_COLUMNS`): ``case_id`` str, ``z`` int,
    ``label`` int {0, 1}, ``tumour_pixels`` and ``brain_pixels`` int (pixels at the original
    grid), ``ambiguous`` and ``kept`` int {0, 1}, ``reason`` str (empty when kept), ``split`` str,
    ``row`` int (index into the case's ``.npy`` files, -1 when not kept).

    Raises:
        BratsDataError: no manifest (the run was not sliced) or missing columns.
    """
    path = Path(run_dir) / "manifest.csv"
    if not path.is_file():
        raise BratsDataError(f"{path} not found: slice the data first (slice_dataset or "
                             f"data_scripts/slice_brats.py)")
    manifest = pd.read_csv(path, dtype={"case_id": str, "reason": str, "split": str},
                           keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise BratsDataError(f"{path}: missing column(s) {missing}")
    return manifest


def split_fingerprint(run_dir: str | Path) -> str:
    """Short fingerprint of a run's patient-level split, to store in checkpoint configs.

    The SHA-256 of the sorted ``case_id,split`` lines of ``RUN/split.csv`` (one ``\n``-ended line
    per case, UTF-8), first 16 hex digits. It depends only on which case is in which split, not
    on row order or whitespace, so a checkpoint can tell whether the run it is evaluated on was
    split the same way as the one it was trained on.

    Returns:
        16 lowercase hex digits, e.g. ``"3f2a9c0d1b7e4a55"``.

    Raises:
        BratsDataError: ``RUN/split.csv`` is missing or malformed
            (:func:`amecam_lib.splits.read_split`).
    """
    path = Path(run_dir) / "split.csv"
    if not path.exists():
        raise BratsDataError(f"{path} not found: slice the data first (slice_dataset or "
                             f"data_scripts/slice_brats.py)")
    lines = "".join(f"{case_id},{split}\n" for case_id, split in sorted(read_split(path).items()))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()[:16]


def data_fingerprint(run_dir: str | Path) -> str:
    """Short fingerprint of everything a run's slices are made from, to store in checkpoint configs.

    The SHA-256 of, for every case of ``RUN/split.csv`` in case order: its split, the ``sources``
    of its ``case.json`` (name, size and SHA-256 of each source NIfTI file,
    :func:`amecam_lib.slicing.source_fingerprint`) and its slicing ``settings`` (geometry, label
    rule, modalities, storage format). The stored slices are a function of these, so a checkpoint
    trained on other slices (a source file replaced, even by one of the same size and time, a case
    re-sliced with other settings, another split) has another fingerprint and is never resumed
    (:func:`amecam_lib.training.fit` compares configs). A folder sliced before source hashes were
    recorded contributes what its ``case.json`` holds (re-slicing records them).

    Returns:
        16 lowercase hex digits.

    Raises:
        BratsDataError: ``RUN/split.csv`` is missing or malformed, or a case of it was not sliced.
    """
    run_dir = Path(run_dir)
    path = run_dir / "split.csv"
    if not path.exists():
        raise BratsDataError(f"{path} not found: slice the data first (slice_dataset or "
                             f"data_scripts/slice_brats.py)")
    parts = []
    for case_id, split in sorted(read_split(path).items()):
        info_path = run_dir / "slices" / case_id / "case.json"
        if not info_path.is_file():
            raise BratsDataError(f"case {case_id} of {path} was not sliced ({info_path} not found): rerun slicing")
        info = json.loads(info_path.read_text(encoding="utf-8"))
        parts.append({"case_id": case_id, "split": split, "sources": info.get("sources"),
                      "settings": info.get("settings")})
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _check_modality_name(modality: str) -> None:
    """Raise a :class:`BratsDataError` listing the valid names when ``modality`` is unknown."""
    if modality not in MODALITIES:
        raise BratsDataError(f"unknown modality {modality!r}; valid names: {', '.join(MODALITIES)}")


def read_case_info(run_dir: str | Path, case_id: str) -> CaseInfo:
    """Geometry of one sliced case (affine, original shape, z of each stored slice, stored
    shape, crop window).

    A ``case.json`` of storage format 2 (square slices, no ``image_shape`` key) is read as
    ``image_shape = (image_size, image_size)`` without a crop.

    Raises:
        BratsDataError: the case was not sliced in this run.
    """
    path = Path(run_dir) / "slices" / case_id / "case.json"
    if not path.is_file():
        raise BratsDataError(f"case {case_id} was not sliced in {run_dir} ({path} not found)")
    info = json.loads(path.read_text(encoding="utf-8"))
    if "image_shape" in info:
        image_shape = tuple(int(n) for n in info["image_shape"])
    else:
        image_shape = (int(info["image_size"]), int(info["image_size"]))
    box = info.get("crop_box")
    crop_box = None if box is None else tuple(int(box[k]) for k in ("row0", "col0", "height", "width"))
    outside = info.get("outside_window") or {}
    return CaseInfo(case_id=info["case_id"], release=info["release"],
                    modalities=tuple(info["modalities"]),
                    original_shape=tuple(int(n) for n in info["original_shape"]),
                    affine=np.asarray(info["affine"], dtype=np.float64),
                    z=np.asarray(info["z"], dtype=np.int64), image_shape=image_shape,
                    crop_box=crop_box, settings=info["settings"],
                    brain_outside=int(outside.get("brain_voxels", 0)),
                    tumour_outside=int(outside.get("tumour_voxels", 0)),
                    spatial_header=dict(info.get("spatial_header") or {}),
                    sources=dict(info.get("sources") or {}))


def select_slices(run_dir: str | Path, modality: str, split: str,
                  exclude_ambiguous: bool = False) -> pd.DataFrame:
    """Manifest rows of the kept slices of ``split`` (sorted by case ID, z) for ``modality``.

    Args:
        run_dir: a sliced run folder.
        modality: one of the modalities sliced in that run.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        exclude_ambiguous: leave out slices with ``0 < tumour area <= threshold``.

    Raises:
        BratsDataError: an unknown modality or split name; a modality not sliced in this run
            (the message lists those that were); a case folder whose ``case.json`` lists the
            modality but whose ``.npy`` file is missing (incomplete folder: rerun slicing); no
            slice selected.
    """
    _check_modality_name(modality)
    if split not in SPLIT_CHOICES:
        raise BratsDataError(f"split must be one of {SPLIT_CHOICES}, got {split!r}")
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    selected = manifest[manifest["kept"] == 1]
    if split != "all":
        selected = selected[selected["split"] == split]
    if exclude_ambiguous:
        selected = selected[selected["ambiguous"] == 0]
    if selected.empty:
        raise BratsDataError(
            f"no slice in split {split!r} of {run_dir}"
            f"{' once ambiguous slices are excluded' if exclude_ambiguous else ''}")
    case_ids = selected["case_id"].unique()
    lacking = [case_id for case_id in case_ids
               if not (run_dir / "slices" / case_id / f"{modality}.npy").is_file()]
    if lacking:
        infos = [read_case_info(run_dir, case_id) for case_id in lacking]
        incomplete = [info.case_id for info in infos if modality in info.modalities]
        if incomplete:
            raise BratsDataError(
                f"{run_dir / 'slices' / incomplete[0] / f'{modality}.npy'} is missing although "
                f"its case.json lists {modality!r} ({len(incomplete)} incomplete case folder(s)"
                f"); rerun slicing (slice_dataset / data_scripts/slice_brats.py) to redo them")
        if len(lacking) == len(case_ids):
            raise BratsDataError(
                f"modality {modality!r} was not sliced in {run_dir} (case {lacking[0]} has "
                f"{', '.join(infos[0].modalities)}); rerun slicing with it")
        raise BratsDataError(
            f"modality {modality!r} is missing in {len(lacking)} of {len(case_ids)} case folders "
            f"of {run_dir} (e.g. {lacking[0]}, sliced with {', '.join(infos[0].modalities)}); "
            f"rerun slicing with it")
    return selected.sort_values(["case_id", "z"]).reset_index(drop=True)


def load_slices(run_dir: str | Path, modality: str, split: str,
                exclude_ambiguous: bool = False, with_masks: bool = True) -> SliceSet:
    """Load the kept slices of one split and one modality into memory.

    Args:
        run_dir: a run folder written by :func:`amecam_lib.slicing.slice_dataset`.
        modality: ``"t1"``, ``"t1ce"``, ``"t2"`` or ``"flair"`` (must have been sliced).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        exclude_ambiguous: drop slices with ``0 < tumour area <= threshold`` (REFERENCE_NOTES
            "Data": an option for training; evaluation keeps them).
        with_masks: read the whole-tumour masks too (evaluation, figures). The weakly supervised
            trainings pass False: they never open a mask file (``SliceSet.masks`` is then None;
            tests/test_mask_access.py checks it). The training split's masks with images for the
            fully supervised reference are :func:`read_training_masks_for_fully_supervised`.

    Returns:
        :class:`SliceSet`, ordered by case ID then z.

    Raises:
        BratsDataError: as :func:`select_slices`; cases stored with different slice shapes (a
            run folder is sliced with one geometry; re-slice it).
    """
    selected = select_slices(run_dir, modality, split, exclude_ambiguous)
    run_dir = Path(run_dir)
    shapes = {case_id: read_case_info(run_dir, case_id).image_shape for case_id in selected["case_id"].unique()}
    shape = next(iter(shapes.values()))
    other = next((case_id for case_id, case_shape in shapes.items() if case_shape != shape), None)
    if other is not None:
        raise BratsDataError(f"{run_dir}: case {other} stores {shapes[other]} slices, case "
                             f"{next(iter(shapes))} {shape}; rerun slicing so that all cases share one geometry")
    images = np.empty((len(selected), 1, *shape), dtype=np.float32)
    mask_parts = []
    start = 0
    for case_id, rows in selected.groupby("case_id", sort=True)["row"]:
        stored_rows = rows.to_numpy()
        images[start:start + stored_rows.size, 0] = read_case_images(
            run_dir, case_id, modality, stored_rows)
        start += stored_rows.size
        if with_masks:
            mask_parts.append(read_stored_masks(run_dir, case_id, stored_rows))
    return SliceSet(images=images, labels=selected["label"].to_numpy(np.int64),
                    masks=np.concatenate(mask_parts).astype(bool, copy=False) if with_masks else None,
                    case_ids=selected["case_id"].to_numpy(str),
                    z=selected["z"].to_numpy(np.int64),
                    ambiguous=selected["ambiguous"].to_numpy(bool), modality=modality, split=split)


def read_stored_masks(run_dir: str | Path, case_id: str, rows: np.ndarray) -> np.ndarray:
    """The stored whole-tumour masks of one case (``RUN/slices/<case_id>/wt.npy``), rows ``rows``:
    ``(K, H, W) bool``. The one place of the library that opens a mask file of the slice store
    (evaluation, figures, and the fully supervised reference read through it; the weakly
    supervised trainings never call it)."""
    masks = open_stored_array(Path(run_dir) / "slices" / case_id / "wt.npy", dtype=bool)
    return np.asarray(masks[np.asarray(rows)], dtype=bool)


def read_training_masks_for_fully_supervised(run_dir: str | Path, modality: str,
                                             exclude_ambiguous: bool = False) -> SliceSet:
    """The TRAINING split's slices WITH their whole-tumour masks, for the fully supervised
    reference row only (``unet_fsl``, :mod:`amecam_lib.baselines.unet_fsl`).

    AME-CAM and every weakly supervised baseline learn from slice labels alone; the fully
    supervised U-Net is the ceiling the paper compares them with (Table 1, "FSL") and is the one
    method trained on masks. Its name says so, so that a reader (and a test) can see where masks
    enter training: the training patients' masks, never the val or test patients'.

    Returns:
        :class:`SliceSet` of split ``"train"`` with ``masks`` ``(N, H, W) bool``.
    """
    return load_slices(run_dir, modality, "train", exclude_ambiguous=exclude_ambiguous, with_masks=True)


def read_case_images(run_dir: str | Path, case_id: str, modality: str,
                     rows: np.ndarray | None = None) -> np.ndarray:
    """Stored slices of one case and modality, decoded to ``float32`` in ``[0, 1]``.

    Args:
        run_dir: a sliced run folder.
        case_id: a case sliced in it.
        modality: a modality sliced in it.
        rows: ``(K,)`` int rows of the case's ``.npy`` (the manifest's ``row``); ``None`` = all,
            i.e. row ``r`` is ``volume[:, :, case_info.z[r]]``.

    Returns:
        ``(K, H, W) float32`` in ``[0, 1]`` (``code / 65535``); ``(H, W)`` is the case's
        :attr:`CaseInfo.image_shape`, rows along the volume's first axis.

    Raises:
        BratsDataError: an unknown modality name; the file does not exist (case or modality not
            sliced), is truncated or corrupt (:func:`amecam_lib.slicing.open_stored_array`), or
            holds another storage format (:func:`amecam_lib.slicing.decode_images`).
    """
    _check_modality_name(modality)
    path = Path(run_dir) / "slices" / case_id / f"{modality}.npy"
    if not path.is_file():
        raise BratsDataError(f"{path} not found: case {case_id} or modality {modality!r} was not "
                             f"sliced in {run_dir}")
    codes = open_stored_array(path)
    return decode_images(codes if rows is None else codes[np.asarray(rows)], path)


class SliceDataset(Dataset):
    """Torch dataset of labelled slices: item ``i`` is ``(image, label)``.

    ``image`` is a ``(1, H, W) float32`` tensor in ``[0, 1]`` (then ``transform(image)`` if a
    transform is given, e.g. a two-view SupCon transform); ``label`` a ``int64`` scalar tensor.

    Build it from a :class:`SliceSet` in memory (``SliceDataset(slice_set)``) or lazily from a run
    folder (:meth:`from_run`), which reads each slice's ``uint16`` codes from memory-mapped
    per-case ``.npy`` files and decodes them when the item is asked for; at most 64 files per
    process stay open (least recently used closed first).

    Attributes:
        labels: ``(N,) int64``; case_ids ``(N,)`` str; z ``(N,) int64`` (for samplers and plots).
    """

    def __init__(self, slice_set: SliceSet, transform=None):
        self.transform = transform
        self.labels = np.asarray(slice_set.labels, dtype=np.int64)
        self.case_ids = np.asarray(slice_set.case_ids, dtype=str)
        self.z = np.asarray(slice_set.z, dtype=np.int64)
        self._images = slice_set.images
        self._files: np.ndarray | None = None
        self._rows: np.ndarray | None = None
        self._open: OrderedDict[str, np.ndarray] = OrderedDict()

    @classmethod
    def from_run(cls, run_dir: str | Path, modality: str, split: str,
                 exclude_ambiguous: bool = False, transform=None) -> "SliceDataset":
        """Lazy dataset over the kept slices of ``split`` (arguments as :func:`load_slices`).

        Raises:
            BratsDataError: as :func:`select_slices`; a stored file that is truncated or corrupt
                is reported (naming it) when an item of it is first read.
        """
        selected = select_slices(run_dir, modality, split, exclude_ambiguous)
        dataset = cls.__new__(cls)
        Dataset.__init__(dataset)
        dataset.transform = transform
        dataset.labels = selected["label"].to_numpy(np.int64)
        dataset.case_ids = selected["case_id"].to_numpy(str)
        dataset.z = selected["z"].to_numpy(np.int64)
        dataset._images = None
        folder = Path(run_dir) / "slices"
        dataset._files = np.asarray([str(folder / case_id / f"{modality}.npy")
                                     for case_id in dataset.case_ids])
        dataset._rows = selected["row"].to_numpy(np.int64)
        dataset._open = OrderedDict()
        return dataset

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int):
        if self._images is not None:
            image = np.asarray(self._images[index], dtype=np.float32).reshape(
                (1, *self._images.shape[-2:]))
        else:
            path = self._files[index]
            image = decode_images(self._memmap(path)[self._rows[index]], path)[None]
        image_tensor = torch.from_numpy(np.ascontiguousarray(image))
        if self.transform is not None:
            image_tensor = self.transform(image_tensor)
        return image_tensor, torch.tensor(self.labels[index], dtype=torch.int64)

    def _memmap(self, path: str) -> np.ndarray:
        if path in self._open:
            self._open.move_to_end(path)
        else:
            self._open[path] = open_stored_array(path)
            if len(self._open) > _OPEN_FILES:
                self._open.popitem(last=False)
        return self._open[path]

    def __getstate__(self):
        # DataLoader workers started with spawn get the index, not copies of open memory maps.
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state
