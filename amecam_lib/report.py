"""What a reader sees without running anything: ``RUN/report.html`` and the four-modality Table 1.

``RUN/report.html`` (:func:`write_report`, written by ``data_scripts/run_pipeline.py`` after the
series) is the executed notebooks of a run as one self-contained page, to mail or to put on a
course page:

- on top: a table of contents (each notebook and its ``##`` sections), the results
  (``RUN/results.md``: the slice tables beside the paper's and the per-patient 3-D scores), the
  run's settings (preset, modality, slice geometry, seed, every phase's settings, git commit) and
  the wall time of each notebook (``RUN/timings.csv``);
- then the five executed notebooks, figures and all, through nbconvert's HTML exporter (its
  JupyterLab look). Figures are embedded as ``data:`` URIs; no script is loaded from anywhere
  (the exporter's require.js, MathJax and mermaid tags are left out, and so are widget views:
  their progress bars would stay at 0 % without a live kernel). The paper's equations are drawn
  by matplotlib's mathtext as inline SVG (:func:`render_math`); the few that mathtext cannot draw
  are shown as their LaTeX source.

:func:`table1_markdown` builds the paper's Table 1 with one block per modality (T1, T1-CE, T2,
FLAIR) from the rows of one or several ``results.csv``, beside the paper's numbers; ``run_pipeline.py
--modality all`` writes it as ``results_table1.md``.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import html
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import nbformat
import pandas as pd

from amecam_lib.atomic import write_text
from amecam_lib.config import MODALITIES, Preset
from amecam_lib.run_record import SERIES_NOTEBOOKS, git_commit, read_run_record

REPORT_NAME = "report.html"
"""File name of the report in the run folder."""

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

TABLE1_METHODS: tuple[tuple[str, str], ...] = (
    ("grad_cam", "Grad-CAM"), ("score_cam", "ScoreCAM"), ("lfi_cam", "LFI-CAM"), ("layer_cam", "LayerCAM"),
    ("swin_mil", "Swin-MIL"),
    ("ame_cam_crf", "AME-CAM (+ DenseCRF)"), ("ame_cam", "AME-CAM without CRF (not in the paper's table)"),
    ("cf_ul", "UL: C&F, a U-Net on the Chan-Vese energy, no label (paper: UL C&F)"),
    ("cf_fsl", "FSL: C&F with the training masks (paper: FSL C&F)"),
    ("unet_fsl", "FSL: U-Net on the training masks, the ceiling (paper: Opt. U-net)"))
"""Rows of each block of Table 1: (method name in ``results.csv``, label). The paper's AME-CAM
includes DenseCRF, so its numbers sit beside ``ame_cam_crf``; ``cf_ul`` is the paper's UL row,
``cf_fsl`` and ``unet_fsl`` its FSL rows."""

MODALITY_LABELS = {"t1": "T1", "t1ce": "T1-CE", "t2": "T2", "flair": "T2-FLAIR"}

_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<style type="text/css">
main { max-width: 1200px; margin: 0 auto; }
.report-toc ul { margin-top: 0.2em; }
img.math-inline { vertical-align: middle; display: inline; margin: 0; }
img.math-display { display: block; margin: 0.6em auto; }
</style>
{%- endblock extra_css -%}
"""
"""nbconvert's JupyterLab template without any script tag (nothing is fetched to read the page)."""


# --- equations ---------------------------------------------------------------------------------------

_MATHTEXT_SPELLING = ((r"\le ", r"\leq "), (r"\ge ", r"\geq "), (r"\tfrac", r"\frac"), (r"\qquad", r"\quad"),
                      (r"\Big", ""), (r"\big", ""), (r"\left", ""), (r"\right", ""))
_MATH = re.compile(r"\$\$(?P<display>.+?)\$\$|(?<![\\$])\$(?P<inline>[^$\n]+?)\$", re.S)
_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)


def render_math(tex: str, *, display: bool = False) -> str:
    """One LaTeX formula as an ``<img>`` with an embedded SVG (matplotlib mathtext), or, when
    mathtext cannot draw it, as its source in a markdown code span.

    mathtext reads a subset of LaTeX: ``\\le``/``\\ge`` are respelled ``\\leq``/``\\geq``, sizing
    commands (``\\big``, ``\\left`` ...) dropped, ``\\tfrac`` read as ``\\frac``.
    """
    from matplotlib import mathtext
    from matplotlib.font_manager import FontProperties

    source = " ".join(tex.split())
    spelled = re.sub(r"\\le\b", r"\\leq", re.sub(r"\\ge\b", r"\\geq", source))
    for old, new in _MATHTEXT_SPELLING:
        spelled = spelled.replace(old, new)
    buffer = io.BytesIO()
    try:
        mathtext.math_to_image(f"${spelled}$", buffer, format="svg",
                               prop=FontProperties(size=13 if display else 11))
    except Exception:        # mathtext raises ValueError / ParseException / others on what it cannot read
        return f"`` {'$$' if display else '$'}{source}{'$$' if display else '$'} ``"   # a markdown code span
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    kind = "math-display" if display else "math-inline"
    return f'<img class="{kind}" alt="{html.escape(source, quote=True)}" src="data:image/svg+xml;base64,{data}"/>'


def _markdown_with_rendered_math(source: str) -> str:
    """Markdown with every ``$...$`` / ``$$...$$`` outside code replaced by :func:`render_math`."""
    parts = _CODE.split(source)
    for index in range(0, len(parts), 2):          # even parts are outside code
        parts[index] = _MATH.sub(
            lambda m: render_math(m.group("display") or m.group("inline"), display=m.group("display") is not None),
            parts[index])
    return "".join(parts)


# --- the page ------------------------------------------------------------------------------------------

def _anchored(source: str, prefix: str, headings: list[tuple[int, str, str]]) -> str:
    """``source`` with an anchor before each ``#`` / ``##`` heading outside code fences; the
    headings found are appended to ``headings`` as (level, text, anchor)."""
    lines, fenced = [], False
    for line in source.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"^(#{1,2})\s+(.*\S)\s*$", line)
        if match:
            anchor = f"{prefix}-{len(headings)}"
            headings.append((len(match.group(1)), match.group(2), anchor))
            lines += [f'<a id="{anchor}"></a>', ""]
        lines.append(line)
    return "\n".join(lines)


def _plain_heading(text: str) -> str:
    """A heading's text for the table of contents: no markdown emphasis, code marks or math."""
    text = re.sub(r"\$([^$]*)\$", r"\1", text).replace("\\dots", "...")
    return html.escape(re.sub(r"[`*_\\{}]", "", text))


def _for_report(notebook: nbformat.NotebookNode, prefix: str,
                headings: list[tuple[int, str, str]]) -> list[nbformat.NotebookNode]:
    """The cells of one executed notebook as the report shows them: headings anchored, equations
    drawn, widget views dropped (a progress bar's state is not saved)."""
    cells = []
    for cell in copy.deepcopy(notebook.cells):
        if cell.cell_type == "markdown":
            cell.source = _markdown_with_rendered_math(_anchored(cell.source, prefix, headings))
        elif cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs
                            if WIDGET_VIEW not in output.get("data", {})]
        if "id" in cell:                                   # ids stay unique in the one page
            cell.id = f"{prefix}-{cell.id}"
        cells.append(cell)
    return cells


def _demoted(markdown: str, levels: int) -> str:
    """Markdown with every heading ``levels`` deeper (results.md's ``#`` inside the report)."""
    return re.sub(r"^(#{1,6})(?=\s)", lambda m: "#" * min(6, len(m.group(1)) + levels), markdown, flags=re.M)


def _settings_markdown(settings: Mapping[str, Mapping[str, object]]) -> str:
    lines = []
    for section, values in settings.items():
        lines += [f"**{section}**", "", "| setting | value |", "|---|---|"]
        lines += [f"| `{key}` | `{value}` |" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def _timings_markdown(run_dir: Path) -> str:
    path = run_dir / "timings.csv"
    if not path.is_file():
        return "No `timings.csv` in the run folder."
    timings = pd.read_csv(path)
    lines = ["| notebook | wall time (s) |", "|---|---|"]
    lines += [f"| {row.notebook} | {row.seconds:.1f} |" for row in timings.itertuples()]
    lines.append(f"| **total** | **{timings['seconds'].sum():.1f}** |")
    return "\n".join(lines)


def report_settings(preset: Preset, modality: str, *, seed: int | None = None,
                    extra: Mapping[str, object] | None = None) -> dict[str, dict[str, object]]:
    """The settings the report lists: a "run" section (preset, modality, geometry, seed, git
    commit, ``extra``), then one section per phase of ``preset`` with every field."""
    from amecam_lib.slicing import describe_geometry

    run = {"preset": preset.name, "modality": modality, "geometry": describe_geometry(preset.data),
           "seed": preset.seed if seed is None else seed, "git commit": git_commit(), **dict(extra or {})}
    sections = {"run": run}
    for phase in preset.PHASES:
        sections[phase] = dict(dataclasses.asdict(getattr(preset, phase)))
    return sections


def build_report(run_dir: str | os.PathLike, *, settings: Mapping[str, Mapping[str, object]] | None = None,
                 notebooks: Sequence[str] = SERIES_NOTEBOOKS, title: str | None = None) -> str:
    """The report of a run folder as one HTML page (see the module docstring).

    Args:
        run_dir: the run folder, holding the executed notebooks (``RUN/01_slicing.ipynb`` ...),
            ``results.md`` and ``timings.csv`` (each optional: what is missing is said so).
        settings: sections of settings to list (:func:`report_settings`); default: those of
            ``RUN/run.json`` (:mod:`amecam_lib.run_record`), else none.
        notebooks: names of the executed notebooks, in order; missing ones are named in the page.
        title: the page's title; default ``"AME-CAM tutorial: run <folder name>"``.

    Returns:
        the HTML text (self-contained: no ``src``/``href`` to another site, images as ``data:``).

    Raises:
        FileNotFoundError: the run folder holds none of ``notebooks``.
    """
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    run_dir = Path(run_dir)
    present = [name for name in notebooks if (run_dir / name).is_file()]
    if not present:
        raise FileNotFoundError(f"{run_dir} holds no executed notebook of the series ({', '.join(notebooks)}); "
                                f"run data_scripts/run_pipeline.py first")
    title = title or f"AME-CAM tutorial: run {run_dir.name}"
    if settings is None:
        record = read_run_record(run_dir)
        settings = {} if record is None else {
            "run": {key: record.get(key) for key in ("preset", "modalities", "geometry", "seed", "split_file",
                                                     "git_commit", "created", "updated")},
            **(record.get("phases") or {})}

    headings: list[tuple[int, str, str]] = []
    body: list[nbformat.NotebookNode] = []
    toc = []
    for number, name in enumerate(present, start=1):
        notebook = nbformat.read(run_dir / name, as_version=4)
        first = len(headings)
        body += _for_report(notebook, f"nb{name[:2]}", headings)
        entries = headings[first:]
        top = next((h for h in entries if h[0] == 1), None)
        toc.append(f"{number}. [{_plain_heading(top[1]) if top else name}](#{top[2] if top else ''}) "
                   f"(`{name}`)")
        toc += [f"    - [{_plain_heading(text)}](#{anchor})" for level, text, anchor in entries if level == 2]
    missing = [name for name in notebooks if name not in present]
    results = run_dir / "results.md"
    header = [
        f"# {html.escape(title)}",
        "",
        f"The executed notebooks of the run folder `{run_dir.name}`, with every figure and number they "
        "printed, as one page. Nothing here needs a running kernel or a network connection.",
        "",
        '<div class="report-toc">',
        "",
        "## Contents",
        "",
        "- [Results](#report-results)",
        "- [Settings of this run](#report-settings)",
        "- [Wall time](#report-timings)",
        "- The notebooks:",
        "",
        *[f"    {line}" for line in toc],
        "",
        "</div>",
        "",
    ]
    if missing:
        header += [f"Not in this run folder (not run): {', '.join(f'`{m}`' for m in missing)}.", ""]
    header += ['<a id="report-results"></a>', "",
               _demoted(results.read_text(encoding="utf-8"), 1) if results.is_file()
               else "## Results\n\nNo `results.md` in the run folder (notebook 05 has not run).", "",
               '<a id="report-settings"></a>', "", "## Settings of this run", "",
               _settings_markdown(settings) if settings else "No settings recorded (`run.json` missing).", "",
               '<a id="report-timings"></a>', "", "## Wall time", "", _timings_markdown(run_dir)]
    page = nbformat.v4.new_notebook()
    page.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    page.metadata["title"] = title
    page.cells = [nbformat.v4.new_markdown_cell("\n".join(header)), *body]
    # CoalesceStreams: a plain-text progress bar (amecam_lib.progress) is one stream output per update,
    # each "\r<bar>"; merged and with the overwritten text dropped, the page shows each bar's last state.
    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"amecam_report.html.j2": _TEMPLATE})],
                            template_file="amecam_report.html.j2", exclude_anchor_links=True,
                            config=Config({"CoalesceStreamsPreprocessor": {"enabled": True}}))
    text, _ = exporter.from_notebook_node(page, resources={"metadata": {"name": title}})
    return text


def write_report(run_dir: str | os.PathLike, **options) -> Path:
    """Write :func:`build_report` to ``RUN/report.html`` atomically; return its path."""
    target = Path(run_dir) / REPORT_NAME
    write_text(target, build_report(run_dir, **options))
    return target


# --- Table 1, four modalities ----------------------------------------------------------------------

def _mean_std(row: pd.Series, metric: str) -> str:
    return f"{row[f'{metric}_mean']:.3f} +- {row[f'{metric}_std']:.3f}"


def table1_markdown(results: pd.DataFrame, volume_scores: pd.DataFrame | None = None, *,
                    title: str = "Table 1: whole tumour, four modalities") -> str:
    """The paper's Table 1 (Chen et al., MICCAI 2023) with one block per modality, beside the
    paper's numbers.

    Args:
        results: rows of ``results.csv`` (columns ``modality, method, n_slices, dice_mean, dice_std,
            iou_mean, iou_std, hd95_mean, hd95_std``), one or several modalities.
        volume_scores: rows of ``results_3d.csv`` (per patient), or None; adds the mean 3-D Dice
            over the test patients.
        title: the first heading.

    Returns:
        Markdown: a heading and a note, then per modality in the paper's order (T1, T1-CE, T2,
        T2-FLAIR) a table of :data:`TABLE1_METHODS` with this run's Dice / IoU / HD95 (mean +- std
        over the test slices labelled tumour) and the paper's. A modality without rows says
        "not run"; a method without a row says "not run" in its cells.

    Raises:
        ValueError: ``results`` lacks a needed column.
    """
    from amecam_lib.evaluation import PAPER_RESULTS   # here: evaluation imports torch, the report alone does not

    needed = {"modality", "method", "n_slices", "dice_mean", "dice_std", "iou_mean", "iou_std", "hd95_mean",
              "hd95_std"}
    if needed - set(results.columns):
        raise ValueError(f"results lack columns {sorted(needed - set(results.columns))}")
    three_d = volume_scores is not None and len(volume_scores) > 0
    lines = [f"# {title}", "",
             "Dice and IoU on the test slices labelled tumour, HD95 in mm; mean +- std over those slices. "
             "Paper: Chen et al., MICCAI 2023, Table 1 (BraTS 2019/2021 validation patients; AME-CAM there "
             "includes DenseCRF)."
             + (" `3-D Dice`: mean over the test patients of the whole-volume Dice (`results_3d.csv`)."
                if three_d else ""), ""]
    header = "| method | n | Dice | IoU | HD95 |" + (" 3-D Dice |" if three_d else "") + \
        " paper Dice | paper IoU | paper HD95 |"
    rule = "|---|---|---|---|---|" + ("---|" if three_d else "") + "---|---|---|"
    for modality in MODALITIES:
        rows = results[results["modality"] == modality].set_index("method")
        lines += [f"## {MODALITY_LABELS[modality]} (`{modality}`)", ""]
        if rows.empty:
            lines += ["Not run.", ""]
            continue
        lines += [header, rule]
        paper = PAPER_RESULTS.get(modality, {})
        for method, label in TABLE1_METHODS:
            cells = [f"{label} (`{method}`)"]
            if method in rows.index:
                row = rows.loc[method]
                cells += [str(int(row["n_slices"]))] + [_mean_std(row, m) for m in ("dice", "iou", "hd95")]
            else:
                cells += ["", "not run", "", ""]
            if three_d:
                of_method = volume_scores[(volume_scores["modality"] == modality)
                                          & (volume_scores["method"] == method)]
                cells.append(f"{of_method['dice'].mean():.3f}" if len(of_method) else "")
            reference = paper.get(method, {})
            cells += [f"{reference[m][0]:.3f} +- {reference[m][1]:.3f}" if m in reference else ""
                      for m in ("dice", "iou", "hd95")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# --- the README's figures ---------------------------------------------------------------------------------

DOCS_FIGURES: tuple[tuple[str, str | None, str], ...] = (
    ("exit_maps.png", "03_{modality}_exit_maps.png",
     "the four exit maps n(M_1)..n(M_4) of the multi-exit network on tumour slices (notebook 03)"),
    ("attention_weights.png", "04_{modality}_attention_weights.png",
     "the attention weights S_1..S_4 that A gives each exit, per pixel (notebook 04)"),
    ("attention_report.png", "04_{modality}_attention_report.png",
     "the mean attention weight of each exit in the brain against the uniform 1/n (notebook 04)"),
    ("final_cam_masks.png", None,
     "the final CAM and its masks (threshold, then DenseCRF) beside the ground truth on test slices "
     "(re-plotted from the run's predictions.npz)"),
    ("results.png", "05_{modality}_results.png",
     "Dice of every method on the test slices, the paper's Table 1-3 values as black diamonds (notebook 05)"),
)
"""The figures ``data_scripts/make_docs_figures.py`` puts under ``docs/``: (file name, the run's saved
figure it is made from, or None when re-plotted from the run's files; caption)."""

DOCS_MAX_WIDTH = 800
"""Widest side of a docs figure, pixels."""


def _small_png(source, target: Path, max_width: int) -> int:
    """Write ``source`` (a path or a PIL image) to ``target`` as a small PNG: at most ``max_width``
    px wide, 256-colour palette; return its size in bytes."""
    from PIL import Image

    from amecam_lib.atomic import atomic_path

    image = source if isinstance(source, Image.Image) else Image.open(source)
    image = image.convert("RGB")
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.Resampling.LANCZOS)
    small = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    with atomic_path(target) as tmp:
        small.save(tmp, format="PNG", optimize=True)
    return target.stat().st_size


def final_cam_figure(run_dir: str | os.PathLike, modality: str, n_slices: int = 3):
    """The final CAM and its masks beside the ground truth on ``n_slices`` test slices with much
    tumour, re-plotted from ``RUN/<modality>/predictions.npz`` (:func:`amecam_lib.plots.plot_masks_beside_truth`);
    each row title gives the slice and the Dice of both masks."""
    import numpy as np

    from amecam_lib.evaluation import load_predictions
    from amecam_lib.metrics import slice_scores
    from amecam_lib.plots import plot_masks_beside_truth
    from amecam_lib.runs import tumour_examples
    from amecam_lib.slices import load_slices

    predictions = load_predictions(run_dir, modality)
    test = load_slices(run_dir, modality, "test", exclude_ambiguous=False)
    for method in ("ame_cam", "ame_cam_crf"):
        if f"index_{method}" not in predictions:
            raise KeyError(f"{run_dir}/{modality}/predictions.npz has no {method!r}; evaluate it first")
    rows = {method: {int(i): r for r, i in enumerate(predictions[f"index_{method}"])} for method in ("ame_cam", "ame_cam_crf")}
    common = np.asarray(sorted(set(rows["ame_cam"]) & set(rows["ame_cam_crf"])), dtype=np.int64)
    shown = common[tumour_examples(test.masks[common], test.case_ids[common], n=n_slices)]
    pick = {m: [rows[m][int(i)] for i in shown] for m in rows}
    masks = {"CAM >= threshold": predictions["mask_ame_cam"][pick["ame_cam"]],
             "+ DenseCRF": predictions["mask_ame_cam_crf"][pick["ame_cam_crf"]]}
    truth = test.masks[shown]
    titles = []
    for k, index in enumerate(shown):
        dice = [slice_scores(masks[name][k], truth[k]).dice for name in masks]
        titles.append(f"{test.case_ids[index]} z={test.z[index]}\nDice {dice[0]:.2f} / {dice[1]:.2f}")
    return plot_masks_beside_truth(test.images[shown], predictions["map_ame_cam"][pick["ame_cam"]].astype(np.float32),
                                   masks, truth, row_titles=titles, cam_title="final CAM (AME-CAM)")


def run_description(run_dir: str | os.PathLike) -> dict[str, str]:
    """Which run made a run folder: preset, modalities, date and git commit, from ``run.json``
    (else from the executed notebooks' parameters and file dates, the commit then unknown)."""
    import datetime as dt

    from amecam_lib.run_record import recorded_parameters

    run_dir = Path(run_dir)
    record = read_run_record(run_dir)
    if record is not None:
        return {"preset": str(record.get("preset")), "modalities": ", ".join(record.get("modalities") or []),
                "date": str(record.get("updated") or record.get("created")), "git_commit": str(record.get("git_commit"))}
    parameters = recorded_parameters(run_dir) or {}
    dated = [p for p in (run_dir / "results.csv", run_dir / "timings.csv") if p.is_file()]
    date = (dt.datetime.fromtimestamp(max(p.stat().st_mtime for p in dated), dt.timezone.utc).isoformat(timespec="seconds")
            if dated else "unknown")
    return {"preset": str(parameters.get("preset", "unknown")), "modalities": str(parameters.get("modality", "unknown")),
            "date": date, "git_commit": f"not recorded (run made before run.json; code now at {git_commit()})"}


def _replotted(name: str, run_dir: Path, modality: str):
    """A docs figure drawn from the run's files (no saved figure to start from), as a PIL image."""
    from PIL import Image

    if name == "final_cam_masks.png":
        figure = final_cam_figure(run_dir, modality)
    else:
        from amecam_lib.evaluation import PAPER_RESULTS
        from amecam_lib.plots import plot_results, read_results

        table = read_results(run_dir / "results.csv")
        table = table[table["modality"] == modality] if "modality" in table else table
        figure = plot_results(table, paper={m: v["dice"][0] for m, v in PAPER_RESULTS.get(modality, {}).items()},
                              title=f"Dice on the {modality} test slices")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    buffer.seek(0)
    return Image.open(buffer)


def make_docs_figures(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, modality: str | None = None,
                      max_width: int = DOCS_MAX_WIDTH) -> list[Path]:
    """Make the README's figures (:data:`DOCS_FIGURES`) from a run folder, small, and
    ``out_dir/README.md`` saying which run made them.

    Each figure is the run's own saved figure (``RUN/figures/``), or re-plotted from the run's
    files through :mod:`amecam_lib.plots` (the final CAM and masks; the results chart when its saved
    figure is missing); none is drawn by hand. Each is resized to at most ``max_width`` px and
    stored as a 256-colour PNG.

    Args:
        run_dir: a finished run folder (notebooks 01-05).
        out_dir: where to write (``docs/`` of the repository).
        modality: the modality to show; default: the run's only one (``run.json``), else flair.

    Returns:
        the paths written, ``README.md`` last.

    Raises:
        FileNotFoundError: a saved figure the run should hold is missing (the run is not finished).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    described = run_description(run_dir)
    if modality is None:
        held = [m.strip() for m in described["modalities"].split(",") if m.strip() in MODALITIES]
        modality = held[0] if len(held) == 1 else "flair"
    written, lines = [], []
    for name, saved, caption in DOCS_FIGURES:
        source = None if saved is None else run_dir / "figures" / saved.format(modality=modality)
        if source is not None and source.is_file():
            origin = f"`{source.relative_to(run_dir).as_posix()}` of the run, resized"
        elif name == "final_cam_masks.png":
            source, origin = _replotted(name, run_dir, modality), f"re-plotted from the run's `{modality}/predictions.npz`"
        elif name == "results.png":
            source, origin = _replotted(name, run_dir, modality), "re-plotted from the run's `results.csv`"
        else:
            raise FileNotFoundError(f"{source} not found: is {run_dir} a finished run (notebooks 01-05)?")
        size = _small_png(source, out_dir / name, max_width)
        written.append(out_dir / name)
        lines.append(f"| [`{name}`]({name}) | {caption} | {origin} | {size / 1024:.0f} KB |")
    total = sum(path.stat().st_size for path in written)
    readme = [
        "# Figures of the README",
        "",
        f"Made by `data_scripts/make_docs_figures.py` from the run folder `{run_dir.name}`: preset "
        f"`{described['preset']}`, modality `{modality}`, run on {described['date']}, git commit "
        f"`{described['git_commit']}`. Not drawn by hand: to renew them, rerun the script on a new run.",
        "",
        f"Each is at most {max_width} px wide, a 256-colour PNG ({total / 1024:.0f} KB in all).",
        "",
        "| figure | shows | made from | size |",
        "|---|---|---|---|",
        *lines,
        "",
    ]
    write_text(out_dir / "README.md", "\n".join(readme))
    return [*written, out_dir / "README.md"]


__all__ = ["DOCS_FIGURES", "MODALITY_LABELS", "REPORT_NAME", "TABLE1_METHODS", "build_report", "final_cam_figure",
           "make_docs_figures", "render_math", "report_settings", "run_description", "table1_markdown", "write_report"]
