"""How much could the attention network A win? An oracle that USES GROUND-TRUTH MASKS (val only).

AME-CAM's final map is ``n(mean(n(M_1), ..., n(M_n), M_f))`` with ``M_f = sum_i S_i n(M_i)`` and
the weights S (a softmax over the exits at every pixel) chosen by A. Whatever A does, ``M_f`` at a
pixel lies between the smallest and the largest of the n(M_i) there. The oracle takes the best end
of that range with the ground truth in hand::

    M_f_oracle = max_i n(M_i)   on tumour pixels
               = min_i n(M_i)   elsewhere
    oracle     = n(mean(n(M_1), ..., n(M_n), M_f_oracle))       (the paper's final formula)

It is the best A could do *pixel by pixel* with these trained exits (a per-pixel choice, not a
guaranteed optimum of Dice after the final normalisation). Compared on the same slices:

- ``ame_cam`` far below ``oracle_ame_cam``: room was there, and the trained A chose badly;
- ``oracle_ame_cam`` close to ``avg_me``: no choice of A can win much with these exits (4 of the 5
  parts of the final map do not depend on A); better exits, not a better A, would help.

The oracle reads the masks of the patients it scores, so it is a diagnostic of the method, never a
method: :func:`oracle_scores_with_masks` refuses every split but ``"val"``, so that it can never
be used to choose anything on the test patients.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from amecam_lib.aggregation import ALL_EXITS, load_attention
from amecam_lib.cams import CamMethods
from amecam_lib.cams.exits import EXIT_MAPS
from amecam_lib.config import Preset
from amecam_lib.device import pick_device
from amecam_lib.equations import final_cam, normalise_maps
from amecam_lib.metrics import slice_scores, summarise
from amecam_lib.phases import load_multi_exit
from amecam_lib.runs import check_modality
from amecam_lib.slices import load_slices

ORACLE_SPLIT = "val"
"""The only split the oracle may read masks of."""
COMPARED_METHODS: tuple[str, ...] = ("avg_me", "m_f", "ame_cam")
"""The label-free methods scored beside the oracle (same slices, same masks rule)."""
ORACLE_METHODS: tuple[str, ...] = ("oracle_m_f", "oracle_ame_cam")
"""The oracle rows: ``n(M_f_oracle)`` alone, and the paper's final formula with it."""
ORACLE_COLUMNS: tuple[str, ...] = ("method", "uses_masks", "n_slices", "dice_mean", "dice_std")


def oracle_fused_map_with_masks(exit_maps_norm: torch.Tensor, tumour_masks: torch.Tensor) -> torch.Tensor:
    """M_f with A replaced by a per-pixel oracle that reads the ground truth.

    Args:
        exit_maps_norm: ``(B, n, H, W) float32`` normalised exit maps n(M_i) in [0, 1].
        tumour_masks: ``(B, H, W)`` bool ground truth (whole tumour) of the same slices.

    Returns:
        ``(B, 1, H, W) float32`` in [0, 1]: ``max_i n(M_i)`` on tumour, ``min_i n(M_i)`` elsewhere
        (the weights S would be one-hot on the best exit: a valid softmax limit).

    Raises:
        ValueError: shapes that do not match.
    """
    if exit_maps_norm.ndim != 4 or tuple(tumour_masks.shape) != (exit_maps_norm.shape[0], *exit_maps_norm.shape[2:]):
        raise ValueError(f"exit_maps_norm must be (B, n, H, W) and tumour_masks (B, H, W); got "
                         f"{tuple(exit_maps_norm.shape)} and {tuple(tumour_masks.shape)}")
    tumour = torch.as_tensor(tumour_masks, dtype=torch.bool, device=exit_maps_norm.device)[:, None]
    highest = exit_maps_norm.amax(dim=1, keepdim=True)
    lowest = exit_maps_norm.amin(dim=1, keepdim=True)
    return torch.where(tumour, highest, lowest).float()


def oracle_final_cam_with_masks(exit_maps_norm: torch.Tensor, tumour_masks: torch.Tensor,
                                region: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's final CAM with the oracle M_f (:func:`oracle_fused_map_with_masks`).

    ``n(mean(n(M_1), ..., n(M_n), M_f_oracle))``, normalised like ``ame_cam``.

    Args:
        exit_maps_norm: ``(B, n, H, W)`` n(M_i) in [0, 1] (normalised as the evaluation does).
        tumour_masks: ``(B, H, W)`` bool ground truth.
        region: optional ``(B, 1, H, W)`` or ``(B, H, W)`` bool brain: n(.) over it, 0 outside
            (``EvaluationConfig.restrict_to_brain``).

    Returns:
        ``(B, H, W) float32`` in [0, 1].
    """
    return final_cam(exit_maps_norm, oracle_fused_map_with_masks(exit_maps_norm, tumour_masks), region)


def oracle_scores_with_masks(run_dir: str | Path, modality: str, preset: Preset, split: str = ORACLE_SPLIT,
                             device: str | None = None) -> pd.DataFrame:
    """Dice of ``avg_me``, ``m_f``, ``ame_cam`` and the oracle, on the val split's tumour slices.

    Same slices (every slice *labelled* tumour), same maps (:class:`~amecam_lib.cams.CamMethods`,
    ``preset.evaluation``: n(.) over the brain with ``restrict_to_brain``), same masks rule as the
    evaluation (``map >= threshold``; with ``gate_by_prediction`` the mask of a slice the
    classifier calls normal is emptied, for every row alike), Dice with the empty-mask convention
    of :mod:`amecam_lib.metrics`. The oracle rows read the ground-truth masks (``uses_masks``).

    Args:
        run_dir, modality: the run (trained classifier and attention network over exits 1-4).
        preset: settings (``preset.evaluation``).
        split: must be ``"val"``; there only to be refused otherwise.
        device: ``"auto"``/None, ``"cpu"``, ``"cuda"``.

    Returns:
        one row per method (:data:`COMPARED_METHODS` then :data:`ORACLE_METHODS`), columns
        :data:`ORACLE_COLUMNS`.

    Raises:
        ValueError: ``split`` is not ``"val"`` (the oracle reads masks: never on test patients);
            the val split has no tumour-labelled slice; A trained with another n(.).
        FileNotFoundError: a network is missing.
    """
    if split != ORACLE_SPLIT:
        raise ValueError(f"the oracle reads ground-truth masks and runs on the {ORACLE_SPLIT!r} split only; "
                         f"refusing split={split!r} (never choose anything with the test patients' masks)")
    check_modality(modality)
    config = preset.evaluation
    run_device = pick_device(device or "auto")
    slices = load_slices(run_dir, modality, split, exclude_ambiguous=False)
    chosen = np.flatnonzero(np.asarray(slices.labels) == 1)
    if len(chosen) == 0:
        raise ValueError(f"the {split} split of {run_dir} has no tumour-labelled {modality} slice to score")
    cams = CamMethods(load_multi_exit(run_dir, modality, "best", device=run_device),
                      load_attention(run_dir, modality, ALL_EXITS, device=run_device), None, config)
    names = COMPARED_METHODS + ORACLE_METHODS
    dice: dict[str, list[float]] = {name: [] for name in names}
    for start in range(0, len(chosen), config.batch_size):
        indices = chosen[start:start + config.batch_size]
        images, tumour = slices.images[indices], slices.masks[indices]
        maps = cams.compute(images, COMPARED_METHODS)
        batch = cams.batch(images)
        with torch.no_grad():
            exit_maps = batch.shared(EXIT_MAPS)                                  # n(M_i), as the CAMs
            tumour_tensor = torch.from_numpy(np.ascontiguousarray(tumour)).to(exit_maps.device)
            maps["oracle_m_f"] = batch.normalise(oracle_fused_map_with_masks(exit_maps, tumour_tensor)[:, 0])
            maps["oracle_ame_cam"] = oracle_final_cam_with_masks(exit_maps, tumour_tensor, batch.region)
        keep = np.ones(len(indices), dtype=bool)
        if config.gate_by_prediction:
            keep = cams.tumour_probability(images) >= 0.5
        for name in names:
            cam = maps[name].detach().cpu().numpy() if isinstance(maps[name], torch.Tensor) else maps[name]
            masks = (cam >= config.threshold) & keep[:, None, None]
            dice[name] += [slice_scores(mask, truth).dice for mask, truth in zip(masks, tumour)]
    rows = []
    for name in names:
        summary = summarise(dice[name])
        rows.append({"method": name, "uses_masks": name in ORACLE_METHODS, "n_slices": summary.n,
                     "dice_mean": summary.mean, "dice_std": summary.std})
    return pd.DataFrame(rows, columns=list(ORACLE_COLUMNS))


def oracle_verdict(table: pd.DataFrame, margin: float = 0.05) -> str:
    """One sentence that reads :func:`oracle_scores_with_masks`' table.

    Args:
        table: its rows (``method``, ``dice_mean``).
        margin: Dice difference below which two rows count as close.

    Returns:
        "A chose badly" when ``ame_cam`` is more than ``margin`` below ``oracle_ame_cam``, and
        "no choice of A can win" when ``oracle_ame_cam`` is within ``margin`` of ``avg_me``
        (both may hold; then the second is the stronger statement).
    """
    dice = table.set_index("method")["dice_mean"]
    oracle, ame, average = dice["oracle_ame_cam"], dice["ame_cam"], dice["avg_me"]
    if oracle - average <= margin:
        return (f"oracle_ame_cam ({oracle:.3f}) is within {margin} Dice of avg_me ({average:.3f}): no choice "
                f"of A can win much with these exits; better exit maps, not a better A, would help.")
    if oracle - ame > margin:
        return (f"oracle_ame_cam ({oracle:.3f}) is {oracle - ame:.3f} Dice above ame_cam ({ame:.3f}): "
                f"the exits leave room, and the trained A chose badly.")
    return (f"ame_cam ({ame:.3f}) is within {margin} Dice of the oracle ({oracle:.3f}): A chose about as "
            f"well as the exits allow.")
