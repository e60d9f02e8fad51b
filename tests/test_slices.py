"""Reading a sliced run: load_slices, SliceDataset (lazy and in memory), manifest, case info."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from _synthetic import write_case
from amecam_lib.config import DataConfig
from amecam_lib.releases import BratsDataError
from amecam_lib.slices import (SliceDataset, load_slices, read_case_images, read_case_info,
                               read_manifest, select_slices, split_fingerprint)
from amecam_lib.slicing import slice_dataset

# the smoke preset's geometry (sliced_run): a 160 x 192 window at zoom 0.4 -> round(64.0) x round(76.8)
HEIGHT, WIDTH = 64, 77


def test_load_slices_shapes_and_labels(sliced_run):
    manifest = read_manifest(sliced_run)
    split = pd.read_csv(sliced_run / "split.csv")
    for name in ("train", "val", "test"):
        slices = load_slices(sliced_run, "flair", name)
        expected = manifest[(manifest.split == name) & (manifest.kept == 1)]
        n = len(expected)
        assert slices.images.shape == (n, 1, HEIGHT, WIDTH) and slices.images.dtype == np.float32
        assert slices.labels.shape == (n,) and slices.labels.dtype == np.int64
        assert slices.masks.shape == (n, HEIGHT, WIDTH) and slices.masks.dtype == bool
        assert slices.images.min() >= 0 and slices.images.max() <= 1
        assert slices.labels.sum() == expected.label.sum()
        assert set(slices.case_ids) == set(split[split.split == name].case_id)
        # a tumour slice keeps tumour pixels after resizing; a tumour-free slice has none;
        # slices come ordered by case ID, then z
        assert slices.masks[slices.labels == 1].any(axis=(1, 2)).all()
        assert not slices.masks[expected.sort_values(["case_id", "z"]).tumour_pixels.to_numpy() == 0].any()
        assert list(zip(slices.case_ids, slices.z)) == sorted(zip(expected.case_id, expected.z))


def test_slices_match_manifest_rows(sliced_run):
    slices = load_slices(sliced_run, "t1ce", "test")
    manifest = read_manifest(sliced_run).set_index(["case_id", "z"])
    for index in (0, len(slices) // 2, len(slices) - 1):
        row = manifest.loc[(slices.case_ids[index], slices.z[index])]
        assert row.label == slices.labels[index] and row.kept == 1
        codes = np.load(sliced_run / "slices" / slices.case_ids[index] / "t1ce.npy")[row.row]
        assert codes.dtype == np.uint16
        np.testing.assert_array_equal(slices.images[index, 0], codes.astype(np.float32) / 65535)
        np.testing.assert_array_equal(
            read_case_images(sliced_run, slices.case_ids[index], "t1ce", [row.row])[0],
            slices.images[index, 0])
        if row.tumour_pixels == 0:
            assert not slices.masks[index].any()


def test_exclude_ambiguous(sliced_run):
    everything = load_slices(sliced_run, "flair", "train")
    clear = load_slices(sliced_run, "flair", "train", exclude_ambiguous=True)
    assert everything.ambiguous.sum() > 0
    assert len(clear) == len(everything) - everything.ambiguous.sum()
    assert not clear.ambiguous.any()


def test_errors(sliced_run):
    with pytest.raises(BratsDataError, match="'t2' was not sliced"):
        load_slices(sliced_run, "t2", "train")
    with pytest.raises(BratsDataError, match="split must be one of"):
        load_slices(sliced_run, "flair", "training")
    with pytest.raises(BratsDataError, match="not sliced"):
        read_case_info(sliced_run, "BraTS2021_99999")
    case_id = read_manifest(sliced_run).case_id.iloc[0]
    with pytest.raises(BratsDataError, match="'t2' was not"):
        read_case_images(sliced_run, case_id, "t2")


def test_lazy_dataset_equals_in_memory(sliced_run):
    slices = load_slices(sliced_run, "flair", "val")
    lazy = SliceDataset.from_run(sliced_run, "flair", "val")
    eager = SliceDataset(slices)
    assert len(lazy) == len(eager) == len(slices)
    assert (lazy.labels == slices.labels).all() and (lazy.case_ids == slices.case_ids).all()
    for index in (0, len(slices) - 1):
        image, label = lazy[index]
        assert image.shape == (1, HEIGHT, WIDTH) and image.dtype == torch.float32
        assert label.dtype == torch.int64 and label.item() == slices.labels[index]
        assert torch.equal(image, eager[index][0])
        assert torch.equal(image, torch.from_numpy(slices.images[index]))
        assert type(image) is torch.Tensor and image.is_contiguous()
    images, labels = next(iter(DataLoader(lazy, batch_size=8, shuffle=False)))
    assert images.shape == (8, 1, HEIGHT, WIDTH) and labels.dtype == torch.int64


def test_transform_is_applied(sliced_run):
    dataset = SliceDataset.from_run(sliced_run, "flair", "test", transform=lambda image: 1 - image)
    image, _ = dataset[0]
    raw, _ = SliceDataset.from_run(sliced_run, "flair", "test")[0]
    assert torch.allclose(image, 1 - raw)


def test_case_info(sliced_run):
    manifest = read_manifest(sliced_run)
    case_id = manifest.case_id.iloc[0]
    info = read_case_info(sliced_run, case_id)
    kept = manifest[(manifest.case_id == case_id) & (manifest.kept == 1)]
    assert info.original_shape == (240, 240, 155) and info.affine.shape == (4, 4)
    assert info.z.tolist() == kept.z.tolist() and info.image_shape == (HEIGHT, WIDTH)
    assert set(info.modalities) == {"flair", "t1ce"}
    # a 160 x 192 window inside the 240 x 240 grid, around a brain that fits it (the sample's
    # largest brain box is 145 x 177 px)
    row0, col0, height, width = info.crop_box
    assert (height, width) == (160, 192) and 0 <= row0 <= 80 and 0 <= col0 <= 48
    assert info.brain_outside == 0 and info.tumour_outside == 0
    assert info.pixel_spacing_mm == pytest.approx((160 / 64, 192 / 77))  # 1 mm voxels


def test_case_info_of_a_format_2_folder_is_read_as_square(tmp_path):
    """A case.json of storage format 2 (square slices, no image_shape) reads as S x S, no crop."""
    import json

    folder = tmp_path / "slices" / "BraTS2021_00001"
    folder.mkdir(parents=True)
    affine = [[2.0, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    folder.joinpath("case.json").write_text(json.dumps({
        "case_id": "BraTS2021_00001", "release": "BraTS 2021", "modalities": ["flair"],
        "original_shape": [240, 240, 155], "affine": affine, "image_size": 128, "z": [3, 4],
        "settings": {"format": 2, "image_size": 128}}))
    info = read_case_info(tmp_path, "BraTS2021_00001")
    assert info.image_shape == (128, 128) and info.crop_box is None and info.window == (0, 0, 240, 240)
    # 2 mm x 0.5 mm voxels over 240 / 128
    assert info.voxel_spacing_mm == (2.0, 0.5)
    assert info.pixel_spacing_mm == pytest.approx((2.0 * 240 / 128, 0.5 * 240 / 128))


def test_load_slices_refuses_a_run_of_mixed_shapes(tmp_path):
    shape = (10, 10, 2)
    for case_id in ("BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003"):
        write_case(tmp_path / "data", case_id, shape=shape)
    run = tmp_path / "run"
    slice_dataset(tmp_path / "data", run, DataConfig(image_size=10), progress=False)
    mixed = tmp_path / "mixed"
    slice_dataset(tmp_path / "data", mixed, DataConfig(image_size=8), progress=False)
    import shutil

    shutil.rmtree(mixed / "slices" / "BraTS2021_00001")
    shutil.copytree(run / "slices" / "BraTS2021_00001", mixed / "slices" / "BraTS2021_00001")
    with pytest.raises(BratsDataError, match="one geometry"):
        load_slices(mixed, "flair", "all")


def test_empty_split_is_an_error(tmp_path):
    shape = (10, 10, 2)
    for case_id in ("BraTS2021_00001", "BraTS2021_00002"):
        write_case(tmp_path / "data", case_id, shape=shape)
    empty = {m: np.zeros(shape, np.int16) for m in ("t1", "t1ce", "t2", "flair")}
    write_case(tmp_path / "data", "BraTS2021_00003", shape=shape, images=empty)
    split_file = tmp_path / "split.csv"
    split_file.write_text("case_id,split\nBraTS2021_00001,train\nBraTS2021_00002,val\n"
                          "BraTS2021_00003,test\n")
    config = DataConfig(image_size=10, min_brain_fraction=0.05)
    with pytest.warns(UserWarning, match=r"case BraTS2021_00003: no slice kept.*split \(test\)"):
        slice_dataset(tmp_path / "data", tmp_path / "run", config, split_file=split_file, progress=False)
    assert len(select_slices(tmp_path / "run", "flair", "train")) == 2
    with pytest.raises(BratsDataError, match="no slice in split 'test'"):
        load_slices(tmp_path / "run", "flair", "test")
    with pytest.raises(BratsDataError, match="no slice in split 'test'"):
        SliceDataset.from_run(tmp_path / "run", "flair", "test")


def small_run(root, modalities=("flair", "t1"), split_text=None):
    """Three 10 x 10 x 3 synthetic cases sliced at 10 px; split train / val / test by case."""
    for case_id in ("BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003"):
        write_case(root / "data", case_id, shape=(10, 10, 3))
    split_file = root / "split.csv"
    split_file.write_text(split_text or "case_id,split\nBraTS2021_00001,train\n"
                          "BraTS2021_00002,val\nBraTS2021_00003,test\n")
    config = DataConfig(modalities=modalities, image_size=10, min_brain_fraction=0.0)
    slice_dataset(root / "data", root / "run", config, split_file=split_file, progress=False)
    return root / "run"


def test_truncated_or_missing_npy_is_named_with_a_rerun_hint(tmp_path):
    run = small_run(tmp_path)
    flair = run / "slices" / "BraTS2021_00001" / "flair.npy"
    flair.write_bytes(flair.read_bytes()[:-30])
    pattern = r"BraTS2021_00001/flair\.npy is truncated or corrupt .*rerun slicing"
    with pytest.raises(BratsDataError, match=pattern):
        load_slices(run, "flair", "train")
    with pytest.raises(BratsDataError, match=pattern):
        read_case_images(run, "BraTS2021_00001", "flair")
    lazy = SliceDataset.from_run(run, "flair", "train")
    with pytest.raises(BratsDataError, match=pattern):
        lazy[0]
    flair.write_bytes(b"")
    with pytest.raises(BratsDataError, match=pattern):
        read_case_images(run, "BraTS2021_00001", "flair")
    masks = run / "slices" / "BraTS2021_00002" / "wt.npy"
    masks.write_bytes(masks.read_bytes()[:-5])
    with pytest.raises(BratsDataError, match=r"BraTS2021_00002/wt\.npy is truncated"):
        load_slices(run, "t1", "val")
    assert len(load_slices(run, "t1", "test")) == 3  # intact cases still load


def test_unknown_and_partly_missing_modalities_have_consistent_messages(tmp_path):
    run = small_run(tmp_path)
    with pytest.raises(BratsDataError, match="unknown modality 't3'; valid names: t1, t1ce, t2, flair"):
        load_slices(run, "t3", "test")
    with pytest.raises(BratsDataError, match="unknown modality 't3'"):
        read_case_images(run, "BraTS2021_00001", "t3")
    # the file is gone although case.json lists t1: an incomplete folder, not "not sliced"
    (run / "slices" / "BraTS2021_00001" / "t1.npy").unlink()
    with pytest.raises(BratsDataError, match=r"BraTS2021_00001/t1\.npy is missing although its "
                                             r"case\.json lists 't1'.*rerun slicing") as error:
        load_slices(run, "t1", "all")
    assert "was not sliced" not in str(error.value)
    # one case folder made by a run without t1: t1 is missing in 1 of 3 case folders
    other = small_run(tmp_path / "other", modalities=("flair",))
    (run / "slices" / "BraTS2021_00001").rename(tmp_path / "trash")
    (other / "slices" / "BraTS2021_00001").rename(run / "slices" / "BraTS2021_00001")
    with pytest.raises(BratsDataError, match=r"'t1' is missing in 1 of 3 case folders .*"
                                             r"BraTS2021_00001, sliced with flair\)") as error:
        load_slices(run, "t1", "all")
    assert "was not sliced in" not in str(error.value)
    with pytest.raises(BratsDataError, match=r"'t2' was not sliced in .* has flair, t1\)"):
        load_slices(run, "t2", "val")


def test_split_fingerprint_depends_only_on_the_case_split_pairs(tmp_path):
    import hashlib

    run = small_run(tmp_path)
    pairs = "BraTS2021_00001,train\nBraTS2021_00002,val\nBraTS2021_00003,test\n"
    expected = hashlib.sha256(pairs.encode()).hexdigest()[:16]
    assert split_fingerprint(run) == expected and len(expected) == 16
    # row order and spacing do not matter; moving a case does
    (run / "split.csv").write_text("case_id,split\nBraTS2021_00003, test\nBraTS2021_00001,train\n"
                                   "BraTS2021_00002,val\n")
    assert split_fingerprint(run) == expected
    (run / "split.csv").write_text("case_id,split\nBraTS2021_00001,val\nBraTS2021_00002,train\n"
                                   "BraTS2021_00003,test\n")
    assert split_fingerprint(run) != expected
    with pytest.raises(BratsDataError, match="split.csv not found"):
        split_fingerprint(tmp_path / "nowhere")
