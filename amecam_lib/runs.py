"""Run folders and notebook parameters: the small things every notebook of the series shares.

A *run folder* holds everything one run of the series writes (slices, checkpoints, maps, tables,
figures; see ARCHITECTURE.md). Its default place is ``<repository root>/runs/<preset>_<modality>``
(``runs/`` is git-ignored). The notebooks' ``parameters`` cell leaves ``data_dir``, ``run_dir``,
the geometry (``image_size``, ``crop_size``, ``crop_zoom``) and the epoch counts at ``None``; the
helpers here turn those ``None`` into the project defaults (the preset's geometry: a 160 x 192
crop for ``demo``, see :mod:`amecam_lib.config`), so that a notebook opened by hand and a notebook
run by papermill (``data_scripts/run_pipeline.py``) resolve the same settings the same way.

Example::

    >>> from amecam_lib.runs import default_run_dir, notebook_preset
    >>> default_run_dir("smoke", "flair").name
    'smoke_flair'
    >>> notebook_preset("smoke", "t2", image_size=48).data.image_size
    48
    >>> notebook_preset("demo", "t2", crop_size=[160, 192]).data.image_shape
    (160, 192)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from amecam_lib.config import MODALITIES, Preset, default_data_dir, get_preset

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
"""The repository root (the folder that holds ``amecam_lib/``)."""


def check_modality(modality: str) -> str:
    """Return ``modality`` if it is one of :data:`amecam_lib.config.MODALITIES`.

    Raises:
        ValueError: any other name (the message lists the known ones).
    """
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; choose one of {MODALITIES}")
    return modality


def default_run_dir(preset: str, modality: str) -> Path:
    """Default run folder of one preset and modality: ``<repo root>/runs/<preset>_<modality>``.

    Args:
        preset: preset name (``"smoke"``, ``"demo"``, ``"paper"``); any name is accepted, so
            that a user's own preset gets its own folder.
        modality: one of ``t1``, ``t1ce``, ``t2``, ``flair``.

    Raises:
        ValueError: an unknown modality or an empty preset name.
    """
    check_modality(modality)
    if not preset or os.sep in preset:
        raise ValueError(f"preset name {preset!r} cannot name a run folder")
    return REPO_ROOT / "runs" / f"{preset}_{modality}"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The BraTS root to read: ``data_dir``, or :func:`amecam_lib.config.default_data_dir` if None.

    Raises:
        FileNotFoundError: the folder does not exist (the message says how to point to the data).
    """
    path = default_data_dir() if data_dir is None else Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"BraTS data folder {path} not found; pass data_dir=... or set AMECAM_DATA_DIR")
    return path


def resolve_run_dir(run_dir: str | os.PathLike | None, preset: str, modality: str) -> Path:
    """The run folder to use: ``run_dir``, or :func:`default_run_dir` if None. Not created here."""
    if run_dir is None:
        return default_run_dir(preset, modality)
    check_modality(modality)
    return Path(run_dir).expanduser()


def notebook_preset(preset: str | Preset, modality: str, *, image_size: int | None = None,
                    crop_size=None, crop_zoom: float | None = None, seed: int | None = None,
                    **overrides) -> Preset:
    """Build the preset a notebook runs with, from the notebook's ``parameters`` cell.

    The data section slices only ``modality`` (one grey modality per model, paper Sec. 3.2).
    ``None`` values keep the preset's setting, so parameters left at ``None`` change nothing.

    Args:
        preset: a preset name for :func:`amecam_lib.config.get_preset`, or a :class:`Preset`.
        modality: the notebook's modality.
        image_size: side of the slices in pixels (square resampling; replaces a preset's crop),
            or None.
        crop_size: ``(H, W)`` crop window at the native grid (replaces a preset's
            ``image_size``; a list, as papermill passes it, is fine), or None.
        crop_zoom: resampling factor of the crop window, or None.
        seed: seed of the split and of training, or None.
        **overrides: more settings for :meth:`Preset.with_overrides`, e.g.
            ``**{"pretrain.epochs": 2}``.

    Raises:
        ValueError: an unknown preset or modality; ``image_size`` and ``crop_size`` both given;
            KeyError: an unknown setting name.
    """
    check_modality(modality)
    base = get_preset(preset) if isinstance(preset, str) else preset
    built = base.with_overrides(**{"data.modalities": (modality,), "data.image_size": image_size,
                                   "data.crop_size": crop_size, "data.crop_zoom": crop_zoom, **overrides})
    if seed is not None:
        built = built.with_overrides(seed=seed, **{"data.seed": seed})
    return built


def list_outputs(run_dir: str | os.PathLike, *patterns: str) -> list[str]:
    """Files of the run folder matching glob ``patterns`` (e.g. ``"flair/pretrain/*"``), as sorted
    paths relative to ``run_dir``; hidden temporary files are left out. For notebook summaries."""
    run_dir = Path(run_dir)
    found = {path.relative_to(run_dir).as_posix() for pattern in patterns
             for path in run_dir.glob(pattern) if path.is_file() and not path.name.startswith(".")}
    return sorted(found)


def example_indices(labels, per_class: int = 3) -> np.ndarray:
    """Indices of ``per_class`` tumour slices then ``per_class`` normal slices, evenly spread over
    the set (deterministic), for figures.

    Args:
        labels: ``(N,)`` slice labels in {0, 1}.

    Returns:
        ``(k,) int64`` indices, tumour first; fewer when a class has fewer slices.
    """
    labels = np.asarray(labels)
    chosen = []
    for value in (1, 0):
        members = np.flatnonzero(labels == value)
        if members.size:
            picks = np.unique(np.linspace(0, members.size - 1, min(per_class, members.size)).round())
            chosen.extend(members[picks.astype(np.int64)])
    return np.asarray(chosen, dtype=np.int64)


def tumour_examples(masks, case_ids, n: int = 4) -> np.ndarray:
    """Indices of ``n`` slices with much tumour, from as many different cases as possible: each
    case's largest-tumour slice first (cases by decreasing tumour), then the next largest overall.

    Args:
        masks: ``(N, H, W)`` bool whole-tumour masks.
        case_ids: ``(N,)`` case of each slice.
        n: how many slices.

    Returns:
        ``(min(n, N_tumour),) int64`` indices of slices with a non-empty mask.

    Raises:
        ValueError: no slice holds tumour.
    """
    area = np.asarray(masks).reshape(len(masks), -1).sum(axis=1)
    case_ids = np.asarray(case_ids)
    if not (area > 0).any():
        raise ValueError("no slice holds tumour; cannot pick tumour examples")
    order = np.argsort(-area, kind="stable")
    order = order[area[order] > 0]
    first_per_case = [i for k, i in enumerate(order) if case_ids[i] not in case_ids[order[:k]]]
    rest = [i for i in order if i not in first_per_case]
    return np.asarray((first_per_case + rest)[:n], dtype=np.int64)


def hard_examples(labels, masks, ambiguous) -> np.ndarray:
    """Indices of the slices that test a segmentation method hardest, for figures: the middle
    tumour-free slice, the ambiguous slice (0 < tumour <= threshold, labelled normal) with the most
    tumour visible at the stored size, and the tumour-labelled slice with the least tumour, each
    when the set has one.

    Args:
        labels: ``(N,)`` slice labels in {0, 1}.
        masks: ``(N, H, W)`` bool whole-tumour masks.
        ambiguous: ``(N,)`` bool ambiguous flags.

    Returns:
        ``(k,) int64`` indices, k <= 3, in the order above.
    """
    labels, ambiguous = np.asarray(labels), np.asarray(ambiguous, dtype=bool)
    area = np.asarray(masks).reshape(len(labels), -1).sum(axis=1)
    normal = np.flatnonzero((labels == 0) & (area == 0))
    tumour = np.flatnonzero(labels == 1)
    small = np.flatnonzero(ambiguous & (area > 0))
    picks = [normal[len(normal) // 2]] if normal.size else []
    picks += [small[np.argmax(area[small])]] if small.size else []
    picks += [tumour[np.argmin(area[tumour])]] if tumour.size else []
    return np.asarray(picks, dtype=np.int64)


def select_maps(maps: dict, indices: dict, wanted) -> dict:
    """Maps of chosen slices from per-method results that may cover different slices.

    Args:
        maps: ``{method: (n_m, H, W)}`` maps (e.g. ``EvaluationResult.maps``).
        indices: ``{method: (n_m,) int}`` slice index of each map row (``EvaluationResult.indices``).
        wanted: ``(k,)`` slice indices.

    Returns:
        ``{method: (k, H, W) float32}``, rows in the order of ``wanted``.

    Raises:
        KeyError: a method did not run on one of the wanted slices (e.g. Score-CAM's subset).
    """
    wanted = np.asarray(wanted, dtype=np.int64)
    selected = {}
    for method, method_maps in maps.items():
        row_of = {int(index): row for row, index in enumerate(np.asarray(indices[method]))}
        missing = [int(i) for i in wanted if int(i) not in row_of]
        if missing:
            raise KeyError(f"method {method!r} has no map for slice(s) {missing}")
        selected[method] = np.asarray(method_maps)[[row_of[int(i)] for i in wanted]].astype(np.float32)
    return selected
