"""Run folders and notebook parameters: the small things every notebook of the series shares.

A *run folder* holds everything one run of the series writes (slices, checkpoints, maps, tables,
figures; see ARCHITECTURE.md). Its default place is ``<repository root>/runs/<preset>_<modality>``
(``runs/`` is git-ignored). The notebooks' ``parameters`` cell leaves ``data_dir``, ``run_dir``,
the geometry (``image_size``, ``crop_size``, ``crop_zoom``) and the epoch counts at ``None``; the
helpers here turn those ``None`` into the project defaults (the preset's geometry: a 160 x 192
crop for ``demo``, see :mod:`amecam_lib.config`), so that a notebook opened by hand and a notebook
run by papermill (``data_scripts/run_pipeline.py``) resolve the same settings the same way.

Every notebook checks its ``parameters`` cell right after it with :func:`check_parameters`:
papermill's ``-p NAME VALUE`` turns ``True``/``False``/``None`` and numbers into Python values but
leaves anything else text (``-p interactive false`` gives the string ``"false"``, which is truthy;
``-p crop_size "[160, 192]"`` a string), so each value is checked against its expected type
(:data:`NOTEBOOK_PARAMETERS`) and the plain text forms are converted.

Example::

    >>> from amecam_lib.runs import check_parameters, default_run_dir, notebook_preset
    >>> check_parameters({"interactive": "false", "crop_size": "[160, 192]", "seed": "3"})
    {'interactive': False, 'crop_size': (160, 192), 'seed': 3}
    >>> default_run_dir("smoke", "flair").name
    'smoke_flair'
    >>> notebook_preset("smoke", "t2", image_size=48).data.image_size
    48
    >>> notebook_preset("demo", "t2", crop_size=[160, 192]).data.image_shape
    (160, 192)
"""

from __future__ import annotations

import ast
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from amecam_lib.config import MODALITIES, Preset, default_data_dir, get_preset

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
"""The repository root (the folder that holds ``amecam_lib/``)."""


NOTEBOOK_PARAMETERS: dict[str, Any] = {
    "data_dir": str | None,            # a path (str or os.PathLike); None: the default data folder
    "run_dir": str | None,             # a path; None: runs/<preset>_<modality>
    "modality": str,
    "preset": str,
    "image_size": int | None,
    "crop_size": tuple[int, int] | None,
    "crop_zoom": float | None,
    "split_file": str | None,          # a path
    "workers": int,
    "seed": int,
    "epochs": int | None,
    "device": str,
    "interactive": bool,
    "skip_unreadable": bool,
}
"""Expected type of every ``parameters``-cell name of the series (one table for the five notebooks:
a name means the same everywhere). ``X | None``: None allowed (the default is None); ``str``
accepts ``os.PathLike`` too (paths); ``tuple[int, int]``: exactly two ints."""

TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})
NONE_WORDS = frozenset({"none", "null", ""})
"""Text forms converted by :func:`check_parameters` (case and surrounding spaces ignored)."""


class ParameterError(ValueError):
    """A notebook parameter whose value does not have (and cannot plainly be read as) its type."""


def check_parameters(values: Mapping[str, Any], types: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check a notebook's parameters against their expected types; convert the plain text forms.

    Run right after the ``parameters`` cell, because papermill's ``-p NAME VALUE`` passes text for
    anything but ``True``, ``False``, ``None`` and numbers (``-p interactive false`` gives
    ``"false"``, a truthy string). Conversions (nothing else is guessed):

    - ``bool``: ``True``/``False``; the ints 1/0 (papermill reads ``-p x 1`` as 1); the text
      ``true/yes/on/1`` and ``false/no/off/0``, any case.
    - ``int``: an int (not a bool), a float without fraction (``5.0``), or integer text (``"12"``).
    - ``float``: an int or float (not a bool), or number text (``"0.4"``); finite only.
    - ``str``: text or an ``os.PathLike``, kept as given. A number is refused: papermill turned the
      text into a number, pass it raw with ``papermill -r NAME VALUE``.
    - ``tuple[int, int]`` (``crop_size``): a list or tuple of two ints (papermill ``-y`` gives a
      list), or text such as ``"[160, 192]"``, ``"160, 192"``, ``"160 192"`` or ``"160x192"``;
      returned as a tuple.
    - ``X | None``: ``None``, or the text ``none``/``null`` or the empty text, gives None.

    Args:
        values: ``{name: value}`` as the parameters cell (and papermill) left them.
        types: ``{name: type}`` (default :data:`NOTEBOOK_PARAMETERS`); a type is ``bool``, ``int``,
            ``float``, ``str``, ``tuple[int, ...]`` / ``tuple[int, int]``, or one of those ``| None``.

    Returns:
        ``{name: value}`` in the order of ``values``, each of its type.

    Raises:
        ParameterError (a ``ValueError``): one message naming every parameter that is unknown to
            ``types`` or has a value that is not of (or plainly convertible to) its type, with the
            value given and the type expected.
    """
    types = NOTEBOOK_PARAMETERS if types is None else types
    checked, problems = {}, []
    for name, value in values.items():
        if name not in types:
            problems.append(f"parameter {name!r} is not a known notebook parameter (known: {sorted(types)})")
            continue
        try:
            checked[name] = _check_value(value, types[name])
        except ValueError as error:
            problems.append(f"parameter {name} = {value!r} ({type(value).__name__}): expected {error}")
    if problems:
        raise ParameterError("; ".join(problems))
    return checked


def _check_value(value: Any, expected: Any) -> Any:
    """``value`` as type ``expected`` (see :func:`check_parameters`); ValueError(what was expected)."""
    options = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    allows_none = type(None) in options
    kinds = [option for option in options if option is not type(None)]
    if len(kinds) != 1:
        raise TypeError(f"unsupported parameter type {expected!r}")
    kind = kinds[0]
    if allows_none and (value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS)):
        return None
    try:
        return _convert(value, kind)
    except ValueError as error:
        raise ValueError(f"{error}{' or None' if allows_none else ''}") from None


def _convert(value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (bool, int, float, str, tuple[...]); ValueError naming the type."""
    text = value.strip() if isinstance(value, str) else None
    if kind is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return bool(value)
        if text is not None and text.lower() in TRUE_WORDS | FALSE_WORDS:
            return text.lower() in TRUE_WORDS
        raise ValueError("a bool (True / False, or the text true/false, yes/no, on/off, 1/0)")
    if kind is int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return int(value)
        if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
            return int(value)
        if text is not None and re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        raise ValueError("an int")
    if kind is float:
        number = None
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            number = float(value)
        elif text is not None:
            try:
                number = float(text)
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise ValueError("a finite float")
        return number
    if kind is str:
        if isinstance(value, (str, os.PathLike)):
            return value
        raise ValueError("text (papermill reads a number-like value as a number: pass it with -r NAME VALUE)")
    if typing.get_origin(kind) is tuple:
        return _convert_tuple(value, typing.get_args(kind))
    raise TypeError(f"unsupported parameter type {kind!r}")


def _convert_tuple(value: Any, item_types: tuple) -> tuple:
    """``value`` (a list/tuple, or text of one) as a tuple of ``item_types`` (``(int, ...)``: any length)."""
    any_length = len(item_types) == 2 and item_types[1] is Ellipsis
    wanted = (f"a list of {item_types[0].__name__}s" if any_length else
              f"a list of {len(item_types)} {'/'.join(sorted({t.__name__ for t in item_types}))}s, e.g. [160, 192]")
    items = value
    if isinstance(value, str):
        text = value.strip()
        try:
            items = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            items = [part for part in re.split(r"[\s,x]+", text.strip("[]() ")) if part]
        if isinstance(items, (int, float)):
            items = [items]
    if not isinstance(items, (list, tuple)):
        raise ValueError(wanted)
    per_item = [item_types[0]] * len(items) if any_length else list(item_types)
    if len(items) != len(per_item):
        raise ValueError(wanted)
    try:
        return tuple(_convert(item, item_type) for item, item_type in zip(items, per_item))
    except ValueError:
        raise ValueError(wanted) from None


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
