"""run.json: one preset, geometry and seed per run folder; other modalities side by side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from amecam_lib.config import get_preset
from amecam_lib.run_record import (RUN_RECORD, RunSettingsConflict, check_run_folder, earlier_settings,
                                   read_run_record, run_settings, write_run_record)
from amecam_lib.runs import notebook_preset

REPO_ROOT = Path(__file__).resolve().parent.parent
PIPELINE = REPO_ROOT / "data_scripts" / "run_pipeline.py"


def settings_of(preset="smoke", modality="flair", seed=0, **geometry):
    return run_settings(notebook_preset(preset, modality, seed=seed, **geometry), seed=seed)


def test_settings_hold_the_identity_and_every_phase_but_the_modality():
    settings = settings_of("demo")
    assert settings["preset"] == "demo" and settings["seed"] == 0 and settings["split_file"] is None
    assert settings["geometry"] == {"image_size": None, "crop_size": [160, 192], "crop_zoom": 1.0}
    assert "modalities" not in settings["phases"]["data"] and "epochs" in settings["phases"]["pretrain"]
    assert settings_of("demo", "t1ce") == settings          # the modality is not part of a run's identity
    assert settings_of("demo", image_size=128)["geometry"] == {"image_size": 128, "crop_size": None,
                                                              "crop_zoom": None}
    json.dumps(settings)                                     # plain JSON


def test_a_new_folder_and_the_same_settings_pass(tmp_path):
    assert check_run_folder(tmp_path / "new", settings_of()) == []
    write_run_record(tmp_path, settings_of(), "flair")
    assert check_run_folder(tmp_path, settings_of()) == []
    assert check_run_folder(tmp_path, settings_of(modality="t1ce")) == []


def test_another_modality_is_recorded_beside_the_first(tmp_path):
    first = write_run_record(tmp_path, settings_of(), "flair")
    second = write_run_record(tmp_path, settings_of(), "t1ce")
    write_run_record(tmp_path, settings_of(), "flair")
    assert read_run_record(tmp_path)["modalities"] == ["flair", "t1ce"]
    assert second["created"] == first["created"] and second["git_commit"]


@pytest.mark.parametrize("changed, named", [
    (dict(preset="demo"), "preset: 'smoke' there, 'demo' now"),
    (dict(seed=3), "seed: 0 there, 3 now"),
    (dict(image_size=64), "geometry: "),
])
def test_another_preset_geometry_or_seed_is_refused(tmp_path, changed, named):
    write_run_record(tmp_path, settings_of(), "flair")
    arguments = {"preset": "smoke", "seed": 0, **changed}
    preset, seed = arguments.pop("preset"), arguments.pop("seed")
    with pytest.raises(RunSettingsConflict) as refused:
        check_run_folder(tmp_path, settings_of(preset, seed=seed, **arguments))
    message = str(refused.value)
    assert named in message and str(tmp_path) in message
    assert "another run folder" in message and "runs/<preset>_<modality>" in message


def test_a_changed_phase_setting_of_the_same_preset_is_a_notice(tmp_path):
    settings = settings_of()
    write_run_record(tmp_path, settings, "flair")
    changed = run_settings(notebook_preset("smoke", "flair", seed=0, **{"pretrain.epochs": 7}), seed=0)
    notices = check_run_folder(tmp_path, changed)
    assert notices == [f"pretrain.epochs: {settings['phases']['pretrain']['epochs']!r} when the run folder "
                       f"was made, 7 now"]


def _executed_notebook(run_dir: Path, parameters: dict) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["papermill"] = {"parameters": parameters}
    run_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, run_dir / "01_slicing.ipynb")


def test_a_folder_made_before_run_json_is_judged_by_its_notebooks_parameters(tmp_path):
    _executed_notebook(tmp_path, {"preset": "demo", "modality": "flair", "seed": 0, "image_size": None,
                                  "crop_size": None, "crop_zoom": None, "split_file": None})
    earlier = earlier_settings(tmp_path)
    assert earlier["preset"] == "demo" and "phases" not in earlier
    assert check_run_folder(tmp_path, settings_of("demo")) == []
    with pytest.raises(RunSettingsConflict, match="preset: 'demo' there, 'smoke' now"):
        check_run_folder(tmp_path, settings_of("smoke"))


def _sliced_without_the_runner(run_dir, preset="demo"):
    """A run folder as slice_brats.py or notebook 01 without ``-p preset`` leaves it: slices, no
    run.json, no executed notebook with a preset (only the case.json part read here)."""
    from amecam_lib.slicing import slice_settings

    case = run_dir / "slices" / "BraTS2021_00001"
    case.mkdir(parents=True)
    data = notebook_preset(preset, "t1ce").data
    (case / "case.json").write_text(json.dumps({"case_id": case.name, "settings": slice_settings(data)}))


def test_a_folder_sliced_without_the_runner_is_judged_by_its_slices_geometry(tmp_path):
    _sliced_without_the_runner(tmp_path)
    assert earlier_settings(tmp_path) == {"geometry": {"image_size": None, "crop_size": [160, 192],
                                                       "crop_zoom": 1.0}}
    assert check_run_folder(tmp_path, settings_of("demo", "t1ce")) == []
    with pytest.raises(RunSettingsConflict, match=r"geometry: .*'crop_zoom': 1.0.* there, .*'crop_zoom': 0.4.* now"):
        check_run_folder(tmp_path, settings_of("smoke", "t1ce"))


def test_run_pipeline_refuses_a_smoke_run_on_demo_slices_made_without_it(tmp_path):
    """README's papermill commands (demo, no run.json) then the runner with --preset smoke: 02 trained
    the smoke preset on the 160 x 192 demo slices without a word; now exit 2 before anything runs."""
    run = tmp_path / "run"
    _sliced_without_the_runner(run)
    done = subprocess.run([sys.executable, str(PIPELINE), "--preset", "smoke", "--modality", "t1ce",
                           "--data-dir", str(tmp_path), "--out", str(run), "--only", "02"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "was made with other settings (geometry:" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in run.iterdir()) == ["slices"]


def test_run_pipeline_refuses_another_preset_before_running_anything(tmp_path, sample_dir):
    """A preset change into the same run folder: exit 2, one message, nothing written or run."""
    run = tmp_path / "run"
    write_run_record(run, settings_of("demo"), "flair")
    before = (run / RUN_RECORD).read_text()
    done = subprocess.run([sys.executable, str(PIPELINE), "--preset", "smoke", "--data-dir", str(sample_dir),
                           "--out", str(run)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "preset: 'demo' there, 'smoke' now" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in run.iterdir()) == [RUN_RECORD] and (run / RUN_RECORD).read_text() == before


def test_run_settings_of_a_preset_object():
    assert run_settings(get_preset("paper"), seed=1)["geometry"]["image_size"] == 240


def test_another_modality_would_replace_the_executed_notebooks_and_is_refused(tmp_path):
    _executed_notebook(tmp_path, {"preset": "smoke", "modality": "flair", "seed": 0})
    assert check_run_folder(tmp_path, settings_of(), modality="flair") == []
    assert check_run_folder(tmp_path, settings_of(modality="t1ce")) == []     # notebooks by hand: side by side
    with pytest.raises(RunSettingsConflict) as refused:
        check_run_folder(tmp_path, settings_of(modality="t1ce"), modality="t1ce")
    message = str(refused.value)
    assert "executed notebooks, timings.csv and report.html of a flair run" in message
    assert "runs/<preset>_t1ce" in message and "--modality all" in message
