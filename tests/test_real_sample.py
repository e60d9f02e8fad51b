"""One real BraTS case of the sample, sliced at 240 px; expected counts computed here from nibabel."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np

from amecam_lib.config import DataConfig
from amecam_lib.slicing import decode_images, slice_dataset

CASE = "Brats18_TCIA03_265_1"
OTHERS = ("Brats18_CBICA_AQN_1", "Brats18_TCIA02_370_1")  # a split needs three cases


def test_real_case_counts_match_an_independent_count(sample_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for case_id in (CASE, *OTHERS):
        (data / case_id).symlink_to(sample_dir / case_id, target_is_directory=True)
    config = DataConfig(modalities=("flair",), image_size=240, min_brain_fraction=0.05)
    report = slice_dataset(data, tmp_path / "run", config, workers=2, progress=False)

    # independent count, straight from the files
    seg = np.asanyarray(nib.load(sample_dir / CASE / f"{CASE}_seg.nii.gz").dataobj)
    flair = np.asanyarray(nib.load(sample_dir / CASE / f"{CASE}_flair.nii.gz").dataobj)
    tumour_pixels = (seg > 0).sum(axis=(0, 1))
    brain_pixels = (flair > flair.min()).sum(axis=(0, 1))
    kept = brain_pixels >= 0.05 * 240 * 240
    tumour = int(((tumour_pixels > 576) & kept).sum())
    ambiguous = int(((tumour_pixels > 0) & (tumour_pixels <= 576) & kept).sum())
    assert tumour_pixels.sum() == 60356  # the sample README's voxel count for this case

    (case_report,) = [c for c in report.cases if c.case_id == CASE]
    assert (case_report.slices, case_report.tumour, case_report.ambiguous, case_report.dropped) == (
        155, tumour, ambiguous, int((~kept).sum()))
    with open(tmp_path / "run" / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["case_id"] == CASE]
    assert [int(r["tumour_pixels"]) for r in rows] == tumour_pixels.tolist()
    assert [int(r["brain_pixels"]) for r in rows] == brain_pixels.tolist()
    assert [int(r["label"]) for r in rows] == (tumour_pixels > 576).astype(int).tolist()

    codes = np.load(tmp_path / "run" / "slices" / CASE / "flair.npy")
    wt = np.load(tmp_path / "run" / "slices" / CASE / "wt.npy")
    kept_z = np.flatnonzero(kept)
    assert codes.shape == (kept_z.size, 240, 240) and codes.dtype == np.uint16
    low, high = int(flair.min()), int(flair.max())
    assert flair.dtype == np.int16 and high - low <= 65535
    expected = (flair.astype(np.float64) - low) / (high - low)
    np.testing.assert_allclose(decode_images(codes), np.moveaxis(expected[:, :, kept_z], -1, 0),
                               rtol=0, atol=0.5 / 65535 + 1e-7)
    # lossless: the stored codes give back the int16 intensities exactly
    recovered = low + np.rint(codes.astype(np.float64) * (high - low) / 65535)
    np.testing.assert_array_equal(recovered, np.moveaxis(flair[:, :, kept_z], -1, 0))
    np.testing.assert_array_equal(wt, np.moveaxis(seg[:, :, kept_z] > 0, -1, 0))
