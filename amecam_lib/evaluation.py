"""Run every CAM method on the test split, turn the maps into masks, score them, write the tables
(paper Sec. 3.2 protocol; Tables 1-3).

Protocol (REFERENCE_NOTES "Inference and evaluation"):

- maps from :class:`amecam_lib.cams.CamMethods`, all on the same trained network;
- mask = ``map >= EvaluationConfig.threshold`` (0.5, fixed, label-free); ``ame_cam_crf`` is the
  ``ame_cam`` map refined by DenseCRF (:mod:`amecam_lib.crf`) instead, its kernel widths given in
  mm (``EvaluationConfig.crf_gaussian_sxy_mm``, ``crf_bilateral_sxy_mm``; the authors' 3 and 10,
  the ``demo`` preset's bilateral 20) and converted to pixels per slice with the case's pixel
  spacing per axis (:func:`crf_masks`), so a kernel covers the same anatomy in every geometry;
- Dice / IoU / HD95 per slice (:mod:`amecam_lib.metrics`, empty-mask convention, HD95 in mm: each
  case's stored pixel spacing per axis, :attr:`amecam_lib.slices.CaseInfo.pixel_spacing_mm`, from
  its affine and slicing geometry: 240 / S mm for BraTS resampled to S px, 1 mm / zoom for a crop)
  on every test slice *labelled* tumour (label 1, the authors' protocol); none is dropped.
  Ground-truth masks are used here only, to score. For a cropped run the ground truth is the
  stored in-window mask (tumour cut by the crop window, reported by slicing, is not scored
  here; the NIfTI export on the original grid counts it as missed);
- on the test slices labelled normal (label 0): the false-positive area, the fraction of the
  slice predicted tumour (0 is perfect);
- with ``EvaluationConfig.gate_by_prediction`` (label-free, every method built on the multi-exit
  classifier, and ``intensity``; not the rows with a network of their own, ``CamMethod.gated`` False): the mask of every slice the
  classifier itself calls normal (exit-4 tumour probability < 0.5) is emptied;
- seconds per slice of each method (map + mask, on this machine; a pass shared by several methods,
  e.g. the exit maps, is counted in full for each of them: the cost of the method on its own);
- ``evaluate(..., split="val", write=False)`` scores the val patients instead, to choose settings
  without looking at the test patients;
- Score-CAM runs on an evenly spaced subset of the tumour slices (and of the normal slices) when
  ``EvaluationConfig.score_cam_max_slices`` is set; its ``n_slices`` says how many.
- under torchrun (``data_scripts/train.py``) the work is shared out by batch: process r computes
  the maps, masks and per-slice scores of batches r, r + N, ... (the very batches of one process),
  rank 0 gathers them in slice order, scores in 3-D and writes the files, so ``results.csv`` is the
  same whatever N (but for the ``seconds_per_slice`` column: compute seconds added over the
  processes, per slice).

Per-patient 3-D scores (the BraTS challenge's own measure; :func:`score_volumes`), test split only:
for every method whose masks cover every test slice (all but a subsetted Score-CAM), each test
patient's predicted volume is built on the original grid exactly as the NIfTI export builds it
(:func:`amecam_lib.export.case_mask_volume`: the masks, after the same gating, put back through
the case's crop window / zoom at their ``z``; **zeros on slices that were not kept** (too little
brain) and outside the window) and scored against the case's full original segmentation, WT =
``seg > 0``, read from the BraTS folder by
:func:`amecam_lib.volumes.read_whole_tumour_for_evaluation`: Dice, IoU, HD95 in mm (voxel spacing
from the NIfTI header), predicted and true voxel counts. A false positive on any slice counts,
normal slices included, and tumour cut by a crop window or on a dropped slice counts as missed.

Files written (atomically): ``RUN/results.csv`` (one row per method and modality; the first eight
columns are exactly ``method,n_slices,dice_mean,dice_std,iou_mean,iou_std,hd95_mean,hd95_std``;
rows of other modalities already there are kept), ``RUN/results_3d.csv`` (one row per modality,
method and test patient, columns :data:`VOLUME_COLUMNS`; merged across modalities the same way),
``RUN/results.md`` (our numbers beside the paper's, then the per-patient 3-D summary),
``RUN/<modality>/per_slice_scores.csv`` and ``RUN/<modality>/predictions.npz`` (maps as float16
and masks of every method, for the notebook figures).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from amecam_lib import distributed
from amecam_lib.aggregation import ALL_EXITS, load_attention
from amecam_lib.atomic import atomic_path, write_text
from amecam_lib.baselines import load_reference_networks
from amecam_lib.cams import CRF_METHODS, EXITS_2_3, METHODS, SUPERVISION, CamMethods, attention_exits, get_method
from amecam_lib.config import EvaluationConfig, Preset
from amecam_lib.crf import dense_crf_from_config
from amecam_lib.device import pick_device
from amecam_lib.export import case_mask_volume
from amecam_lib.metrics import HD95_EMPTY, false_positive_area, slice_scores, summarise, volume_scores
from amecam_lib.phases import load_multi_exit
from amecam_lib.progress import tqdm
from amecam_lib.releases import BratsDataError
from amecam_lib.runs import check_modality, resolve_data_dir
from amecam_lib.slices import SliceSet, load_slices, read_case_info, read_manifest
from amecam_lib.volumes import read_whole_tumour_for_evaluation

RESULT_COLUMNS: tuple[str, ...] = ("method", "n_slices", "dice_mean", "dice_std", "iou_mean", "iou_std",
                                   "hd95_mean", "hd95_std")
"""The first columns of ``RUN/results.csv``, exactly."""
EXTRA_COLUMNS: tuple[str, ...] = ("modality", "n_normal_slices", "fp_area_normal_mean", "fp_area_normal_std",
                                  "seconds_per_slice")
"""Columns appended after :data:`RESULT_COLUMNS`."""
PER_SLICE_COLUMNS: tuple[str, ...] = ("method", "case_id", "z", "label", "scored", "dice", "iou", "hd95",
                                      "predicted_fraction")
VOLUME_COLUMNS: tuple[str, ...] = ("modality", "method", "case_id", "dice", "iou", "hd95", "predicted_voxels",
                                   "true_voxels")
"""Columns of ``RUN/results_3d.csv``: one row per modality, method and test patient."""

# Paper numbers (Chen et al., MICCAI 2023): Table 1 (Grad-CAM, ScoreCAM, LFI-CAM, LayerCAM, Swin-MIL, AME-CAM, the
# fully supervised Opt. U-net beside ``unet_fsl``, and C&F unsupervised / supervised beside ``cf_ul`` /
# ``cf_fsl``, per modality), Table 2 (T1: Avg. ME, Avg. ME + C2AM),
# Table 3 (T1-CE: single exits, M2 + M3). (mean, std) pairs.
# The paper's AME-CAM includes DenseCRF, so it sits beside ``ame_cam_crf``.
PAPER_RESULTS: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "t1": {
        "grad_cam": {"dice": (0.107, 0.090), "iou": (0.059, 0.055), "hd95": (121.816, 22.963)},
        "score_cam": {"dice": (0.296, 0.128), "iou": (0.181, 0.089), "hd95": (60.302, 14.110)},
        "lfi_cam": {"dice": (0.568, 0.167), "iou": (0.414, 0.152), "hd95": (23.939, 25.609)},
        "layer_cam": {"dice": (0.571, 0.170), "iou": (0.419, 0.161), "hd95": (23.335, 27.369)},
        "swin_mil": {"dice": (0.477, 0.170), "iou": (0.330, 0.147), "hd95": (46.468, 30.408)},
        "ame_cam_crf": {"dice": (0.631, 0.119), "iou": (0.471, 0.119), "hd95": (21.813, 18.219)},
        "avg_me": {"dice": (0.617, 0.121), "iou": (0.457, 0.121), "hd95": (23.603, 20.572)},
        "avg_me_c2am": {"dice": (0.484, 0.256), "iou": (0.354, 0.207), "hd95": (69.242, 121.163)},
        "unet_fsl": {"dice": (0.836, 0.062), "iou": (0.723, 0.090), "hd95": (11.730, 10.345)},
        "cf_ul": {"dice": (0.200, 0.082), "iou": (0.113, 0.051), "hd95": (79.187, 14.304)},
        "cf_fsl": {"dice": (0.572, 0.196), "iou": (0.426, 0.187), "hd95": (29.027, 20.881)},
    },
    "t1ce": {
        "grad_cam": {"dice": (0.127, 0.088), "iou": (0.071, 0.054), "hd95": (129.890, 27.854)},
        "score_cam": {"dice": (0.397, 0.189), "iou": (0.267, 0.163), "hd95": (46.834, 22.093)},
        "lfi_cam": {"dice": (0.121, 0.120), "iou": (0.069, 0.076), "hd95": (136.246, 38.619)},
        "layer_cam": {"dice": (0.510, 0.209), "iou": (0.367, 0.180), "hd95": (29.850, 45.877)},
        "swin_mil": {"dice": (0.460, 0.169), "iou": (0.314, 0.140), "hd95": (46.996, 22.821)},
        "ame_cam_crf": {"dice": (0.695, 0.095), "iou": (0.540, 0.108), "hd95": (18.129, 12.335)},
        "exit1": {"dice": (0.144, 0.184), "iou": (0.090, 0.130), "hd95": (74.249, 62.669)},
        "exit2": {"dice": (0.500, 0.231), "iou": (0.363, 0.196), "hd95": (43.762, 85.703)},
        "exit3": {"dice": (0.520, 0.163), "iou": (0.367, 0.141), "hd95": (43.749, 54.907)},
        "exit4": {"dice": (0.154, 0.101), "iou": (0.087, 0.065), "hd95": (120.779, 44.548)},
        "exit2_3": {"dice": (0.566, 0.207), "iou": (0.421, 0.186), "hd95": (27.972, 56.591)},
        "unet_fsl": {"dice": (0.845, 0.058), "iou": (0.736, 0.085), "hd95": (11.593, 11.120)},
        "cf_ul": {"dice": (0.179, 0.080), "iou": (0.101, 0.050), "hd95": (77.982, 14.042)},
        "cf_fsl": {"dice": (0.246, 0.104), "iou": (0.144, 0.070), "hd95": (130.616, 9.879)},
    },
    "t2": {
        "grad_cam": {"dice": (0.049, 0.058), "iou": (0.026, 0.034), "hd95": (141.025, 23.107)},
        "score_cam": {"dice": (0.530, 0.184), "iou": (0.382, 0.174), "hd95": (28.611, 11.596)},
        "lfi_cam": {"dice": (0.673, 0.173), "iou": (0.531, 0.186), "hd95": (18.165, 10.475)},
        "layer_cam": {"dice": (0.624, 0.178), "iou": (0.476, 0.173), "hd95": (23.978, 44.323)},
        "swin_mil": {"dice": (0.437, 0.149), "iou": (0.290, 0.117), "hd95": (38.006, 30.000)},
        "ame_cam_crf": {"dice": (0.721, 0.086), "iou": (0.571, 0.101), "hd95": (14.940, 8.736)},
        "unet_fsl": {"dice": (0.884, 0.064), "iou": (0.798, 0.098), "hd95": (8.349, 9.125)},
        "cf_ul": {"dice": (0.230, 0.089), "iou": (0.133, 0.058), "hd95": (76.256, 13.192)},
        "cf_fsl": {"dice": (0.611, 0.221), "iou": (0.474, 0.217), "hd95": (109.817, 27.735)},
    },
    "flair": {
        "grad_cam": {"dice": (0.150, 0.077), "iou": (0.083, 0.050), "hd95": (110.031, 23.307)},
        "score_cam": {"dice": (0.432, 0.209), "iou": (0.299, 0.178), "hd95": (39.385, 17.182)},
        "lfi_cam": {"dice": (0.161, 0.192), "iou": (0.102, 0.140), "hd95": (125.749, 45.582)},
        "layer_cam": {"dice": (0.652, 0.206), "iou": (0.515, 0.210), "hd95": (22.055, 33.959)},
        "swin_mil": {"dice": (0.272, 0.115), "iou": (0.163, 0.079), "hd95": (41.870, 19.231)},
        "ame_cam_crf": {"dice": (0.862, 0.088), "iou": (0.767, 0.122), "hd95": (8.664, 6.440)},
        "unet_fsl": {"dice": (0.914, 0.058), "iou": (0.847, 0.093), "hd95": (8.093, 11.879)},
        "cf_ul": {"dice": (0.306, 0.190), "iou": (0.199, 0.167), "hd95": (75.651, 14.214)},
        "cf_fsl": {"dice": (0.578, 0.137), "iou": (0.419, 0.130), "hd95": (138.138, 14.283)},
    },
}


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns (also written to the run folder).

    Attributes:
        table: one row per method, columns :data:`RESULT_COLUMNS` + :data:`EXTRA_COLUMNS`.
        per_slice: one row per method and test slice it ran on, columns :data:`PER_SLICE_COLUMNS`
            (``scored`` = label 1; Dice/IoU/HD95 follow the empty-mask convention on every row).
        maps: ``{method: (n_m, H, W) float32}`` CAMs of the slices the method ran on.
        masks: ``{method: (n_m, H, W) bool}`` predicted tumour masks.
        indices: ``{method: (n_m,) int}`` indices into ``slices`` of those slices.
        slices: the test :class:`~amecam_lib.slices.SliceSet`.
        seconds: ``{method: seconds per slice}``.
        paths: files written (``results_csv``, ``results_3d_csv``, ``results_md``, ``per_slice_csv``,
            ``predictions``).
        volume_scores: per-patient 3-D scores, columns :data:`VOLUME_COLUMNS` (:func:`score_volumes`);
            None for the val split.
        volume_seconds: seconds spent on the 3-D scores (reading the segmentations included).
    """

    table: pd.DataFrame
    per_slice: pd.DataFrame
    maps: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    indices: dict[str, np.ndarray]
    slices: SliceSet
    seconds: dict[str, float]
    paths: dict[str, Path] = field(default_factory=dict)
    volume_scores: pd.DataFrame | None = None
    volume_seconds: float = 0.0


# --- building blocks ---------------------------------------------------------------------------------

def threshold_masks(maps: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``(N, H, W)`` CAMs in [0, 1] -> ``(N, H, W) bool`` masks ``map >= threshold``."""
    return np.asarray(maps) >= threshold


def crf_masks(maps: np.ndarray, images: np.ndarray, config: EvaluationConfig,
              spacings_mm: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
    """DenseCRF masks of ``(N, H, W)`` CAMs on their ``(N, 1, H, W)`` slices (settings from ``config``;
    kernel widths in mm converted with each slice's ``(row, column)`` spacing, 1 mm when None)."""
    if spacings_mm is None:
        spacings_mm = [(1.0, 1.0)] * len(maps)
    return np.stack([dense_crf_from_config(cam, image[0], config, spacing)
                     for cam, image, spacing in zip(maps, images, spacings_mm)]) \
        if len(maps) else np.zeros(np.shape(maps), dtype=bool)


def map_correlation(first_maps: np.ndarray, second_maps: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation of two methods' maps, slice by slice (how alike two CAMs are, e.g.
    ``grad_cam`` and ``exit4``, see notebook 05).

    Args:
        first_maps, second_maps: ``(N, H, W)`` (or one ``(H, W)``) float maps of the same slices.
        region: optional ``(N, H, W)`` bool: correlate only these pixels of each slice (e.g.
            ``first_maps > 0``); None: every pixel.

    Returns:
        ``(N,) float64`` r in [-1, 1]; NaN for a slice where either map is constant over the
        pixels compared (or fewer than two pixels are compared): r is undefined there.

    Raises:
        ValueError: shapes that differ.
    """
    first = np.asarray(first_maps, dtype=np.float64)
    second = np.asarray(second_maps, dtype=np.float64)
    first, second = (array[None] if array.ndim == 2 else array for array in (first, second))
    keep = np.ones(first.shape, dtype=bool) if region is None else np.asarray(region, dtype=bool)
    keep = keep[None] if keep.ndim == 2 else keep
    if first.ndim != 3 or first.shape != second.shape or keep.shape != first.shape:
        raise ValueError(f"maps (and region) must be (N, H, W) of one shape, got {np.shape(first_maps)}, "
                         f"{np.shape(second_maps)}" + ("" if region is None else f", {np.shape(region)}"))
    correlations = np.full(len(first), np.nan)
    for index, (a, b, inside) in enumerate(zip(first, second, keep)):
        if inside.sum() < 2:
            continue
        a, b = a[inside] - a[inside].mean(), b[inside] - b[inside].mean()
        norm = np.sqrt((a * a).sum() * (b * b).sum())
        if norm > 0:
            correlations[index] = float(np.clip((a * b).sum() / norm, -1.0, 1.0))
    return correlations


def subset_indices(labels: np.ndarray, max_slices: int | None) -> np.ndarray:
    """Evenly spaced subset: at most ``max_slices`` tumour-labelled and ``max_slices`` normal slices.

    Args:
        labels: ``(N,)`` slice labels in {0, 1}.
        max_slices: per class; None keeps every slice.

    Returns:
        sorted ``(n,) int64`` indices into ``labels``.
    """
    labels = np.asarray(labels)
    if max_slices is None:
        return np.arange(len(labels))
    chosen = []
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        if len(members) > max_slices:
            members = members[np.unique(np.linspace(0, len(members) - 1, max_slices).round().astype(int))]
        chosen.append(members)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def pixel_spacing_mm(run_dir: str | Path, case_ids: Sequence[str]) -> dict[str, tuple[float, float]]:
    """mm per stored pixel of each case along rows and columns
    (:attr:`amecam_lib.slices.CaseInfo.pixel_spacing_mm`): the original voxel spacing from the
    affine (1 mm in BraTS, the paper's unit) times window / stored size per axis: ``240 / S`` for
    BraTS resampled to S px, ``160 / 64`` and ``192 / 77`` for a 160 x 192 crop at zoom 0.4."""
    return {case_id: read_case_info(run_dir, case_id).pixel_spacing_mm for case_id in sorted(set(case_ids))}


def score_slices(method: str, masks: np.ndarray, slices: SliceSet, indices: np.ndarray,
                 spacing: dict[str, tuple[float, float]], hd95_empty: float) -> pd.DataFrame:
    """Per-slice scores of one method (rows of ``per_slice_scores.csv``)."""
    rows = []
    for mask, index in zip(masks, indices):
        case_id = str(slices.case_ids[index])
        scores = slice_scores(mask, slices.masks[index], voxelspacing=spacing[case_id], hd95_empty=hd95_empty)
        rows.append({"method": method, "case_id": case_id, "z": int(slices.z[index]),
                     "label": int(slices.labels[index]), "scored": int(slices.labels[index] == 1),
                     "dice": scores.dice, "iou": scores.iou, "hd95": scores.hd95,
                     "predicted_fraction": false_positive_area(mask)})
    return pd.DataFrame(rows, columns=list(PER_SLICE_COLUMNS))


def summary_row(method: str, modality: str, per_slice: pd.DataFrame, seconds_per_slice: float) -> dict:
    """One row of ``results.csv`` from a method's per-slice scores.

    Raises:
        ValueError: the method has no tumour-labelled slice to score.
    """
    scored = per_slice[per_slice["scored"] == 1]
    normal = per_slice[per_slice["label"] == 0]
    if scored.empty:
        raise ValueError(f"{method}: no tumour-labelled test slice to score")
    row = {"method": method, "n_slices": int(len(scored))}
    for metric in ("dice", "iou", "hd95"):
        summary = summarise(scored[metric])
        row[f"{metric}_mean"], row[f"{metric}_std"] = summary.mean, summary.std
    fp_summary = summarise(normal["predicted_fraction"]) if len(normal) else None
    row.update({"modality": modality, "n_normal_slices": int(len(normal)),
                "fp_area_normal_mean": fp_summary.mean if fp_summary else 0.0,
                "fp_area_normal_std": fp_summary.std if fp_summary else 0.0,
                "seconds_per_slice": float(seconds_per_slice)})
    return row


def split_case_ids(run_dir: str | Path, split: str = "test") -> list[str]:
    """The patients of one split (``RUN/manifest.csv``), sorted, whether or not a slice of theirs was kept."""
    manifest = read_manifest(run_dir)
    return sorted(manifest.loc[manifest["split"] == split, "case_id"].astype(str).unique())


def score_volumes(run_dir: str | Path, data_dir: str | Path, modality: str, slices: SliceSet,
                  masks: dict[str, np.ndarray], indices: dict[str, np.ndarray],
                  hd95_empty: float = HD95_EMPTY) -> pd.DataFrame:
    """Per-patient 3-D scores of every method on the test patients (rows of ``results_3d.csv``).

    For each test patient (:func:`split_case_ids`) and each method whose masks cover every slice
    of ``slices`` (a method run on a subset, e.g. Score-CAM with ``score_cam_max_slices``, is left
    out: its other slices would count as predicted empty), the predicted volume is built with
    :func:`amecam_lib.export.case_mask_volume`, the function the NIfTI export uses: the method's
    masks on the patient's kept slices, put back through the crop window / zoom; zeros on the
    slices slicing dropped (too little brain), and outside the window. The ground truth is the
    whole original segmentation, WT = ``seg > 0``
    (:func:`amecam_lib.volumes.read_whole_tumour_for_evaluation`, read once per patient), so tumour
    outside the window or on a dropped slice counts as missed and a false positive on any slice
    lowers the score. Scores: :func:`amecam_lib.metrics.volume_scores` (empty-mask convention,
    HD95 in mm with the header's voxel spacing).

    Args:
        run_dir: the sliced run folder (geometry from ``case.json``, patients from the manifest).
        data_dir: the BraTS root the run was sliced from.
        modality: written into every row.
        slices: the test :class:`~amecam_lib.slices.SliceSet` the masks were predicted on.
        masks: ``{method: (n_m, H, W) bool}``, after gating.
        indices: ``{method: (n_m,) int}`` indices into ``slices`` of those masks.
        hd95_empty: HD95 when exactly one volume is empty.

    Returns:
        DataFrame with columns :data:`VOLUME_COLUMNS`, methods in the order of ``masks``, then
        patients sorted.

    Raises:
        BratsDataError: a test patient missing from ``data_dir``, or its segmentation on another
            grid than the one the run was sliced from.
    """
    whole = [method for method in masks if len(indices[method]) == len(slices)]
    rows: dict[str, list[dict]] = {method: [] for method in whole}   # patient-major reading, method-major rows
    for case_id in split_case_ids(run_dir, "test"):
        info = read_case_info(run_dir, case_id)
        truth = read_whole_tumour_for_evaluation(data_dir, case_id,       # the very file it was sliced from
                                                 expected_sha256=(info.sources.get("seg") or {}).get("sha256"))
        if truth.whole_tumour.shape != info.original_shape or not np.allclose(truth.affine, info.affine, atol=1e-3):
            raise BratsDataError(f"case {case_id}: the segmentation in {data_dir} is not on the grid this run "
                                 f"was sliced from ({truth.whole_tumour.shape} vs {info.original_shape} or another "
                                 f"affine); pass the data_dir of notebook 01")
        for method in whole:
            of_case = slices.case_ids[indices[method]] == case_id
            predicted = case_mask_volume(info, masks[method][of_case], slices.z[indices[method]][of_case])
            scores = volume_scores(predicted, truth.whole_tumour, voxelspacing=truth.voxel_spacing_mm,
                                   hd95_empty=hd95_empty)
            rows[method].append({"modality": modality, "method": method, "case_id": case_id, "dice": scores.dice,
                         "iou": scores.iou, "hd95": scores.hd95, "predicted_voxels": scores.predicted_voxels,
                         "true_voxels": scores.true_voxels})
    return pd.DataFrame([row for method in whole for row in rows[method]], columns=list(VOLUME_COLUMNS))


def volume_summary(volume_scores: pd.DataFrame, modality: str | None = None) -> pd.DataFrame:
    """Per-method summary of per-patient 3-D scores: one row per method (index), in table order.

    Args:
        volume_scores: rows of ``results_3d.csv`` (columns :data:`VOLUME_COLUMNS`).
        modality: keep this modality only (None: the table must hold one modality).

    Returns:
        DataFrame indexed by method with ``n_patients``, ``dice_mean``, ``dice_std``, ``iou_mean``,
        ``iou_std``, ``hd95_mean``, ``hd95_std`` (mean +- std over patients, ddof=0, as the slice
        table), ``predicted_voxels`` and ``true_voxels`` (means over patients).

    Raises:
        ValueError: several modalities and none chosen.
    """
    if modality is not None:
        volume_scores = volume_scores[volume_scores["modality"] == modality]
    elif volume_scores["modality"].nunique() > 1:
        raise ValueError(f"volume_scores holds {sorted(volume_scores['modality'].unique())}: choose a modality")
    rows = {}
    for method, scores in volume_scores.groupby("method", sort=False):
        row = {"n_patients": int(len(scores))}
        for metric in ("dice", "iou", "hd95"):
            summary = summarise(scores[metric])
            row[f"{metric}_mean"], row[f"{metric}_std"] = summary.mean, summary.std
        row["predicted_voxels"] = float(scores["predicted_voxels"].mean())
        row["true_voxels"] = float(scores["true_voxels"].mean())
        rows[method] = row
    summary_columns = ["n_patients", "dice_mean", "dice_std", "iou_mean", "iou_std", "hd95_mean", "hd95_std",
                       "predicted_voxels", "true_voxels"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=summary_columns).rename_axis("method")


# --- the whole evaluation ------------------------------------------------------------------------------

def evaluate(run_dir: str | Path, modality: str, preset: Preset, methods: Sequence[str] | None = None,
             device: str | None = None, progress: bool = True, write: bool | None = None,
             split: str = "test", data_dir: str | Path | None = None) -> EvaluationResult:
    """Evaluate every CAM method on the test split of one modality (paper Tables 1-3).

    Args:
        run_dir: run folder with sliced data, ``multi_exit/best.pt`` and the attention networks
            (``aggregation/`` for ``ame_cam``/``ame_cam_crf``, ``aggregation_exit2_3/`` for ``exit2_3``).
        modality: ``t1``, ``t1ce``, ``t2`` or ``flair``.
        preset: settings (``preset.evaluation``).
        methods: method names (default ``preset.evaluation.methods``).
        device: ``"auto"``/None, ``"cpu"``, ``"cuda"``.
        progress: a tqdm bar over methods.
        write: write the files listed in the module docstring (False: only return the result);
            default: True for ``split="test"``, False otherwise.
        split: ``"test"`` (the reported numbers) or ``"val"`` (to compare design choices without
            looking at the test patients; writing is then refused).
        data_dir: the BraTS root the run was sliced from, for the per-patient 3-D scores of the
            test split (:func:`score_volumes`); None: ``$AMECAM_DATA_DIR`` or the bundled sample.

    Returns:
        :class:`EvaluationResult`. Under torchrun rank 0's is complete (and it alone writes); the
        other ranks get empty tables and no maps.

    Raises:
        ValueError: unknown method names; a test split without tumour-labelled slices.
        FileNotFoundError: a needed checkpoint is missing; no ``data_dir`` folder (test split).
        BratsDataError: a test patient missing from ``data_dir`` (checked before any map is computed).
    """
    check_modality(modality)
    run_dir = Path(run_dir)
    config = preset.evaluation
    methods = tuple(config.methods if methods is None else methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {METHODS}")
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    write = (split == "test") if write is None else write
    if write and split != "test":
        raise ValueError("evaluate writes results for split='test' only; pass write=False for the val split")
    run_device = pick_device(device or "auto")
    if split == "test":                 # the 3-D scores need every test patient's segmentation: fail early
        data_dir = resolve_data_dir(data_dir)
        missing = [case_id for case_id in split_case_ids(run_dir, "test") if not (data_dir / case_id).is_dir()]
        if missing:
            raise BratsDataError(f"test patient(s) {missing} not found in {data_dir}: the 3-D scores read their "
                                 f"original segmentation; pass data_dir= the BraTS folder this run was sliced from")
    slices = load_slices(run_dir, modality, split, exclude_ambiguous=False)
    if not (slices.labels == 1).any():
        raise ValueError(f"the {split} split of {run_dir} has no tumour-labelled {modality} slice to score")
    model = load_multi_exit(run_dir, modality, "best", device=run_device)
    needs = {CRF_METHODS.get(m, m) for m in methods}
    attention = load_attention(run_dir, modality, ALL_EXITS, device=run_device) \
        if ALL_EXITS in attention_exits(needs) else None                      # ame_cam, m_f
    attention_2_3 = load_attention(run_dir, modality, EXITS_2_3, device=run_device) \
        if EXITS_2_3 in attention_exits(needs) else None
    references = load_reference_networks(run_dir, modality, methods, device=run_device)   # unet_fsl, avg_me_c2am
    cams = CamMethods(model, attention, attention_2_3, config, references=references)
    spacing = pixel_spacing_mm(run_dir, slices.case_ids)

    # Maps: every method but Score-CAM in one pass over the slices (shared forward / backward
    # passes, see CamMethods.compute); Score-CAM on its subset.
    sources = tuple(dict.fromkeys(CRF_METHODS.get(m, m) for m in methods))
    all_indices = np.arange(len(slices.labels))
    source_indices = {source: subset_indices(slices.labels, config.score_cam_max_slices)
                      if source == "score_cam" else all_indices for source in sources}
    # Under torchrun each process computes its share of the batches (batch b: rank b % N), the
    # very batches one process computes, and rank 0 gathers: the files do not depend on N.
    source_maps, map_seconds, source_positions = {}, {}, {}
    for group in ([s for s in sources if s != "score_cam"], [s for s in sources if s == "score_cam"]):
        if group:
            chosen = source_indices[group[0]]
            batches = distributed.batch_shard(len(chosen), config.batch_size)
            positions = np.concatenate([np.arange(start, stop) for start, stop in batches] or [np.zeros(0, int)])
            group_maps, group_seconds = _compute_maps(cams, group, slices.images[chosen], config.batch_size,
                                                      progress=progress and distributed.is_main(),
                                                      desc=f"{modality} {'+'.join(group)}", batches=batches)
            source_maps.update(group_maps)
            map_seconds.update(group_seconds)
            source_positions.update(dict.fromkeys(group, positions))
    predicted_normal = None
    if config.gate_by_prediction:
        started = time.perf_counter()
        gate_parts = [(start, cams.tumour_probability(slices.images[start:stop]) < 0.5)
                      for start, stop in distributed.batch_shard(len(all_indices), config.batch_size)]
        gate_parts = [part for shard in distributed.all_gather_objects(gate_parts) for part in shard]
        predicted_normal = np.concatenate([gate for _, gate in sorted(gate_parts, key=lambda part: part[0])])
        gate_seconds = time.perf_counter() - started
        map_seconds = {source: elapsed + gate_seconds * len(source_positions[source]) / len(all_indices)
                       for source, elapsed in map_seconds.items()}

    maps, masks, indices, seconds, rows, per_slice_parts = {}, {}, {}, {}, [], []
    for method in methods:
        source = CRF_METHODS.get(method, method)
        mine = source_indices[source][source_positions[source]]      # every index in one process
        method_maps, elapsed = source_maps[source], map_seconds[source]
        started = time.perf_counter()
        if method in CRF_METHODS:
            method_masks = crf_masks(method_maps, slices.images[mine], config,
                                     [spacing[case_id] for case_id in slices.case_ids[mine]])
        else:
            method_masks = threshold_masks(method_maps, config.threshold)
        if predicted_normal is not None and get_method(source).gated:
            method_masks = method_masks & ~predicted_normal[mine][:, None, None]
        elapsed += time.perf_counter() - started
        method_scores = score_slices(method, method_masks, slices, mine, spacing, config.hd95_empty)
        if distributed.active():
            method_maps, method_masks, method_scores, elapsed = _gather_in_order(
                source_positions[source], method_maps, method_masks, method_scores, elapsed)
            if not distributed.is_main():
                continue
        chosen = source_indices[source]
        maps[method], masks[method], indices[method] = method_maps, method_masks, chosen
        seconds[method] = elapsed / max(len(chosen), 1)
        per_slice_parts.append(method_scores)
        rows.append(summary_row(method, modality, method_scores, seconds[method]))

    if not distributed.is_main():                  # rank 0 scores in 3-D and writes; the others wait
        distributed.barrier()
        return EvaluationResult(table=pd.DataFrame(columns=list(RESULT_COLUMNS + EXTRA_COLUMNS)),
                                per_slice=pd.DataFrame(columns=list(PER_SLICE_COLUMNS)), maps={}, masks={},
                                indices={}, slices=slices, seconds={})
    maps = {m: maps[m] for m in methods}
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS + EXTRA_COLUMNS))
    per_slice = pd.concat(per_slice_parts, ignore_index=True)
    result = EvaluationResult(table=table, per_slice=per_slice, maps=maps, masks=masks,
                              indices={m: indices[m] for m in methods}, slices=slices, seconds=seconds)
    if split == "test":
        started = time.perf_counter()
        result.volume_scores = score_volumes(run_dir, data_dir, modality, slices, result.masks, result.indices,
                                             config.hd95_empty)
        result.volume_seconds = time.perf_counter() - started
    if write:
        result.paths = write_results(run_dir, modality, result)
    distributed.barrier()
    return result


def _gather_in_order(positions: np.ndarray, maps: np.ndarray, masks: np.ndarray, scores: pd.DataFrame,
                     elapsed: float) -> tuple:
    """Every rank's share of one method on rank 0, put back in slice order: ``(maps, masks,
    per-slice scores, seconds added over the ranks)``; None for the parts on other ranks."""
    shares = distributed.gather_objects_to_main((positions, maps, masks, scores, elapsed))
    if shares is None:
        return None, None, None, None
    order = np.argsort(np.concatenate([share[0] for share in shares]), kind="stable")
    return (np.concatenate([share[1] for share in shares])[order],
            np.concatenate([share[2] for share in shares])[order],
            pd.concat([share[3] for share in shares], ignore_index=True).iloc[order].reset_index(drop=True),
            float(sum(share[4] for share in shares)))


def _compute_maps(cams: CamMethods, methods: Sequence[str], images: np.ndarray, batch_size: int,
                  progress: bool = False, desc: str = "", batches: Sequence[tuple[int, int]] | None = None,
                  ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Maps of ``methods`` on ``(N, 1, H, W)`` images in batches: ``({name: (N, H, W)}, {name: seconds})``;
    with ``batches`` (``(start, stop)`` pairs), only those slices, in that order."""
    parts: dict[str, list[np.ndarray]] = {method: [] for method in methods}
    seconds = dict.fromkeys(methods, 0.0)
    if batches is None:
        batches = [(start, min(start + batch_size, len(images))) for start in range(0, len(images), batch_size)]
    for start, stop in tqdm(batches, desc=desc, disable=not progress):
        timings: dict[str, float] = {}
        batch_maps = cams.compute(images[start:stop], methods, timings=timings)
        for method in methods:
            parts[method].append(batch_maps[method])
            seconds[method] += timings[method]
    size = images.shape[-2:]
    maps = {method: np.concatenate(parts[method]) if parts[method] else np.zeros((0, *size), np.float32)
            for method in methods}
    return maps, seconds


# --- files -------------------------------------------------------------------------------------------

def write_results(run_dir: str | Path, modality: str, result: EvaluationResult) -> dict[str, Path]:
    """Write ``results.csv`` and ``results_3d.csv`` (each merged with other modalities' rows),
    ``results.md``, the per-slice scores and the predictions of one modality, atomically. Returns
    the paths."""
    run_dir = Path(run_dir)
    results_csv = run_dir / "results.csv"
    table = _merged(results_csv, result.table, modality)[list(RESULT_COLUMNS + EXTRA_COLUMNS)]
    write_text(results_csv, _csv_text(table))
    results_3d_csv = run_dir / "results_3d.csv"
    volumes = None
    if result.volume_scores is not None:
        volumes = _merged(results_3d_csv, result.volume_scores, modality)[list(VOLUME_COLUMNS)]
        write_text(results_3d_csv, _csv_text(volumes))
    write_text(run_dir / "results.md", results_markdown(table, volumes))
    per_slice_csv = run_dir / modality / "per_slice_scores.csv"
    write_text(per_slice_csv, _csv_text(result.per_slice))
    predictions = run_dir / modality / "predictions.npz"
    arrays = {"case_ids": np.asarray(result.slices.case_ids, dtype=str), "z": np.asarray(result.slices.z)}
    for method in result.maps:
        arrays[f"index_{method}"] = result.indices[method]
        arrays[f"map_{method}"] = result.maps[method].astype(np.float16)
        arrays[f"mask_{method}"] = result.masks[method]
    with atomic_path(predictions) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    paths = {"results_csv": results_csv, "results_md": run_dir / "results.md",
             "per_slice_csv": per_slice_csv, "predictions": predictions}
    if volumes is not None:
        paths["results_3d_csv"] = results_3d_csv
    return paths


def _merged(path: Path, rows: pd.DataFrame, modality: str) -> pd.DataFrame:
    """``rows`` after the rows of other modalities already in the CSV at ``path`` (if any)."""
    if path.is_file():
        previous = pd.read_csv(path)
        if "modality" in previous.columns:
            return pd.concat([previous[previous["modality"] != modality], rows], ignore_index=True)
    return rows


def load_predictions(run_dir: str | Path, modality: str) -> dict[str, np.ndarray]:
    """``RUN/<modality>/predictions.npz`` as a dict: ``case_ids``, ``z`` and, per method,
    ``index_<m>``, ``map_<m>`` (float16) and ``mask_<m>`` (bool).

    Raises:
        FileNotFoundError: :func:`evaluate` has not written it yet.
    """
    path = Path(run_dir) / modality / "predictions.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no predictions at {path}; run evaluate() (notebook 05) first")
    with np.load(path) as stored:
        return {name: stored[name] for name in stored.files}


def results_markdown(table: pd.DataFrame, volume_scores: pd.DataFrame | None = None) -> str:
    """Markdown tables, one per modality: our mean +- std beside the paper's (Tables 1-3); then,
    given the rows of ``results_3d.csv``, the per-patient 3-D summary of each modality."""
    lines = ["# Results", "",
             "Dice and IoU on the test slices labelled tumour, HD95 in mm (each case's pixel spacing "
             "from its affine and the slicing geometry); mean +- std. `fp area` is the mean fraction of a normal test slice "
             "predicted tumour. Paper: Chen et al., MICCAI 2023, Tables 1-3 (its AME-CAM includes DenseCRF, "
             "so it sits beside `ame_cam_crf`; its Table 2 is T1 only, its Table 3 T1-CE only). `type` as in "
             "the paper's Table 1: WSSS = slice labels only; UL = no label (`intensity`, the floor; `cf_ul`, the "
             "paper's UL C&F row); FSL = trained on the training patients' masks (`unet_fsl`, the paper's Opt. "
             "U-net row: the ceiling; `cf_fsl`, its FSL C&F row): references rather than competitors.", ""]
    for modality in dict.fromkeys(table["modality"]):
        paper = PAPER_RESULTS.get(modality, {})
        lines += [f"## {modality}", "",
                  "| type | method | n | Dice | IoU | HD95 | fp area | s/slice | paper Dice | paper IoU | paper HD95 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, row in table[table["modality"] == modality].iterrows():
            reference = paper.get(row["method"], {})
            cells = [SUPERVISION.get(row["method"], ""), f"`{row['method']}`", str(int(row["n_slices"]))]
            cells += [f"{row[f'{m}_mean']:.3f} +- {row[f'{m}_std']:.3f}" for m in ("dice", "iou", "hd95")]
            cells += [f"{row['fp_area_normal_mean']:.3f}", f"{row['seconds_per_slice']:.3f}"]
            cells += [f"{reference[m][0]:.3f} +- {reference[m][1]:.3f}" if m in reference else ""
                      for m in ("dice", "iou", "hd95")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if volume_scores is not None and len(volume_scores):
        lines += _volume_markdown(table, volume_scores)
    return "\n".join(lines)


def _volume_markdown(table: pd.DataFrame, volume_scores: pd.DataFrame) -> list[str]:
    """The per-patient 3-D section of ``results.md``."""
    lines = ["# Per-patient 3-D scores (whole volume, original grid)", "",
             "One score per test patient, then mean +- std over the patients: the predicted volume (kept "
             "slices put back through the crop window, as the NIfTI export does; 0 on dropped slices and "
             "outside the window) against the full expert segmentation (WT = seg > 0). Unlike the table "
             "above, every slice counts: false positives on normal slices lower Dice, tumour cut by the "
             "crop or on dropped slices is missed. HD95 in mm (voxel spacing from the NIfTI header); voxels "
             "are means over patients. Per patient: `results_3d.csv`.", ""]
    for modality in dict.fromkeys(volume_scores["modality"]):
        summary = volume_summary(volume_scores, modality)
        lines += [f"## {modality} (3-D)", "",
                  "| method | patients | Dice | IoU | HD95 | predicted voxels | true voxels |",
                  "|---|---|---|---|---|---|---|"]
        for method, row in summary.iterrows():
            cells = [f"`{method}`", str(int(row["n_patients"]))]
            cells += [f"{row[f'{m}_mean']:.3f} +- {row[f'{m}_std']:.3f}" for m in ("dice", "iou", "hd95")]
            cells += [f"{row['predicted_voxels']:,.0f}", f"{row['true_voxels']:,.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        left_out = [m for m in table.loc[table["modality"] == modality, "method"] if m not in summary.index]
        if left_out:
            lines += ["", "Not scored in 3-D (run on a subset of the test slices): "
                      + ", ".join(f"`{m}`" for m in left_out) + "."]
        lines.append("")
    return lines


def _csv_text(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6f", lineterminator="\n")
    return buffer.getvalue()
