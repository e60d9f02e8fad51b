"""Slicing: the label rule, dropped slices, storage, resizing, reruns (synthetic cases)."""

from __future__ import annotations

import csv
import json
import os
import re
import warnings

import numpy as np
import pytest

from _synthetic import ramp, write_case, write_tester_folder
from amecam_lib import slicing
from amecam_lib.config import DataConfig
from amecam_lib.releases import BratsDataError
from amecam_lib.slicing import (MANIFEST_COLUMNS, SLICE_FORMAT, decode_images, encode_unit_images,
                                image_codes, label_slices, resize_images, resize_masks,
                                slice_dataset)

CASES = ["BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003"]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def small_dataset(root, shape=(20, 20, 4), n_cases=3):
    """Three cases; case k has a tumour of (k + 1) * 10 px in slice 1, and no brain in slice 3."""
    for index, case_id in enumerate(CASES[:n_cases]):
        seg = np.zeros(shape, np.uint8)
        seg.reshape(-1, shape[2])[: (index + 1) * 10, 1] = 2
        images = {m: ramp(shape) for m in ("t1", "t1ce", "t2", "flair")}
        for volume in images.values():
            volume[:, :, 3] = 0
        write_case(root, case_id, shape=shape, seg=seg, images=images)
    return root


def config(**changes):
    base = dict(modalities=("flair",), image_size=20, tumour_fraction=0.01, min_brain_fraction=0.0,
                val_fraction=0.1, test_fraction=0.1, seed=0)
    return DataConfig(**{**base, **changes})


def test_label_rule_at_the_576_pixel_boundary_on_240x240(tmp_path):
    shape = (240, 240, 4)
    seg = np.zeros(shape, np.uint8)
    flat = seg.reshape(-1, shape[2])
    flat[:576, 0] = 1   # exactly 1 % of 57,600 px -> not tumour, ambiguous
    flat[:577, 1] = 2   # one pixel more -> tumour
    flat[:1, 2] = 4     # a single pixel -> ambiguous
    for case_id in CASES:
        write_case(tmp_path / "data", case_id, shape=shape, seg=seg)
    slice_dataset(tmp_path / "data", tmp_path / "run", config(image_size=240), progress=False)
    rows = [r for r in read_csv(tmp_path / "run" / "manifest.csv") if r["case_id"] == CASES[0]]
    assert [int(r["tumour_pixels"]) for r in rows] == [576, 577, 1, 0]
    assert [int(r["label"]) for r in rows] == [0, 1, 0, 0]
    assert [int(r["ambiguous"]) for r in rows] == [1, 0, 1, 0]


def test_label_slices_with_other_fractions():
    labels, ambiguous = label_slices(np.array([0, 5, 6, 100]), slice_pixels=100, tumour_fraction=0.05)
    assert labels.tolist() == [0, 0, 1, 1] and labels.dtype == np.int64
    assert ambiguous.tolist() == [False, True, False, False]
    labels, ambiguous = label_slices(np.array([0, 1]), slice_pixels=100, tumour_fraction=0.0)
    assert labels.tolist() == [0, 1] and not ambiguous.any()


def test_manifest_storage_and_report(tmp_path):
    small_dataset(tmp_path / "data")
    report = slice_dataset(tmp_path / "data", tmp_path / "run", config(min_brain_fraction=0.05),
                           progress=False)
    run = tmp_path / "run"
    rows = read_csv(run / "manifest.csv")
    assert tuple(rows[0]) == MANIFEST_COLUMNS and len(rows) == 3 * 4
    case3 = [r for r in rows if r["case_id"] == CASES[2]]
    # 30 px of tumour in a 400 px slice (> 1 % = 4 px) -> tumour; slice 3 has no brain -> dropped
    assert [r["label"] for r in case3] == ["0", "1", "0", "0"]
    assert [r["kept"] for r in case3] == ["1", "1", "1", "0"]
    assert [r["row"] for r in case3] == ["0", "1", "2", "-1"]
    assert case3[3]["reason"].startswith("brain area < 0.05") and case3[0]["reason"] == ""
    assert [r["brain_pixels"] for r in case3] == ["400", "400", "400", "0"]
    split = dict(csv.reader((run / "split.csv").open()))
    assert {r["split"] for r in case3} == {split[CASES[2]]}

    codes = np.load(run / "slices" / CASES[2] / "flair.npy")
    wt = np.load(run / "slices" / CASES[2] / "wt.npy")
    assert codes.shape == (3, 20, 20) and codes.dtype == np.uint16
    assert wt.shape == (3, 20, 20) and wt.dtype == bool and wt[1].sum() == 30 and wt.sum() == 30
    raw = ramp((20, 20, 4)).astype(np.float64)
    raw[:, :, 3] = 0  # the emptied slice holds the volume's minimum
    expected = np.moveaxis(raw[:, :, :3], -1, 0) / raw.max()
    # codes are round(v * 65535): here raw values 1..500 over a range of 500
    np.testing.assert_array_equal(codes, np.rint(expected * 65535).astype(np.uint16))
    np.testing.assert_allclose(decode_images(codes), expected, rtol=0, atol=0.5 / 65535 + 1e-7)
    info = json.loads((run / "slices" / CASES[2] / "case.json").read_text())
    assert info["z"] == [0, 1, 2] and info["original_shape"] == [20, 20, 4]
    assert info["settings"]["format"] == SLICE_FORMAT == 3
    assert info["image_shape"] == [20, 20] and info["crop_box"] is None
    assert info["brain_box"] == {"row0": 0, "col0": 0, "height": 20, "width": 20}
    assert info["release"] == "BraTS 2021" and np.allclose(info["affine"], np.eye(4))

    counts = {c.case_id: (c.slices, c.tumour, c.normal, c.ambiguous, c.dropped) for c in report.cases}
    assert counts[CASES[2]] == (4, 1, 2, 0, 1)
    assert report.totals()["dropped"] == 3 and report.no_tumour_cases == []
    assert "TOTAL" in report.table() and report.cases_per_second > 0


def test_case_without_tumour_is_counted(tmp_path):
    for case_id in CASES:
        write_case(tmp_path / "data", case_id, shape=(10, 10, 2))
    report = slice_dataset(tmp_path / "data", tmp_path / "run", config(image_size=10), progress=False)
    assert report.no_tumour_cases == CASES
    assert "cases without a tumour slice: " + ", ".join(CASES) in report.table()


def test_case_with_a_blank_volume_keeps_no_slice_and_is_named(tmp_path):
    """An all-zero FLAIR (tumour in its seg): every slice is dropped for too little brain. It was
    listed only as a case "without a tumour slice"; now a warning and the table name it."""
    small_dataset(tmp_path / "data")
    blank = np.zeros((20, 20, 4), np.int16)
    write_case(tmp_path / "data", CASES[1], shape=(20, 20, 4), images={"flair": blank},
               seg=np.full((20, 20, 4), 2, np.uint8))
    with pytest.warns(UserWarning, match=rf"case {CASES[1]}: no slice kept: every one of its 4 slices "
                                         r"has brain .* in flair\) on less than min_brain_fraction=0.05"):
        report = slice_dataset(tmp_path / "data", tmp_path / "run", config(min_brain_fraction=0.05),
                               progress=False)
    assert report.no_slice_cases == [CASES[1]]
    assert f"NO SLICE KEPT of 1 case(s), every slice dropped for too little brain (a blank or constant " \
           f"volume?): {CASES[1]}" in report.table()
    counts = {c.case_id: (c.tumour, c.normal, c.ambiguous, c.dropped) for c in report.cases}
    assert counts[CASES[1]] == (0, 0, 0, 4) and counts[CASES[0]][3] == 1    # the others: slice 3 only


def test_resize_images_bilinear_and_mask_nearest(tmp_path):
    shape = (32, 32, 2)
    seg = np.zeros(shape, np.uint8)
    seg[:16, :16, 0] = 1
    flair = np.zeros(shape, np.int16)
    flair[:, :16, :] = 100
    for case_id in CASES:
        write_case(tmp_path / "data", case_id, shape=shape, seg=seg, images={"flair": flair})
    slice_dataset(tmp_path / "data", tmp_path / "run", config(image_size=16), progress=False)
    wt = np.load(tmp_path / "run" / "slices" / CASES[0] / "wt.npy")
    image = decode_images(np.load(tmp_path / "run" / "slices" / CASES[0] / "flair.npy"))
    expected = np.zeros((16, 16), bool)
    expected[:8, :8] = True
    assert wt.shape == (2, 16, 16) and (wt[0] == expected).all() and not wt[1].any()
    assert image.dtype == np.float32 and image.min() >= 0 and image.max() <= 1
    np.testing.assert_array_equal(image[0, :, :7], 1.0)  # code 65535 decodes to exactly 1.0
    np.testing.assert_array_equal(image[0, :, 9:], 0.0)
    assert 0 < image[0, 0, 7] < 1 or 0 < image[0, 0, 8] < 1  # a blended edge column


def test_parallel_workers_give_the_same_result(tmp_path):
    small_dataset(tmp_path / "data")
    slice_dataset(tmp_path / "data", tmp_path / "one", config(), workers=1, progress=False)
    slice_dataset(tmp_path / "data", tmp_path / "two", config(), workers=2, progress=False)
    assert (tmp_path / "one" / "manifest.csv").read_text() == (tmp_path / "two" / "manifest.csv").read_text()
    for case_id in CASES:
        np.testing.assert_array_equal(np.load(tmp_path / "one" / "slices" / case_id / "flair.npy"),
                                      np.load(tmp_path / "two" / "slices" / case_id / "flair.npy"))


def test_rerun_skips_redoes_and_cleans(tmp_path):
    small_dataset(tmp_path / "data")
    run = tmp_path / "run"
    slice_dataset(tmp_path / "data", run, config(), progress=False)
    flair = run / "slices" / CASES[0] / "flair.npy"
    stamp = flair.stat().st_mtime_ns
    # a killed run leaves a hidden temporary folder: ignored, then cleaned
    leftover = run / "slices" / f".{CASES[1]}.tmp-killed"
    leftover.mkdir()
    (leftover / "flair.npy").write_bytes(b"half")
    manifest_before = (run / "manifest.csv").read_text()
    report = slice_dataset(tmp_path / "data", run, config(), progress=False)
    assert all(case.reused for case in report.cases)
    assert flair.stat().st_mtime_ns == stamp and not leftover.exists()
    assert (run / "manifest.csv").read_text() == manifest_before

    # another geometry would delete the slices: refused (see test_run_folder_conflicts_...)
    with pytest.raises(slicing.RunFolderConflict, match="image_size 20 \\(requested 10\\)"):
        slice_dataset(tmp_path / "data", run, config(image_size=10), progress=False)
    assert flair.stat().st_mtime_ns == stamp
    report = slice_dataset(tmp_path / "data", run, config(image_size=10), overwrite=True,
                           progress=False)
    assert not any(case.reused for case in report.cases)
    assert np.load(flair).shape == (4, 10, 10)
    # a changed source file is redone too, saying why
    write_case(tmp_path / "data", CASES[0], shape=(20, 20, 5))
    with pytest.warns(UserWarning, match=f"{CASES[0]}: the content of its source file.*changed"):
        report = slice_dataset(tmp_path / "data", run, config(image_size=10), progress=False)
    assert [case.reused for case in report.cases] == [False, True, True]
    assert np.load(flair).shape == (5, 10, 10)


def test_a_source_replaced_by_another_of_the_same_size_and_time_is_redone(tmp_path):
    """Reuse is decided by content: a flair file swapped for another volume of the same shape and
    type (so the same byte count, uncompressed .nii) with its modification time put back was
    reused before (sizes compared); its sha256 differs, so the case is redone and says why."""
    shape = (20, 20, 4)
    for case_id in CASES:
        write_case(tmp_path / "data", case_id, shape=shape, ext=".nii")
    run = tmp_path / "run"
    slice_dataset(tmp_path / "data", run, config(), progress=False)
    info = json.loads((run / "slices" / CASES[0] / "case.json").read_text())
    path = tmp_path / "data" / CASES[0] / f"{CASES[0]}_flair.nii"
    assert info["sources"]["flair"] == {"file": path.name, "bytes": path.stat().st_size,
                                        "sha256": slicing.file_sha256(path)}
    before = path.stat()
    old_images = np.load(run / "slices" / CASES[0] / "flair.npy")
    write_case(tmp_path / "data", CASES[0], shape=shape, ext=".nii", images={"flair": ramp(shape, offset=7)[::-1].copy()})
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.warns(UserWarning, match=f"{CASES[0]}: the content of its source file\\(s\\) changed \\(flair"):
        report = slice_dataset(tmp_path / "data", run, config(), progress=False)
    assert [case.reused for case in report.cases] == [False, True, True]
    assert not np.array_equal(np.load(run / "slices" / CASES[0] / "flair.npy"), old_images)
    report = slice_dataset(tmp_path / "data", run, config(), progress=False)
    assert all(case.reused for case in report.cases)                    # unchanged content: reused


def test_a_folder_without_source_hashes_is_redone(tmp_path):
    small_dataset(tmp_path / "data")
    run = tmp_path / "run"
    slice_dataset(tmp_path / "data", run, config(), progress=False)
    info_path = run / "slices" / CASES[1] / "case.json"
    info = json.loads(info_path.read_text())
    info["sources"] = {name: {k: v for k, v in entry.items() if k != "sha256"} for name, entry in info["sources"].items()}
    info_path.write_text(json.dumps(info))
    with pytest.warns(UserWarning, match=f"{CASES[1]}: its case.json records no content hash"):
        report = slice_dataset(tmp_path / "data", run, config(), progress=False)
    assert [case.reused for case in report.cases] == [True, False, True]


def test_failure_mid_case_leaves_no_partial_folder(tmp_path, monkeypatch):
    small_dataset(tmp_path / "data")
    saved = []

    def failing_save(path, array):
        saved.append(path)
        if len(saved) == 2:
            raise OSError("disk full")
        with open(path, "wb") as handle:
            np.lib.format.write_array(handle, np.asanyarray(array))

    monkeypatch.setattr(slicing.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        slice_dataset(tmp_path / "data", tmp_path / "run", config(modalities=("flair", "t1")),
                      progress=False)
    monkeypatch.undo()
    assert list((tmp_path / "run" / "slices").iterdir()) == []
    assert not (tmp_path / "run" / "manifest.csv").exists()


def test_user_split_file_sets_the_manifest_split(tmp_path):
    small_dataset(tmp_path / "data")
    split_file = tmp_path / "mine.csv"
    split_file.write_text(f"case_id,split\n{CASES[0]},val\n{CASES[1]},test\n{CASES[2]},train\n")
    slice_dataset(tmp_path / "data", tmp_path / "run", config(), split_file=split_file, progress=False)
    rows = read_csv(tmp_path / "run" / "manifest.csv")
    assert {(r["case_id"], r["split"]) for r in rows} == {(CASES[0], "val"), (CASES[1], "test"),
                                                           (CASES[2], "train")}
    bad = tmp_path / "bad.csv"
    bad.write_text(f"case_id,split\n{CASES[0]},val\n{CASES[1]},test\n")
    with pytest.raises(BratsDataError, match="no split for case"):
        slice_dataset(tmp_path / "data", tmp_path / "run2", config(), split_file=bad, progress=False)


@pytest.mark.parametrize("changes, message", [
    ({"modalities": ("dwi",)}, "modalities"), ({"modalities": ()}, "modalities"),
    ({"image_size": 0}, "image_size"), ({"tumour_fraction": 1.5}, "tumour_fraction"),
    ({"min_brain_fraction": -0.1}, "min_brain_fraction"),
])
def test_bad_settings_are_errors(tmp_path, changes, message):
    small_dataset(tmp_path / "data", n_cases=3)
    with pytest.raises(BratsDataError, match=message):
        slice_dataset(tmp_path / "data", tmp_path / "run", config(**changes), progress=False)


def test_empty_data_folder_is_an_error(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(BratsDataError, match="no BraTS case"):
        slice_dataset(tmp_path / "data", tmp_path / "run", config(), progress=False)


TESTER_UNREADABLE = ["BraTS2021_00004", "BraTS2021_00005", "BraTS2021_00006", "BraTS2021_00008"]


def test_unreadable_case_folders_stop_the_run_unless_skipped(tmp_path):
    """The tester's folder (issue 11) sliced "TOTAL 3 cases" with no message. Now nothing is written
    and each unreadable folder is named; skip_unreadable slices the four readable cases (the
    upper-case .NII.GZ one included), warns, and the report lists the skipped folders."""
    from amecam_lib.volumes import UnreadableCasesError

    write_tester_folder(tmp_path / "data", shape=(20, 20, 4))
    with pytest.raises(UnreadableCasesError) as caught:
        slice_dataset(tmp_path / "data", tmp_path / "run", config(), progress=False)
    assert all(name in str(caught.value) for name in TESTER_UNREADABLE)
    assert not (tmp_path / "run").exists()
    with pytest.warns(UserWarning, match="skipped 4 folder"):
        report = slice_dataset(tmp_path / "data", tmp_path / "run", config(), skip_unreadable=True, progress=False)
    assert [case.case_id for case in report.cases] == ["BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003",
                                                        "BraTS2021_00007"]
    assert [entry.folder.name for entry in report.skipped] == TESTER_UNREADABLE
    table = report.table()
    assert re.search(r"TOTAL +4 cases", table) and "SKIPPED 4 unreadable case folder(s)" in table
    assert all(f"skipped {name}: " in table for name in TESTER_UNREADABLE)
    assert sorted(row["case_id"] for row in read_csv(tmp_path / "run" / "split.csv")) == \
        [case.case_id for case in report.cases]


def test_cli_names_unreadable_folders_and_skips_them_when_told(tmp_path, capsys):
    cli = load_cli()
    write_tester_folder(tmp_path / "data", shape=(20, 20, 4))
    base = ["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--image-size", "20",
            "--min-brain-fraction", "0", "--no-progress"]
    assert cli.main(base) == 2
    captured = capsys.readouterr()
    assert "4 folder(s)" in captured.err and all(name in captured.err for name in TESTER_UNREADABLE)
    assert "--skip-unreadable" in captured.err and "Traceback" not in captured.err
    assert cli.main([*base, "--skip-unreadable"]) == 0
    captured = capsys.readouterr()
    assert "slice_brats: warning: skipped 4 folder(s)" in captured.err
    assert re.search(r"TOTAL +4 cases", captured.out) and all(f"skipped {name}: " in captured.out for name in TESTER_UNREADABLE)


def load_cli():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "data_scripts" / "slice_brats.py"
    spec = importlib.util.spec_from_file_location("slice_brats", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_prints_the_table_and_fails_in_one_line(tmp_path, capsys):
    cli = load_cli()
    small_dataset(tmp_path / "data")
    status = cli.main(["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                       "--modalities", "flair", "t2", "--image-size", "20", "--seed", "1",
                       "--no-progress"])
    assert status == 0
    output = capsys.readouterr().out
    assert "TOTAL" in output and CASES[0] in output
    assert (tmp_path / "run" / "slices" / CASES[0] / "t2.npy").is_file()
    status = cli.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run2")])
    captured = capsys.readouterr()
    assert status == 2 and captured.err.count("\n") == 1 and "nowhere" in captured.err
    assert "Traceback" not in captured.err


def test_resize_matches_torch_antialiased_bilinear_and_nearest_exact():
    import torch
    from torch.nn.functional import interpolate

    from amecam_lib.slicing import resize_images, resize_masks

    rng = np.random.default_rng(0)
    images = rng.random((3, 40, 40)).astype(np.float32)
    masks = rng.random((3, 40, 40)) > 0.6
    for size in (16, 24, 40):
        expected = interpolate(torch.from_numpy(images)[:, None], size=(size, size), mode="bilinear",
                               align_corners=False, antialias=True)[:, 0].numpy()
        np.testing.assert_allclose(resize_images(images, size), expected, atol=1e-5)
        expected_masks = interpolate(torch.from_numpy(masks.astype(np.float32))[:, None],
                                     size=(size, size), mode="nearest-exact")[:, 0].numpy() > 0.5
        np.testing.assert_array_equal(resize_masks(masks, size), expected_masks)
    assert resize_images(images[:0], 8).shape == (0, 8, 8)


# --- storage: uint16 codes -------------------------------------------------------------------


def normalised(volume):
    """Reference min-max normalisation in float64, as (Z, X, Y) slices."""
    volume = np.moveaxis(volume.astype(np.float64), -1, 0)
    return (volume - volume.min()) / (volume.max() - volume.min())


@pytest.mark.parametrize("value_range, low", [(65535, -32768), (64999, -32768), (65534, -32767),
                                              (809, 3)])
def test_int16_codes_are_lossless_at_the_native_grid(value_range, low):
    # ranges of 65535 (all of int16: the identity map), just below it (where rounding through
    # float32 would merge neighbouring values), and a BraTS-like one
    rng = np.random.default_rng(1)
    values = rng.integers(0, value_range + 1, size=(10, 10, 6))
    values[0, 0, 0], values[-1, -1, -1] = 0, value_range
    volume = np.asfortranarray((values + low).astype(np.int16))  # NIfTI order, as nibabel reads
    z = np.array([4, 0, 5])
    codes = image_codes(volume, z, 10)
    reference = normalised(volume)[z]
    assert codes.dtype == np.uint16 and codes.shape == (3, 10, 10)
    np.testing.assert_array_equal(codes, np.rint(reference * 65535))
    decoded = decode_images(codes)
    assert decoded.dtype == np.float32 and decoded.min() >= 0 and decoded.max() <= 1
    np.testing.assert_allclose(decoded, reference, rtol=0, atol=0.5 / 65535 + 1e-7)
    # the raw int16 values come back exactly through the affine map code -> min + code * range / 65535
    recovered = low + np.rint(codes.astype(np.float64) * value_range / 65535)
    np.testing.assert_array_equal(recovered, np.moveaxis(volume, -1, 0)[z])
    assert np.unique(codes).size == np.unique(volume[:, :, z]).size  # no two raw values merged


def test_a_range_wider_than_65535_loses_less_than_half_a_step():
    # int32 data spanning 0 .. 200,000: three raw units per code step; error <= half a step
    volume = np.zeros((6, 6, 2), np.int32)
    volume.flat[:] = np.linspace(0, 200_000, volume.size).round()
    volume[0, 1, 0] = 1
    codes = image_codes(volume, np.array([0, 1]), 6)
    reference = normalised(volume)
    assert codes[0, 0, 0] == codes[0, 0, 1] == 0  # raw 0 and 1 share a code: no longer lossless
    error = np.abs(codes / 65535 - reference)
    assert error.max() <= 0.5 / 65535 + 1e-12
    raw_error = np.abs(codes * (200_000 / 65535) - np.moveaxis(volume, -1, 0))
    assert raw_error.max() <= 0.5 * 200_000 / 65535 + 1e-9 and raw_error.max() > 0.5


def test_codes_of_float_big_endian_and_constant_volumes():
    volume = np.arange(2 * 2 * 3, dtype=np.float64).reshape(2, 2, 3) / 7
    np.testing.assert_array_equal(image_codes(volume, np.arange(3), 2),
                                  np.rint(normalised(volume) * 65535))
    big_endian = np.arange(2 * 2 * 3, dtype=">i2").reshape(2, 2, 3)
    np.testing.assert_array_equal(image_codes(big_endian, np.arange(3), 2),
                                  image_codes(big_endian.astype(np.int16), np.arange(3), 2))
    assert not image_codes(np.full((4, 4, 2), 7, np.int16), np.arange(2), 4).any()
    assert image_codes(volume, np.array([], int), 2).shape == (0, 2, 2)


def test_encode_and_decode_bounds():
    values = np.array([0.0, 0.5 / 65535, 1 / 65535, 0.5, 1.0], np.float32)
    codes = encode_unit_images(values)
    assert codes.tolist() == [0, 0, 1, 32768, 65535]  # 0.5 -> 32767.5 -> even 32768
    assert decode_images(codes)[-1] == 1.0 and decode_images(codes)[0] == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode_unit_images(np.array([1.5]))
    with pytest.raises(BratsDataError, match="older format"):
        decode_images(np.zeros(3, np.float32), "old/flair.npy")


def test_resize_masks_is_pixel_centre_nearest():
    masks = np.zeros((1, 6, 6), bool)
    masks[0, 1, 4] = True
    # 6 -> 3: output pixel o samples input floor((o + 0.5) * 2) = 1, 3, 5
    assert resize_masks(masks, 3)[0].tolist() == [[False, False, False]] * 3
    masks[0, 1, 3] = True
    assert np.argwhere(resize_masks(masks, 3)[0]).tolist() == [[0, 1]]
    # 2 -> 5: floor((o + 0.5) * 0.4) = 0, 0, 1, 1, 1
    small = np.array([[[True, False], [False, False]]])
    assert resize_masks(small, 5)[0, :, 0].tolist() == [True, True, False, False, False]


def test_old_float32_folder_is_resliced_not_misread(tmp_path):
    small_dataset(tmp_path / "data")
    run = tmp_path / "run"
    slice_dataset(tmp_path / "data", run, config(), progress=False)
    # turn one case into a format-1 folder: float32 images, format 1 in case.json
    folder = run / "slices" / CASES[0]
    old_images = decode_images(np.load(folder / "flair.npy"))
    np.save(folder / "flair.npy", old_images)
    info = json.loads((folder / "case.json").read_text())
    info["settings"]["format"] = 1
    (folder / "case.json").write_text(json.dumps(info))
    import torch

    from amecam_lib.slices import SliceDataset, load_slices

    split = next(r["split"] for r in read_csv(run / "manifest.csv") if r["case_id"] == CASES[0])
    with pytest.raises(BratsDataError, match="older format"):
        load_slices(run, "flair", split)
    with pytest.warns(UserWarning, match="stored in slice format 1 \\(now"):
        report = slice_dataset(tmp_path / "data", run, config(), progress=False)
    assert [case.reused for case in report.cases] == [False, True, True]
    assert np.load(folder / "flair.npy").dtype == np.uint16
    image, _ = SliceDataset.from_run(run, "flair", split)[0]
    assert image.dtype == torch.float32 and float(image.max()) <= 1.0


def _killed_worker(task):
    os._exit(1)  # what an out-of-memory kill looks like to the parent: the worker vanishes


def test_a_killed_worker_fails_the_run_instead_of_hanging(tmp_path, monkeypatch):
    small_dataset(tmp_path / "data")
    monkeypatch.setattr(slicing, "_slice_case", _killed_worker)  # inherited by forked workers
    with pytest.raises(RuntimeError, match="worker process died"):
        slice_dataset(tmp_path / "data", tmp_path / "run", config(), workers=2, progress=False)


def test_resized_codes_match_resizing_the_normalised_slices():
    # resampling raw values then normalising == normalising then resampling (weights sum to 1)
    rng = np.random.default_rng(2)
    volume = np.asfortranarray(rng.integers(-200, 3000, size=(40, 40, 5)).astype(np.int16))
    z = np.array([1, 3, 4])
    codes = image_codes(volume, z, 24)
    reference = resize_images(normalised(volume)[z].astype(np.float32), 24)
    assert codes.shape == (3, 24, 24) and codes.dtype == np.uint16
    np.testing.assert_allclose(decode_images(codes), reference, rtol=0, atol=0.5 / 65535 + 1e-6)


def test_rerun_redoes_cases_whose_npy_files_are_missing_truncated_or_reshaped(tmp_path):
    small_dataset(tmp_path / "data")
    run = tmp_path / "run"
    slice_dataset(tmp_path / "data", run, config(modalities=("flair", "t1")), progress=False)
    originals = {case_id: np.load(run / "slices" / case_id / "t1.npy") for case_id in CASES}
    (run / "slices" / CASES[0] / "t1.npy").unlink()
    wt = run / "slices" / CASES[1] / "wt.npy"
    wt.write_bytes(wt.read_bytes()[:-50])  # truncated: header intact, data short
    np.save(run / "slices" / CASES[2] / "t1.npy", np.zeros((2, 20, 20), np.uint16))  # 2 != 4 rows
    with pytest.warns(UserWarning) as caught:
        report = slice_dataset(tmp_path / "data", run, config(modalities=("flair", "t1")),
                               progress=False)
    assert [case.reused for case in report.cases] == [False, False, False]
    reasons = [case.redone_because for case in report.cases]
    assert "t1.npy is missing" in reasons[0]
    assert "wt.npy is truncated" in reasons[1]
    assert "shape (2, 20, 20), expected (4, 20, 20)" in reasons[2]
    messages = " ".join(str(w.message) for w in caught)
    assert all(f"case {case_id}" in messages for case_id in CASES)
    assert "redone " + CASES[1] in report.table()
    for case_id in CASES:
        np.testing.assert_array_equal(np.load(run / "slices" / case_id / "t1.npy"),
                                      originals[case_id])
    # a complete folder is reused without a word
    with warnings_as_errors():
        report = slice_dataset(tmp_path / "data", run, config(modalities=("flair", "t1")),
                               progress=False)
    assert all(case.reused and not case.redone_because for case in report.cases)


def warnings_as_errors():
    """Context in which any warning fails the test."""
    return warnings.catch_warnings(action="error")


def test_a_changed_split_is_reported_with_the_moved_cases(tmp_path):
    from amecam_lib.slices import split_fingerprint

    small_dataset(tmp_path / "data")
    run = tmp_path / "run"
    slice_dataset(tmp_path / "data", run, config(), progress=False)
    before = dict(row.values() for row in read_csv(run / "split.csv"))
    fingerprint = split_fingerprint(run)
    with warnings_as_errors():  # same seed: same split, no warning
        report = slice_dataset(tmp_path / "data", run, config(), progress=False)
    assert report.split_moved == [] and split_fingerprint(run) == fingerprint
    # swap the splits of two cases through a split file
    first, second = CASES[0], CASES[1]
    if before[first] == before[second]:
        second = CASES[2]
    swapped = {**before, first: before[second], second: before[first]}
    split_file = tmp_path / "swapped.csv"
    split_file.write_text("case_id,split\n" + "".join(f"{c},{s}\n" for c, s in swapped.items()))
    with pytest.warns(UserWarning, match=r"split\.csv changed: 2 case\(s\) moved"):
        report = slice_dataset(tmp_path / "data", run, config(), split_file=split_file,
                               progress=False)
    assert report.split_moved == sorted([first, second])
    assert "split.csv changed: 2 case(s) moved" in report.table()
    assert split_fingerprint(run) != fingerprint
    assert all(case.reused for case in report.cases)  # the slices themselves are unchanged


def test_image_size_above_the_bound_is_rejected_before_any_work(tmp_path):
    small_dataset(tmp_path / "data")
    with pytest.raises(BratsDataError, match=r"image_size must be an integer in \[8, 1024\].*100000"):
        slice_dataset(tmp_path / "data", tmp_path / "run", config(image_size=100000),
                      progress=False)
    assert not (tmp_path / "run").exists()


def test_cli_one_line_errors_for_interrupt_folder_split_file_and_file_out(tmp_path, capsys,
                                                                          monkeypatch):
    cli = load_cli()
    small_dataset(tmp_path / "data")
    base = ["--data-dir", str(tmp_path / "data"), "--image-size", "20", "--no-progress"]

    (tmp_path / "a_file").write_text("not a folder")
    status = cli.main([*base, "--out", str(tmp_path / "a_file")])
    captured = capsys.readouterr()
    assert status == 2 and captured.err.count("\n") == 1
    assert f"--out {tmp_path / 'a_file'} is a file, not a folder" in captured.err

    status = cli.main([*base, "--out", str(tmp_path / "run"), "--split-file", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 2 and captured.err.count("\n") == 1 and "is a folder" in captured.err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "slice_dataset", interrupted)
    status = cli.main([*base, "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert status == 130 and captured.err.count("\n") == 1
    assert "interrupted; rerun to resume" in captured.err and "Traceback" not in captured.err


def test_cli_prints_a_changed_split_as_one_warning_line(tmp_path, capsys):
    cli = load_cli()
    small_dataset(tmp_path / "data")
    base = ["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
            "--image-size", "20", "--no-progress"]
    assert cli.main([*base, "--seed", "0"]) == 0
    capsys.readouterr()
    before = read_csv(tmp_path / "run" / "split.csv")
    for seed in range(1, 50):  # a seed that moves at least one case
        assert cli.main([*base, "--seed", str(seed)]) == 0
        captured = capsys.readouterr()
        if read_csv(tmp_path / "run" / "split.csv") != before:
            break
    lines = [line for line in captured.err.splitlines() if "split.csv changed" in line]
    assert len(lines) == 1 and lines[0].startswith("slice_brats: warning: ")
    assert "split.csv changed" in captured.out  # the table says it too


# --- crop geometry: a window of the native grid around the brain ----------------------------------


def position_volume(grid, rows, cols, n_z=3):
    """``int16`` volume, 0 outside the brain block ``rows x cols`` (all z), ``1000 + 100 x + y``
    inside: the stored value tells where on the original grid a pixel came from."""
    x, y = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    volume = np.zeros((*grid, n_z), np.int16)
    block = np.zeros(grid, bool)
    block[rows[0]:rows[1], cols[0]:cols[1]] = True
    volume[block] = (1000 + 100 * x + y)[block][:, None]
    return volume


def crop_dataset(root, grid, rows, cols, seg=None, n_z=3):
    """Three cases with the brain block of :func:`position_volume` in FLAIR."""
    flair = position_volume(grid, rows, cols, n_z)
    for case_id in CASES:
        write_case(root, case_id, shape=(*grid, n_z), images={"flair": flair}, seg=seg)
    return flair


def test_brain_box_and_crop_window_by_hand():
    from amecam_lib.slicing import brain_box, crop_window

    brain = np.zeros((40, 48), bool)
    brain[10:20, 20:34] = True                        # rows 10..19, cols 20..33
    assert brain_box(brain) == (10, 20, 10, 14)
    # centred: row0 = 10 + floor((10 - 16) / 2) = 7, col0 = 20 + floor((14 - 20) / 2) = 17
    assert crop_window((10, 20, 10, 14), (40, 48), (16, 20)) == (7, 17, 16, 20)
    # a box at the grid's edge: rows 0..5 -> -5 -> 0; cols 40..47 -> 34 -> 48 - 20 = 28
    assert crop_window((0, 40, 6, 8), (40, 48), (16, 20)) == (0, 28, 16, 20)
    # a box longer than the window stays centred on it: 5 + floor((30 - 16) / 2) = 12
    assert crop_window((5, 20, 30, 10), (40, 48), (16, 20)) == (12, 15, 16, 20)
    # no brain at all: centred on the grid
    assert brain_box(np.zeros((40, 48), bool)) is None
    assert crop_window(None, (40, 48), (16, 20)) == (12, 14, 16, 20)
    with pytest.raises(BratsDataError, match=r"crop_size=\(41, 20\).*40 x 48.*case X"):
        crop_window(None, (40, 48), (41, 20), "X")


@pytest.mark.parametrize("rows, cols, window", [
    ((10, 20), (20, 34), (7, 17, 16, 20)),            # centred on the brain
    ((0, 6), (40, 48), (0, 28, 16, 20)),              # brain at the grid's corner: shifted inside
])
def test_crop_stores_the_window_with_rows_along_x(tmp_path, rows, cols, window):
    from amecam_lib.slices import SliceDataset, load_slices, read_case_images, read_case_info

    grid = (40, 48)
    seg = np.zeros((*grid, 3), np.uint8)
    seg[rows[0]:rows[0] + 3, cols[0]:cols[0] + 2, 1] = 2          # 6 tumour voxels at the box corner
    crop_dataset(tmp_path / "data", grid, rows, cols, seg=seg)
    run = tmp_path / "run"
    with warnings_as_errors():  # the brain fits: no warning
        report = slice_dataset(tmp_path / "data", run, config(image_size=None, crop_size=(16, 20)),
                               progress=False)
    assert report.cut_cases == [] and "cut " not in report.table()
    row0, col0, height, width = window
    info = json.loads((run / "slices" / CASES[0] / "case.json").read_text())
    assert info["crop_box"] == {"row0": row0, "col0": col0, "height": 16, "width": 20}
    assert info["brain_box"] == {"row0": rows[0], "col0": cols[0], "height": rows[1] - rows[0],
                                 "width": cols[1] - cols[0]}
    assert info["image_shape"] == [16, 20] and info["outside_window"] == {"brain_voxels": 0, "tumour_voxels": 0}
    assert info["settings"]["crop_size"] == [16, 20] and info["settings"]["image_size"] is None

    case = read_case_info(run, CASES[0])
    assert case.image_shape == (16, 20) and case.crop_box == window and case.window == window
    assert case.pixel_spacing_mm == (1.0, 1.0)
    stored = read_case_images(run, CASES[0], "flair")
    assert stored.shape == (3, 16, 20)
    # native grid, int16: lossless; raw = round(v * max); pixel (i, j) is voxel (row0 + i, col0 + j)
    raw = np.rint(stored.astype(np.float64) * (1000 + 100 * (rows[1] - 1) + cols[1] - 1))
    for i, j in [(0, 0), (15, 19), (rows[0] - row0, cols[0] - col0), (rows[1] - 1 - row0, cols[1] - 1 - col0)]:
        x, y = row0 + i, col0 + j
        inside = rows[0] <= x < rows[1] and cols[0] <= y < cols[1]
        assert raw[1, i, j] == (1000 + 100 * x + y if inside else 0), (i, j)
    masks = np.load(run / "slices" / CASES[0] / "wt.npy")
    expected = np.zeros((16, 20), bool)
    expected[rows[0] - row0:rows[0] - row0 + 3, cols[0] - col0:cols[0] - col0 + 2] = True
    np.testing.assert_array_equal(masks[1], expected)
    # read back the same way through load_slices and the lazy dataset
    split = read_csv(run / "split.csv")[0]
    slices = load_slices(run, "flair", split["split"])
    assert slices.images.shape[1:] == (1, 16, 20) and slices.masks.shape[1:] == (16, 20)
    image, _ = SliceDataset.from_run(run, "flair", split["split"])[0]
    assert tuple(image.shape) == (1, 16, 20)


def test_crop_zoom_resamples_the_window(tmp_path):
    from amecam_lib.slices import read_case_info

    crop_dataset(tmp_path / "data", (40, 48), (10, 30), (10, 34))
    run = tmp_path / "run"
    # 20 x 24 at zoom 0.4: round(8.0) x round(9.6) = 8 x 10 px of 20 / 8 = 2.5 and 24 / 10 = 2.4 mm
    slice_dataset(tmp_path / "data", run, config(image_size=None, crop_size=(20, 24), crop_zoom=0.4),
                  progress=False)
    assert np.load(run / "slices" / CASES[0] / "flair.npy").shape == (3, 8, 10)
    assert np.load(run / "slices" / CASES[0] / "wt.npy").shape == (3, 8, 10)
    info = read_case_info(run, CASES[0])
    assert info.image_shape == (8, 10) and info.crop_box == (10, 10, 20, 24)
    assert info.pixel_spacing_mm == pytest.approx((2.5, 2.4))


def test_a_brain_larger_than_the_window_is_kept_counted_and_warned(tmp_path):
    from amecam_lib.slices import read_case_info

    grid = (40, 48)
    seg = np.zeros((*grid, 3), np.uint8)
    seg[5:15, 22:24, 1] = 1           # 20 tumour voxels; rows 5..11 fall outside the window
    crop_dataset(tmp_path / "data", grid, (5, 35), (20, 30), seg=seg)
    run = tmp_path / "run"
    with pytest.warns(UserWarning) as caught:
        report = slice_dataset(tmp_path / "data", run, config(image_size=None, crop_size=(16, 20)),
                               progress=False)
    # window rows 12..27 (5 + floor((30 - 16) / 2)): rows 5..11 and 28..34 are out, 14 rows x 10 cols x 3 z
    messages = [str(w.message) for w in caught]
    for case_id in CASES:
        message = next(m for m in messages if m.startswith(f"case {case_id}"))
        assert "420 brain voxel(s) and 14 tumour voxel(s)" in message
        assert "30 x 10 px" in message and "crop_size=(16, 20)" in message and "(32, 20)" in message
    assert report.cut_cases == CASES
    case = next(c for c in report.cases if c.case_id == CASES[0])
    assert (case.brain_outside, case.tumour_outside, case.brain_extent) == (420, 14, (30, 10))
    assert f"cut {CASES[0]}: " in report.table()
    info = json.loads((run / "slices" / CASES[0] / "case.json").read_text())
    assert info["outside_window"] == {"brain_voxels": 420, "tumour_voxels": 14}
    assert info["crop_box"] == {"row0": 12, "col0": 15, "height": 16, "width": 20}
    assert read_case_info(run, CASES[0]).tumour_outside == 14
    # the 1 % rule counts the whole original slice (20 > 0.01 * 40 * 48 = 19.2 px), not the 6 in the window
    row = next(r for r in read_csv(run / "manifest.csv") if r["case_id"] == CASES[0] and r["z"] == "1")
    assert (row["tumour_pixels"], row["label"], row["brain_pixels"]) == ("20", "1", "300")
    assert np.load(run / "slices" / CASES[0] / "wt.npy")[1].sum() == 6
    # a rerun reuses the cases and says it again
    with pytest.warns(UserWarning, match="420 brain voxel"):
        report = slice_dataset(tmp_path / "data", run, config(image_size=None, crop_size=(16, 20)),
                               progress=False)
    assert all(c.reused for c in report.cases) and report.cut_cases == CASES


def test_crop_leaves_the_manifest_counts_as_without_it(tmp_path):
    """The label rule and the pixel counts are the same crop or not: original grid, whole slice."""
    grid = (40, 48)
    seg = np.zeros((*grid, 3), np.uint8)
    seg[12:17, 22:26, 0] = 1          # 20 px > 19.2: tumour
    seg[12:16, 22:26, 1] = 1          # 16 px: ambiguous
    crop_dataset(tmp_path / "data", grid, (10, 20), (20, 34), seg=seg)
    slice_dataset(tmp_path / "data", tmp_path / "square", config(image_size=24), progress=False)
    slice_dataset(tmp_path / "data", tmp_path / "crop", config(image_size=None, crop_size=(16, 20)),
                  progress=False)
    square, crop = (read_csv(tmp_path / name / "manifest.csv") for name in ("square", "crop"))
    assert square == crop
    assert [(r["tumour_pixels"], r["label"], r["ambiguous"], r["brain_pixels"]) for r in crop[:3]] == [
        ("20", "1", "0", "140"), ("16", "0", "1", "140"), ("0", "0", "0", "140")]


def test_a_window_larger_than_the_grid_is_an_error_naming_crop_size(tmp_path):
    small_dataset(tmp_path / "data")  # 20 x 20 grid
    with pytest.raises(BratsDataError, match=r"crop_size=\(24, 16\) is larger than the in-plane grid 20 x 20"):
        slice_dataset(tmp_path / "data", tmp_path / "run", config(image_size=None, crop_size=(24, 16)),
                      progress=False)


@pytest.mark.parametrize("crop_size, crop_zoom, message", [
    ((4, 16), 1.0, "crop_size must be two integers"), ((16, 20.5), 1.0, "crop_size must be two integers"),
    ((16, 20), 0.1, r"crop_zoom=0.1 makes 2 x 2 px"),
])
def test_bad_crop_settings_are_errors(tmp_path, crop_size, crop_zoom, message):
    small_dataset(tmp_path / "data")
    with pytest.raises(BratsDataError, match=message):
        slice_dataset(tmp_path / "data", tmp_path / "run",
                      config(image_size=None, crop_size=crop_size, crop_zoom=crop_zoom), progress=False)


def test_a_changed_crop_is_refused_then_redone_with_overwrite(tmp_path):
    crop_dataset(tmp_path / "data", (40, 48), (10, 20), (20, 34))
    run = tmp_path / "run"
    slice_dataset(tmp_path / "data", run, config(image_size=None, crop_size=(16, 20)), progress=False)
    report = slice_dataset(tmp_path / "data", run, config(image_size=None, crop_size=(16, 20)), progress=False)
    assert all(c.reused for c in report.cases)
    with pytest.raises(slicing.RunFolderConflict, match=r"crop_size \[16, 20\] \(requested \[16, 24\]\)"):
        slice_dataset(tmp_path / "data", run, config(image_size=None, crop_size=(16, 24)), progress=False)
    report = slice_dataset(tmp_path / "data", run, config(image_size=None, crop_size=(16, 24)),
                           overwrite=True, progress=False)
    assert not any(c.reused for c in report.cases)
    assert np.load(run / "slices" / CASES[0] / "flair.npy").shape == (3, 16, 24)
    report = slice_dataset(tmp_path / "data", run, config(image_size=None, crop_size=(16, 24), crop_zoom=0.5),
                           overwrite=True, progress=False)
    assert not any(c.reused for c in report.cases)
    assert np.load(run / "slices" / CASES[0] / "flair.npy").shape == (3, 8, 12)


def test_non_square_resize_keeps_rows_and_columns():
    # one bright pixel at row 2, column 7 of a 4 x 8 slice -> row 1, column 3 of 2 x 4
    images = np.zeros((1, 4, 8), np.float32)
    images[0, 2:4, 6:8] = 1.0
    resized = resize_images(images, (2, 4))
    assert resized.shape == (1, 2, 4)
    assert np.argwhere(resized[0] == resized[0].max()).tolist() == [[1, 3]]
    masks = images.astype(bool)
    assert np.argwhere(resize_masks(masks, (2, 4))[0]).tolist() == [[1, 3]]
    assert resize_masks(masks, (8, 16)).shape == (1, 8, 16)


def test_cli_crop(tmp_path, capsys):
    cli = load_cli()
    crop_dataset(tmp_path / "data", (40, 48), (10, 20), (20, 34))
    status = cli.main(["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                       "--crop", "16", "20", "--crop-zoom", "0.5", "--no-progress"])
    assert status == 0, capsys.readouterr().err
    assert np.load(tmp_path / "run" / "slices" / CASES[0] / "flair.npy").shape == (3, 8, 10)
    status = cli.main(["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                       "--image-size", "20", "--crop-zoom", "0.5", "--no-progress"])
    captured = capsys.readouterr()
    assert status == 2 and "crop_zoom=0.5" in captured.err and captured.err.count("\n") == 1


# --- two modalities or two geometries into one run folder: side by side or refused, never deleted ----

def _stored(run, case_id=CASES[0]):
    folder = run / "slices" / case_id
    return sorted(p.name for p in folder.glob("*.npy")), json.loads((folder / "case.json").read_text())


def test_a_modality_already_sliced_is_reused_and_the_others_are_kept(tmp_path):
    small_dataset(tmp_path / "data")
    run = tmp_path / "run"
    slice_dataset(tmp_path / "data", run, config(modalities=("t1", "t1ce", "t2", "flair")), progress=False)
    files, info = _stored(run)
    manifest = (run / "manifest.csv").read_text()
    report = slice_dataset(tmp_path / "data", run, config(modalities=("t1ce",)), progress=False)
    assert all(case.reused for case in report.cases)
    assert _stored(run) == (files, info) == (["flair.npy", "t1.npy", "t1ce.npy", "t2.npy", "wt.npy"], info)
    assert (run / "manifest.csv").read_text() == manifest
    # a stored file damaged: the case is redone with all its modalities, none is dropped
    (run / "slices" / CASES[0] / "t2.npy").unlink()
    with pytest.warns(UserWarning, match="t2.npy is missing"):
        report = slice_dataset(tmp_path / "data", run, config(modalities=("flair",)), progress=False)
    assert [case.reused for case in report.cases] == [False, True, True]
    assert _stored(run)[0] == files and _stored(run)[1]["modalities"] == ["t1", "t1ce", "t2", "flair"]


def test_slicing_another_modality_into_a_run_folder_is_refused_and_deletes_nothing(tmp_path):
    """The fault of issue 11: slicing t1ce into a FLAIR run folder deleted every flair.npy silently."""
    small_dataset(tmp_path / "data")
    run = tmp_path / "run"
    slice_dataset(tmp_path / "data", run, config(modalities=("flair",)), progress=False)
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    with pytest.raises(slicing.RunFolderConflict) as refused:
        slice_dataset(tmp_path / "data", run, config(modalities=("t1ce",)), progress=False)
    message = str(refused.value)
    assert "flair.npy of 3 case(s)" in message and "flair stored, t1ce requested" in message
    assert str(run / "flair") in message and "--modalities" in message and "overwrite=True" in message
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before
    # asked for knowingly: overwrite replaces the folder with exactly the requested modalities
    slice_dataset(tmp_path / "data", run, config(modalities=("t1ce",)), overwrite=True, progress=False)
    assert _stored(run)[0] == ["t1ce.npy", "wt.npy"]


def test_an_older_storage_format_is_redone_with_a_warning(tmp_path):
    small_dataset(tmp_path / "data")
    run = tmp_path / "run"
    slice_dataset(tmp_path / "data", run, config(), progress=False)
    info_path = run / "slices" / CASES[1] / "case.json"
    info = json.loads(info_path.read_text())
    info["settings"]["format"] = SLICE_FORMAT - 1
    info_path.write_text(json.dumps(info))
    with pytest.warns(UserWarning, match=f"{CASES[1]}: it was stored in slice format {SLICE_FORMAT - 1}"):
        report = slice_dataset(tmp_path / "data", run, config(), progress=False)
    assert [case.reused for case in report.cases] == [True, False, True]


def test_plan_cases_without_a_run_folder_plans_the_requested_settings(tmp_path):
    settings = slicing.slice_settings(config())
    assert slicing.plan_cases(tmp_path / "none" / "slices", CASES, settings) == {c: settings for c in CASES}
