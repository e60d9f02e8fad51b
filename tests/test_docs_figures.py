"""The README's figures: made from a run folder's saved figures or re-plotted from its files, small,
with docs/README.md naming the run; and the masks-beside-truth plot they use."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from _tiny_run import tiny_run
from amecam_lib.plots import plot_masks_beside_truth
from amecam_lib.report import DOCS_FIGURES, make_docs_figures
from amecam_lib.run_record import run_settings, write_run_record
from amecam_lib.runs import notebook_preset
from amecam_lib.slices import load_slices

SCRIPT = Path(__file__).resolve().parent.parent / "data_scripts" / "make_docs_figures.py"


def test_masks_beside_truth_columns_and_checks():
    images = np.zeros((2, 1, 8, 8), np.float32)
    truth = np.zeros((2, 8, 8), bool)
    truth[:, 2:5, 2:5] = True
    fig = plot_masks_beside_truth(images, truth * 0.9, {"threshold": truth, "CRF": truth}, truth,
                                  row_titles=["a", "b"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 5
    assert [ax.get_title() for ax in fig.axes[:5]] == ["slice + WT contour", "ground truth", "final CAM",
                                                       "threshold", "CRF"]
    with pytest.raises(ValueError, match="CRF"):
        plot_masks_beside_truth(images, truth * 0.9, {"CRF": truth[:1]}, truth)


def _finished_run(root: Path) -> Path:
    """A tiny sliced run with what notebooks 03-05 leave for the docs: saved figures (some large),
    predictions.npz, results.csv and run.json."""
    run = tiny_run(root)
    test = load_slices(run, "flair", "test", exclude_ambiguous=False)
    every = np.arange(len(test))
    masks = test.masks.copy()
    np.savez_compressed(run / "flair" / "predictions.npz", case_ids=test.case_ids, z=test.z,
                        index_ame_cam=every, map_ame_cam=(masks * 0.8 + 0.1).astype(np.float16), mask_ame_cam=masks,
                        index_ame_cam_crf=every, map_ame_cam_crf=(masks * 0.8).astype(np.float16),
                        mask_ame_cam_crf=masks)
    (run / "figures").mkdir()
    for _, saved, _ in DOCS_FIGURES:
        if saved is not None and "results" not in saved:           # the results chart must be re-plotted
            noise = np.random.default_rng(0).integers(0, 255, (500, 1600, 3), dtype=np.uint8)
            Image.fromarray(noise).save(run / "figures" / saved.format(modality="flair"))
    pd.DataFrame({"method": ["ame_cam_crf", "grad_cam"], "n_slices": [3, 3], "dice_mean": [0.7, 0.2],
                  "dice_std": [0.1, 0.1], "modality": ["flair", "flair"]}).to_csv(run / "results.csv", index=False)
    write_run_record(run, run_settings(notebook_preset("smoke", "flair", seed=0), seed=0), "flair")
    return run


def test_docs_figures_from_a_finished_run(tmp_path):
    run = _finished_run(tmp_path)
    written = make_docs_figures(run, tmp_path / "docs", max_width=400)
    assert [p.name for p in written] == [name for name, _, _ in DOCS_FIGURES] + ["README.md"]
    for path in written[:-1]:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "P" and image.width <= 400
    with Image.open(tmp_path / "docs" / "exit_maps.png") as image:
        assert image.size == (400, 125)                            # 1600 x 500 resized, aspect kept
    readme = (tmp_path / "docs" / "README.md").read_text()
    assert "preset `smoke`, modality `flair`" in readme and "git commit" in readme and "run on 20" in readme
    assert "re-plotted from the run's `flair/predictions.npz`" in readme
    assert "re-plotted from the run's `results.csv`" in readme
    assert "`figures/03_flair_exit_maps.png` of the run, resized" in readme


def test_the_script_names_a_missing_figure(tmp_path, capsys):
    run = _finished_run(tmp_path)
    (run / "figures" / "03_flair_exit_maps.png").unlink()
    spec = importlib.util.spec_from_file_location("make_docs_figures", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(run), "--out", str(tmp_path / "docs")]) == 2
    assert "03_flair_exit_maps.png not found" in capsys.readouterr().err
