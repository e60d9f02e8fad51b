"""Shared fixtures: the real BraTS sample and one sliced run of it, made once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from amecam_lib.config import default_data_dir

os.environ.setdefault("TQDM_DISABLE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The 7-case BraTS sample (``$AMECAM_DATA_DIR`` or ``../shared/data/brats_sample``)."""
    path = default_data_dir()
    if not path.is_dir():
        pytest.fail(f"BraTS sample not found at {path}; set AMECAM_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def sliced_run(sample_dir, tmp_path_factory) -> Path:
    """The sample sliced at 64 px (FLAIR and T1ce), in a session-wide temporary run folder."""
    from amecam_lib.config import get_preset
    from amecam_lib.slicing import slice_dataset

    run_dir = tmp_path_factory.mktemp("run")
    config = get_preset("smoke").data
    config = type(config)(**{**config.__dict__, "modalities": ("flair", "t1ce")})
    slice_dataset(sample_dir, run_dir, config, workers=2, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def smoke_run(sample_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``data_scripts/run_pipeline.py --preset smoke --modality flair`` on the sample, once per session
    (a few minutes): the run folder and the finished process. tests/test_notebooks.py checks its
    files and notebooks; tests/test_browser.py copies it to run notebook 05 in JupyterLab."""
    run_dir = tmp_path_factory.mktemp("smoke_run")
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "data_scripts" / "run_pipeline.py"), "--preset", "smoke",
         "--modality", "flair", "--data-dir", str(sample_dir), "--out", str(run_dir)],
        cwd=REPO_ROOT, env={**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True, text=True, timeout=1800)
    return run_dir, completed
