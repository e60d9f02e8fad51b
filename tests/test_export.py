"""Slice masks -> NIfTI volumes at the original grid and affine: round trip on tiny synthetic cases."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from _synthetic import write_case
from amecam_lib.config import DataConfig
from amecam_lib.export import case_mask_volume, export_case_masks, mask_file_name, upsample_nearest
from amecam_lib.slices import load_slices, read_case_info
from amecam_lib.slicing import slice_dataset

CASES = ["BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003"]
AFFINE = np.array([[-1.0, 0, 0, 90], [0, -1.0, 0, 126], [0, 0, 1.0, -72], [0, 0, 0, 1]])


def _sliced(tmp_path, grid: int, image_size: int):
    """Three cases of grid x grid x 5 voxels; tumour = 2x2-aligned blocks in slices 1-3, slice 4 no brain."""
    shape = (grid, grid, 5)
    segs = {}
    for index, case_id in enumerate(CASES):
        seg = np.zeros(shape, np.uint8)
        seg[2:8, 4:10, 1] = 1
        seg[4:6 + 2 * index, 2:6, 2] = 2
        seg[10:14, 8:12, 3] = 4
        flair = np.full(shape, 100, np.int16)
        flair[:, :, 4] = 0
        write_case(tmp_path / "data", case_id, shape=shape, seg=seg, images={"flair": flair},
                   affines={"flair": AFFINE, "seg": AFFINE, "t1": AFFINE, "t1ce": AFFINE, "t2": AFFINE})
        segs[case_id] = seg > 0
    config = DataConfig(modalities=("flair",), image_size=image_size, min_brain_fraction=0.05,
                        val_fraction=0.1, test_fraction=0.1)
    slice_dataset(tmp_path / "data", tmp_path / "run", config, progress=False)
    return tmp_path / "run", segs


@pytest.mark.parametrize("grid, image_size", [(16, 16), (16, 8)])
def test_round_trip_shape_affine_voxels(tmp_path, grid, image_size):
    run, segs = _sliced(tmp_path, grid, image_size)
    slices = load_slices(run, "flair", "all")
    paths = export_case_masks(run, "flair", "ame_cam_crf", slices.masks, slices.case_ids, slices.z)
    assert [p.name for p in paths] == [f"{c}_flair_ame_cam_crf.nii.gz" for c in CASES]
    assert all(p.parent == run / "masks" for p in paths)
    for case_id, path in zip(CASES, paths):
        image = nib.load(path)
        volume = np.asarray(image.dataobj)
        assert volume.shape == (grid, grid, 5) and volume.dtype == np.uint8
        np.testing.assert_allclose(image.affine, AFFINE)
        kept = read_case_info(run, case_id).z
        assert list(kept) == [0, 1, 2, 3]  # slice 4 has no brain: dropped by slicing
        # 2x2-aligned blocks survive nearest down- then up-sampling exactly
        np.testing.assert_array_equal(volume[:, :, kept] == 1, segs[case_id][:, :, kept])
        assert not volume[:, :, 4].any()


def test_only_given_slices_are_written(tmp_path):
    run, _ = _sliced(tmp_path, 16, 16)
    masks = np.ones((2, 16, 16), bool)
    paths = export_case_masks(run, "flair", "exit3", masks, [CASES[0], CASES[0]], [0, 3],
                              out_dir=tmp_path / "out")
    volume = np.asarray(nib.load(paths[0]).dataobj)
    assert paths == [tmp_path / "out" / f"{CASES[0]}_flair_exit3.nii.gz"]
    assert volume[:, :, [0, 3]].all() and not volume[:, :, [1, 2, 4]].any()


def test_two_modalities_export_side_by_side(tmp_path):
    """A second evaluation (another modality) into the same run folder must not overwrite the first's
    masks (issue 11: masks/<case>_ame_cam_crf.nii.gz was overwritten)."""
    run, _ = _sliced(tmp_path, 16, 16)
    flair = export_case_masks(run, "flair", "ame_cam_crf", np.ones((1, 16, 16), bool), [CASES[0]], [1])
    t1ce = export_case_masks(run, "t1ce", "ame_cam_crf", np.zeros((1, 16, 16), bool), [CASES[0]], [1])
    assert [p.name for p in flair + t1ce] == [mask_file_name(CASES[0], m, "ame_cam_crf") for m in ("flair", "t1ce")]
    assert flair[0].name == f"{CASES[0]}_flair_ame_cam_crf.nii.gz"
    assert np.asarray(nib.load(flair[0]).dataobj).sum() == 16 * 16
    assert np.asarray(nib.load(t1ce[0]).dataobj).sum() == 0
    with pytest.raises(ValueError, match="modality"):
        mask_file_name(CASES[0], "../flair", "ame_cam")


def test_exported_masks_copy_the_source_spatial_header(tmp_path):
    """Source files with qform code 1 (scanner) and sform code 4 (MNI), qform != sform, units mm / ms,
    2 mm voxels: the exported mask has the same codes, qform, sform (hence affine), pixdim and units
    (before: nibabel's defaults, qform code 0, sform code 2, units unknown)."""
    qform = np.array([[-2.0, 0, 0, 90], [0, -2.0, 0, 126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
    sform = qform.copy()
    sform[:3, 3] += [0.5, -0.25, 2.0]
    folders = [write_case(tmp_path / "data", case_id, shape=(16, 16, 5)) for case_id in CASES]
    folder = folders[0]
    for path in sorted(path for case_folder in folders for path in case_folder.glob("*.nii.gz")):
        source = nib.load(path)
        image = nib.Nifti1Image(np.asarray(source.dataobj), None, header=source.header)
        image.header.set_qform(qform, code=1)
        image.header.set_sform(sform, code=4)
        image.header.set_xyzt_units("mm", "msec")
        nib.save(image, path)
    slice_dataset(tmp_path / "data", tmp_path / "run", DataConfig(modalities=("flair",), image_size=8,
                  val_fraction=0.1, test_fraction=0.1), progress=False)
    source = nib.load(folder / f"{CASES[0]}_seg.nii.gz")
    path, = export_case_masks(tmp_path / "run", "flair", "ame_cam", np.ones((2, 8, 8), bool), [CASES[0]] * 2, [1, 3])
    exported = nib.load(path)
    header = exported.header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 4)
    np.testing.assert_allclose(header.get_qform(), qform, atol=1e-5)
    np.testing.assert_allclose(header.get_sform(), sform, atol=1e-5)
    np.testing.assert_allclose(exported.affine, source.affine, atol=1e-5)
    assert header.get_xyzt_units() == ("mm", "msec") and header.get_zooms() == (2.0, 2.0, 2.0)
    for name in ("pixdim", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "srow_x", "srow_z", "dim_info"):
        np.testing.assert_array_equal(header[name][:4] if name == "pixdim" else header[name],
                                      source.header[name][:4] if name == "pixdim" else source.header[name])
    assert header.get_data_dtype() == np.uint8 and exported.shape == (16, 16, 5)
    assert np.asarray(exported.dataobj)[:, :, [1, 3]].all()


def test_a_folder_sliced_before_the_header_was_stored_exports_with_its_affine(tmp_path):
    run, _ = _sliced(tmp_path, 16, 16)
    info_path = run / "slices" / CASES[0] / "case.json"
    info = json.loads(info_path.read_text())
    del info["spatial_header"]
    info_path.write_text(json.dumps(info))
    path, = export_case_masks(run, "flair", "m", np.zeros((1, 16, 16), bool), [CASES[0]], [1])
    np.testing.assert_allclose(nib.load(path).affine, AFFINE)


def test_bad_inputs(tmp_path):
    run, _ = _sliced(tmp_path, 16, 16)
    with pytest.raises(ValueError, match="agree"):
        export_case_masks(run, "flair", "m", np.zeros((2, 16, 16)), [CASES[0]], [0])
    with pytest.raises(ValueError, match="z outside"):
        export_case_masks(run, "flair", "m", np.zeros((1, 16, 16)), [CASES[0]], [7])
    with pytest.raises(ValueError, match="more than once"):
        export_case_masks(run, "flair", "m", np.zeros((2, 16, 16)), [CASES[0]] * 2, [1, 1])
    with pytest.raises(ValueError, match="px"):
        export_case_masks(run, "flair", "m", np.zeros((1, 8, 8)), [CASES[0]], [1])
    with pytest.raises(ValueError, match="file"):
        export_case_masks(run, "flair", "../x", np.zeros((1, 16, 16)), [CASES[0]], [1])


def test_upsample_nearest_by_hand():
    small = np.array([[[1, 0], [0, 1]]], bool)
    expected = np.array([[[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]], bool)
    np.testing.assert_array_equal(upsample_nearest(small, (4, 4)), expected)


def _sliced_crop(tmp_path, crop_zoom: float = 1.0):
    """Three cases on a 40 x 48 x 3 grid, brain rows 10..29, cols 12..35 (all z): a 16 x 20 crop
    window starts at row 10 + floor((20 - 16) / 2) = 12, col 12 + floor((24 - 20) / 2) = 14."""
    shape = (40, 48, 3)
    flair = np.zeros(shape, np.int16)
    flair[10:30, 12:36, :] = 100
    seg = np.zeros(shape, np.uint8)
    seg[14:18, 16:20, 1] = 1          # inside the window
    seg[10:12, 20:22, 2] = 2          # rows 10..11: above the window (cut)
    seg[20:22, 24:26, 2] = 4          # inside
    for case_id in CASES:
        write_case(tmp_path / "data", case_id, shape=shape, seg=seg, images={"flair": flair},
                   affines={"flair": AFFINE, "seg": AFFINE, "t1": AFFINE, "t1ce": AFFINE, "t2": AFFINE})
    config = DataConfig(modalities=("flair",), image_size=None, crop_size=(16, 20), crop_zoom=crop_zoom,
                        val_fraction=0.1, test_fraction=0.1)
    with pytest.warns(UserWarning, match="4 tumour voxel"):  # the brain (20 x 24) is larger than the window
        slice_dataset(tmp_path / "data", tmp_path / "run", config, progress=False)
    return tmp_path / "run", seg > 0


def test_a_pixel_goes_back_to_its_voxel_of_the_original_grid(tmp_path):
    run, _ = _sliced_crop(tmp_path)
    assert read_case_info(run, CASES[0]).crop_box == (12, 14, 16, 20)
    masks = np.zeros((1, 16, 20), bool)
    masks[0, 3, 17] = True                       # row 3, column 17 of the window
    paths = export_case_masks(run, "flair", "m", masks, [CASES[0]], [2])
    volume = np.asarray(nib.load(paths[0]).dataobj)
    assert volume.shape == (40, 48, 3)
    assert np.argwhere(volume).tolist() == [[12 + 3, 14 + 17, 2]]
    with pytest.raises(ValueError, match="px"):
        export_case_masks(run, "flair", "m", np.zeros((1, 20, 16), bool), [CASES[0]], [2])


def test_crop_round_trip_puts_zero_outside_the_window(tmp_path):
    run, truth = _sliced_crop(tmp_path)
    slices = load_slices(run, "flair", "all")
    paths = export_case_masks(run, "flair", "wt", slices.masks, slices.case_ids, slices.z)
    volume = np.asarray(nib.load(paths[0]).dataobj) == 1
    in_window = np.zeros_like(truth)
    in_window[12:28, 14:34, :] = True
    np.testing.assert_array_equal(volume, truth & in_window)
    assert truth[10:12].any() and not volume[10:12].any()  # the cut tumour: 0 on the original grid


def test_crop_with_zoom_round_trip(tmp_path):
    # zoom 0.5: 16 x 20 -> 8 x 10; the tumour blocks sit on even offsets of the window, so they
    # survive nearest down- and up-sampling exactly
    run, truth = _sliced_crop(tmp_path, crop_zoom=0.5)
    slices = load_slices(run, "flair", "all")
    assert slices.masks.shape[1:] == (8, 10)
    paths = export_case_masks(run, "flair", "wt", slices.masks, slices.case_ids, slices.z)
    volume = np.asarray(nib.load(paths[0]).dataobj) == 1
    in_window = np.zeros_like(truth)
    in_window[12:28, 14:34, :] = True
    np.testing.assert_array_equal(volume, truth & in_window)


def test_case_mask_volume_is_the_exported_volume_and_places_window_pixels(tmp_path):
    run, _ = _sliced_crop(tmp_path)
    info = read_case_info(run, CASES[0])
    masks = np.zeros((2, 16, 20), bool)
    masks[0, 3, 17] = True                       # window row 3, col 17 of slice z=2
    masks[1, 0, 0] = True                        # the window's corner on slice z=0
    volume = case_mask_volume(info, masks, [2, 0])
    assert volume.dtype == np.uint8 and volume.shape == info.original_shape
    assert np.argwhere(volume).tolist() == [[12 + 0, 14 + 0, 0], [12 + 3, 14 + 17, 2]]
    paths = export_case_masks(run, "flair", "m", masks, [CASES[0]] * 2, [2, 0])
    np.testing.assert_array_equal(np.asarray(nib.load(paths[0]).dataobj), volume)
    # no mask for a slice (dropped, or not evaluated): all zeros there; no mask at all: an empty volume
    assert not volume[:, :, 1].any()
    assert not case_mask_volume(info, np.zeros((0, 16, 20), bool), []).any()
    with pytest.raises(ValueError, match="agree"):
        case_mask_volume(info, masks, [2])
