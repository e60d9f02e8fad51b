"""Tiny synthetic BraTS cases written with nibabel, named as a real release names them.

``write_case(root, "BraTS2021_00001", shape=(8, 8, 4), seg=...)`` writes the four modalities and
the segmentation of one case into ``root/<case_id>/`` and returns that folder. Images default to a
positive ramp (every voxel is "brain"), the segmentation to all zeros.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from amecam_lib.config import MODALITIES
from amecam_lib.releases import detect_release


def ramp(shape: tuple[int, ...], offset: int = 1) -> np.ndarray:
    """``int16`` volume with values ``offset, offset + 1, ...`` modulo 500 (all positive)."""
    return (np.arange(int(np.prod(shape))).reshape(shape) % 500 + offset).astype(np.int16)


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save ``volume`` (dtype kept) as NIfTI-1 at ``path`` (``.nii`` or ``.nii.gz``)."""
    image = nib.Nifti1Image(volume, np.eye(4) if affine is None else affine)
    image.header.set_data_dtype(volume.dtype)
    nib.save(image, path)
    return path


def write_case(root: Path, case_id: str = "BraTS2021_00001", *, shape=(8, 8, 4),
               images: dict[str, np.ndarray] | None = None, seg: np.ndarray | None = None,
               ext: str = ".nii.gz", skip: tuple[str, ...] = (), seg_name: str | None = None,
               affines: dict[str, np.ndarray] | None = None) -> Path:
    """Write one case folder; return it.

    Args:
        root: data folder (created if needed).
        case_id: folder name; its release decides the file names.
        shape: grid of every volume unless ``images`` / ``seg`` give their own arrays.
        images: modality -> volume; missing modalities get :func:`ramp` volumes.
        seg: label map (dtype kept); default all-zero ``uint8``.
        ext: ``".nii.gz"`` or ``".nii"``.
        skip: modalities (or ``"seg"``) not to write.
        seg_name: file name to use for the segmentation instead of the release's.
        affines: modality or ``"seg"`` -> affine; default identity.
    """
    release = detect_release(case_id)
    folder = Path(root) / case_id
    folder.mkdir(parents=True, exist_ok=True)
    images = images or {}
    affines = affines or {}
    for index, modality in enumerate(MODALITIES):
        if modality in skip:
            continue
        volume = images.get(modality, ramp(shape, offset=1 + 10 * index))
        write_nifti(folder / f"{release.file_stem(case_id, modality)}{ext}", volume,
                    affines.get(modality))
    if "seg" not in skip:
        volume = np.zeros(shape, np.uint8) if seg is None else seg
        name = seg_name or f"{release.file_stem(case_id, 'seg')}{ext}"
        write_nifti(folder / name, volume, affines.get("seg"))
    return folder


def write_tester_folder(root: Path, shape=(8, 8, 4)) -> Path:
    """The data folder a tester built (issue 11): eight BraTS-named case folders, three plain cases
    (``BraTS2021_00001..3``) and five odd ones:

    - ``BraTS2021_00004``: an empty folder;
    - ``BraTS2021_00005``: the case nested one level down (``BraTS2021_00005/BraTS2021_00005/*``);
    - ``BraTS2021_00006``: only ``BraTS2021_00006_flair.nii.gz.part`` (an unfinished download);
    - ``BraTS2021_00007``: a whole case whose files end in upper-case ``.NII.GZ``;
    - ``BraTS2021_00008``: a symbolic link to a folder that does not exist.

    Also a ``README.md`` and a ``notes/`` folder, which are not cases. Returns ``root``.
    """
    root = Path(root)
    for number in (1, 2, 3):
        write_case(root, f"BraTS2021_0000{number}", shape=shape)
    (root / "BraTS2021_00004").mkdir()
    write_case(root / "BraTS2021_00005", "BraTS2021_00005", shape=shape)
    (root / "BraTS2021_00006").mkdir()
    (root / "BraTS2021_00006" / "BraTS2021_00006_flair.nii.gz.part").write_bytes(b"\x1f\x8b partial")
    upper = write_case(root, "BraTS2021_00007", shape=shape)
    for path in sorted(upper.iterdir()):
        path.rename(path.with_name(path.name.replace(".nii.gz", ".NII.GZ")))
    (root / "BraTS2021_00008").symlink_to(root / "gone_BraTS2021_00008", target_is_directory=True)
    (root / "README.md").write_text("sample\n")
    (root / "notes").mkdir()
    return root
