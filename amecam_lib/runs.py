"""Run folders and notebook parameters: the small things every notebook of the series shares.

A *run folder* holds everything one run of the series writes (slices, checkpoints, maps, tables,
figures; see ARCHITECTURE.md). Its default place is ``<repository root>/runs/<preset>_<modality>``
(``runs/`` is git-ignored). The notebooks' ``parameters`` cell leaves ``data_dir``, ``run_dir``,
``image_size`` and the epoch counts at ``None``; the helpers here turn those ``None`` into the
project defaults, so that a notebook opened by hand and a notebook run by papermill
(``data_scripts/run_pipeline.py``) resolve the same settings the same way.

Example::

    >>> from amecam_lib.runs import default_run_dir, notebook_preset
    >>> default_run_dir("smoke", "flair").name
    'smoke_flair'
    >>> notebook_preset("smoke", "t2", image_size=48).data.image_size
    48
"""

from __future__ import annotations

import os
from pathlib import Path

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
                    seed: int | None = None, **overrides) -> Preset:
    """Build the preset a notebook runs with, from the notebook's ``parameters`` cell.

    The data section slices only ``modality`` (one grey modality per model, paper Sec. 3.2).
    ``None`` values keep the preset's setting, so parameters left at ``None`` change nothing.

    Args:
        preset: a preset name for :func:`amecam_lib.config.get_preset`, or a :class:`Preset`.
        modality: the notebook's modality.
        image_size: side of the slices in pixels, or None.
        seed: seed of the split and of training, or None.
        **overrides: more settings for :meth:`Preset.with_overrides`, e.g.
            ``**{"pretrain.epochs": 2}``.

    Raises:
        ValueError: an unknown preset or modality; KeyError: an unknown setting name.
    """
    check_modality(modality)
    base = get_preset(preset) if isinstance(preset, str) else preset
    built = base.with_overrides(**{"data.modalities": (modality,), "data.image_size": image_size,
                                   **overrides})
    if seed is not None:
        built = built.with_overrides(seed=seed, **{"data.seed": seed})
    return built
