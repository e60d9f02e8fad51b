"""What a run folder was made with (``RUN/run.json``), and a refusal to mix runs in one folder.

A run folder holds slices, checkpoints and tables that only fit together when one preset, one
slice geometry and one seed made them all. ``data_scripts/run_pipeline.py`` therefore records the
run's settings in ``RUN/run.json`` before the first notebook runs and, on every later run into the
same folder, compares:

- another **preset**, another **slice geometry** (``image_size`` / ``crop_size`` / ``crop_zoom``
  as resolved from the preset and the overrides) or another **seed** or **split file**: refused
  (:class:`RunSettingsConflict`, naming what differs and where to run instead). The slices would be
  replaced (slicing refuses that too, see :func:`amecam_lib.slicing.plan_cases`) and every
  checkpoint's config would differ, so nothing of the earlier run would survive;
- another **modality**: its files sit beside the first's (``RUN/<modality>/``, the modality in every
  file name and table row) and ``run.json`` lists every modality run so far; but the runner writes the
  executed notebooks, ``timings.csv`` and ``report.html`` at the top of the folder, so it refuses a
  run that would replace another modality's (``check_run_folder(..., modality=...)``): by default each
  modality has its own run folder, and ``--modality all`` makes one each;
- the same preset name whose **phase settings** changed (the code's presets were edited between two
  runs): allowed, each difference returned as a notice that the runner prints; a training whose
  config differs starts fresh and keeps the old checkpoints as ``*.superseded.pt`` with a warning
  (:mod:`amecam_lib.training`).

A run folder made before ``run.json`` existed is judged by the ``papermill`` parameters stored in
its executed notebooks (``RUN/01_slicing.ipynb`` ...); one with neither (sliced by
``slice_brats.py``, or by notebook 01 run by hand or by papermill without ``-p preset``) by the
geometry of its stored slices (``RUN/slices/<case>/case.json``). ``run.json`` also holds the git commit and
the dates, which the report (:mod:`amecam_lib.report`) and ``data_scripts/make_docs_figures.py``
quote.

Example::

    >>> from amecam_lib.config import get_preset
    >>> settings = run_settings(get_preset("smoke"), seed=0)
    >>> settings["preset"], settings["geometry"]["crop_zoom"]
    ('smoke', 0.4)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
from pathlib import Path

from amecam_lib.atomic import write_json
from amecam_lib.config import Preset

RUN_RECORD = "run.json"
"""Name of the record in the run folder."""

IDENTITY_KEYS = ("preset", "geometry", "seed", "split_file")
"""Settings that must match for two runs to share a run folder."""

SERIES_NOTEBOOKS = ("01_slicing.ipynb", "02_supcon_pretraining.ipynb", "03_multi_exit.ipynb",
                    "04_attentive_aggregation.ipynb", "05_crf_and_evaluation.ipynb")
"""The executed notebooks a run folder holds, in order."""


class RunSettingsConflict(ValueError):
    """A run would mix another preset, geometry, seed or split into an existing run folder."""


def run_settings(preset: Preset, *, seed: int, split_file: str | os.PathLike | None = None) -> dict:
    """The settings of a run as stored in ``run.json`` (plain JSON values).

    Args:
        preset: the resolved preset (overrides applied, e.g. by
            :func:`amecam_lib.runs.notebook_preset`).
        seed: the seed of the split and the trainings.
        split_file: the split file used instead of the seed, or None.

    Returns:
        ``{"preset", "geometry": {"image_size", "crop_size", "crop_zoom"}, "seed", "split_file",
        "phases": {phase: settings}}``; ``phases`` leaves out ``data.modalities`` (one run folder
        may hold several modalities).
    """
    data = preset.data
    phases = {}
    for phase in preset.PHASES:
        values = dataclasses.asdict(getattr(preset, phase))
        if phase == "data":
            values.pop("modalities", None)
        phases[phase] = values
    return json.loads(json.dumps({
        "preset": preset.name,
        "geometry": {"image_size": data.image_size,
                     "crop_size": None if data.crop_size is None else list(data.crop_size),
                     "crop_zoom": data.crop_zoom if data.crop_size is not None else None},
        "seed": int(seed),
        "split_file": None if split_file is None else str(Path(split_file).resolve()),
        "phases": phases,
    }))


def read_run_record(run_dir: str | os.PathLike) -> dict | None:
    """``RUN/run.json`` as a dict, or None when the folder has none (or an unreadable one)."""
    try:
        record = json.loads((Path(run_dir) / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def recorded_parameters(run_dir: str | os.PathLike) -> dict | None:
    """The papermill parameters of the first executed notebook of the series in ``run_dir``
    (``preset``, ``modality``, geometry, ``seed`` ...), or None when there is none."""
    run_dir = Path(run_dir)
    for name in SERIES_NOTEBOOKS:
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            metadata = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
        except ValueError:
            continue
        parameters = metadata.get("papermill", {}).get("parameters")
        if isinstance(parameters, dict) and "preset" in parameters:
            return parameters
    return None


def stored_geometry(run_dir: str | os.PathLike) -> dict | None:
    """The slice geometry of the slices already in ``RUN/slices/`` (the first case's
    ``case.json``), as :func:`run_settings` writes it, or None when the folder holds no readable
    case folder. For folders sliced without the runner (``slice_brats.py``, notebook 01 by hand
    or by papermill without ``-p preset``): they have no ``run.json`` and no preset to compare."""
    slices = Path(run_dir) / "slices"
    if not slices.is_dir():
        return None
    for info_path in sorted(slices.glob("*/case.json")):
        try:
            stored = json.loads(info_path.read_text(encoding="utf-8"))["settings"]
            crop_size = stored["crop_size"]
            return {"image_size": stored["image_size"], "crop_size": crop_size,
                    "crop_zoom": float(stored["crop_zoom"]) if crop_size is not None else None}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def earlier_settings(run_dir: str | os.PathLike) -> dict | None:
    """The settings that made a run folder: ``RUN/run.json``, else those resolved from the
    parameters of its executed notebooks (preset, geometry, seed, split file; no phase settings:
    the code that ran then is not known), else the geometry of its stored slices
    (:func:`stored_geometry`: ``{"geometry": ...}`` only); None for a folder without an earlier run."""
    record = read_run_record(run_dir)
    if record is not None:
        return record
    parameters = recorded_parameters(run_dir)
    if parameters is None:
        geometry = stored_geometry(run_dir)
        return None if geometry is None else {"geometry": geometry}
    from amecam_lib.runs import notebook_preset  # runs -> config only; imported late to keep this light

    try:
        preset = notebook_preset(parameters["preset"], parameters.get("modality") or "flair",
                                 image_size=parameters.get("image_size"), crop_size=parameters.get("crop_size"),
                                 crop_zoom=parameters.get("crop_zoom"))
    except (KeyError, ValueError):       # a preset or setting this code does not know
        return {"preset": parameters["preset"]}
    settings = run_settings(preset, seed=parameters.get("seed") or 0, split_file=parameters.get("split_file"))
    settings.pop("phases")
    return settings


def check_run_folder(run_dir: str | os.PathLike, settings: dict,
                     earlier: dict | None = None, *, modality: str | None = None) -> list[str]:
    """Compare a new run's :func:`run_settings` with what made the run folder.

    Args:
        run_dir: the run folder (it may not exist yet).
        settings: the new run's :func:`run_settings`.
        earlier: the earlier run's settings; default: :func:`earlier_settings` of ``run_dir``.
        modality: the new run's modality, when it writes the executed notebooks, ``timings.csv``
            and ``report.html`` at the top of the run folder (``run_pipeline.py``): those of
            another modality's run would be replaced, so that is refused too.

    Returns:
        notices, one line per phase setting that changed under the same preset name (empty when
        nothing changed or there is no earlier run).

    Raises:
        RunSettingsConflict: another preset, geometry, seed or split file; the message names each
            difference, what would be lost, and what to do instead.
    """
    executed = recorded_parameters(run_dir) if modality is not None else None
    if executed is not None and executed.get("modality") not in (None, modality):
        raise RunSettingsConflict(
            f"run folder {run_dir} holds the executed notebooks, timings.csv and report.html of a "
            f"{executed['modality']} run; a {modality} run would replace them (its slices, checkpoints "
            f"under {executed['modality']}/, masks and result rows would stay, the executed notebooks "
            f"would not). Run {modality} into its own run folder (by default runs/<preset>_{modality}), "
            f"or every modality with --modality all (one run folder each).")
    earlier = earlier_settings(run_dir) if earlier is None else earlier
    if earlier is None:
        return []
    differences = [f"{key}: {earlier.get(key)!r} there, {settings.get(key)!r} now"
                   for key in IDENTITY_KEYS if key in earlier and earlier.get(key) != settings.get(key)]
    if differences:
        raise RunSettingsConflict(
            f"run folder {run_dir} was made with other settings ({'; '.join(differences)}). Running "
            f"into it would replace its slices and start every training afresh, so its checkpoints, "
            f"tables and figures would no longer match anything. Choose another run folder (--out / "
            f"run_dir; by default each preset and modality has its own, runs/<preset>_<modality>), "
            f"or delete this one first if you mean to replace it.")
    if "phases" not in earlier:        # a folder made before run.json: its phase settings are not known
        return []
    return _phase_notices(earlier["phases"], settings.get("phases") or {})


def _phase_notices(earlier: dict, now: dict) -> list[str]:
    notices = []
    for phase in sorted(set(earlier) | set(now)):
        before, after = earlier.get(phase) or {}, now.get(phase) or {}
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                notices.append(f"{phase}.{key}: {before.get(key)!r} when the run folder was made, "
                               f"{after.get(key)!r} now")
    return notices


def write_run_record(run_dir: str | os.PathLike, settings: dict, modality: str) -> dict:
    """Write (or update) ``RUN/run.json`` atomically: the settings, every modality run so far,
    the git commit of the code and the dates. Returns the record written."""
    run_dir = Path(run_dir)
    earlier = read_run_record(run_dir) or {}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    modalities = list(earlier.get("modalities") or [])
    if modality not in modalities:
        modalities.append(modality)
    record = {**settings, "modalities": modalities, "created": earlier.get("created", now), "updated": now,
              "git_commit": git_commit()}
    write_json(run_dir / RUN_RECORD, record)
    return record


def git_commit(folder: str | os.PathLike | None = None) -> str:
    """The git commit of the code (``<hash>``, ``<hash>+dirty`` with uncommitted changes), or
    ``"unknown"`` outside a git checkout."""
    folder = Path(__file__).resolve().parent if folder is None else Path(folder)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


__all__ = ["IDENTITY_KEYS", "RUN_RECORD", "RunSettingsConflict", "check_run_folder", "earlier_settings", "git_commit",
           "read_run_record", "recorded_parameters", "run_settings", "write_run_record"]
