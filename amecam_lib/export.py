"""Slice masks -> one NIfTI volume per test case, on the case's original grid and affine.

The evaluation works on 2-D axial slices (row ``r`` of a case's stored arrays is
``volume[:, :, z[r]]`` resized to ``(H, W)``, or its crop window
``volume[row0:row0 + height, col0:col0 + width, z[r]]`` resized by the crop zoom; see
:mod:`amecam_lib.slicing`). To look at a prediction in a 3-D viewer (ITK-SNAP, 3D Slicer) next to
the original MRI, the slice masks of a case are put back at their ``z`` in a volume of the
original shape: upsampled with nearest neighbour (pixel centre aligned, the inverse of the
slicer's ``nearest-exact`` mask resize) to the window's size when the slices were resampled,
placed at the window (:attr:`amecam_lib.slices.CaseInfo.window`; the whole slice without a crop),
and saved with the case's original affine as ``uint8`` (1 = tumour). The source's spatial header
is copied as it is: qform and sform with their codes, ``pixdim``, the units (``xyzt_units``) and
``dim_info``, read from the case's segmentation at slicing time (``case.json``,
:data:`amecam_lib.volumes.SPATIAL_HEADER_FIELDS`); a viewer that chooses between qform and sform
by their codes places the mask exactly where it places the MRI. Everything outside the crop
window is 0, and so are slices that were not evaluated (dropped by slicing, or outside the test
selection): a 3-D score on the original grid counts tumour cut by the crop as missed.

Files are named ``RUN/masks/<case_id>_<modality>_<method>.nii.gz`` (:func:`mask_file_name`): the
masks of every modality and method evaluated in one run folder stay side by side.

:func:`case_mask_volume` builds that volume in memory; :func:`export_case_masks` writes it, and
the per-patient 3-D scores of :mod:`amecam_lib.evaluation` score it (one function, so the scored
volume is exactly the exported one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from amecam_lib.atomic import atomic_path
from amecam_lib.slices import CaseInfo, read_case_info
from amecam_lib.volumes import AFFINE_TOLERANCE_MM


def upsample_nearest(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of ``(N, h, w)`` masks to ``(N, H, W)``, pixel-centre aligned.

    Output pixel i takes input pixel ``floor((i + 0.5) * h / H)`` (as torch's ``nearest-exact``).
    Written with NumPy indexing because it only needs an index map (no library call is simpler).
    """
    masks = np.asarray(masks)
    height, width = shape
    rows = np.minimum(((np.arange(height) + 0.5) * masks.shape[-2] / height).astype(np.int64), masks.shape[-2] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * masks.shape[-1] / width).astype(np.int64), masks.shape[-1] - 1)
    return masks[..., rows[:, None], cols[None, :]]


def case_mask_volume(info: CaseInfo, masks, z: Sequence[int]) -> np.ndarray:
    """The slice masks of one case put back on its original grid (what :func:`export_case_masks` saves).

    Args:
        info: the case's geometry (:func:`amecam_lib.slices.read_case_info`).
        masks: ``(K, H, W)`` bool (or 0/1) masks at the case's stored
            :attr:`~amecam_lib.slices.CaseInfo.image_shape`; ``K = 0`` gives an empty volume.
        z: ``(K,)`` axial index of each mask in the original volume.

    Returns:
        ``(X, Y, Z) uint8`` volume of :attr:`~amecam_lib.slices.CaseInfo.original_shape`: 1 where
        a mask, upsampled with :func:`upsample_nearest` to the window's size and placed at the
        window (:attr:`~amecam_lib.slices.CaseInfo.window`), is tumour; 0 outside the window and
        on every slice not in ``z`` (slices dropped by slicing or not evaluated).

    Raises:
        ValueError: lengths differ, masks not 3-D, a ``z`` outside the volume or repeated, or a
            mask size other than the case's stored image size.
    """
    masks = np.asarray(masks)
    case_z = np.asarray(z, dtype=np.int64)
    case_id = info.case_id
    if masks.ndim != 3 or len(masks) != len(case_z):
        raise ValueError(f"case {case_id}: masks (K, H, W) and z (K,) must agree; got {masks.shape}, {case_z.shape}")
    n_x, n_y, n_z = info.original_shape
    if len(case_z) and (case_z.min() < 0 or case_z.max() >= n_z):
        raise ValueError(f"case {case_id}: z outside 0..{n_z - 1}: {case_z[(case_z < 0) | (case_z >= n_z)]}")
    if len(np.unique(case_z)) != len(case_z):
        raise ValueError(f"case {case_id}: a z appears more than once")
    if masks.shape[-2:] != info.image_shape:
        raise ValueError(f"case {case_id}: masks are {masks.shape[-2:]} px, its slices {info.image_shape} px")
    row0, col0, height, width = info.window
    slice_masks = masks != 0
    if slice_masks.shape[-2:] != (height, width):
        slice_masks = upsample_nearest(slice_masks, (height, width))
    volume = np.zeros((n_x, n_y, n_z), dtype=np.uint8)
    volume[row0:row0 + height, col0:col0 + width, case_z] = np.moveaxis(slice_masks, 0, -1).astype(np.uint8)
    return volume


def mask_image(volume: np.ndarray, info: CaseInfo) -> nib.Nifti1Image:
    """A ``uint8`` NIfTI-1 image of ``volume`` placed as the case's source files are.

    With the source's spatial header in ``info.spatial_header`` (every case sliced since it was
    stored), those fields are copied unchanged (qform and sform with their codes, ``pixdim``,
    ``xyzt_units``, ``dim_info``), so the image's affine is the source's best affine, the one
    ``case.json`` stores. A folder sliced before: nibabel's defaults for ``info.affine`` (sform
    code 2 "aligned", qform code 0); slicing again stores the header.

    Raises:
        ValueError: the copied header's affine differs from ``info.affine`` (a ``case.json`` edited
            by hand, or written from other files).
    """
    fields = info.spatial_header
    if not fields:
        image = nib.Nifti1Image(volume, info.affine)
        image.header.set_data_dtype(np.uint8)
        return image
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(volume.shape)
    for name, value in fields.items():
        header[name] = value
    image = nib.Nifti1Image(volume, header.get_best_affine(), header=header)   # header kept as it is
    if not np.allclose(image.affine, info.affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
        raise ValueError(f"case {info.case_id}: the stored spatial header places the volume at\n{image.affine}\n"
                         f"but case.json's affine is\n{info.affine}")
    return image


def mask_file_name(case_id: str, modality: str, method: str) -> str:
    """``<case_id>_<modality>_<method>.nii.gz``: the file name of one exported mask volume.

    Raises:
        ValueError: a part that is empty or cannot be part of a file name (``/``, leading dot).
    """
    for what, part in (("case_id", case_id), ("modality", modality), ("method", method)):
        if not part or "/" in part or part.startswith("."):
            raise ValueError(f"{what} {part!r} cannot name a file")
    return f"{case_id}_{modality}_{method}.nii.gz"


def export_case_masks(run_dir: str | Path, modality: str, method: str, masks, case_ids: Sequence[str],
                      z: Sequence[int], out_dir: str | Path | None = None) -> list[Path]:
    """Write one ``<case_id>_<modality>_<method>.nii.gz`` volume per case from its slice masks
    (:func:`mask_file_name`; another modality's or method's masks are never overwritten).

    Args:
        run_dir: the sliced run folder (reads ``RUN/slices/<case_id>/case.json``).
        modality: modality the masks were predicted on (part of the file name, and recorded in
            the NIfTI description).
        method: method name (part of the file name), e.g. ``"ame_cam_crf"``.
        masks: ``(N, H, W)`` bool (or 0/1) slice masks, at the case's stored
            :attr:`~amecam_lib.slices.CaseInfo.image_shape`.
        case_ids: ``(N,)`` case of each mask.
        z: ``(N,)`` axial index of each mask in its case's volume.
        out_dir: target folder; default ``RUN/masks``.

    Returns:
        the written paths, one per case (sorted by case ID).

    Raises:
        ValueError: lengths differ, masks not 3-D, a ``z`` outside the volume or repeated within a
            case, a mask size other than the case's stored image size, or a bad method or
            modality name.
        BratsDataError: a case that was not sliced in ``run_dir``.
    """
    masks = np.asarray(masks)
    case_ids = np.asarray(case_ids, dtype=str)
    z = np.asarray(z, dtype=np.int64)
    if masks.ndim != 3 or not (len(masks) == len(case_ids) == len(z)):
        raise ValueError(f"masks (N, H, W), case_ids (N,), z (N,) must agree; got {masks.shape}, "
                         f"{case_ids.shape}, {z.shape}")
    mask_file_name("case", modality, method)  # names that can be part of a file name
    out_dir = Path(run_dir) / "masks" if out_dir is None else Path(out_dir)
    written = []
    for case_id in sorted(set(case_ids)):
        info = read_case_info(run_dir, case_id)
        selected = np.flatnonzero(case_ids == case_id)
        volume = case_mask_volume(info, masks[selected], z[selected])
        image = mask_image(volume, info)
        image.header["descrip"] = f"AME-CAM tutorial {method} {modality}"[:79].encode()
        target = out_dir / mask_file_name(case_id, modality, method)
        with atomic_path(target) as tmp:
            nib.save(image, tmp)
        written.append(target)
    return written
