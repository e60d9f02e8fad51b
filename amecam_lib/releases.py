"""The BraTS releases this project reads: folder names, file names, modality names, label sets.

One table, :data:`RELEASES`, maps each release's own spelling to the project's modality names
(``t1``, ``t1ce``, ``t2``, ``flair``, see :data:`amecam_lib.config.MODALITIES`) and lists the label
values its segmentations may hold. The whole tumour (WT) is ``seg > 0`` under every release.

=============  =========================================  ===================================  ==========
release        case folder (example)                      files (``<ID>`` = folder name)       labels
=============  =========================================  ===================================  ==========
BraTS 2018     ``Brats18_CBICA_AQN_1``                    ``<ID>_{t1,t1ce,t2,flair,seg}``      0, 1, 2, 4
BraTS 2019     ``BraTS19_2013_0_1``                       ``<ID>_{t1,t1ce,t2,flair,seg}``      0, 1, 2, 4
BraTS 2020     ``BraTS20_Training_001``                   ``<ID>_{t1,t1ce,t2,flair,seg}``      0, 1, 2, 4
BraTS 2021     ``BraTS2021_00006``                        ``<ID>_{t1,t1ce,t2,flair,seg}``      0, 1, 2, 4
BraTS 2023     ``BraTS-GLI-00000-000``                    ``<ID>-{t1n,t1c,t2w,t2f,seg}``       0, 1, 2, 3
=============  =========================================  ===================================  ==========

Every file may be ``.nii`` or ``.nii.gz`` (BraTS 2020 ships ``.nii``, the others ``.nii.gz``).
BraTS 2023 labels the enhancing tumour 3 where 2018-2021 use 4 (PITFALLS "Release conventions").

BraTS 2020 quirk: in the official training release, case ``BraTS20_Training_355`` ships its
segmentation as ``W39_1998.09.19_Segm.nii``. For releases with ``seg_fallback=True`` a case whose
standard segmentation name is missing may use exactly one other NIfTI file whose name contains
``seg`` (any case); :func:`amecam_lib.volumes.find_cases` warns with its name.

Sources: BraTS 2018-2021 and 2023 data descriptions (Menze et al. 2015, Bakas et al. 2017, 2018,
Baid et al. 2021; BraTS 2023 glioma challenge page).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
"""File endings accepted for every release (in any letter case: ``.NII.GZ`` too)."""


class BratsDataError(ValueError):
    """Bad input data: an unknown layout, a missing or inconsistent file, an unexpected label.

    Every message names the folder, case or file at fault. Command-line tools print it as one line.
    """


@dataclass(frozen=True)
class Release:
    """How one BraTS release names its cases and files, and which labels it uses.

    Attributes:
        name: short name, e.g. ``"BraTS 2021"``.
        folder_pattern: regular expression a case folder's name must match in full.
        separator: character between the case ID and the modality tag in a file name.
        modality_tags: project modality name -> the release's tag (``{"t1": "t1n", ...}``).
        seg_tag: tag of the segmentation file.
        labels: label values allowed in the segmentation (0 = background).
        seg_fallback: accept one other ``*seg*`` NIfTI when the standard segmentation name is
            missing (BraTS 2020, case 355).
    """

    name: str
    folder_pattern: str
    separator: str
    modality_tags: dict[str, str]
    seg_tag: str
    labels: frozenset[int]
    seg_fallback: bool = False

    def matches(self, folder_name: str) -> bool:
        """True when ``folder_name`` is a case folder of this release."""
        return re.fullmatch(self.folder_pattern, folder_name) is not None

    def file_stem(self, case_id: str, modality: str) -> str:
        """File name without extension of ``modality`` (a project modality name or ``"seg"``).

        Raises:
            BratsDataError: a modality this release does not have.
        """
        if modality == "seg":
            tag = self.seg_tag
        elif modality in self.modality_tags:
            tag = self.modality_tags[modality]
        else:
            raise BratsDataError(
                f"modality {modality!r} does not exist in {self.name}; "
                f"it has {', '.join(self.modality_tags)}")
        return f"{case_id}{self.separator}{tag}"


_CLASSIC_TAGS = {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"}
_LABELS_2018_2021 = frozenset({0, 1, 2, 4})

RELEASES: tuple[Release, ...] = (
    Release("BraTS 2018", r"Brats18_.+", "_", _CLASSIC_TAGS, "seg", _LABELS_2018_2021),
    Release("BraTS 2019", r"BraTS19_.+", "_", _CLASSIC_TAGS, "seg", _LABELS_2018_2021),
    Release("BraTS 2020", r"BraTS20_(Training|Validation)_\d+", "_", _CLASSIC_TAGS, "seg",
            _LABELS_2018_2021, seg_fallback=True),
    Release("BraTS 2021", r"BraTS2021_\d+", "_", _CLASSIC_TAGS, "seg", _LABELS_2018_2021),
    Release("BraTS 2023 glioma", r"BraTS-GLI-\d+-\d+", "-",
            {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}, "seg",
            frozenset({0, 1, 2, 3})),
)
"""Every supported release; the first whose ``folder_pattern`` matches a case folder wins."""

def detect_release(folder_name: str) -> Release:
    """Release of a case folder, from its name.

    Args:
        folder_name: the case folder's name (not a path), e.g. ``"BraTS2021_00006"``.

    Raises:
        BratsDataError: the name matches no release; the message shows one example per release.
    """
    for release in RELEASES:
        if release.matches(folder_name):
            return release
    examples = ("Brats18_CBICA_AQN_1, BraTS19_2013_0_1, BraTS20_Training_001, BraTS2021_00006, "
                "BraTS-GLI-00000-000")
    raise BratsDataError(
        f"case folder {folder_name!r} matches no known BraTS layout (BraTS 2018-2021, 2023 glioma); "
        f"expected names like {examples}")


def release_by_name(name: str) -> Release:
    """The release called ``name`` (as in :attr:`Release.name`, e.g. stored in ``case.json``).

    Raises:
        BratsDataError: an unknown name.
    """
    for release in RELEASES:
        if release.name == name:
            return release
    raise BratsDataError(f"unknown BraTS release {name!r}; known: {[r.name for r in RELEASES]}")


def strip_nifti_suffix(file_name: str) -> str | None:
    """File name without ``.nii`` / ``.nii.gz``, the ending matched in any letter case
    (``.NII.GZ``: archives made on case-insensitive file systems); ``None`` when it is not a NIfTI
    file."""
    for suffix in NIFTI_SUFFIXES:
        if file_name.lower().endswith(suffix) and len(file_name) > len(suffix):
            return file_name[: -len(suffix)]
    return None
