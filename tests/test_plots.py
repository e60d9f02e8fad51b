"""amecam_lib.plots and amecam_lib.widgets: every figure function on tiny arrays whose content is
known, the atomic figure writer, and the browsers' lazy map computation."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from amecam_lib.plots import (display_view, plot_attention_weights, plot_class_balance, plot_crf_steps, plot_embeddings,
                              plot_exit_architecture, plot_exit_metrics, plot_false_positive_area,
                              plot_map_grid, plot_modalities, plot_results, plot_training_log,
                              plot_tumour_area, plot_views, read_log, save_figure)
from amecam_lib.slicing import MANIFEST_COLUMNS

S = 8


def _square_mask() -> np.ndarray:
    mask = np.zeros((S, S), bool)
    mask[2:5, 3:6] = True          # 9 px
    return mask


def _titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_display_view_is_the_transpose():
    slice_xy = np.arange(6).reshape(2, 3)
    assert display_view(slice_xy).shape == (3, 2) and display_view(slice_xy)[1, 0] == slice_xy[0, 1]


def test_save_figure_is_atomic_and_adds_png(tmp_path):
    path = save_figure(Figure(), tmp_path, "01_test")
    assert path == tmp_path / "figures" / "01_test.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in path.parent.iterdir()] == ["01_test.png"]


def test_plot_modalities_one_panel_per_modality_plus_mask():
    images = {m: np.random.default_rng(0).random((S, S)) for m in ("t1", "t2", "flair")}
    fig = plot_modalities(images, _square_mask(), title="case z=3")
    assert _titles(fig) == ["t1", "t2", "flair", "WT mask (9 px)"]
    assert len(plot_modalities(images, None).axes) == 3
    with pytest.raises(ValueError):
        plot_modalities({}, None)


def test_plot_tumour_area_counts_by_the_strict_threshold():
    area = [0, 100, 600, 577, 576]               # > 576 is tumour; 0 < a <= 576 ambiguous
    fig = plot_tumour_area(np.arange(5), area, threshold_pixels=576, kept=[False, True, True, True, True])
    assert fig.axes[0].get_title().startswith("2 tumour slices, 2 ambiguous")
    assert [round(bar.get_height()) for bar in fig.axes[0].patches] == area
    with pytest.raises(ValueError):
        plot_tumour_area(np.arange(3), [1, 2], threshold_pixels=576)


def test_plot_class_balance_stacks_the_counts():
    fig = plot_class_balance(["train", "train", "test", "train", "val"], [1, 0, 1, 1, 0])
    ax = fig.axes[0]
    normal, tumour = ax.containers
    assert [t.get_text() for t in ax.get_xticklabels()] == ["train", "val", "test"]
    assert [b.get_height() for b in normal] == [1, 1, 0] and [b.get_height() for b in tumour] == [2, 0, 1]


def test_plot_views_grid_and_shape_check():
    images = np.random.default_rng(0).random((3, 1, S, S)).astype(np.float32)
    fig = plot_views(images, images * 0.5, images[:, 0], labels=[1, 0, 1])
    assert len(fig.axes) == 9 and _titles(fig)[:3] == ["tumour", "normal", "tumour"]
    with pytest.raises(ValueError):
        plot_views(images, images[:2], images)


def test_plot_training_log_splits_losses_and_metrics(tmp_path):
    log = pd.DataFrame({"epoch": [1, 2], "lr": [1e-3, 5e-4], "train_loss": [2.0, 1.0],
                        "seconds": [3.0, 3.0], "val_loss": [2.5, 1.5], "auc_exit4": [0.6, 0.8]})
    fig = plot_training_log(log)
    assert len(fig.axes) == 2
    assert [line.get_label() for line in fig.axes[0].lines] == ["train_loss", "val_loss"]
    assert [line.get_label() for line in fig.axes[1].lines] == ["auc_exit4"]
    log.to_csv(tmp_path / "log.csv", index=False)
    assert len(plot_training_log(tmp_path / "log.csv").axes) == 2
    with pytest.raises(FileNotFoundError):
        read_log(tmp_path / "missing.csv")


def test_plot_embeddings_two_pca_panels():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 10 + [1] * 10)
    fig = plot_embeddings(rng.normal(size=(20, 5)), rng.normal(size=(20, 5)) + labels[:, None], labels)
    assert len(fig.axes) == 2
    assert [c.get_offsets().shape[0] for c in fig.axes[0].collections] == [10, 10]
    with pytest.raises(ValueError):
        plot_embeddings(rng.normal(size=(19, 5)), rng.normal(size=(20, 5)), labels)


def test_plot_exit_architecture_draws_every_stage():
    fig = plot_exit_architecture(64, [(16, 16), (8, 8), (4, 4), (2, 2)], [64, 128, 256, 512])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "stage 4: 512 ch\n2 x 2" in texts and sum("exit" in t for t in texts) == 4
    with pytest.raises(ValueError):
        plot_exit_architecture(64, [(16, 16)], [64, 128])


def test_plot_exit_architecture_captions_height_by_width():
    fig = plot_exit_architecture((64, 77), [(16, 20), (8, 10), (4, 5), (2, 3)], [64, 128, 256, 512])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "input\n64 x 77" in texts and "stage 1: 64 ch\n16 x 20" in texts
    assert fig.axes[0].get_title() == "multi-exit ResNet at 64 x 77 px input"
    boxes = [patch for patch in fig.axes[0].patches if type(patch).__name__ == "Rectangle"]
    assert boxes[0].get_width() > boxes[0].get_height()  # 77 columns drawn across, 64 rows up


def test_plot_exit_metrics_one_bar_per_exit_and_metric():
    table = pd.DataFrame({"accuracy": [0.5, 0.6, 0.7, 0.8], "auc": [0.6, 0.7, 0.8, 0.9]},
                         index=["exit 1", "exit 2", "exit 3", "exit 4"])
    ax = plot_exit_metrics(table).axes[0]
    assert [round(b.get_height(), 2) for b in ax.containers[1]] == [0.6, 0.7, 0.8, 0.9]
    with pytest.raises(ValueError):
        plot_exit_metrics(pd.DataFrame({"name": ["a"]}))


def test_plot_map_grid_layout_and_checks():
    images = np.zeros((2, 1, S, S), np.float32)
    maps = {"M1": np.ones((2, S, S)), "M2": np.zeros((2, S, S))}
    masks = np.stack([_square_mask(), np.zeros((S, S), bool)])
    fig = plot_map_grid(images, maps, masks, show_gt=True, row_titles=["a", "b"])
    assert len(fig.axes) == 2 * 4 and _titles(fig)[:4] == ["image", "ground truth", "M1", "M2"]
    with_bar = plot_map_grid(images, maps, overlay=False, colorbar="weight")
    assert len(with_bar.axes) == 2 * 3 + 1
    with pytest.raises(ValueError, match="M1"):
        plot_map_grid(images, {"M1": np.ones((3, S, S))})


def test_plot_map_grid_row_titles_stay_beside_their_rows():
    """Long row titles (notebook 05's static browser: case, z and kind) are wrapped so that each
    stays within its own row and no two overlap."""
    images = np.zeros((3, 1, 160, 192), np.float32)
    maps = {name: np.zeros((3, 160, 192)) for name in ("intensity", "grad_cam", "layer_cam", "avg_me", "ame_cam")}
    titles = ["Brats18_CBICA_AQN_1 z=85 (normal)", "Brats18_CBICA_AQN_1 z=108 (ambiguous)",
              "Brats18_CBICA_AQN_1 z=109 (tumour)"]
    fig = plot_map_grid(images, maps, np.zeros((3, 160, 192), bool), show_gt=True, row_titles=titles)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [t for ax in fig.axes for t in ax.texts]
    assert [t.get_text().replace("\n", " ") for t in texts] == titles
    boxes = [t.get_window_extent(renderer) for t in texts]
    rows = [fig.axes[r * 7].get_window_extent(renderer) for r in range(3)]
    for box, row in zip(boxes, rows):
        assert row.y0 - 1 <= box.y0 and box.y1 <= row.y1 + 1, "a row title runs past its row"
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_plot_crf_steps_titles_carry_the_scores():
    mask = _square_mask()
    fig = plot_crf_steps(np.zeros((1, S, S)), mask * 0.9, 0.5, mask, mask, mask,
                         scores={"threshold": 0.5, "CRF": 0.75})
    assert _titles(fig)[2:] == ["CAM >= 0.5\nDice 0.500", "DenseCRF\nDice 0.750"]


def test_plot_results_bars_and_paper_markers(tmp_path):
    table = pd.DataFrame({"method": ["ame_cam_crf", "intensity"], "n_slices": [3, 3],
                          "dice_mean": [0.4, 0.7], "dice_std": [0.1, 0.1]})
    table.to_csv(tmp_path / "results.csv", index=False)
    ax = plot_results(tmp_path / "results.csv", paper={"ame_cam_crf": 0.862}).axes[0]
    assert [round(b.get_width(), 2) for b in ax.patches] == [0.7, 0.4]        # drawn bottom-up
    assert ax.collections[-1].get_offsets().tolist() == [[0.862, 1.0]]
    with pytest.raises(ValueError, match="hd95_mean"):
        plot_results(table, metric="hd95")
    with pytest.raises(FileNotFoundError):
        plot_results(tmp_path / "missing.csv")


def test_plot_attention_weights_one_panel_per_network():
    report = pd.DataFrame({"exit": [1, 2, 3, 4], "mean_weight": [0.1, 0.6, 0.2, 0.1], "uniform_weight": 0.25,
                           "mean_abs_deviation": [0.15, 0.35, 0.05, 0.15]})
    pair = pd.DataFrame({"exit": [2, 3], "mean_weight": [0.5, 0.5], "uniform_weight": 0.5,
                         "mean_abs_deviation": [0.0, 0.0]})
    fig = plot_attention_weights({"exits 1-4": report, "exits 2+3": pair})
    assert len(fig.axes) == 2
    assert _titles(fig) == ["exits 1-4\nmean |S - 1/n| = 0.175", "exits 2+3\nmean |S - 1/n| = 0.000"]
    heights = [patch.get_height() for patch in fig.axes[0].patches]
    assert heights == pytest.approx([0.1, 0.6, 0.2, 0.1])
    with pytest.raises(ValueError, match="mean_weight"):
        plot_attention_weights({"bad": pair.drop(columns="mean_weight")})


def test_plot_false_positive_area_in_percent():
    fig = plot_false_positive_area({"a": np.array([0.0, 0.5]), "b": np.array([0.25, 0.25])})
    means = [line.get_ydata()[0] for line in fig.axes[0].lines if line.get_marker() == "^"]
    assert means == [25.0, 25.0]
    with pytest.raises(ValueError):
        plot_false_positive_area({})


# --- widgets --------------------------------------------------------------------------------------

def test_example_z_picks_each_kind_of_slice(tmp_path):
    from amecam_lib.widgets import example_z

    rows = []
    for z, (tumour, kept) in enumerate([(0, 0), (0, 1), (0, 1), (100, 1), (900, 1), (700, 1), (50, 0)]):
        rows.append({"case_id": "c1", "z": z, "label": int(tumour > 576), "tumour_pixels": tumour,
                     "brain_pixels": 1000, "ambiguous": int(0 < tumour <= 576), "kept": kept,
                     "reason": "" if kept else "little brain", "split": "test", "row": z})
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(tmp_path / "manifest.csv", index=False)
    # most tumour: z=4; ambiguous with most tumour: z=3; kept tumour-free: z=1, 2 -> 2; dropped: 0, 6 -> 6
    assert example_z(tmp_path, "c1") == [4, 3, 2, 6]
    with pytest.raises(ValueError):
        example_z(tmp_path, "c2")


def test_method_browser_computes_maps_lazily():
    import ipywidgets
    from amecam_lib.widgets import method_browser, method_browser_figure

    calls = []

    def compute(images, methods):
        calls.append((len(images), tuple(methods)))
        return {m: np.full((len(images), S, S), 0.7, np.float32) for m in methods}

    images = np.zeros((3, 1, S, S), np.float32)
    masks = np.zeros((3, S, S), bool)
    browser = method_browser(images, masks, compute, ["ame_cam", "score_cam"], captions=["a", "b", "c"])
    assert isinstance(browser, ipywidgets.VBox) and calls == [(1, ("ame_cam",))]
    slice_box, method_box = browser.children[0].children
    method_box.value = "score_cam"
    method_box.value = "ame_cam"           # cached: no new call
    slice_box.value = 2
    assert calls == [(1, ("ame_cam",)), (1, ("score_cam",)), (1, ("ame_cam",))]
    fig = method_browser_figure(images, masks, {"ame_cam": np.zeros((3, S, S))}, captions=["a", "b", "c"])
    assert len(fig.axes) == 3 * 3
    with pytest.raises(ValueError):
        method_browser(images, masks[:2], compute, ["ame_cam"])


def test_slice_browser_on_the_sample(sample_dir, tmp_path):
    import ipywidgets
    from amecam_lib.volumes import find_cases
    from amecam_lib.widgets import slice_browser, slice_browser_figure

    case_id = find_cases(sample_dir)[0].case_id
    fig = slice_browser_figure(sample_dir, case_id, [70, 10])
    assert len(fig.axes) == 2 * 4 and _titles(fig)[:4] == ["t1", "t1ce", "t2", "flair"]
    assert isinstance(slice_browser(sample_dir), ipywidgets.VBox)
    with pytest.raises(ValueError):
        slice_browser_figure(sample_dir, case_id, [155])


def test_case_viewer_and_its_figure_on_the_sample(sample_dir, tmp_path):
    """Notebook 05's 3-D viewer: NiiVue with the MRI, the ground truth and the mask; the static twin
    cuts the three planes through the tumour's centre (a mask of another shape is refused)."""
    import nibabel as nib
    from ipyniivue import NiiVue

    from amecam_lib.volumes import find_cases
    from amecam_lib.widgets import case_viewer, case_viewer_figure

    case = find_cases(sample_dir)[0]
    seg = nib.load(case.seg)
    mask_path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image((np.asarray(seg.dataobj) > 0).astype(np.uint8), seg.affine), mask_path)
    viewer = case_viewer(sample_dir, case.case_id, "flair", mask_path)
    assert isinstance(viewer, NiiVue) and len(viewer.volumes) == 3
    fig = case_viewer_figure(sample_dir, case.case_id, "flair", mask_path)
    assert [t.split()[0] for t in _titles(fig)] == ["axial", "coronal", "sagittal"]
    centre = np.round(np.argwhere(np.asarray(seg.dataobj) > 0).mean(axis=0)).astype(int)
    assert _titles(fig)[0] == f"axial z={centre[2]}"
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), small)
    with pytest.raises(ValueError, match="small"):
        case_viewer_figure(sample_dir, case.case_id, "flair", small)
