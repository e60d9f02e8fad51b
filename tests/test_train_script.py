"""data_scripts/train.py refuses bad settings before any phase starts (exit 2, one line)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from amecam_lib.runs import notebook_preset
from amecam_lib.slicing import slice_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "data_scripts" / "train.py"


def _train_module():
    spec = importlib.util.spec_from_file_location("train_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sliced(run_dir: Path, preset: str = "demo") -> Path:
    """A run folder as slice_brats.py --preset PRESET leaves it (manifest and one case.json; no
    run.json)."""
    case = run_dir / "slices" / "BraTS2021_00001"
    case.mkdir(parents=True)
    (case / "case.json").write_text(json.dumps({"settings": slice_settings(notebook_preset(preset, "flair").data)}))
    (run_dir / "manifest.csv").write_text("case_id,z,label,tumour_pixels,brain_pixels,ambiguous,kept,reason,split,row\n")
    return run_dir


def test_check_preset_names_a_bad_epochs_setting_and_another_geometry(tmp_path):
    train = _train_module()
    run = _sliced(tmp_path / "run")
    args = train.parse_args(["--run-dir", str(run), "--preset", "demo"])
    train.check_preset(args, train.build_preset(args, "flair"))                 # the geometry it was sliced with
    for setting, value in (("pretrain.epochs", -2), ("multi_exit.epochs", 0), ("swin_mil.epochs", 1.5)):
        args = train.parse_args(["--run-dir", str(run), "--preset", "demo", "--set", f"{setting}={value}"])
        with pytest.raises(ValueError, match=rf"--set {setting}={value}: epochs must be an integer >= 1"):
            train.check_preset(args, train.build_preset(args, "flair"))
    args = train.parse_args(["--run-dir", str(run), "--preset", "smoke"])      # smoke: 160 x 192 at zoom 0.4
    with pytest.raises(ValueError, match=r"was sliced with the geometry .*'crop_zoom': 1.0.*--preset smoke"):
        train.check_preset(args, train.build_preset(args, "flair"))
    args = train.parse_args(["--run-dir", str(run), "--preset", "smoke", "--crop-zoom", "1"])
    train.check_preset(args, train.build_preset(args, "flair"))                 # the same slices: accepted


def test_train_script_exits_2_with_one_line_before_training(tmp_path):
    run = _sliced(tmp_path / "run")
    for extra, expected in ((["--preset", "demo", "--set", "pretrain.epochs=-2"], "--set pretrain.epochs=-2"),
                            (["--preset", "smoke"], "was sliced with the geometry")):
        done = subprocess.run([sys.executable, str(SCRIPT), "--run-dir", str(run), "--phases", "pretrain",
                               "--device", "cpu", *extra], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr and "Traceback" not in done.stderr
        assert "===" not in done.stdout                                         # no phase started
