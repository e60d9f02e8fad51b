"""Finding, loading, validating and normalising cases (tiny synthetic NIfTI files)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from _synthetic import ramp, write_case, write_nifti, write_tester_folder
from amecam_lib.releases import BratsDataError
from amecam_lib.volumes import (UnreadableCasesError, find_cases, load_case, normalise_min_max,
                                read_whole_tumour_for_evaluation, scan_cases)

SHAPE = (6, 5, 3)


def one_case(tmp_path, **kwargs):
    write_case(tmp_path, kwargs.pop("case_id", "BraTS2021_00001"), shape=SHAPE, **kwargs)
    (case,) = find_cases(tmp_path)
    return case


@pytest.mark.parametrize("case_id, ext", [
    ("Brats18_CBICA_AAA_1", ".nii.gz"), ("BraTS19_2013_0_1", ".nii.gz"),
    ("BraTS20_Training_001", ".nii"), ("BraTS2021_00001", ".nii.gz"),
    ("BraTS-GLI-00001-000", ".nii.gz"), ("BraTS2021_00002", ".nii"),
])
def test_each_layout_is_found_and_loaded(tmp_path, case_id, ext):
    seg = np.zeros(SHAPE, np.uint8)
    seg[1, 1, 1] = 2
    write_case(tmp_path, case_id, shape=SHAPE, ext=ext, seg=seg)
    (case,) = find_cases(tmp_path)
    assert case.case_id == case_id and case.seg.name.endswith(ext)
    volumes = load_case(case)
    assert volumes.shape == SHAPE and volumes.affine.shape == (4, 4)
    assert set(volumes.images) == {"t1", "t1ce", "t2", "flair"}
    assert volumes.whole_tumour.sum() == 1


def test_cases_sorted_and_non_case_entries_ignored(tmp_path):
    write_case(tmp_path, "Brats18_TCIA01_425_1", shape=SHAPE)
    write_case(tmp_path, "BraTS2021_00006", shape=SHAPE)
    (tmp_path / "README.md").write_text("x")
    (tmp_path / "manifest.csv").write_text("a,b\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "x.txt").write_text("x")
    assert [c.case_id for c in find_cases(tmp_path)] == ["BraTS2021_00006", "Brats18_TCIA01_425_1"]


UNREADABLE = {"BraTS2021_00004": "empty folder",
              "BraTS2021_00005": "one level down, in BraTS2021_00005/",
              "BraTS2021_00006": r"only BraTS2021_00006_flair\.nii\.gz\.part \(an unfinished download\?\)",
              "BraTS2021_00008": "a symbolic link to .*gone_BraTS2021_00008, which does not exist"}


def test_folders_that_look_like_cases_but_cannot_be_read_are_each_named(tmp_path):
    """The tester's folder (issue 11) gave "TOTAL 3 cases" and no message: four of its eight
    BraTS-named folders cannot be read, and the upper-case .NII.GZ case was dropped too."""
    write_tester_folder(tmp_path)
    scan = scan_cases(tmp_path)
    assert [case.case_id for case in scan.cases] == ["BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003",
                                                      "BraTS2021_00007"]
    assert [entry.folder.name for entry in scan.unreadable] == list(UNREADABLE)
    for entry in scan.unreadable:
        assert re.search(UNREADABLE[entry.folder.name], entry.reason), entry
    with pytest.raises(UnreadableCasesError) as caught:
        find_cases(tmp_path)
    message = str(caught.value)
    assert "4 folder(s)" in message and "skip_unreadable=True" in message
    for name, reason in UNREADABLE.items():
        assert re.search(f"{name}: .*{reason}", message), name
    with pytest.warns(UserWarning, match=r"skipped 4 folder\(s\)(.|\n)*BraTS2021_00005: holds no"):
        cases = find_cases(tmp_path, skip_unreadable=True)
    assert [case.case_id for case in cases] == [case.case_id for case in scan.cases]


def test_upper_case_nifti_endings_are_read(tmp_path):
    """.NII.GZ is .nii.gz written on a case-insensitive file system: found and loaded alike."""
    folder = write_case(tmp_path, "BraTS2021_00001", shape=SHAPE)
    for path in sorted(folder.iterdir()):
        path.rename(path.with_name(path.name.replace(".nii.gz", ".NII.GZ")))
    (case,) = find_cases(tmp_path)
    assert case.images["flair"].name == "BraTS2021_00001_flair.NII.GZ"
    assert load_case(case, ["flair"]).shape == SHAPE
    write_nifti(folder / "BraTS2021_00001_t2.nii.gz", ramp(SHAPE))
    with pytest.raises(BratsDataError, match="both"):
        find_cases(tmp_path)


def test_every_unreadable_case_is_reported_not_only_the_first(tmp_path):
    write_case(tmp_path, "BraTS2021_00001", shape=SHAPE, skip=("t1ce",))
    write_case(tmp_path, "BraTS2021_00002", shape=SHAPE, skip=("seg",))
    write_case(tmp_path, "BraTS2021_00003", shape=SHAPE)
    (tmp_path / "BraTS2021_00003" / "BraTS2021_00003_t2.nii.gz").unlink()
    (tmp_path / "BraTS2021_00003" / "BraTS2021_00003_t2.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    with pytest.raises(UnreadableCasesError) as caught:
        find_cases(tmp_path)
    message = str(caught.value)
    assert "BraTS2021_00001_t1ce.nii.gz" in message and "BraTS2021_00002_seg.nii.gz" in message
    assert "BraTS2021_00003_t2.nii.gz is a symbolic link" in message
    with pytest.warns(UserWarning), pytest.raises(BratsDataError, match=r"no BraTS case.*3 unreadable"):
        find_cases(tmp_path, skip_unreadable=True)


def test_empty_or_missing_folder_is_an_error(tmp_path):
    with pytest.raises(BratsDataError, match="no BraTS case"):
        find_cases(tmp_path)
    with pytest.raises(BratsDataError, match="does not exist"):
        find_cases(tmp_path / "nope")


def test_nested_release_layout_gets_a_hint(tmp_path):
    write_case(tmp_path / "HGG", "Brats18_CBICA_AAA_1", shape=SHAPE)
    with pytest.raises(BratsDataError, match=r"one level down, in \['HGG'\]"):
        find_cases(tmp_path)
    assert len(find_cases(tmp_path / "HGG")) == 1


def test_unknown_layout_is_an_error(tmp_path):
    (tmp_path / "patient1").mkdir()
    write_nifti(tmp_path / "patient1" / "t1.nii.gz", ramp(SHAPE))
    with pytest.raises(BratsDataError, match="patient1.*matches no known BraTS layout"):
        find_cases(tmp_path)


def test_missing_modality_names_case_and_file(tmp_path):
    write_case(tmp_path, "BraTS2021_00001", shape=SHAPE, skip=("t1ce",))
    with pytest.raises(BratsDataError, match=r"BraTS2021_00001.*BraTS2021_00001_t1ce\.nii\.gz"):
        find_cases(tmp_path)


def test_missing_seg_names_expected_file(tmp_path):
    write_case(tmp_path, "BraTS-GLI-00001-000", shape=SHAPE, skip=("seg",))
    with pytest.raises(BratsDataError, match=r"BraTS-GLI-00001-000-seg\.nii\.gz"):
        find_cases(tmp_path)


def test_both_nii_and_nii_gz_is_an_error(tmp_path):
    folder = write_case(tmp_path, "BraTS2021_00001", shape=SHAPE)
    write_nifti(folder / "BraTS2021_00001_t2.nii", ramp(SHAPE))
    with pytest.raises(BratsDataError, match="both"):
        find_cases(tmp_path)


def test_brats2020_odd_seg_name_is_used_with_a_warning(tmp_path):
    seg = np.zeros(SHAPE, np.uint8)
    seg[0, 0, 0] = 4
    write_case(tmp_path, "BraTS20_Training_355", shape=SHAPE, ext=".nii", seg=seg,
               seg_name="W39_1998.09.19_Segm.nii")
    with pytest.warns(UserWarning, match="W39_1998.09.19_Segm.nii"):
        (case,) = find_cases(tmp_path)
    assert case.seg.name == "W39_1998.09.19_Segm.nii"
    assert load_case(case).whole_tumour.sum() == 1


def test_odd_seg_name_refused_outside_2020_and_when_ambiguous(tmp_path):
    write_case(tmp_path / "a", "BraTS2021_00001", shape=SHAPE, seg_name="other_seg.nii.gz")
    with pytest.raises(BratsDataError, match="BraTS2021_00001_seg"):
        find_cases(tmp_path / "a")
    folder = write_case(tmp_path / "b", "BraTS20_Training_001", shape=SHAPE, ext=".nii",
                        seg_name="x_seg.nii")
    write_nifti(folder / "y_Segm.nii", np.zeros(SHAPE, np.uint8))
    with pytest.raises(BratsDataError, match="several"):
        find_cases(tmp_path / "b")


def test_shape_mismatch_names_the_file(tmp_path):
    case = one_case(tmp_path, images={"t2": ramp((6, 5, 4))})
    with pytest.raises(BratsDataError, match=r"BraTS2021_00001_t2\.nii\.gz: shape"):
        load_case(case)


def test_affine_mismatch_names_the_file(tmp_path):
    shifted = np.eye(4)
    shifted[0, 3] = 1.0
    case = one_case(tmp_path, affines={"seg": shifted})
    with pytest.raises(BratsDataError, match=r"BraTS2021_00001_seg\.nii\.gz: affine"):
        load_case(case)


def test_nan_intensity_names_the_file(tmp_path):
    flair = ramp(SHAPE).astype(np.float32)
    flair[2, 2, 2] = np.nan
    case = one_case(tmp_path, images={"flair": flair})
    with pytest.raises(BratsDataError, match=r"^case BraTS2021_00001: .*_flair\.nii\.gz: NaN"):
        load_case(case, ["flair"])
    load_case(case, ["t1"])  # only the requested modalities are read


def test_truncated_gzip_names_the_file(tmp_path):
    case = one_case(tmp_path)
    data = case.images["t1"].read_bytes()
    case.images["t1"].write_bytes(data[: len(data) // 2])
    with pytest.raises(BratsDataError, match=r"BraTS2021_00001_t1\.nii\.gz"):
        load_case(case)


def test_garbage_file_names_the_file(tmp_path):
    case = one_case(tmp_path)
    case.images["t2"].write_bytes(gzip.compress(b"not a nifti at all" * 30))
    with pytest.raises(BratsDataError, match=r"BraTS2021_00001_t2\.nii\.gz"):
        load_case(case)


def test_label_3_is_an_error_in_2021_but_fine_in_2023(tmp_path):
    seg = np.zeros(SHAPE, np.uint8)
    seg[0, 0, 0], seg[1, 1, 1] = 3, 4
    case = one_case(tmp_path / "a", seg=seg)
    with pytest.raises(BratsDataError, match=r"BraTS2021_00001.*_seg\.nii\.gz.*\[3\]"):
        load_case(case)
    seg[1, 1, 1] = 2
    case = one_case(tmp_path / "b", case_id="BraTS-GLI-00001-000", seg=seg)
    assert load_case(case).whole_tumour.sum() == 2
    seg[1, 1, 1] = 4
    case = one_case(tmp_path / "c", case_id="BraTS-GLI-00002-000", seg=seg)
    with pytest.raises(BratsDataError, match=r"\[4\]"):
        load_case(case)


def test_negative_and_large_label_values_are_reported(tmp_path):
    seg = np.zeros(SHAPE, np.int16)
    seg[0, 0, 0], seg[0, 0, 1] = -1, 300
    case = one_case(tmp_path, seg=seg)
    with pytest.raises(BratsDataError, match=r"\[-1, 300\]"):
        load_case(case)


def test_int16_and_whole_float_segs_are_read_as_integers(tmp_path):
    seg = np.zeros(SHAPE, np.int16)
    seg[0, 0, 0] = 4
    volumes = load_case(one_case(tmp_path / "a", seg=seg))
    assert volumes.seg.dtype == np.uint8 and volumes.seg[0, 0, 0] == 4
    volumes = load_case(one_case(tmp_path / "b", seg=seg.astype(np.float32)))
    assert volumes.seg.dtype == np.uint8 and volumes.seg.sum() == 4


def test_non_integer_label_is_an_error(tmp_path):
    seg = np.zeros(SHAPE, np.float32)
    seg[0, 0, 0] = 0.5
    with pytest.raises(BratsDataError, match="non-integer"):
        load_case(one_case(tmp_path, seg=seg))


def test_unknown_modality_is_an_error(tmp_path):
    with pytest.raises(BratsDataError, match="'dwi'"):
        load_case(one_case(tmp_path), ["dwi"])


def test_min_max_per_volume_and_per_modality(tmp_path):
    t1 = np.zeros(SHAPE, np.int16)
    t1[0, 0, 0], t1[1, 0, 0] = 100, 50
    flair = np.full(SHAPE, -20, np.int16)
    flair[0, 0, 2] = 180
    volumes = load_case(one_case(tmp_path, images={"t1": t1, "flair": flair}), ["t1", "flair"])
    assert volumes.images["t1"].dtype == np.float32
    assert volumes.images["t1"][0, 0, 0] == 1.0 and volumes.images["t1"][1, 0, 0] == 0.5
    assert volumes.images["t1"][2, 2, 2] == 0.0
    assert volumes.images["flair"][0, 0, 2] == 1.0 and volumes.images["flair"][1, 1, 1] == 0.0


@pytest.mark.parametrize("value", [0, 7, -3])
def test_constant_volume_normalises_to_zeros(value):
    normalised = normalise_min_max(np.full((4, 4, 2), value, np.int16))
    assert normalised.dtype == np.float32
    assert not np.isnan(normalised).any() and (normalised == 0).all()


def test_constant_volume_in_a_case_gives_zeros(tmp_path):
    volumes = load_case(one_case(tmp_path, images={"t2": np.zeros(SHAPE, np.int16)}), ["t2"])
    assert (volumes.images["t2"] == 0).all()


def test_label_in_the_middle_of_a_small_span_is_reported(tmp_path):
    seg = np.zeros(SHAPE, np.uint8)
    seg[0, 0, 0], seg[0, 1, 0], seg[1, 1, 1] = 1, 3, 4  # 3 is not a BraTS 2021 label; 2 absent
    with pytest.raises(BratsDataError, match=r"unexpected label values \[3\]"):
        load_case(one_case(tmp_path, seg=seg))


def test_load_case_without_normalising_keeps_the_stored_values(tmp_path):
    t1 = np.zeros(SHAPE, np.int16)
    t1[0, 0, 0], t1[1, 0, 0] = 100, -50
    volumes = load_case(one_case(tmp_path, images={"t1": t1}), ["t1"], normalise=False)
    assert volumes.images["t1"].dtype == np.int16
    np.testing.assert_array_equal(volumes.images["t1"], t1)


def test_evaluation_reader_gives_whole_tumour_and_header_spacing(tmp_path):
    seg = np.zeros(SHAPE, np.uint8)
    seg[1, 1, 0], seg[2, 3, 1], seg[4, 4, 2] = 1, 2, 4
    affine = np.diag([1.0, 1.2, 2.5, 1.0])
    write_case(tmp_path, "BraTS2021_00001", shape=SHAPE, seg=seg,
               affines={name: affine for name in ("t1", "t1ce", "t2", "flair", "seg")})
    truth = read_whole_tumour_for_evaluation(tmp_path, "BraTS2021_00001")
    assert truth.whole_tumour.dtype == np.bool_ and truth.whole_tumour.shape == SHAPE
    np.testing.assert_array_equal(truth.whole_tumour, seg > 0)      # every label value is WT
    assert truth.voxel_spacing_mm == pytest.approx((1.0, 1.2, 2.5))
    np.testing.assert_allclose(truth.affine, affine)
    with pytest.raises(BratsDataError, match="BraTS2021_00009 not found"):
        read_whole_tumour_for_evaluation(tmp_path, "BraTS2021_00009")


def test_only_the_evaluation_reads_segmentations_for_scoring():
    """The reader of expert masks for scoring is called by the evaluation and nowhere else (no training phase)."""
    root = Path(__file__).resolve().parent.parent
    users = {str(path.relative_to(root)) for folder in ("amecam_lib", "data_scripts")
             for path in (root / folder).rglob("*.py") if "read_whole_tumour_for_evaluation" in path.read_text()}
    assert users == {"amecam_lib/volumes.py", "amecam_lib/evaluation.py"}
