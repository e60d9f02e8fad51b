"""Interactive browsers for the notebooks (ipywidgets), each with a static twin figure.

A widget only works while a live kernel runs it; a notebook executed by papermill, or read on a
web page, shows the static figure instead. So each browser comes in two parts that take the same
data: ``*_browser(...)`` returns the widget, ``*_figure(...)`` returns a
:class:`matplotlib.figure.Figure` (via :mod:`amecam_lib.plots`). The notebooks show both.

- :func:`slice_browser` / :func:`slice_browser_figure`: a case's volumes, axial slice by axial
  slice, in any modality, with the whole-tumour (WT) contour, the slice's label from the
  run's ``manifest.csv`` and, for a cropped run, the crop window as a dashed box (notebook 01).
- :func:`method_browser` / :func:`method_browser_figure`: test slices x CAM methods, map and
  thresholded mask over the image with the WT contour (notebook 05).
- :func:`case_viewer` / :func:`case_viewer_figure`: a test case's MRI with an exported mask (red)
  and the ground truth (green) in 3-D / three planes, NiiVue for Jupyter (``ipyniivue``: WebGL2 in
  the browser, no network needed); the figure: the three planes through the tumour (notebook 05).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from amecam_lib.config import MODALITIES
from amecam_lib.plots import TUMOUR_COLOUR, draw_contour, draw_window, plot_map_grid, show_mask, show_slice
from amecam_lib.releases import BratsDataError
from amecam_lib.slices import read_case_info, read_manifest
from amecam_lib.volumes import CaseVolumes, load_case, scan_cases


def axial_slice(volume: np.ndarray, z: int) -> np.ndarray:
    """Axial slice ``z`` of an ``(X, Y, Z)`` volume, ``(X, Y)``: the same axes as the stored
    slices (:mod:`amecam_lib.slicing`); :mod:`amecam_lib.plots` turns it upright for display."""
    return volume[:, :, z]


@lru_cache(maxsize=2)  # a case with four modalities is ~150 MB in memory
def _load(data_dir: str, case_id: str) -> CaseVolumes:
    cases = {case.case_id: case for case in scan_cases(data_dir).cases}
    if case_id not in cases:
        raise KeyError(f"case {case_id!r} not found in {data_dir}; cases: {sorted(cases)}")
    return load_case(cases[case_id], MODALITIES)


def _show_in(output: widgets.Output, fig: Figure) -> None:
    """Replace what ``output`` shows by ``fig``.

    Sets the widget's outputs directly (``append_display_data``) instead of capturing with
    ``with output: clear_output(); display(fig)``: the capture path routes through the kernel's
    output hooks and was seen to hang a papermill-executed kernel (ipykernel 7, ipywidgets 8).
    """
    output.outputs = ()
    output.append_display_data(fig)


def _manifest(run_dir: str | os.PathLike | None) -> pd.DataFrame | None:
    return None if run_dir is None else read_manifest(run_dir).set_index(["case_id", "z"])


def example_z(run_dir: str | os.PathLike, case_id: str) -> list[int]:
    """Axial indices of one case that show each kind of slice, from ``RUN/manifest.csv``: the
    slice with most tumour, an ambiguous one (0 < area <= threshold, labelled normal), a kept
    tumour-free one and a dropped one, each when the case has it (in that order).

    Raises:
        ValueError: the case is not in the manifest.
    """
    manifest = read_manifest(run_dir)
    rows = manifest[manifest["case_id"] == case_id]
    if rows.empty:
        raise ValueError(f"case {case_id!r} is not in {Path(run_dir) / 'manifest.csv'}")
    by_area = rows.sort_values("tumour_pixels", ascending=False, kind="stable")
    largest = [by_area[by_area["label"] == 1], by_area[by_area["ambiguous"] == 1]]
    middle = [rows[(rows["kept"] == 1) & (rows["tumour_pixels"] == 0)], rows[rows["kept"] == 0]]
    return ([int(kind["z"].iloc[0]) for kind in largest if not kind.empty] +
            [int(kind["z"].iloc[len(kind) // 2]) for kind in middle if not kind.empty])


def _crop_box(run_dir: str | os.PathLike | None, case_id: str) -> tuple[int, int, int, int] | None:
    """The case's crop window in ``run_dir`` (None: no run, not sliced there, or not cropped)."""
    if run_dir is None:
        return None
    try:
        return read_case_info(run_dir, case_id).crop_box
    except BratsDataError:
        return None


def _slice_caption(manifest: pd.DataFrame | None, case_id: str, z: int, tumour_pixels: int) -> str:
    caption = f"{case_id}  z={z}  WT {tumour_pixels} px"
    if manifest is not None and (case_id, z) in manifest.index:
        row = manifest.loc[(case_id, z)]
        label = "tumour" if int(row["label"]) == 1 else "normal"
        caption += f"  label={label}  split={row['split']}"
        if not bool(row["kept"]):
            caption += f"  DROPPED ({row['reason']})"
    return caption


def slice_browser(data_dir: str | os.PathLike, run_dir: str | os.PathLike | None = None
                  ) -> widgets.Widget:
    """A case / modality / z browser over the raw BraTS volumes with the WT contour.

    Volumes are read with :func:`amecam_lib.volumes.load_case` when a case is first chosen (the
    last two stay cached). With ``run_dir`` the caption shows each slice's label, split and
    whether it was kept, from ``RUN/manifest.csv``, and a cropped run's window is outlined.

    Args:
        data_dir: BraTS root folder.
        run_dir: run folder sliced from it, or None.

    Returns:
        an ``ipywidgets.VBox`` (display it in a notebook with a live kernel).
    """
    data_dir = str(data_dir)
    case_ids = [case.case_id for case in scan_cases(data_dir).cases]
    manifest = _manifest(run_dir)
    case_box = widgets.Dropdown(options=case_ids, description="case")
    modality_box = widgets.Dropdown(options=list(MODALITIES), value="flair", description="modality")
    z_slider = widgets.IntSlider(value=77, min=0, max=154, description="z", continuous_update=False)
    contour_box = widgets.Checkbox(value=True, description="WT contour")
    output = widgets.Output()

    def redraw(*_):
        volumes = _load(data_dir, case_box.value)
        z_slider.max = volumes.shape[2] - 1
        tumour = axial_slice(volumes.whole_tumour, z_slider.value)
        fig = Figure(figsize=(5, 5), layout="constrained")
        ax = fig.subplots()
        show_slice(ax, axial_slice(volumes.images[modality_box.value], z_slider.value),
                   mask=tumour if contour_box.value else None)
        draw_window(ax, _crop_box(run_dir, case_box.value))
        ax.set_title(_slice_caption(manifest, case_box.value, z_slider.value, int(tumour.sum())),
                     fontsize=8)
        _show_in(output, fig)

    for control in (case_box, modality_box, z_slider, contour_box):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([case_box, modality_box]),
                         widgets.HBox([z_slider, contour_box]), output])


def slice_browser_figure(data_dir: str | os.PathLike, case_id: str, z_values: Sequence[int], *,
                         run_dir: str | os.PathLike | None = None,
                         modalities: Sequence[str] = MODALITIES) -> Figure:
    """Static twin of :func:`slice_browser`: rows = the given z of one case, columns = modalities.

    Args:
        data_dir: BraTS root folder.
        case_id: the case to show.
        z_values: axial slice indices (rows).
        run_dir: run folder for the row captions (label, split, kept) and the crop window, or None.
        modalities: columns.
    """
    volumes = _load(str(data_dir), case_id)
    manifest = _manifest(run_dir)
    crop_box = _crop_box(run_dir, case_id)
    fig = Figure(figsize=(2.2 * len(modalities), 2.3 * len(z_values) + 0.3), layout="constrained")
    axes = np.asarray(fig.subplots(len(z_values), len(modalities), squeeze=False))
    for r, z in enumerate(z_values):
        if not 0 <= z < volumes.shape[2]:
            raise ValueError(f"z={z} outside case {case_id}'s 0..{volumes.shape[2] - 1}")
        tumour = axial_slice(volumes.whole_tumour, z)
        for c, modality in enumerate(modalities):
            show_slice(axes[r, c], axial_slice(volumes.images[modality], z), mask=tumour,
                       title=modality if r == 0 else None)
            draw_window(axes[r, c], crop_box)
        axes[r, 0].text(-0.05, 0.5, _slice_caption(manifest, case_id, z, int(tumour.sum()))
                        .replace("  ", "\n"), transform=axes[r, 0].transAxes, ha="right",
                        va="center", fontsize=7)
    return fig


def method_browser(images: np.ndarray, masks: np.ndarray,
                   compute_maps: Callable[[np.ndarray, Sequence[str]], Mapping[str, np.ndarray]],
                   methods: Sequence[str], *, captions: Sequence[str] | None = None,
                   threshold: float = 0.5) -> widgets.Widget:
    """Browse test slices x CAM methods: the map over the image, and the map thresholded.

    A map is computed only when its slice and method are first shown, with
    ``compute_maps(images, [method])`` (e.g. ``CamMethods(...).compute``), and cached, so slow
    methods (Score-CAM) only run for what is actually viewed.

    Args:
        images: ``(N, 1, H, W)`` float in [0, 1].
        masks: ``(N, H, W)`` bool WT ground truth.
        compute_maps: ``((B, 1, H, W) images, methods) -> {method: (B, H, W) float in [0, 1]}``.
        methods: method names offered (the first is shown first).
        captions: ``N`` slice captions (e.g. ``"case z=70"``), or None.
        threshold: threshold for the mask panel (the evaluation's, 0.5 in the paper's code).

    Returns:
        an ``ipywidgets.VBox``.

    Raises:
        ValueError: shapes that do not match, or no method.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 1 or len(masks) != len(images):
        raise ValueError(f"images must be (N, 1, H, W) with N masks, got {images.shape} and "
                         f"{len(masks)} masks")
    if not methods:
        raise ValueError("methods is empty")
    captions = list(captions) if captions is not None else [f"slice {i}" for i in range(len(images))]
    cache: dict[tuple[int, str], np.ndarray] = {}

    def map_of(index: int, method: str) -> np.ndarray:
        if (index, method) not in cache:
            cache[index, method] = np.asarray(
                compute_maps(images[index:index + 1], [method])[method])[0]
        return cache[index, method]

    slice_box = widgets.Dropdown(options=[(c, i) for i, c in enumerate(captions)], description="slice")
    method_box = widgets.Dropdown(options=list(methods), description="method")
    output = widgets.Output()

    def redraw(*_):
        index, method = slice_box.value, method_box.value
        cam = map_of(index, method)
        fig = Figure(figsize=(8, 2.9), layout="constrained")
        axes = fig.subplots(1, 3)
        show_slice(axes[0], images[index], mask=masks[index], title=captions[index])
        show_slice(axes[1], images[index], mask=masks[index], heat_map=cam, title=method)
        show_mask(axes[2], cam >= threshold, contour=masks[index], title=f"map >= {threshold:g}")
        _show_in(output, fig)

    slice_box.observe(redraw, names="value")
    method_box.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([slice_box, method_box]), output])


def method_browser_figure(images: np.ndarray, masks: np.ndarray,
                          maps: Mapping[str, np.ndarray], *,
                          captions: Sequence[str] | None = None) -> Figure:
    """Static twin of :func:`method_browser`: every slice (rows) x every method (columns), a
    Fig. 2-style grid (:func:`amecam_lib.plots.plot_map_grid` with the GT column)."""
    return plot_map_grid(images, maps, masks, row_titles=captions, show_gt=True)


def _case_files(data_dir: str | os.PathLike, case_id: str):
    cases = {case.case_id: case for case in scan_cases(str(data_dir)).cases}
    if case_id not in cases:
        raise KeyError(f"case {case_id!r} not found in {data_dir}; cases: {sorted(cases)}")
    return cases[case_id]


def case_viewer(data_dir: str | os.PathLike, case_id: str, modality: str, mask_path: str | os.PathLike, *,
                height: int = 420):
    """A 3-D / multiplanar viewer (NiiVue, ``ipyniivue``) of one case's MRI with two overlays: the
    mask in ``mask_path`` in red and the expert segmentation (every label > 0: the whole tumour) in
    green. Drag in a plane to move the crosshair, scroll to step through slices; the files are read
    by the kernel and sent to the browser (no network).

    Args:
        data_dir: BraTS root folder holding ``case_id``.
        case_id: the case.
        modality: the MRI sequence shown (t1, t1ce, t2, flair).
        mask_path: a NIfTI mask on the case's grid (``export_case_masks``' output).
        height: the viewer's height in pixels.

    Returns:
        an ``ipyniivue.NiiVue`` widget.
    """
    from ipyniivue import NiiVue

    files = _case_files(data_dir, case_id)
    viewer = NiiVue(height=height)
    viewer.load_volumes([
        {"path": str(files.images[modality])},
        {"path": str(files.seg), "colormap": "green", "opacity": 0.45, "cal_min": 0.5, "cal_max": 1.0},
        {"path": str(mask_path), "colormap": "red", "opacity": 0.6, "cal_min": 0.5, "cal_max": 1.0},
    ])
    return viewer


def case_viewer_figure(data_dir: str | os.PathLike, case_id: str, modality: str,
                       mask_path: str | os.PathLike) -> Figure:
    """Static twin of :func:`case_viewer`: axial, coronal and sagittal planes through the centre of
    the whole tumour, the MRI in grey, the ground truth's outline in green and the mask's in red."""
    import nibabel as nib

    volumes = _load(str(data_dir), case_id)
    truth = volumes.whole_tumour
    mask = np.asarray(nib.load(mask_path).dataobj) > 0
    if mask.shape != truth.shape:
        raise ValueError(f"mask {mask_path} is {mask.shape}, case {case_id} is {truth.shape}")
    centre = np.round(np.argwhere(truth).mean(axis=0)).astype(int) if truth.any() else np.array(truth.shape) // 2
    upright = lambda plane: plane[:, ::-1]          # noqa: E731 -- (X or Y, Z): superior at the top
    planes = {f"axial z={centre[2]}": lambda v: v[:, :, centre[2]],
              f"coronal y={centre[1]}": lambda v: upright(v[:, centre[1], :]),
              f"sagittal x={centre[0]}": lambda v: upright(v[centre[0], :, :])}
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    for ax, (title, cut) in zip(fig.subplots(1, 3), planes.items()):
        show_slice(ax, cut(volumes.images[modality]), mask=cut(truth), title=title)
        draw_contour(ax, cut(mask), colour=TUMOUR_COLOUR)
    fig.suptitle(f"{case_id} {modality}: ground truth (green), exported mask (red)", fontsize=9)
    return fig
