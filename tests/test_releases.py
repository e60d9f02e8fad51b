"""The release table: folder names -> release, modality file names, label sets."""

from __future__ import annotations

import pytest

from amecam_lib.config import MODALITIES
from amecam_lib.releases import (RELEASES, BratsDataError, detect_release, release_by_name,
                                 strip_nifti_suffix)


@pytest.mark.parametrize("folder, release, flair_stem, labels", [
    ("Brats18_CBICA_AQN_1", "BraTS 2018", "Brats18_CBICA_AQN_1_flair", {0, 1, 2, 4}),
    ("Brats18_2013_3_1", "BraTS 2018", "Brats18_2013_3_1_flair", {0, 1, 2, 4}),
    ("BraTS19_TCIA01_131_1", "BraTS 2019", "BraTS19_TCIA01_131_1_flair", {0, 1, 2, 4}),
    ("BraTS20_Training_355", "BraTS 2020", "BraTS20_Training_355_flair", {0, 1, 2, 4}),
    ("BraTS2021_00006", "BraTS 2021", "BraTS2021_00006_flair", {0, 1, 2, 4}),
    ("BraTS-GLI-00000-000", "BraTS 2023 glioma", "BraTS-GLI-00000-000-t2f", {0, 1, 2, 3}),
])
def test_detect_release_names_files_and_labels(folder, release, flair_stem, labels):
    detected = detect_release(folder)
    assert detected.name == release
    assert detected.file_stem(folder, "flair") == flair_stem
    assert detected.labels == labels
    assert release_by_name(release) is detected


def test_2023_modality_tags_map_to_project_names():
    release = detect_release("BraTS-GLI-00001-000")
    stems = {m: release.file_stem("BraTS-GLI-00001-000", m) for m in (*MODALITIES, "seg")}
    assert stems == {"t1": "BraTS-GLI-00001-000-t1n", "t1ce": "BraTS-GLI-00001-000-t1c",
                     "t2": "BraTS-GLI-00001-000-t2w", "flair": "BraTS-GLI-00001-000-t2f",
                     "seg": "BraTS-GLI-00001-000-seg"}


def test_every_release_has_the_four_project_modalities():
    for release in RELEASES:
        assert tuple(release.modality_tags) == MODALITIES


@pytest.mark.parametrize("folder", ["patient_001", "BraTS2021", "BraTS20_Training_", "HGG", "Brats17_x"])
def test_unknown_folder_is_an_error_naming_it(folder):
    with pytest.raises(BratsDataError, match=folder):
        detect_release(folder)


def test_modality_the_release_lacks_is_an_error():
    with pytest.raises(BratsDataError, match="dwi"):
        detect_release("BraTS2021_00001").file_stem("BraTS2021_00001", "dwi")


def test_strip_nifti_suffix():
    assert strip_nifti_suffix("a_t1.nii.gz") == "a_t1"
    assert strip_nifti_suffix("a_t1.nii") == "a_t1"
    assert strip_nifti_suffix("README.md") is None
    assert strip_nifti_suffix(".nii") is None
