"""Figures of the tutorial notebooks (matplotlib).

Every function takes plain arrays (or a CSV path / pandas table), draws on a new
:class:`matplotlib.figure.Figure` and returns it. The figures are built without ``pyplot``, so a
notebook shows a figure exactly once (as the value of its last line) and no figure stays open in
a long run. :func:`save_figure` writes one atomically into ``RUN/figures/``.

Conventions: images are grey ``(H, W)`` or ``(1, H, W)`` float in [0, 1]; maps (CAMs, exit maps
M_i, attention weights S_i) are ``(H, W)`` float in [0, 1], high on tumour; masks are ``(H, W)``
bool. The whole-tumour (WT) ground truth is drawn as a contour, never filled, so the image under
it stays visible.

Orientation: stored slices keep the array axes of the volume (row r = ``volume[:, :, z]``, see
:mod:`amecam_lib.slicing`). BraTS volumes are stored L,P,S (axis 0 runs to the patient's left,
axis 1 to the back), so every panel shows the transpose (:func:`display_view`): front at the top,
the patient's left on the right (radiological convention). Only the picture turns, never the data.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from amecam_lib.atomic import atomic_path

GT_COLOUR = "#00e676"
"""Colour of the whole-tumour ground-truth contour (green, visible on grey and on heat maps)."""
TUMOUR_COLOUR = "#d62728"
NORMAL_COLOUR = "#1f77b4"
AMBIGUOUS_COLOUR = "#ff7f0e"


# --------------------------------------------------------------------------------------------
# helpers


def save_figure(fig: Figure, run_dir: str | os.PathLike, name: str, *, dpi: int = 110) -> Path:
    """Write ``fig`` atomically to ``RUN/figures/<name>`` (``.png`` added if ``name`` has no
    suffix) and return the path."""
    target = Path(run_dir) / "figures" / name
    if not target.suffix:
        target = target.with_suffix(".png")
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    return target


def _as_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """``(H, W)`` or ``(1, H, W)`` -> ``(H, W)`` float array; anything else raises ValueError."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2:
        raise ValueError(f"{what} must be (H, W) or (1, H, W), got shape {image.shape}")
    return image.astype(np.float32, copy=False)


def _as_stack(images: np.ndarray, what: str = "images") -> np.ndarray:
    """``(N, H, W)`` or ``(N, 1, H, W)`` -> ``(N, H, W)``; anything else raises ValueError."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"{what} must be (N, H, W) or (N, 1, H, W), got shape {images.shape}")
    return images


def _grid(n_rows: int, n_cols: int, cell: float = 2.0, **kwargs) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(cell * n_cols, cell * n_rows + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False, **kwargs))
    return fig, axes


ROW_TITLE_CHARS = 20
"""Longest line of a grid's row title (:func:`plot_map_grid`): about 1.1 inch at 7 pt, less than one
panel's height, so a turned title stays beside its own row."""


def _row_title(ax, title: str) -> None:
    """Write a row's title left of its first panel, turned 90 degrees and wrapped at spaces into lines
    of at most :data:`ROW_TITLE_CHARS` characters (a longer word stays whole): written on one line, a
    title such as ``"Brats18_CBICA_AQN_1 z=108 (ambiguous)"`` is longer than the row is tall and runs
    into the titles of the rows above and below."""
    lines = textwrap.wrap(title, ROW_TITLE_CHARS, break_long_words=False, break_on_hyphens=False)
    ax.text(-0.06, 0.5, "\n".join(lines) or title, transform=ax.transAxes, rotation=90, va="center",
            ha="right", ma="center", fontsize=7)


def display_view(array: np.ndarray) -> np.ndarray:
    """The picture of an ``(X, Y)`` axial slice as drawn on screen: its transpose ``(Y, X)``
    (front at the top for BraTS' L,P,S grid)."""
    return np.asarray(array).T


def draw_contour(ax, mask: np.ndarray | None, colour: str = GT_COLOUR) -> None:
    """Draw the outline of a boolean ``(H, W)`` mask on ``ax`` (nothing for None or empty)."""
    if mask is None:
        return
    mask = np.asarray(mask, dtype=bool)
    if mask.any() and not mask.all():
        ax.contour(display_view(mask).astype(np.float32), levels=[0.5], colors=[colour],
                   linewidths=1.2)


def draw_window(ax, crop_box: Sequence[int] | None, colour: str = "#ffd600") -> None:
    """Outline a crop window ``(row0, col0, height, width)`` of an ``(X, Y)`` slice drawn by
    :func:`show_slice` (dashed; nothing for None). Rows of the array run across the picture,
    columns down (:func:`display_view`)."""
    if crop_box is None:
        return
    row0, col0, height, width = (int(v) for v in crop_box)
    ax.add_patch(Rectangle((row0 - 0.5, col0 - 0.5), height, width, fill=False, edgecolor=colour,
                           linestyle="--", linewidth=1.2))


def show_mask(ax, mask: np.ndarray, *, contour: np.ndarray | None = None,
              title: str | None = None) -> None:
    """Draw a boolean ``(H, W)`` mask (white = tumour) on ``ax``, optionally with a GT contour."""
    ax.imshow(display_view(np.asarray(mask, dtype=bool)), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    draw_contour(ax, contour)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def show_slice(ax, image: np.ndarray, *, mask: np.ndarray | None = None,
               heat_map: np.ndarray | None = None, title: str | None = None, cmap: str = "jet",
               alpha: float = 0.45, vmin: float = 0.0, vmax: float = 1.0) -> None:
    """Draw one grey slice on ``ax``, optionally a heat map over it and a mask contour.

    Args:
        image: ``(H, W)`` or ``(1, H, W)`` float in [0, 1]; drawn with ``vmin=0, vmax=1``.
        mask: ``(H, W)`` bool drawn as a green contour (the WT ground truth), or None.
        heat_map: ``(H, W)`` float drawn with ``cmap`` in ``[vmin, vmax]`` and ``alpha``, or None.
    """
    ax.imshow(display_view(_as_image(image)), cmap="gray", vmin=0.0, vmax=1.0,
              interpolation="nearest")
    if heat_map is not None:
        ax.imshow(display_view(_as_image(heat_map, "heat_map")), cmap=cmap, vmin=vmin, vmax=vmax,
                  alpha=alpha, interpolation="bilinear")
    draw_contour(ax, mask)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()


# --------------------------------------------------------------------------------------------
# 01: data


def plot_modalities(images: Mapping[str, np.ndarray], tumour_mask: np.ndarray | None, *,
                    title: str | None = None) -> Figure:
    """One axial slice in every modality with the whole-tumour contour, plus the mask filled.

    Args:
        images: modality name -> ``(H, W)`` float slice (any range; each is min-max scaled for
            display), e.g. the four BraTS sequences at one z.
        tumour_mask: ``(H, W)`` bool whole tumour (seg > 0) of the same slice, or None.
        title: figure title (e.g. case id and z).
    """
    if not images:
        raise ValueError("images is empty: give at least one modality")
    n_panels = len(images) + (tumour_mask is not None)
    fig, axes = _grid(1, n_panels, cell=2.6)
    for ax, (name, image) in zip(axes[0], images.items()):
        image = _as_image(image, name)
        low, high = float(image.min()), float(image.max())
        scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
        show_slice(ax, scaled, mask=tumour_mask, title=name)
    if tumour_mask is not None:
        show_mask(axes[0, -1], tumour_mask,
                  title=f"WT mask ({int(np.count_nonzero(tumour_mask))} px)")
    if title:
        fig.suptitle(title)
    return fig


def plot_tumour_area(z: Sequence[int], tumour_pixels: Sequence[int], *, threshold_pixels: float,
                     kept: Sequence[bool] | None = None, title: str | None = None) -> Figure:
    """Whole-tumour area of every axial slice of one case against the slice-label threshold.

    A slice is labelled tumour when its area is *more* than ``threshold_pixels`` (1 % of the
    slice: 576 px at 240 x 240, paper Sec. 3.1 / authors' code); slices with
    ``0 < area <= threshold`` are the "ambiguous" ones, labelled normal.

    Args:
        z: ``(Z,)`` slice indices.
        tumour_pixels: ``(Z,)`` WT pixel counts at the original grid.
        threshold_pixels: the label threshold in pixels (e.g. 576).
        kept: ``(Z,)`` bool, False for slices the slicing dropped (too little brain), or None.
    """
    z = np.asarray(z)
    area = np.asarray(tumour_pixels, dtype=float)
    if z.shape != area.shape or z.ndim != 1:
        raise ValueError(f"z {z.shape} and tumour_pixels {area.shape} must be equal 1-D shapes")
    colours = np.where(area > threshold_pixels, TUMOUR_COLOUR,
                       np.where(area > 0, AMBIGUOUS_COLOUR, NORMAL_COLOUR))
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.bar(z, area, width=1.0, color=colours)
    ax.axhline(threshold_pixels, color="k", linestyle="--", linewidth=1,
               label=f"label threshold: {threshold_pixels:g} px")
    if kept is not None:
        dropped = ~np.asarray(kept, dtype=bool)
        if dropped.any():
            ax.scatter(z[dropped], np.zeros(dropped.sum()), marker="|", color="grey", s=60,
                       label="dropped (little brain)")
    n_tumour = int((area > threshold_pixels).sum())
    n_ambiguous = int(((area > 0) & (area <= threshold_pixels)).sum())
    ax.set_xlabel("axial slice z")
    ax.set_ylabel("whole-tumour area (px)")
    ax.set_title(title or f"{n_tumour} tumour slices, {n_ambiguous} ambiguous (0 < area <= "
                 f"threshold, labelled normal)", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def plot_class_balance(splits: Sequence[str], labels: Sequence[int], *,
                       order: Sequence[str] = ("train", "val", "test")) -> Figure:
    """Tumour / normal slice counts per split, as stacked bars with the counts written on them.

    Args:
        splits: ``(N,)`` split name of each kept slice.
        labels: ``(N,)`` slice label, 1 tumour, 0 normal.
    """
    table = pd.crosstab(pd.Series(np.asarray(splits), name="split"),
                        pd.Series(np.asarray(labels), name="label"))
    table = table.reindex(index=[s for s in order if s in table.index] +
                          [s for s in table.index if s not in order], columns=[0, 1], fill_value=0)
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.subplots()
    normal = ax.bar(table.index, table[0], color=NORMAL_COLOUR, label="normal (0)")
    tumour = ax.bar(table.index, table[1], bottom=table[0], color=TUMOUR_COLOUR, label="tumour (1)")
    ax.bar_label(normal, label_type="center", color="white", fontsize=8)
    ax.bar_label(tumour, label_type="center", color="white", fontsize=8)
    ax.set_ylabel("slices")
    ax.set_title("class balance per split (patient-level split)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------
# 02: SupCon pretraining


def plot_views(images: np.ndarray, first_view: np.ndarray, second_view: np.ndarray, *,
               labels: Sequence[int] | None = None) -> Figure:
    """Slices and their two augmented views (the positive pair of contrastive learning).

    Args:
        images, first_view, second_view: ``(N, 1, H, W)`` or ``(N, H, W)`` float, same N.
            Views may leave [0, 1] after intensity augmentation; each is clipped for display.
        labels: ``(N,)`` slice labels for the column titles, or None.
    """
    rows = [_as_stack(images), _as_stack(first_view, "first_view"),
            _as_stack(second_view, "second_view")]
    if not rows[0].shape[0] == rows[1].shape[0] == rows[2].shape[0]:
        raise ValueError("images and both views must hold the same number of slices")
    fig, axes = _grid(3, rows[0].shape[0], cell=1.8)
    for r, (name, stack) in enumerate(zip(("slice", "view 1", "view 2"), rows)):
        for c in range(stack.shape[0]):
            title = None
            if r == 0 and labels is not None:
                title = "tumour" if int(labels[c]) == 1 else "normal"
            show_slice(axes[r, c], np.clip(stack[c], 0, 1), title=title)
        axes[r, 0].text(-0.08, 0.5, name, transform=axes[r, 0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=9)
    return fig


def read_log(log: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """A training log as a table: a ``log.csv`` path or a DataFrame (returned as is).

    Raises:
        FileNotFoundError: the CSV does not exist; ValueError: it holds no row.
    """
    if isinstance(log, pd.DataFrame):
        return log
    path = Path(log)
    if not path.is_file():
        raise FileNotFoundError(f"training log {path} not found (has the phase been trained?)")
    table = pd.read_csv(path)
    if table.empty:
        raise ValueError(f"training log {path} holds no epoch")
    return table


def plot_training_log(log: str | os.PathLike | pd.DataFrame, *, title: str | None = None) -> Figure:
    """Loss curves (left) and any [0, 1] metrics such as accuracy / AUC (right) per epoch.

    Args:
        log: ``log.csv`` written by :func:`amecam_lib.training.fit` (one row per epoch, an
            ``epoch`` column, loss columns named ``*loss*``), or the same as a DataFrame.
    """
    table = read_log(log)
    epoch = table["epoch"] if "epoch" in table else pd.Series(np.arange(1, len(table) + 1))
    numeric = [c for c in table.columns if c != "epoch" and pd.api.types.is_numeric_dtype(table[c])]
    loss_columns = [c for c in numeric if "loss" in c]
    metric_columns = [c for c in numeric if c not in loss_columns and c not in ("lr", "seconds", "time")
                      and table[c].between(0, 1).all()]
    fig = Figure(figsize=(10 if metric_columns else 5.5, 3.2), layout="constrained")
    axes = fig.subplots(1, 2 if metric_columns else 1, squeeze=False)[0]
    for column in loss_columns:
        axes[0].plot(epoch, table[column], marker="o", label=column)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=8)
    if metric_columns:
        for column in metric_columns:
            axes[1].plot(epoch, table[column], marker="o", label=column)
        axes[1].set_xlabel("epoch")
        axes[1].set_ylim(0, 1.02)
        axes[1].legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    return fig


def plot_embeddings(before: np.ndarray, after: np.ndarray, labels: Sequence[int], *,
                    titles: tuple[str, str] = ("untrained encoder", "after pretraining")) -> Figure:
    """2-D PCA of encoder embeddings coloured by slice label, before vs after training.

    Each set gets its own PCA (scikit-learn), so the two panels' axes are not comparable; what
    matters is whether tumour and normal slices separate.

    Args:
        before, after: ``(N, D)`` float embeddings of the same N slices.
        labels: ``(N,)`` slice labels in {0, 1}.
    """
    from sklearn.decomposition import PCA

    labels = np.asarray(labels)
    fig = Figure(figsize=(9, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, embeddings, title in zip(axes, (before, after), titles):
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or embeddings.shape[0] != labels.shape[0]:
            raise ValueError(f"embeddings must be (N, D) with N = {labels.shape[0]}, "
                             f"got {embeddings.shape}")
        points = PCA(n_components=2).fit_transform(embeddings)
        for value, name, colour in ((0, "normal", NORMAL_COLOUR), (1, "tumour", TUMOUR_COLOUR)):
            chosen = labels == value
            ax.scatter(points[chosen, 0], points[chosen, 1], s=8, alpha=0.6, color=colour,
                       label=f"{name} ({int(chosen.sum())})")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------
# 03: multi-exit network


def plot_exit_architecture(image_shape: int | tuple[int, int], map_shapes: Sequence[tuple[int, int]],
                           channels: Sequence[int]) -> Figure:
    """Diagram of the multi-exit ResNet: one box per residual stage, drawn to the scale of its
    map (height x width of the array), with the exit (1x1 conv -> M_i -> GAP -> logit) under it.

    Args:
        image_shape: input ``(H, W)`` in pixels, or one side S for ``S x S``.
        map_shapes: ``(h_i, w_i)`` of M_1..M_4 (e.g. 60/30/15/8 px at 240 input).
        channels: channels C_i of each stage (64/128/256/512 for ResNet-18).
    """
    if len(map_shapes) != len(channels):
        raise ValueError("map_shapes and channels must have one entry per stage")
    height, width = (image_shape, image_shape) if np.ndim(image_shape) == 0 else tuple(image_shape)
    n_stages = len(map_shapes)
    fig = Figure(figsize=(2.2 * (n_stages + 1), 4.0), layout="constrained")
    ax = fig.subplots()
    ax.set_xlim(0, n_stages + 1)
    ax.set_ylim(-0.95, 1.25)
    ax.set_aspect("equal")
    ax.set_axis_off()
    centre_y = 0.55
    longest = float(max(height, width))
    # (box width, box height) in axes units: the array's columns across, its rows up
    boxes = [(max(0.08, 0.8 * w / longest), max(0.08, 0.8 * h / longest))
             for h, w in [(height, width), *map_shapes]]
    captions = [f"input\n{height} x {width}"] + [
        f"stage {i}: {c} ch\n{h} x {w}" for i, ((h, w), c) in enumerate(zip(map_shapes, channels), 1)]
    for k, ((box_width, side), caption) in enumerate(zip(boxes, captions)):
        x_centre = k + 0.5
        ax.add_patch(Rectangle((x_centre - box_width / 2, centre_y - side / 2), box_width, side,
                               facecolor="#dddddd" if k == 0 else "#9ecae1", edgecolor="k"))
        ax.text(x_centre, centre_y + 0.45, caption, ha="center", va="bottom", fontsize=8)
        if k > 0:
            ax.add_patch(FancyArrowPatch((k - 0.5 + boxes[k - 1][0] / 2 + 0.04, centre_y),
                                         (x_centre - box_width / 2 - 0.04, centre_y),
                                         arrowstyle="-|>", mutation_scale=12))
            ax.add_patch(FancyArrowPatch((x_centre, centre_y - side / 2 - 0.02), (x_centre, -0.3),
                                         arrowstyle="-|>", mutation_scale=12))
            (h, w), c = map_shapes[k - 1], channels[k - 1]
            ax.text(x_centre, -0.36, f"exit {k}: 1x1 conv {c}->1\n$M_{k}$: {h} x {w}\n"
                    f"GAP -> logit $y_{k}$", ha="center", va="top", fontsize=8,
                    bbox=dict(boxstyle="round", facecolor="#fdd0a2", edgecolor="k"))
    ax.set_title(f"multi-exit ResNet at {height} x {width} px input", fontsize=10)
    return fig


def plot_exit_metrics(table: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Grouped bars of classification metrics per exit (e.g. accuracy and AUC on val).

    Args:
        table: one row per exit (index = exit name), one numeric column per metric in [0, 1].
    """
    numeric = table.select_dtypes("number")
    if numeric.empty:
        raise ValueError("table has no numeric metric column")
    fig = Figure(figsize=(1.2 + 1.3 * len(numeric), 3.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(numeric.columns)
    positions = np.arange(len(numeric))
    for k, column in enumerate(numeric.columns):
        bars = ax.bar(positions + (k - (len(numeric.columns) - 1) / 2) * width, numeric[column],
                      width=width, label=column)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(positions, [str(i) for i in numeric.index])
    ax.set_ylim(0, 1.1)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "per-exit classification", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# 03-05: maps


def plot_map_grid(images: np.ndarray, maps: Mapping[str, np.ndarray],
                  masks: np.ndarray | None = None, *, row_titles: Sequence[str] | None = None,
                  show_gt: bool = False, overlay: bool = True, cmap: str = "jet",
                  vmin: float = 0.0, vmax: float = 1.0, colorbar: str | None = None,
                  title: str | None = None) -> Figure:
    """Slices (rows) x maps (columns), each map with the whole-tumour contour.

    Used for the exit maps M_1..M_4, the attention weights S_i, M_f and the final CAM, and the
    Fig. 2-style comparison of every method (paper Fig. 2).

    Args:
        images: ``(N, 1, H, W)`` or ``(N, H, W)`` float in [0, 1].
        maps: column title -> ``(N, H, W)`` float map (or bool mask) of the same N slices.
        masks: ``(N, H, W)`` bool WT ground truth, drawn as a contour on every panel; or None.
        row_titles: ``N`` labels (e.g. ``"case z=70"``) written left of each row.
        show_gt: add a column with the ground-truth mask itself (Fig. 2 (b)).
        overlay: draw maps over the grey image (True) or alone (False).
        cmap, vmin, vmax: colour map and its range for the maps.
        colorbar: label of a colour bar for the maps, or None for no colour bar.
    """
    images = _as_stack(images)
    n_slices = images.shape[0]
    for name, stack in maps.items():
        if np.shape(stack)[0] != n_slices or np.ndim(stack) != 3:
            raise ValueError(f"map {name!r} must be (N, H, W) with N = {n_slices}, "
                             f"got {np.shape(stack)}")
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
    n_cols = 1 + show_gt + len(maps)
    fig, axes = _grid(n_slices, n_cols, cell=1.9)
    for r in range(n_slices):
        mask = None if masks is None else masks[r]
        show_slice(axes[r, 0], images[r], mask=mask, title="image" if r == 0 else None)
        col = 1
        if show_gt:
            show_mask(axes[r, col], mask if mask is not None else np.zeros(images[r].shape, bool),
                      title="ground truth" if r == 0 else None)
            col += 1
        for name, stack in maps.items():
            ax = axes[r, col]
            panel = np.asarray(stack[r], dtype=np.float32)
            if overlay:
                show_slice(ax, images[r], mask=mask, heat_map=panel, cmap=cmap, vmin=vmin, vmax=vmax,
                           alpha=0.5)
            else:
                ax.imshow(display_view(panel), cmap=cmap, vmin=vmin, vmax=vmax,
                          interpolation="nearest")
                draw_contour(ax, mask, colour="white")
                ax.set_axis_off()
            if r == 0:
                ax.set_title(name, fontsize=9)
            col += 1
        if row_titles is not None:
            _row_title(axes[r, 0], row_titles[r])
    if colorbar:
        mappable = ScalarMappable(norm=Normalize(vmin, vmax), cmap=cmap)
        fig.colorbar(mappable, ax=axes[:, 1 + show_gt:], shrink=0.8, label=colorbar)
    if title:
        fig.suptitle(title)
    return fig


def plot_attention_weights(reports: Mapping[str, pd.DataFrame]) -> Figure:
    """Mean attention weight of each exit inside the brain, one panel per attention network.

    Args:
        reports: title -> the table of :func:`amecam_lib.aggregation.attention_weight_report`
            (``exit``, ``mean_weight``, ``uniform_weight``, ``mean_abs_deviation``).

    A dashed line marks the uniform weight 1/n (A changed nothing); each panel's title gives the
    mean ``|S_i - 1/n|`` over the exits.
    """
    if not reports:
        raise ValueError("reports is empty")
    fig = Figure(figsize=(2.6 * len(reports) + 0.6, 2.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(reports), sharey=True))
    for ax, (name, table) in zip(axes, reports.items()):
        missing = {"exit", "mean_weight", "uniform_weight", "mean_abs_deviation"} - set(table.columns)
        if missing:
            raise ValueError(f"report {name!r} lacks columns {sorted(missing)}")
        positions = np.arange(len(table))
        ax.bar(positions, table["mean_weight"], color="#6baed6")
        ax.axhline(float(table["uniform_weight"].iloc[0]), color="k", ls="--", lw=1, label="uniform 1/n")
        ax.set_xticks(positions, [f"exit {int(e)}" for e in table["exit"]])
        ax.set_title(f"{name}\nmean |S - 1/n| = {float(table['mean_abs_deviation'].mean()):.3f}", fontsize=9)
    axes[0].set_ylabel("mean weight in the brain")
    axes[0].legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------
# 05: masks and results


def plot_crf_steps(image: np.ndarray, cam: np.ndarray, threshold: float, threshold_mask: np.ndarray,
                   crf_mask: np.ndarray, tumour_mask: np.ndarray | None, *,
                   scores: Mapping[str, float] | None = None) -> Figure:
    """CAM -> threshold -> DenseCRF, step by step on one slice.

    Args:
        image: ``(H, W)`` or ``(1, H, W)`` float in [0, 1].
        cam: ``(H, W)`` float in [0, 1], the final CAM.
        threshold: the threshold that made ``threshold_mask`` (``cam >= threshold`` or similar).
        threshold_mask, crf_mask: ``(H, W)`` bool masks before and after the CRF.
        tumour_mask: ``(H, W)`` bool WT ground truth, or None.
        scores: optional ``{"threshold": dice, "CRF": dice}`` written in the panel titles.
    """
    scores = dict(scores or {})
    fig, axes = _grid(1, 4, cell=2.5)
    show_slice(axes[0, 0], image, mask=tumour_mask, title="slice + WT contour")
    show_slice(axes[0, 1], image, mask=tumour_mask, heat_map=cam, title="final CAM")
    for ax, mask, name in ((axes[0, 2], threshold_mask, "threshold"), (axes[0, 3], crf_mask, "CRF")):
        label = f"CAM >= {threshold:g}" if name == "threshold" else "DenseCRF"
        if name in scores:
            label += f"\nDice {scores[name]:.3f}"
        show_mask(ax, mask, contour=tumour_mask, title=label)
    return fig


def plot_masks_beside_truth(images: np.ndarray, cam: np.ndarray, masks: Mapping[str, np.ndarray],
                            truth: np.ndarray, *, row_titles: Sequence[str] | None = None,
                            cam_title: str = "final CAM") -> Figure:
    """The final CAM and the masks made from it beside the ground truth, one row per slice.

    Columns: the slice with the whole-tumour (WT) contour, the WT mask itself, the CAM over the
    slice, then each mask (white = tumour) with the WT contour in green, so what a mask misses or
    adds is seen against the truth.

    Args:
        images: ``(N, 1, H, W)`` or ``(N, H, W)`` float in [0, 1].
        cam: ``(N, H, W)`` float in [0, 1], high on tumour.
        masks: column title -> ``(N, H, W)`` bool, e.g. ``{"CAM >= 0.5": ..., "+ DenseCRF": ...}``.
        truth: ``(N, H, W)`` bool WT ground truth.
        row_titles: ``N`` labels (e.g. ``"case z=70"``) written left of each row.
        cam_title: title of the CAM column.
    """
    images = _as_stack(images)
    n_slices = images.shape[0]
    truth = np.asarray(truth, dtype=bool)
    for name, stack in {"cam": cam, "truth": truth, **masks}.items():
        if np.shape(stack) != images.shape:
            raise ValueError(f"{name} must be (N, H, W) = {images.shape}, got {np.shape(stack)}")
    fig, axes = _grid(n_slices, 3 + len(masks), cell=1.9)
    for r in range(n_slices):
        first = r == 0
        show_slice(axes[r, 0], images[r], mask=truth[r], title="slice + WT contour" if first else None)
        show_mask(axes[r, 1], truth[r], title="ground truth" if first else None)
        show_slice(axes[r, 2], images[r], mask=truth[r], heat_map=cam[r], title=cam_title if first else None)
        for col, (name, stack) in enumerate(masks.items(), start=3):
            show_mask(axes[r, col], stack[r], contour=truth[r], title=name if first else None)
        if row_titles is not None:
            _row_title(axes[r, 0], row_titles[r])
    return fig


def read_results(results: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """``results.csv`` (method,n_slices,dice_mean,dice_std,...) as a table indexed by method."""
    if isinstance(results, pd.DataFrame):
        table = results
    else:
        path = Path(results)
        if not path.is_file():
            raise FileNotFoundError(f"results table {path} not found (run the evaluation first)")
        table = pd.read_csv(path)
    return table.set_index("method") if "method" in table.columns else table


def plot_results(results: str | os.PathLike | pd.DataFrame, *, metric: str = "dice",
                 paper: Mapping[str, float] | None = None, title: str | None = None) -> Figure:
    """Horizontal bars of one metric (mean +- std over test slices) for every method.

    Args:
        results: ``results.csv`` path or table with ``<metric>_mean`` and ``<metric>_std``.
        metric: ``"dice"``, ``"iou"`` or ``"hd95"`` (pixels).
        paper: method -> the paper's value (Table 1-3), drawn as black diamonds; or None.
    """
    table = read_results(results)
    mean_column, std_column = f"{metric}_mean", f"{metric}_std"
    if mean_column not in table:
        raise ValueError(f"results have no column {mean_column!r}; columns: {list(table.columns)}")
    table = table.iloc[::-1]
    fig = Figure(figsize=(6.5, 0.35 * len(table) + 1.2), layout="constrained")
    ax = fig.subplots()
    positions = np.arange(len(table))
    ax.barh(positions, table[mean_column], xerr=table.get(std_column), color="#6baed6",
            error_kw=dict(ecolor="grey", lw=1), label="this run")
    if paper:
        known = [(p, paper[m]) for p, m in zip(positions, table.index) if m in paper]
        if known:
            ax.scatter([v for _, v in known], [p for p, _ in known], marker="D", color="k", zorder=3,
                       label="paper")
    ax.set_yticks(positions, list(table.index))
    ax.set_xlabel(f"{metric} ({'pixels' if metric == 'hd95' else 'mean +- std'})")
    if metric != "hd95":
        ax.set_xlim(0, 1)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or f"{metric} per method on the test slices", fontsize=10)
    return fig


def plot_false_positive_area(fractions: Mapping[str, np.ndarray]) -> Figure:
    """Predicted-tumour area on *normal* test slices (every such pixel is a false positive).

    Args:
        fractions: method -> ``(N,)`` fraction of each slice predicted tumour, in [0, 1]
            (:func:`amecam_lib.metrics.false_positive_area`), on the same N normal slices.
    """
    if not fractions:
        raise ValueError("fractions is empty")
    names = list(fractions)
    percent = [100.0 * np.asarray(fractions[n], dtype=float) for n in names]
    fig = Figure(figsize=(1.0 + 0.6 * len(names), 3.4), layout="constrained")
    ax = fig.subplots()
    ax.boxplot(percent, tick_labels=names, showmeans=True)
    ax.set_ylabel("predicted tumour (% of slice)")
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    ax.set_title("false-positive area on normal test slices", fontsize=10)
    return fig
