"""amecam_lib.runs: run-folder defaults, notebook presets and the slice pickers of the figures."""

from __future__ import annotations

import ast
import re

import numpy as np
import pytest

from amecam_lib.config import default_data_dir
from amecam_lib.runs import (NOTEBOOK_PARAMETERS, REPO_ROOT, ParameterError, check_parameters, default_run_dir,
                             example_indices, hard_examples, list_outputs, notebook_preset, resolve_data_dir,
                             resolve_run_dir, select_maps, tumour_examples)


def test_default_run_dir_is_under_the_ignored_runs_folder():
    assert default_run_dir("demo", "t1ce") == REPO_ROOT / "runs" / "demo_t1ce"
    assert "runs/" in (REPO_ROOT / ".gitignore").read_text().split()


@pytest.mark.parametrize("preset, modality", [("demo", "T1"), ("demo", "seg"), ("", "flair"), ("a/b", "flair")])
def test_default_run_dir_rejects_bad_names(preset, modality):
    with pytest.raises(ValueError):
        default_run_dir(preset, modality)


def test_resolve_dirs(tmp_path):
    assert resolve_run_dir(None, "smoke", "t2") == default_run_dir("smoke", "t2")
    assert resolve_run_dir(tmp_path, "smoke", "t2") == tmp_path
    assert resolve_data_dir(tmp_path) == tmp_path
    if default_data_dir().is_dir():
        assert resolve_data_dir(None) == default_data_dir()
    with pytest.raises(FileNotFoundError, match="AMECAM_DATA_DIR"):
        resolve_data_dir(tmp_path / "missing")


def test_notebook_preset_applies_parameters_and_ignores_none():
    preset = notebook_preset("smoke", "t1", image_size=None, crop_size=None, crop_zoom=None, seed=None,
                             **{"pretrain.epochs": None})
    assert preset.data.modalities == ("t1",)
    assert preset.data.crop_size == (160, 192) and preset.data.crop_zoom == 0.4 and preset.data.image_size is None
    assert preset.pretrain.epochs == 1 and preset.seed == 0
    changed = notebook_preset("smoke", "t2", image_size=48, seed=3, **{"multi_exit.epochs": 5})
    assert changed.data.image_size == 48 and changed.multi_exit.epochs == 5
    assert changed.data.crop_size is None and changed.data.crop_zoom == 1.0  # image_size replaces the crop
    assert changed.seed == 3 and changed.data.seed == 3
    with pytest.raises(ValueError):
        notebook_preset("smoke", "pd")
    with pytest.raises(KeyError):
        notebook_preset("smoke", "t1", **{"pretrain.nonsense": 1})


def test_notebook_preset_crop_parameters_as_papermill_passes_them():
    cropped = notebook_preset("demo", "flair", crop_size=[160, 192])          # a list, from papermill
    assert cropped.data.crop_size == (160, 192) and cropped.data.image_size is None
    assert cropped.data.image_shape == (160, 192)
    zoomed = notebook_preset("demo", "flair", crop_size=[176, 208], crop_zoom=0.5)
    assert zoomed.data.image_shape == (88, 104)
    assert notebook_preset("smoke", "flair", crop_zoom=0.5).data.image_shape == (80, 96)
    with pytest.raises(ValueError, match="image_size=48 and crop_size=\\(160, 192\\)"):
        notebook_preset("demo", "flair", image_size=48, crop_size=[160, 192])
    with pytest.raises(ValueError, match="crop_zoom"):
        notebook_preset("paper", "flair", crop_zoom=0.5)                       # paper resamples: no crop


def test_list_outputs(tmp_path):
    for name in ("a.csv", "figures/01_x.png", "figures/.01_y.png", "figures/02_z.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert list_outputs(tmp_path, "figures/01_*", "*.csv", "a.csv") == ["a.csv", "figures/01_x.png"]


def test_example_indices_spreads_over_each_class():
    labels = [1, 0, 1, 1, 0, 0, 0]
    assert example_indices(labels, per_class=2).tolist() == [0, 3, 1, 6]
    assert example_indices([0, 0], per_class=3).tolist() == [0, 1]


def test_tumour_examples_prefers_one_slice_per_case():
    masks = np.zeros((6, 4, 4), bool)
    masks[0, :2] = True   # case a, 8 px
    masks[1, :3] = True   # case a, 12 px
    masks[2, :1] = True   # case b, 4 px
    masks[4] = True       # case c, 16 px
    case_ids = np.array(list("aabbcc"))
    assert tumour_examples(masks, case_ids, n=3).tolist() == [4, 1, 2]
    assert tumour_examples(masks, case_ids, n=10).tolist() == [4, 1, 2, 0]
    with pytest.raises(ValueError):
        tumour_examples(np.zeros((2, 4, 4), bool), case_ids[:2])


def test_hard_examples():
    labels = np.array([0, 0, 0, 1, 1, 0])
    masks = np.zeros((6, 4, 4), bool)
    masks[3, :2] = True    # tumour, 8 px
    masks[4, :1] = True    # tumour, 4 px: the smallest
    masks[5, 0, 0] = True  # ambiguous, visible
    ambiguous = np.array([True, False, False, False, False, True])   # slice 0: ambiguous but 0 px here
    # tumour-free: 0, 1, 2 -> middle 1; ambiguous with pixels: 5; least tumour: 4
    assert hard_examples(labels, masks, ambiguous).tolist() == [1, 5, 4]


def test_select_maps():
    maps = {"a": np.arange(3)[:, None, None] * np.ones((3, 2, 2)), "b": np.array([[[7.0]], [[9.0]]])}
    indices = {"a": np.array([0, 1, 2]), "b": np.array([1, 2])}
    selected = select_maps(maps, indices, [2, 1])
    assert selected["a"][:, 0, 0].tolist() == [2, 1] and selected["b"][:, 0, 0].tolist() == [9, 7]
    with pytest.raises(KeyError, match="'b'"):
        select_maps(maps, indices, [0])


def test_run_pipeline_bad_paths_give_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "data_scripts" / "run_pipeline.py"
    a_file = tmp_path / "afile"
    a_file.write_text("")
    for args, expected in ((["--data-dir", str(tmp_path / "nosuch")], "not found"),
                           (["--out", str(a_file)], "is a file, not a folder"),
                           (["--out", str(tmp_path / "run"), "--image-size", "64", "--crop-zoom", "0.5"],
                            "crop_zoom=0.5 applies only with crop_size")):
        done = subprocess.run([sys.executable, str(script), "--preset", "smoke", *args],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # a bad geometry is refused before the run folder is made


@pytest.mark.parametrize("args, named", [
    (["--crop-zoom", "0"], "crop_zoom=0.0 makes 0 x 0 px"),
    (["--crop", "10", "10000"], "crop_size must be two integers"),
    (["--image-size", "-5"], "image_size must be an integer in [8, 1024] (pixels), got -5"),
    (["--workers", "0"], "workers must be an integer >= 1, got 0"),
    (["--split-file", "nosuch.csv"], "nosuch.csv does not exist"),
])
def test_run_pipeline_refuses_a_bad_setting_before_run_json_marks_the_folder(tmp_path, args, named):
    """A mistyped geometry, worker count or split file: exit 2 naming it, before RUN/run.json is
    written; run.json with a setting nothing was sliced with would refuse the corrected rerun."""
    import subprocess
    import sys

    script = REPO_ROOT / "data_scripts" / "run_pipeline.py"
    run = tmp_path / "run"
    args = [str(tmp_path / a) if a == "nosuch.csv" else a for a in args]
    done = subprocess.run([sys.executable, str(script), "--preset", "smoke", "--data-dir", str(tmp_path),
                           "--out", str(run), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and "Traceback" not in done.stderr
    assert not run.exists()


# --- check_parameters: what papermill -p leaves in a parameters cell ---------------------------------

@pytest.mark.parametrize("given, expected", [
    ("false", False), ("False", False), (" NO ", False), ("off", False), ("0", False), (0, False), (False, False),
    ("true", True), ("TRUE", True), ("yes", True), ("on", True), ("1", True), (1, True), (True, True),
    (np.bool_(True), True)])
def test_bools_from_papermill_text(given, expected):
    """papermill -p interactive false injects the string "false", which is truthy: it must become False."""
    checked = check_parameters({"interactive": given})["interactive"]
    assert checked is expected


@pytest.mark.parametrize("given", ["maybe", "", 2, -1, 0.5, None, [True]])
def test_bools_refuse_anything_else(given):
    with pytest.raises(ParameterError, match=r"parameter interactive = .* expected a bool"):
        check_parameters({"interactive": given})


def test_numbers_paths_and_none():
    checked = check_parameters({"seed": "7", "workers": 2.0, "epochs": "None", "image_size": "null",
                                "crop_zoom": "0.4", "data_dir": "", "run_dir": REPO_ROOT, "split_file": "s.csv",
                                "device": "cuda:0", "modality": "t1ce", "preset": "smoke"})
    assert checked == {"seed": 7, "workers": 2, "epochs": None, "image_size": None, "crop_zoom": 0.4,
                       "data_dir": None, "run_dir": REPO_ROOT, "split_file": "s.csv", "device": "cuda:0",
                       "modality": "t1ce", "preset": "smoke"}
    assert type(checked["seed"]) is int and type(checked["crop_zoom"]) is float
    assert check_parameters({"crop_zoom": 1})["crop_zoom"] == 1.0 and check_parameters({"seed": 3}) == {"seed": 3}


@pytest.mark.parametrize("given", ["[160, 192]", "(160, 192)", "160, 192", "160 192", "160x192", [160, 192],
                                   (160, 192), ["160", "192"], [160.0, 192.0]])
def test_crop_size_from_text_or_a_list(given):
    assert check_parameters({"crop_size": given})["crop_size"] == (160, 192)


@pytest.mark.parametrize("name, given, expected", [
    ("seed", True, "an int"), ("seed", "1.5", "an int"), ("workers", 2.5, "an int"), ("epochs", "five", "an int or None"),
    ("crop_zoom", "nan", "a finite float or None"), ("crop_zoom", False, "a finite float"),
    ("crop_size", "[160, 192, 3]", "a list of 2 ints"), ("crop_size", 160, "a list of 2 ints"),
    ("crop_size", "[160, 19.5]", "a list of 2 ints"), ("modality", 1, "text"), ("run_dir", 2024, r"-r NAME VALUE")])
def test_a_bad_value_names_the_parameter_the_value_and_the_type(name, given, expected):
    with pytest.raises(ParameterError) as caught:
        check_parameters({name: given})
    message = str(caught.value)
    assert message.startswith(f"parameter {name} = {given!r} ({type(given).__name__}): expected ")
    assert re.search(expected, message), message


def test_every_problem_is_reported_at_once_and_unknown_names_refused():
    with pytest.raises(ParameterError) as caught:
        check_parameters({"interactive": "maybe", "seed": "x", "intractive": True})
    message = str(caught.value)
    assert "parameter interactive = 'maybe'" in message and "parameter seed = 'x'" in message
    assert "'intractive' is not a known notebook parameter" in message
    assert issubclass(ParameterError, ValueError)


def test_other_types_can_be_given():
    assert check_parameters({"sizes": "[1, 2, 3]"}, {"sizes": tuple[int, ...]}) == {"sizes": (1, 2, 3)}
    assert check_parameters({"scale": "2"}, {"scale": float}) == {"scale": 2.0}


def test_the_series_parameters_are_all_typed():
    """Every name a notebook's parameters cell declares has a type here, and the cell's defaults pass."""
    import papermill

    for notebook in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        declared = papermill.inspect_notebook(str(notebook))
        assert set(declared) <= set(NOTEBOOK_PARAMETERS), f"{notebook.name}: {set(declared) - set(NOTEBOOK_PARAMETERS)}"
        defaults = {name: ast.literal_eval(spec["default"]) for name, spec in declared.items()}
        assert check_parameters(defaults) == defaults, notebook.name


def test_run_pipeline_passes_skip_unreadable_to_notebook_01_only(tmp_path):
    import importlib.util

    import papermill

    spec = importlib.util.spec_from_file_location("run_pipeline", REPO_ROOT / "data_scripts" / "run_pipeline.py")
    pipeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pipeline)
    for flag, expected in (([], False), (["--skip-unreadable"], True)):
        parameters = pipeline.notebook_parameters(pipeline.parse_args(flag), tmp_path, tmp_path)
        assert parameters["skip_unreadable"] is expected
        assert check_parameters(parameters) == parameters            # every value already has its type
    declared = {name: set(papermill.inspect_notebook(str(REPO_ROOT / "notebooks" / name)))
                for name in pipeline.NOTEBOOKS}
    assert [name for name, names in declared.items() if "skip_unreadable" in names] == ["01_slicing.ipynb"]
