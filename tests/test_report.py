"""report.html on a tiny pair of executed notebooks made here, and Table 1 on hand-made rows."""

from __future__ import annotations

import base64
import io
import re

import nbformat
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from amecam_lib.report import REPORT_NAME, build_report, render_math, report_settings, table1_markdown, write_report
from amecam_lib.run_record import run_settings, write_run_record
from amecam_lib.runs import notebook_preset

NAMES = ("01_slicing.ipynb", "02_supcon_pretraining.ipynb")


def _png(colour: int) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 8, 3), colour, np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _executed(title: str, sections: list[str], colour: int) -> nbformat.NotebookNode:
    """A notebook as papermill leaves it: markdown with headings and an equation, a code cell with
    text and an image output, and a tqdm widget view (whose state is not saved)."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nThe loss is $\\sum_i w_i$.\n\n```\n## not a heading\n```")]
    for index, section in enumerate(sections):
        cells.append(nbformat.v4.new_markdown_cell(f"## {section}\n\nText of {section}.\n\n$$M_f = \\sum_i S_i M_i$$"))
        cell = nbformat.v4.new_code_cell(f"show({index})", execution_count=index + 1)
        cell.outputs = [
            nbformat.v4.new_output("stream", name="stdout", text=f"printed {section}\n"),
            nbformat.v4.new_output("display_data", data={"image/png": _png(colour), "text/plain": "<Figure>"}),
            nbformat.v4.new_output("display_data", data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
                "text/plain": "  0%|          | 0/8 [00:00<?, ?it/s]"})]
        cells.append(cell)
    notebook.cells = cells
    return notebook


@pytest.fixture
def tiny_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    nbformat.write(_executed("01 · Slicing", ["1. A case", "Summary"], 10), run / NAMES[0])
    nbformat.write(_executed("02 · SupCon", ["1. Views", "Summary"], 200), run / NAMES[1])
    (run / "results.md").write_text("# Results\n\n## flair\n\n| method | Dice |\n|---|---|\n| `ame_cam_crf` | 0.777 +- 0.100 |\n")
    (run / "timings.csv").write_text("notebook,seconds\n01_slicing.ipynb,11.5\n02_supcon_pretraining.ipynb,254.2\n")
    return run


def test_the_page_is_self_contained_with_toc_results_settings_and_times(tiny_run):
    preset = notebook_preset("smoke", "flair", seed=0)
    page = build_report(tiny_run, settings=report_settings(preset, "flair", seed=0, extra={"data": "/data"}))
    # nothing is fetched to read it: no script, no link to another site; images embedded
    assert "<script" not in page
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page) and "@import" not in page
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert images and all(src.startswith("data:image/") for src in images)
    assert sum(src.startswith("data:image/png;base64,") for src in images) == 4     # 2 notebooks x 2 figures
    assert 'class="math-inline"' in page and 'class="math-display"' in page       # equations drawn, no MathJax
    # table of contents: each notebook and its ## sections, every link lands on an id of the page
    contents = page[page.index("Contents"):page.index('id="report-results"')]
    for entry in ("01 · Slicing", "1. A case", "02 · SupCon", "1. Views", "01_slicing.ipynb"):
        assert entry in contents
    assert contents.count("Summary") == 2 and "not a heading" not in contents
    ids = set(re.findall(r'\bid="([^"]+)"', page))
    links = re.findall(r'href="#([^"]+)"', page)
    assert len(links) >= 9 and set(links) <= ids
    # results near the top, then the settings and the wall times, then the notebooks
    top = page.index("Contents")
    assert top < page.index("0.777 +- 0.100") < page.index('id="report-settings"') < page.index("254.2") \
        < page.index("printed 1. A case")
    assert "265.7" in page                                    # total wall time
    for setting in ("smoke", "64 x 77 px", "crop_zoom", "epochs", "/data"):
        assert setting in page
    # widget views (a progress bar stuck at 0 % without its state) are left out
    assert "0/8 [00:00" not in page and "widget-view" not in page


def test_settings_default_to_run_json_and_missing_parts_are_named(tiny_run):
    (tiny_run / "timings.csv").unlink()
    (tiny_run / "results.md").unlink()
    write_run_record(tiny_run, run_settings(notebook_preset("smoke", "flair", seed=0), seed=0), "flair")
    path = write_report(tiny_run, notebooks=(*NAMES, "03_multi_exit.ipynb"))
    page = path.read_text(encoding="utf-8")
    assert path.name == REPORT_NAME and not list(tiny_run.glob(".*"))     # atomic: no temporary left
    assert "git_commit" in page and "smoke" in page and "No <code>timings.csv</code>" in page
    assert "03_multi_exit.ipynb" in page and "notebook 05 has not run" in page


def test_a_folder_without_notebooks_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run_pipeline"):
        build_report(tmp_path)


def test_render_math_draws_svg_or_keeps_the_source():
    drawn = render_math(r"\sigma(y_i) \ge 0.5")           # \ge respelled for mathtext
    assert drawn.startswith('<img class="math-inline"') and "data:image/svg+xml;base64," in drawn
    kept = render_math(r"\begin{cases} a & b \end{cases}", display=True)
    assert kept == r"`` $$\begin{cases} a & b \end{cases}$$ ``"


# --- Table 1 with four blocks ---------------------------------------------------------------------------

def _row(modality, method, dice, n=10):
    return {"modality": modality, "method": method, "n_slices": n, "dice_mean": dice, "dice_std": 0.1,
            "iou_mean": dice / 2, "iou_std": 0.05, "hd95_mean": 20.0, "hd95_std": 5.0}


def test_table1_has_four_blocks_in_the_papers_order_beside_the_papers_numbers():
    rows = [_row(m, method, 0.5 + 0.1 * k) for k, m in enumerate(("flair", "t1", "t2"))
            for method in ("grad_cam", "layer_cam", "ame_cam_crf", "ame_cam", "exit1")]
    results = pd.DataFrame(rows)
    volumes = pd.DataFrame({"modality": ["flair", "flair"], "method": ["ame_cam_crf"] * 2,
                            "case_id": ["a", "b"], "dice": [0.6, 0.8]})
    table = table1_markdown(results, volumes)
    blocks = [table.index(f"## {label}") for label in ("T1 (`t1`)", "T1-CE (`t1ce`)", "T2 (`t2`)", "T2-FLAIR (`flair`)")]
    assert blocks == sorted(blocks)
    t1ce = table[blocks[1]:blocks[2]]
    assert "Not run." in t1ce and "|" not in t1ce
    flair = table[blocks[3]:]
    crf = next(line for line in flair.splitlines() if "`ame_cam_crf`" in line)
    cells = [cell.strip() for cell in crf.strip("|").split("|")]
    # method, n, Dice, IoU, HD95, 3-D Dice, then the paper's Table 1 (FLAIR: 0.862 / 0.767 / 8.664)
    assert cells == ["AME-CAM (+ DenseCRF) (`ame_cam_crf`)", "10", "0.500 +- 0.100", "0.250 +- 0.050",
                     "20.000 +- 5.000", "0.700", "0.862 +- 0.088", "0.767 +- 0.122", "8.664 +- 6.440"]
    score_cam = next(line for line in flair.splitlines() if "`score_cam`" in line)
    assert "not run" in score_cam and "0.432 +- 0.209" in score_cam      # paper's ScoreCAM stays beside
    assert "exit1" not in table                                            # Table 1 rows only
    t1 = table[blocks[0]:blocks[1]]
    assert "0.600 +- 0.100" in t1 and "0.631 +- 0.119" in t1               # ours (t1) and the paper's AME-CAM T1


def test_table1_refuses_rows_without_the_columns():
    with pytest.raises(ValueError, match="dice_std"):
        table1_markdown(pd.DataFrame([{"modality": "t1", "method": "grad_cam", "n_slices": 1, "dice_mean": 0.1}]))


def test_run_pipeline_all_runs_each_modality_into_its_folder_and_writes_table1(tmp_path, monkeypatch, capsys):
    """``--modality all``: one run folder per modality, then results.csv of the four and Table 1
    (the series itself is replaced by a stand-in that writes each run's results.csv)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "data_scripts" / "run_pipeline.py"
    spec = importlib.util.spec_from_file_location("run_pipeline", script)
    pipeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pipeline)
    ran = []

    def one_series(args):
        ran.append((args.modality, args.out))
        args.out.mkdir(parents=True)
        pd.DataFrame([_row(args.modality, "ame_cam_crf", 0.5)]).to_csv(args.out / "results.csv", index=False)
        return 0

    monkeypatch.setattr(pipeline, "run_series", one_series)
    out = tmp_path / "all"
    assert pipeline.run_all_modalities(pipeline.parse_args(["--preset", "smoke", "--modality", "all",
                                                             "--out", str(out)])) == 0
    assert ran == [(m, out.resolve() / f"smoke_{m}") for m in ("t1", "t1ce", "t2", "flair")]
    assert sorted(pd.read_csv(out / "results.csv")["modality"]) == ["flair", "t1", "t1ce", "t2"]
    table = (out / "results_table1.md").read_text()
    assert table.count("| AME-CAM (+ DenseCRF) (`ame_cam_crf`) | 10 | 0.500 +- 0.100") == 4
    assert list(pd.read_csv(out / "timings.csv")["modality"]) == ["t1", "t1ce", "t2", "flair"]
    assert "Table 1: " in capsys.readouterr().out
    # a failing modality stops the series, and no Table 1 is written
    monkeypatch.setattr(pipeline, "run_series", lambda args: 1 if args.modality == "t1ce" else one_series(args))
    ran.clear()
    assert pipeline.run_all_modalities(pipeline.parse_args(["--preset", "smoke", "--modality", "all",
                                                             "--out", str(tmp_path / "again")])) == 1
    assert [m for m, _ in ran] == ["t1"] and not (tmp_path / "again" / "results_table1.md").exists()
