"""Evaluation: building blocks by hand, then the whole phase 2 on the sliced sample with a tiny
(briefly trained) classifier: train_attention -> evaluate -> tables -> NIfTI export."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from amecam_lib.aggregation import load_attention, train_attention
from amecam_lib.config import get_preset
from amecam_lib.evaluation import (PAPER_RESULTS, RESULT_COLUMNS, evaluate, load_predictions, pixel_spacing_mm,
                                   results_markdown, subset_indices, summary_row, threshold_masks)
from amecam_lib.export import export_case_masks
from amecam_lib.losses.exits import multi_exit_loss
from amecam_lib.models.multi_exit import MultiExitResNet
from amecam_lib.phases import load_multi_exit, phase_dir
from amecam_lib.slices import load_slices
from amecam_lib.training import fit


def test_threshold_masks():
    maps = np.array([[[0.2, 0.5], [0.7, 0.49]]])
    np.testing.assert_array_equal(threshold_masks(maps, 0.5), [[[False, True], [True, False]]])


def test_subset_indices_are_evenly_spaced_per_class():
    labels = np.array([1, 1, 1, 1, 1, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(subset_indices(labels, None), np.arange(10))
    chosen = subset_indices(labels, 3)
    # tumour slices 0,1,2,3,4,7,8,9 -> positions 0, 3.5->4, 7 -> slices 0, 4, 9; normal 5, 6
    np.testing.assert_array_equal(chosen, [0, 4, 5, 6, 9])


def test_summary_row_uses_tumour_slices_and_normal_fp_area():
    per_slice = pd.DataFrame({
        "method": "m", "case_id": "c", "z": [0, 1, 2], "label": [1, 1, 0], "scored": [1, 1, 0],
        "dice": [1.0, 0.0, 0.0], "iou": [1.0, 0.0, 0.0], "hd95": [0.0, 373.12866, 373.12866],
        "predicted_fraction": [0.1, 0.0, 0.25]})
    row = summary_row("m", "flair", per_slice, seconds_per_slice=0.5)
    assert row["n_slices"] == 2 and row["dice_mean"] == 0.5 and row["dice_std"] == 0.5
    assert row["hd95_mean"] == pytest.approx(373.12866 / 2)
    assert row["n_normal_slices"] == 1 and row["fp_area_normal_mean"] == 0.25


def test_results_markdown_puts_the_paper_beside_ours():
    table = pd.DataFrame([{"method": "ame_cam_crf", "n_slices": 3, "dice_mean": 0.5, "dice_std": 0.1,
                           "iou_mean": 0.4, "iou_std": 0.1, "hd95_mean": 10.0, "hd95_std": 1.0,
                           "modality": "flair", "n_normal_slices": 2, "fp_area_normal_mean": 0.01,
                           "fp_area_normal_std": 0.0, "seconds_per_slice": 0.2}])
    text = results_markdown(table)
    assert "## flair" in text and "0.500 +- 0.100" in text and "0.862 +- 0.088" in text
    assert PAPER_RESULTS["t1ce"]["exit2_3"]["dice"] == (0.566, 0.207)


@pytest.fixture(scope="module")
def trained_run(sliced_run, tmp_path_factory):
    """The sliced sample with a briefly trained tiny classifier (a few steps of Eq. 1, through the
    shared training loop) and both attention networks trained for one epoch."""
    run = tmp_path_factory.mktemp("phase2_run")
    (run / "slices").symlink_to(sliced_run / "slices")
    shutil.copy(sliced_run / "split.csv", run / "split.csv")
    manifest = pd.read_csv(sliced_run / "manifest.csv", keep_default_na=False)
    # keep every 8th kept test slice, so that evaluating 13 methods stays quick on a CPU
    test_rows = manifest.index[(manifest["split"] == "test") & (manifest["kept"] == 1)]
    manifest.loc[test_rows[np.arange(len(test_rows)) % 8 != 0], "kept"] = 0
    manifest.to_csv(run / "manifest.csv", index=False)
    preset = get_preset("smoke").with_overrides(**{"evaluation.score_cam_max_slices": 1,
                                                   "evaluation.score_cam_batch_size": 512})
    train = load_slices(run, "flair", "train")
    order = np.random.default_rng(0).permutation(len(train))[:64]
    loader = DataLoader(TensorDataset(torch.from_numpy(train.images[order]),
                                      torch.from_numpy(train.labels[order])), batch_size=32)
    torch.manual_seed(0)
    fit(MultiExitResNet(), train_step=lambda net, batch, device: multi_exit_loss(
            net(batch[0].to(device)).logits, batch[1].to(device)),
        train_loader=loader, epochs=1, lr=1e-3, out_dir=phase_dir(run, "flair", "multi_exit"),
        config={"multi_exit": dataclasses.asdict(preset.multi_exit)}, device="cpu", progress=False)
    histories = {exits: train_attention(run, "flair", preset, exits=exits, device="cpu", progress=False)
                 for exits in [(1, 2, 3, 4), (2, 3)]}
    return run, preset, histories


@pytest.mark.slow
def test_train_attention_logs_and_resumes(trained_run):
    run, preset, histories = trained_run
    history = histories[(1, 2, 3, 4)]
    assert len(history) == 1 and (run / "flair" / "aggregation" / "best.pt").is_file()
    record = history.last
    weights = [record[f"weight_exit{i}"] for i in (1, 2, 3, 4)]
    assert sum(weights) == pytest.approx(1.0, abs=1e-4) and 0 <= record["fg_fraction"] <= 1
    assert np.isfinite(record["val_loss"])
    assert (run / "flair" / "aggregation_exit2_3" / "log.csv").is_file()
    assert load_attention(run, "flair", (2, 3)).n_maps == 2
    again = train_attention(run, "flair", preset, device="cpu", progress=False)  # finished: returns at once
    assert again.resumed_epochs == 1


@pytest.mark.slow
def test_evaluate_writes_every_table_and_exports(trained_run):
    run, preset, _ = trained_run
    result = evaluate(run, "flair", preset, device="cpu", progress=False)
    test = load_slices(run, "flair", "test")
    n_tumour, n_normal = int((test.labels == 1).sum()), int((test.labels == 0).sum())

    table = pd.read_csv(run / "results.csv")
    assert tuple(table.columns[:8]) == RESULT_COLUMNS
    assert list(table["method"]) == list(preset.evaluation.methods)
    assert not table.isna().any().any()
    by_method = table.set_index("method")
    assert (by_method.drop(index="score_cam")["n_slices"] == n_tumour).all()
    assert by_method.loc["score_cam", "n_slices"] == 1 and by_method.loc["score_cam", "n_normal_slices"] == 1
    assert (by_method["n_normal_slices"].drop(index="score_cam") == n_normal).all()
    assert ((table["dice_mean"] >= 0) & (table["dice_mean"] <= 1)).all() and (table["seconds_per_slice"] > 0).all()
    assert "## flair" in (run / "results.md").read_text()

    per_slice = pd.read_csv(run / "flair" / "per_slice_scores.csv")
    assert len(per_slice) == (len(table) - 1) * len(test) + 2 and not per_slice[["dice", "iou", "hd95"]].isna().any().any()

    stored = load_predictions(run, "flair")
    assert stored["mask_ame_cam_crf"].shape == (len(test), *test.images.shape[-2:])
    np.testing.assert_array_equal(stored["mask_exit3"], result.masks["exit3"])

    paths = export_case_masks(run, "flair", "ame_cam_crf", result.masks["ame_cam_crf"], test.case_ids, test.z)
    assert sorted(p.name for p in paths) == sorted(f"{c}_ame_cam_crf.nii.gz" for c in set(test.case_ids))


def test_unknown_method_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        evaluate(tmp_path, "flair", get_preset("smoke"), methods=["bogus"])


def test_val_split_is_never_written(tmp_path):
    with pytest.raises(ValueError, match="split='test' only"):
        evaluate(tmp_path, "flair", get_preset("smoke"), split="val", write=True)
    with pytest.raises(ValueError, match="split must be"):
        evaluate(tmp_path, "flair", get_preset("smoke"), split="train")


@pytest.mark.slow
def test_gating_by_prediction_empties_masks_of_slices_called_normal(trained_run):
    run, preset, _ = trained_run
    methods = ["exit1", "intensity"]
    plain = evaluate(run, "flair", preset, methods=methods, device="cpu", progress=False, write=False)
    gated = evaluate(run, "flair", preset.with_overrides(gate_by_prediction=True), methods=methods,
                     device="cpu", progress=False, write=False)
    model = load_multi_exit(run, "flair", "best", device="cpu")
    with torch.no_grad():
        called_normal = torch.sigmoid(model(torch.from_numpy(plain.slices.images)).logits[:, 3]).numpy() < 0.5
    for method in methods:
        assert not gated.masks[method][called_normal].any()
        np.testing.assert_array_equal(gated.masks[method][~called_normal], plain.masks[method][~called_normal])


def _write_case_json(run, case_id, *, affine, original_shape, image_shape, crop_box=None):
    import json

    folder = run / "slices" / case_id
    folder.mkdir(parents=True)
    box = None if crop_box is None else dict(zip(("row0", "col0", "height", "width"), crop_box))
    folder.joinpath("case.json").write_text(json.dumps({
        "case_id": case_id, "release": "BraTS 2021", "modalities": ["flair"], "original_shape": original_shape,
        "affine": affine, "image_size": None if crop_box else image_shape[0], "image_shape": image_shape,
        "crop_box": box, "z": [0], "settings": {"format": 3}}))


def test_pixel_spacing_mm_per_axis_for_resampling_crop_and_zoom(tmp_path):
    one_mm = np.eye(4).tolist()
    # BraTS-like: 240 x 240 at 1 mm resampled to 128 px -> 1.875 mm; a 160 x 192 crop at zoom 1 -> 1 mm;
    # the same crop at zoom 0.4 (64 x 77 px) -> 160 / 64 = 2.5 and 192 / 77 mm; 2 x 0.5 mm voxels, crop
    # 40 x 40 to 20 x 20 px -> 4 and 1 mm (the affine's column lengths, even rotated)
    rotated = [[0.0, -0.5, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    _write_case_json(tmp_path, "resampled", affine=one_mm, original_shape=[240, 240, 155], image_shape=[128, 128])
    _write_case_json(tmp_path, "crop", affine=one_mm, original_shape=[240, 240, 155], image_shape=[160, 192],
                     crop_box=(40, 24, 160, 192))
    _write_case_json(tmp_path, "zoom", affine=one_mm, original_shape=[240, 240, 155], image_shape=[64, 77],
                     crop_box=(40, 24, 160, 192))
    _write_case_json(tmp_path, "anisotropic", affine=rotated, original_shape=[60, 60, 10], image_shape=[20, 20],
                     crop_box=(10, 10, 40, 40))
    spacing = pixel_spacing_mm(tmp_path, ["zoom", "crop", "resampled", "crop", "anisotropic"])
    assert list(spacing) == ["anisotropic", "crop", "resampled", "zoom"]
    assert spacing["resampled"] == pytest.approx((1.875, 1.875))
    assert spacing["crop"] == (1.0, 1.0)
    assert spacing["zoom"] == pytest.approx((2.5, 192 / 77))
    assert spacing["anisotropic"] == pytest.approx((4.0, 1.0))


@pytest.fixture(scope="module")
def crop_run(tmp_path_factory):
    """Three synthetic cases on a 48 x 56 x 8 grid sliced with a 40 x 48 crop at the native grid
    (brain rows 6..41, cols 4..51: the window starts at row 4, col 4): a whole, tiny run."""
    from _synthetic import write_case
    from amecam_lib.slicing import slice_dataset

    root = tmp_path_factory.mktemp("crop_data")
    rng = np.random.default_rng(0)
    shape = (48, 56, 8)
    for index, case_id in enumerate(["BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003"]):
        flair = np.zeros(shape, np.int16)
        flair[6:42, 4:52, :] = rng.integers(100, 300, size=(36, 48, 8))
        seg = np.zeros(shape, np.uint8)
        seg[12 + index:24 + index, 20:32, 2:6] = 2                  # 144 px > 1 % of 2,688: tumour
        flair[seg > 0] = 900
        write_case(root, case_id, shape=shape, seg=seg, images={"flair": flair})
    preset = get_preset("smoke").with_overrides(**{
        "crop_size": (40, 48), "crop_zoom": 1.0, "min_brain_fraction": 0.0, "val_fraction": 0.1,
        "test_fraction": 0.1, "pretrain.batch_size": 8, "multi_exit.epochs": 1, "multi_exit.batch_size": 8,
        "aggregation.batch_size": 8, "aggregation.hidden": 4})
    run = tmp_path_factory.mktemp("crop_run")
    slice_dataset(root, run, preset.data, progress=False)
    return run, preset


def test_every_phase_runs_on_a_non_square_crop_run(crop_run):
    """SupCon -> multi-exit -> both attention networks -> every CAM method + CRF -> scores -> NIfTI,
    on 40 x 48 px slices (H != W): a transposed or square-assuming step fails here."""
    import nibabel as nib

    from amecam_lib.phases import pretrain_supcon, train_multi_exit
    from amecam_lib.slices import read_case_info

    run, preset = crop_run
    assert read_case_info(run, "BraTS2021_00001").crop_box == (4, 4, 40, 48)
    pretrain_supcon(run, "flair", preset, device="cpu", progress=False)
    train_multi_exit(run, "flair", preset, device="cpu", progress=False)
    for exits in [(1, 2, 3, 4), (2, 3)]:
        train_attention(run, "flair", preset, exits=exits, device="cpu", progress=False)
    # every method but Score-CAM (seconds per slice; its non-square maps: test_cams_score_cam.py)
    methods = [m for m in preset.evaluation.methods if m != "score_cam"]
    result = evaluate(run, "flair", preset, methods=methods, device="cpu", progress=False)
    test = result.slices
    assert test.images.shape[1:] == (1, 40, 48) and test.masks.shape[1:] == (40, 48)
    for method in methods:
        assert result.maps[method].shape == (len(result.indices[method]), 40, 48), method
        assert result.masks[method].shape == result.maps[method].shape, method
    assert np.isfinite(result.table[list(RESULT_COLUMNS[1:])].to_numpy(dtype=float)).all()
    assert len(result.table) == len(methods)
    # the tumour (rows 12..25 of 48, cols 20..31 of 56) is inside the window: the stored truth holds all of it
    assert test.masks.sum() == 144 * 4
    paths = export_case_masks(run, "flair", "ame_cam_crf", result.masks["ame_cam_crf"], test.case_ids, test.z)
    volume = np.asarray(nib.load(paths[0]).dataobj)
    assert volume.shape == (48, 56, 8)
    assert not volume[:4].any() and not volume[44:].any() and not volume[:, :4].any() and not volume[:, 52:].any()
    assert volume.sum() == result.masks["ame_cam_crf"].sum()
