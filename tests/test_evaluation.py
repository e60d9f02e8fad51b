"""Evaluation: building blocks by hand, then the whole phase 2 on the sliced sample with a tiny
(briefly trained) classifier: train_attention -> evaluate -> tables -> NIfTI export."""

from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from amecam_lib.aggregation import load_attention, train_attention
from amecam_lib.baselines import train_reference_networks
from amecam_lib.config import get_preset
from amecam_lib.evaluation import (PAPER_RESULTS, RESULT_COLUMNS, VOLUME_COLUMNS, EvaluationResult, evaluate,
                                   load_predictions, map_correlation, pixel_spacing_mm, results_markdown,
                                   score_volumes, subset_indices, summary_row, threshold_masks, volume_summary,
                                   write_results)
from amecam_lib.export import export_case_masks
from amecam_lib.losses.exits import multi_exit_loss
from amecam_lib.models.multi_exit import MultiExitResNet
from amecam_lib.phases import load_multi_exit, phase_dir
from amecam_lib.slices import SliceSet, load_slices, read_case_info
from amecam_lib.training import fit


def test_threshold_masks():
    maps = np.array([[[0.2, 0.5], [0.7, 0.49]]])
    np.testing.assert_array_equal(threshold_masks(maps, 0.5), [[[False, True], [True, False]]])


def test_map_correlation_by_hand():
    ramp = np.array([[0.0, 1.0], [2.0, 3.0]])
    maps = np.stack([ramp, ramp, ramp, np.ones((2, 2))])
    others = np.stack([2 * ramp + 5, -ramp, np.array([[0.0, 1.0], [3.0, 2.0]]), ramp])
    # r = 1 (positive affine), -1, (x . y) / |x||y| of centred [-1.5, -.5, .5, 1.5] and [-1.5, -.5, 1.5, .5]
    # = 4 / 5, undefined for a constant map
    np.testing.assert_allclose(map_correlation(maps, others), [1.0, -1.0, 0.8, np.nan])
    # region: pixels 1, 2, 3 of the third slice: centred [-1, 0, 1] and [-1, 1, 0] -> 1 / 2
    region = np.array([[False, True], [True, True]])
    assert map_correlation(ramp, others[2], region=region) == pytest.approx([0.5])
    assert np.isnan(map_correlation(ramp, ramp, region=np.zeros((2, 2), dtype=bool))).all()
    with pytest.raises(ValueError, match="one shape"):
        map_correlation(maps, others[:2])


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
    train_reference_networks(run, "flair", preset, device="cpu", progress=False)       # unet_fsl, avg_me_c2am, cf_ul, cf_fsl, swin_mil
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
def test_evaluate_writes_every_table_and_exports(trained_run, sample_dir):
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
    assert sorted(p.name for p in paths) == sorted(f"{c}_flair_ame_cam_crf.nii.gz" for c in set(test.case_ids))

    # per-patient 3-D scores: every method but the subsetted Score-CAM, each test patient once; the
    # truth is the whole original segmentation (read here with nibabel directly), the prediction the
    # exported volume (most test slices were dropped from this run's manifest: they count as empty)
    import nibabel as nib

    volumes = pd.read_csv(run / "results_3d.csv")
    assert tuple(volumes.columns) == VOLUME_COLUMNS and not volumes.isna().any().any()
    assert list(dict.fromkeys(volumes["method"])) == [m for m in preset.evaluation.methods if m != "score_cam"]
    assert sorted(set(volumes["case_id"])) == sorted(set(test.case_ids))
    crf_rows = volumes[volumes["method"] == "ame_cam_crf"].set_index("case_id")
    for path in paths:
        case_id = path.name.removesuffix("_flair_ame_cam_crf.nii.gz")
        (seg_file,) = (sample_dir / case_id).glob("*seg.nii*")
        assert crf_rows.loc[case_id, "true_voxels"] == int((np.asarray(nib.load(seg_file).dataobj) > 0).sum())
        assert crf_rows.loc[case_id, "predicted_voxels"] == int(np.asarray(nib.load(path).dataobj).sum())
    assert result.volume_scores is not None and result.volume_seconds > 0
    assert "# Per-patient 3-D scores" in (run / "results.md").read_text()


def test_unknown_method_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        evaluate(tmp_path, "flair", get_preset("smoke"), methods=["bogus"])


def test_val_split_is_never_written(tmp_path):
    with pytest.raises(ValueError, match="split='test' only"):
        evaluate(tmp_path, "flair", get_preset("smoke"), split="val", write=True)
    with pytest.raises(ValueError, match="split must be"):
        evaluate(tmp_path, "flair", get_preset("smoke"), split="train")


@pytest.fixture(scope="module")
def half_called_normal_run(trained_run, tmp_path_factory):
    """``trained_run`` with exit 4's bias moved so that the classifier calls about half of the test
    slices normal (the briefly trained one calls none normal, which would leave the gate untested).
    Returns (run, preset, called_normal) with ``called_normal`` computed here from the logits."""
    source, preset, _ = trained_run
    run = tmp_path_factory.mktemp("half_normal_run")
    for item in source.iterdir():
        if item.name != "flair":
            (run / item.name).symlink_to(item)
    (run / "flair").mkdir()
    for item in (source / "flair").iterdir():
        if item.name != "multi_exit":
            (run / "flair" / item.name).symlink_to(item)
    shutil.copytree(source / "flair" / "multi_exit", run / "flair" / "multi_exit")
    images = torch.from_numpy(load_slices(run, "flair", "test", with_masks=False).images)
    model = load_multi_exit(run, "flair", "best", device="cpu")
    with torch.no_grad():
        logits = model(images).logits[:, 3]
    checkpoint = torch.load(run / "flair" / "multi_exit" / "best.pt", weights_only=False)
    checkpoint["model"]["exits.3.bias"] = checkpoint["model"]["exits.3.bias"] - float(logits.median()) - 1e-4
    torch.save(checkpoint, run / "flair" / "multi_exit" / "best.pt")
    model = load_multi_exit(run, "flair", "best", device="cpu")
    with torch.no_grad():
        called_normal = torch.sigmoid(model(images).logits[:, 3]).numpy() < 0.5
    assert 0 < called_normal.sum() < len(called_normal)
    return run, preset, called_normal


@pytest.mark.slow
def test_gating_by_prediction_empties_masks_of_slices_called_normal(half_called_normal_run):
    """Threshold 0: every mask is the whole slice, so the gate's effect is exactly the slices called normal."""
    run, preset, called_normal = half_called_normal_run
    methods = ["exit1", "intensity"]
    everything = preset.with_overrides(threshold=0.0)
    plain = evaluate(run, "flair", everything, methods=methods, device="cpu", progress=False, write=False)
    gated = evaluate(run, "flair", everything.with_overrides(gate_by_prediction=True), methods=methods,
                     device="cpu", progress=False, write=False)
    for method in methods:
        assert plain.masks[method].all()
        assert not gated.masks[method][called_normal].any()
        assert gated.masks[method][~called_normal].all()


@pytest.mark.slow
def test_the_gate_leaves_the_reference_segmenters_alone(half_called_normal_run):
    """unet_fsl and the C&F rows segment with networks of their own: the multi-exit classifier's gate
    must not empty their masks (their rows would inherit the weak classifier's misses)."""
    run, preset, called_normal = half_called_normal_run
    everything = preset.with_overrides(threshold=0.0)
    methods = ["unet_fsl", "cf_ul", "cf_fsl"]
    gated = evaluate(run, "flair", everything.with_overrides(gate_by_prediction=True), methods=methods,
                     device="cpu", progress=False, write=False)
    for method in methods:
        assert gated.masks[method].all(), method


# --- per-patient 3-D scores on a hand-made run ---------------------------------------------------------

VOLUME_CASES = ["BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003", "BraTS2021_00004"]


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    """Four cases on a 40 x 48 x 5 grid (1 mm), brain rows 10..29, cols 12..35 on z 0..3, no brain on z 4
    (dropped by slicing), cut by a 16 x 20 crop at zoom 1: window rows 12..27, cols 14..33. Cases 1-3:
    tumour 16 voxels at rows 14..17, cols 16..19, z 1 and 4 at rows 20..21, cols 24..25, z 2 (in the
    window); 4 at rows 10..11, cols 20..21, z 2 (cut by the window); 4 at rows 14..15, cols 16..17 on the
    dropped z 4: 28 true voxels. Case 4: no tumour. Split: 1 train, 2 val, 3 and 4 test."""
    from _synthetic import write_case
    from amecam_lib.config import DataConfig
    from amecam_lib.slicing import slice_dataset

    root = tmp_path_factory.mktemp("volume_data")
    shape = (40, 48, 5)
    flair = np.zeros(shape, np.int16)
    flair[10:30, 12:36, :4] = 100
    seg = np.zeros(shape, np.uint8)
    seg[14:18, 16:20, 1] = 1
    seg[20:22, 24:26, 2] = 4
    seg[10:12, 20:22, 2] = 2
    seg[14:16, 16:18, 4] = 1
    for case_id in VOLUME_CASES:
        write_case(root, case_id, shape=shape, seg=seg if case_id != VOLUME_CASES[3] else np.zeros_like(seg),
                   images={"flair": flair})
    split_file = root / "split.csv"
    split_file.write_text("case_id,split\n" + "".join(
        f"{case_id},{split}\n" for case_id, split in zip(VOLUME_CASES, ["train", "val", "test", "test"])))
    config = DataConfig(modalities=("flair",), image_size=None, crop_size=(16, 20), crop_zoom=1.0,
                        min_brain_fraction=0.05)
    run = tmp_path_factory.mktemp("volume_run")
    with pytest.warns(UserWarning, match="larger than crop_size"):
        slice_dataset(root, run, config, split_file=split_file, progress=False)
    return run, root


def test_volume_scores_per_test_patient_by_hand(volume_run):
    run, root = volume_run
    test = load_slices(run, "flair", "test")
    assert sorted(set(test.case_ids)) == VOLUME_CASES[2:] and sorted(set(test.z)) == [0, 1, 2, 3]  # z 4 dropped
    first = test.case_ids == VOLUME_CASES[2]
    with_fp = test.masks.copy()
    with_fp[np.flatnonzero(first & (test.z == 0))[0], 0:2, 0:2] = True   # 4 voxels on a slice without tumour
    one_pixel = np.zeros_like(test.masks)
    one_pixel[np.flatnonzero(first & (test.z == 1))[0], 2, 2] = True     # window (2, 2) -> voxel (14, 16, 1)
    masks = {"truth_in_window": test.masks, "with_fp": with_fp, "empty": np.zeros_like(test.masks),
             "one_pixel": one_pixel, "subset": test.masks[:2]}
    indices = {method: np.arange(len(test)) for method in masks} | {"subset": np.arange(2)}
    table = score_volumes(run, root, "flair", test, masks, indices)

    assert read_case_info(run, VOLUME_CASES[2]).tumour_outside == 4
    assert tuple(table.columns) == VOLUME_COLUMNS and set(table["modality"]) == {"flair"}
    # only the test patients; every method that ran on every slice (the subset is left out), in order
    assert list(table["method"]) == [m for m in masks if m != "subset" for _ in range(2)]
    assert list(table["case_id"]) == VOLUME_CASES[2:] * 4
    scores = table.set_index(["method", "case_id"])
    patient, healthy = VOLUME_CASES[2], VOLUME_CASES[3]
    assert (scores.xs(patient, level="case_id")["true_voxels"] == 28).all()    # cut and dropped tumour included
    # the stored in-window truth, put back: 20 of the 28 true voxels (the cut 4 and the dropped 4 are missed)
    exact = scores.loc[("truth_in_window", patient)]
    assert exact["predicted_voxels"] == 20
    assert exact["dice"] == pytest.approx(2 * 20 / (20 + 28)) and exact["iou"] == pytest.approx(20 / 28)
    # HD95 by hand: 40 distances 0; the 4 dropped voxels are 3 slices from their predicted copy at z 1;
    # the cut voxels (rows 10..11, cols 20..21, z 2) reach the predicted (14, 19, 1) at sqrt 11, 14, 18, 21
    distances = [0.0] * 40 + [3.0] * 4 + [math.sqrt(d) for d in (11, 14, 18, 21)]
    assert exact["hd95"] == pytest.approx(np.percentile(distances, 95))
    # false positives on a normal slice lower the 3-D Dice (the slice table never scores that slice)
    assert scores.loc[("with_fp", patient), "predicted_voxels"] == 24
    assert scores.loc[("with_fp", patient), "dice"] == pytest.approx(2 * 20 / (24 + 28))
    # empty prediction: Dice 0, HD95 the empty convention
    empty = scores.loc[("empty", patient)]
    assert (empty["dice"], empty["iou"], empty["hd95"], empty["predicted_voxels"]) == (0.0, 0.0, 373.12866, 0)
    # a pixel in window coordinates lands on its original voxel, a true one
    assert scores.loc[("one_pixel", patient), "dice"] == pytest.approx(2 * 1 / (1 + 28))
    # the healthy patient: nothing predicted, nothing true -> perfect under the convention
    assert (scores.xs(healthy, level="case_id")[["dice", "hd95", "true_voxels"]].to_numpy()
            == [[1.0, 0.0, 0]] * 4).all()

    summary = volume_summary(table)
    assert list(summary.index) == ["truth_in_window", "with_fp", "empty", "one_pixel"]
    assert summary.loc["empty", "n_patients"] == 2 and summary.loc["empty", "dice_mean"] == 0.5
    assert summary.loc["empty", "dice_std"] == 0.5 and summary.loc["truth_in_window", "true_voxels"] == 14


def test_volume_scores_need_the_data_the_run_was_sliced_from(volume_run, tmp_path):
    from amecam_lib.releases import BratsDataError

    run, _ = volume_run
    test = load_slices(run, "flair", "test")
    with pytest.raises(BratsDataError, match="not found"):
        score_volumes(run, tmp_path, "flair", test, {"m": test.masks}, {"m": np.arange(len(test))})
    with pytest.raises(BratsDataError, match="not found in"):     # evaluate checks before computing any map
        evaluate(run, "flair", get_preset("smoke"), data_dir=tmp_path)


def test_volume_scores_refuse_a_segmentation_other_than_the_one_sliced(volume_run, tmp_path):
    """Same folder names, same grid, another segmentation (a data folder copied and a case replaced):
    its sha256 differs from case.json's, so the 3-D scores refuse it instead of scoring against it."""
    import shutil

    import nibabel as nib

    from amecam_lib.releases import BratsDataError

    run, root = volume_run
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    seg_path = copy / VOLUME_CASES[2] / f"{VOLUME_CASES[2]}_seg.nii.gz"
    image = nib.load(seg_path)
    other = np.asarray(image.dataobj).copy()
    other[30:32, 30:32, 1] = 1
    nib.save(nib.Nifti1Image(other, image.affine, header=image.header), seg_path)
    test = load_slices(run, "flair", "test")
    with pytest.raises(BratsDataError, match=f"{VOLUME_CASES[2]}_seg.nii.gz is not the segmentation case"):
        score_volumes(run, copy, "flair", test, {"m": test.masks}, {"m": np.arange(len(test))})
    shutil.copy(root / VOLUME_CASES[2] / f"{VOLUME_CASES[2]}_seg.nii.gz", seg_path)       # the sliced file: fine
    assert len(score_volumes(run, copy, "flair", test, {"m": test.masks}, {"m": np.arange(len(test))})) == 2


def test_results_3d_are_merged_across_modalities_and_summarised_in_markdown(tmp_path):
    def result(modality: str) -> EvaluationResult:
        table = pd.DataFrame([{"method": m, "n_slices": 1, "dice_mean": 0.5, "dice_std": 0.0, "iou_mean": 0.3,
                               "iou_std": 0.0, "hd95_mean": 4.0, "hd95_std": 0.0, "modality": modality,
                               "n_normal_slices": 1, "fp_area_normal_mean": 0.0, "fp_area_normal_std": 0.0,
                               "seconds_per_slice": 0.1} for m in ("ame_cam_crf", "score_cam")])
        volumes = pd.DataFrame([(modality, "ame_cam_crf", case, dice, dice, hd, voxels, 100)
                                for case, dice, hd, voxels in [("c1", 0.2, 30.0, 400), ("c2", 0.6, 10.0, 100)]],
                               columns=list(VOLUME_COLUMNS))
        one_slice = SliceSet(images=np.zeros((1, 1, 2, 2), np.float32), labels=np.ones(1, np.int64),
                         masks=np.zeros((1, 2, 2), bool), case_ids=np.array(["c1"]), z=np.zeros(1, np.int64),
                         ambiguous=np.zeros(1, bool), modality=modality, split="test")
        maps = {"ame_cam_crf": np.zeros((1, 2, 2), np.float32)}
        return EvaluationResult(table=table, per_slice=pd.DataFrame(), maps=maps,
                                masks={"ame_cam_crf": np.zeros((1, 2, 2), bool)},
                                indices={"ame_cam_crf": np.arange(1)}, slices=one_slice, seconds={},
                                volume_scores=volumes)

    for modality in ("flair", "t2"):
        (tmp_path / modality).mkdir()
        paths = write_results(tmp_path, modality, result(modality))
    stored = pd.read_csv(paths["results_3d_csv"])
    assert tuple(stored.columns) == VOLUME_COLUMNS and list(stored["modality"]) == ["flair"] * 2 + ["t2"] * 2
    write_results(tmp_path, "flair", result("flair"))                 # again: flair replaced, not doubled
    assert len(pd.read_csv(paths["results_3d_csv"])) == 4
    text = (tmp_path / "results.md").read_text()
    slice_part, volume_part = text.split("# Per-patient 3-D scores")
    assert "## flair" in slice_part and "## t2 (3-D)" in volume_part
    # mean +- std over the 2 patients; voxel counts are means; score_cam (a subset) is named as left out
    assert "| `ame_cam_crf` | 2 | 0.400 +- 0.200 | 0.400 +- 0.200 | 20.000 +- 10.000 | 250 | 100 |" in volume_part
    assert "Not scored in 3-D (run on a subset of the test slices): `score_cam`." in volume_part


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
    return run, preset, root


def test_every_phase_runs_on_a_non_square_crop_run(crop_run):
    """SupCon -> multi-exit -> both attention networks -> every CAM method + CRF -> scores -> NIfTI,
    on 40 x 48 px slices (H != W): a transposed or square-assuming step fails here."""
    import nibabel as nib

    from amecam_lib.phases import pretrain_supcon, train_multi_exit

    run, preset, root = crop_run
    assert read_case_info(run, "BraTS2021_00001").crop_box == (4, 4, 40, 48)
    pretrain_supcon(run, "flair", preset, device="cpu", progress=False)
    train_multi_exit(run, "flair", preset, device="cpu", progress=False)
    for exits in [(1, 2, 3, 4), (2, 3)]:
        train_attention(run, "flair", preset, exits=exits, device="cpu", progress=False)
    train_reference_networks(run, "flair", preset, device="cpu", progress=False)       # unet_fsl, avg_me_c2am, cf_ul, cf_fsl, swin_mil
    # every method but Score-CAM (seconds per slice; its non-square maps: test_cams_score_cam.py)
    methods = [m for m in preset.evaluation.methods if m != "score_cam"]
    result = evaluate(run, "flair", preset, methods=methods, device="cpu", progress=False, data_dir=root)
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
    # per-patient 3-D scores: every method, each test patient's 144 x 4 tumour voxels; the scored
    # volume is the exported one
    volumes = pd.read_csv(run / "results_3d.csv")
    assert sorted(set(volumes["method"])) == sorted(methods) and len(volumes) == len(methods) * len(set(test.case_ids))
    assert (volumes["true_voxels"] == 144 * 4).all() and volumes[["dice", "iou", "hd95"]].notna().all().all()
    crf_rows = volumes[volumes["method"] == "ame_cam_crf"].set_index("case_id")
    assert crf_rows.loc[paths[0].name.removesuffix("_flair_ame_cam_crf.nii.gz"), "predicted_voxels"] == volume.sum()
