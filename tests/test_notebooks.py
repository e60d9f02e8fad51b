"""The notebook series: static checks on the committed notebooks (fast), then the whole series run
by ``data_scripts/run_pipeline.py --preset smoke`` on the real sample and validated with nbval
(slow, minutes; CI runs it).

The slow tests share one smoke run (``smoke_run``, session-scoped, in conftest.py): run the pipeline once, check its
files, re-execute the executed notebooks with nbval (the trainings resume, so they return at
once), and check that nbval does fail when a checked output is wrong.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PIPELINE = REPO_ROOT / "data_scripts" / "run_pipeline.py"
SANITIZE = REPO_ROOT / "tests" / "nbval_sanitize.cfg"
EXPECTED = ["01_slicing.ipynb", "02_supcon_pretraining.ipynb", "03_multi_exit.ipynb",
            "04_attentive_aggregation.ipynb", "05_crf_and_evaluation.ipynb"]
COMMON_PARAMETERS = {"run_dir", "modality", "preset", "image_size", "crop_size", "crop_zoom", "seed"}
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
MAX_FUNCTION_LINES = 5


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _python(source: str) -> str:
    """A code cell without its IPython magics (``%matplotlib inline``)."""
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%"))


# --- static checks on the committed notebooks (fast) ------------------------------------------------

def test_the_series_is_the_five_numbered_notebooks():
    spec = importlib.util.spec_from_file_location("run_pipeline", PIPELINE)
    run_pipeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_pipeline)
    assert [p.name for p in _notebooks()] == EXPECTED
    assert list(run_pipeline.NOTEBOOKS) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_source_is_clean(name):
    notebook = _read(NOTEBOOK_DIR / name)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    for index, cell in enumerate(notebook.cells):
        assert "injected-parameters" not in _tags(cell), f"{name} cell {index}: papermill's injected cell"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name} cell {index} has outputs"
            assert "import *" not in cell.source, f"{name} cell {index}: star import"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_skeleton(name):
    """Title -> imports -> one tagged parameters cell -> steps -> summary (STYLE.md)."""
    cells = _read(NOTEBOOK_DIR / name).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# {name[:2]} "), \
        "first cell must be the markdown title '# NN ...'"
    assert "What it needs" in cells[0].source and "What it produces" in cells[0].source
    imports = _python(cells[1].source)
    assert cells[1].cell_type == "code" and imports.startswith(("import", "from"))
    assert "%matplotlib inline" in cells[1].source, "figures are shown by the inline backend"
    tagged = [i for i, cell in enumerate(cells) if "parameters" in _tags(cell)]
    assert len(tagged) == 1 and cells[tagged[0]].cell_type == "code", "exactly one code cell tagged parameters"
    assert tagged[0] < 5, "the parameters cell comes right after the imports"
    markdown = [i for i, cell in enumerate(cells) if cell.cell_type == "markdown"]
    summary = markdown[-1]
    assert cells[summary].source.startswith("## Summary"), "the last markdown cell is the summary"
    assert len(cells) - summary <= 2, "at most one code cell after the summary heading"
    steps = [i for i in markdown if cells[i].source.startswith("## ") and tagged[0] < i < summary]
    assert len(steps) >= 3, "the notebook explains at least three steps"


@pytest.mark.parametrize("name", EXPECTED)
def test_parameters_are_the_series_parameters(name):
    declared = papermill.inspect_notebook(str(NOTEBOOK_DIR / name))
    assert COMMON_PARAMETERS <= set(declared), f"missing {COMMON_PARAMETERS - set(declared)}"
    assert declared["preset"]["default"] == '"demo"' and declared["modality"]["default"] == '"flair"'
    for optional in ("run_dir", "image_size", "crop_size", "crop_zoom"):
        assert declared[optional]["default"] == "None"


@pytest.mark.parametrize("name", EXPECTED)
def test_parameters_are_checked_right_after_the_parameters_cell(name):
    """The cell after the tagged one (untagged) checks every declared parameter with
    runs.check_parameters; run as papermill would, `-p interactive false` and `-p crop_size
    "[160, 192]"` end as False and (160, 192), and a wrong value stops the notebook there."""
    from papermill.cli import _resolve_type
    from papermill.translators import translate_parameters

    cells = _read(NOTEBOOK_DIR / name).cells
    tagged = next(i for i, cell in enumerate(cells) if "parameters" in _tags(cell))
    check = cells[tagged + 1]
    assert check.cell_type == "code" and "check_parameters(" in check.source and not _tags(check)
    declared = papermill.inspect_notebook(str(NOTEBOOK_DIR / name))
    checked = next(node for node in ast.walk(ast.parse(check.source))
                   if isinstance(node, ast.Assign) and node.targets[0].id == "parameters")
    assert set(ast.literal_eval(checked.value)) == set(declared), "every declared parameter is checked"

    from_cli = {"crop_size": "[160, 192]", "seed": "3"} | ({"interactive": "false"} if "interactive" in declared else {})
    injected = translate_parameters("python3", "python", {k: _resolve_type(v) for k, v in from_cli.items()})
    namespace = {}
    exec("from amecam_lib.runs import check_parameters", namespace)
    for source in (cells[tagged].source, injected, check.source):
        exec(source, namespace)
    assert namespace["crop_size"] == (160, 192) and namespace["seed"] == 3
    if "interactive" in declared:
        assert namespace["interactive"] is False
    namespace["seed"] = "three"
    with pytest.raises(ValueError, match="parameter seed = 'three'"):
        exec(check.source, namespace)


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_defines_no_long_function(name):
    for index, cell in enumerate(_read(NOTEBOOK_DIR / name).cells):
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(_python(cell.source))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= MAX_FUNCTION_LINES, f"{name} cell {index}: {node.name} is {length} lines"


def test_no_code_cell_is_copied_between_notebooks():
    seen: dict[str, str] = {}
    for path in _notebooks():
        for cell in _read(path).cells:
            lines = [line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")]
            if cell.cell_type != "code" or "parameters" in _tags(cell) or len(lines) < 3:
                continue
            key = "\n".join(lines)
            assert key not in seen, f"the same code cell is in {seen.get(key)} and {path.name}"
            seen[key] = path.name


@pytest.mark.parametrize("name", EXPECTED)
def test_every_notebook_checks_some_output_and_content(name):
    sources = [cell.source for cell in _read(NOTEBOOK_DIR / name).cells if cell.cell_type == "code"]
    assert any(source.startswith(CHECK_MARK) for source in sources), "no NBVAL_CHECK_OUTPUT cell"
    assert sum(source.count("assert ") for source in sources) >= 3, "too few content checks"


# --- the whole series on the real sample (slow) ------------------------------------------------------

def _environment() -> dict:
    return {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO_ROOT)}


# smoke_run: the session's one smoke pipeline run (tests/conftest.py; tests/test_browser.py reuses it)


@pytest.mark.slow
def test_pipeline_succeeds_and_reports(smoke_run):
    run_dir, completed = smoke_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    for name in EXPECTED:
        assert (run_dir / name).is_file()
        executed = _read(run_dir / name)
        injected = [c for c in executed.cells if "injected-parameters" in _tags(c)]
        assert len(injected) == 1 and "preset = \"smoke\"" in injected[0].source
        assert not [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
                    if o.output_type == "error"]
    timings = pd.read_csv(run_dir / "timings.csv")
    assert list(timings["notebook"]) == EXPECTED and (timings["seconds"] > 0).all()
    assert "# Results" in completed.stdout and "wall time per notebook" in completed.stdout
    record = json.loads((run_dir / "run.json").read_text())
    assert record["preset"] == "smoke" and record["modalities"] == ["flair"] and record["git_commit"]


@pytest.mark.slow
def test_pipeline_writes_a_self_contained_report(smoke_run):
    """RUN/report.html: every notebook with its figures, no script or link to fetch, TOC, results on top."""
    import re

    run_dir, completed = smoke_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"report: {run_dir / 'report.html'}" in completed.stdout
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page and not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page)
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert all(src.startswith("data:image/") for src in images)
    assert sum(src.startswith("data:image/png") for src in images) >= 19      # every saved figure at least
    contents = page[:page.index('id="report-results"')]
    assert all(name in contents for name in EXPECTED) and "Summary" in contents
    assert page.index('id="report-results"') < page.index("ame_cam_crf") < page.index('id="nb01-0"')
    assert "Settings of this run" in page and "crop_zoom" in page and "Wall time" in page


@pytest.mark.slow
def test_pipeline_results_table(smoke_run):
    from amecam_lib.config import get_preset
    from amecam_lib.evaluation import RESULT_COLUMNS

    run_dir, completed = smoke_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    table = pd.read_csv(run_dir / "results.csv")
    assert list(table.columns[:8]) == list(RESULT_COLUMNS) == [
        "method", "n_slices", "dice_mean", "dice_std", "iou_mean", "iou_std", "hd95_mean", "hd95_std"]
    methods = get_preset("smoke").evaluation.methods
    assert sorted(table["method"]) == sorted(methods)
    numbers = table[list(RESULT_COLUMNS[1:])].to_numpy(dtype=float)
    assert np.isfinite(numbers).all() and (table["n_slices"] > 0).all()
    assert table["dice_mean"].between(0, 1).all() and (table["hd95_mean"] >= 0).all()
    markdown = (run_dir / "results.md").read_text()
    assert all(f"`{method}`" in markdown for method in methods)
    # per-patient 3-D scores: each test patient once per method (Score-CAM ran on a subset: left out)
    from amecam_lib.evaluation import VOLUME_COLUMNS
    from amecam_lib.slices import read_manifest

    volumes = pd.read_csv(run_dir / "results_3d.csv")
    manifest = read_manifest(run_dir)
    test_cases = sorted(set(manifest.loc[manifest["split"] == "test", "case_id"]))
    assert tuple(volumes.columns) == VOLUME_COLUMNS and not volumes.isna().any().any()
    assert sorted(set(volumes["method"])) == sorted(m for m in methods if m != "score_cam")
    assert len(volumes) == len(set(volumes["method"])) * len(test_cases)
    assert sorted(set(volumes["case_id"])) == test_cases and (volumes["true_voxels"] > 0).all()
    assert "# Per-patient 3-D scores" in markdown.split("## flair", 1)[1]


@pytest.mark.slow
def test_pipeline_figures_and_masks(smoke_run):
    from amecam_lib.slices import read_manifest

    run_dir, completed = smoke_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = {p.name for p in (run_dir / "figures").glob("*.png")}
    expected = {"01_modalities.png", "01_tumour_area.png", "01_class_balance.png", "01_slice_browser.png",
                "02_flair_views.png", "02_flair_pretrain_loss.png", "02_flair_embeddings.png",
                "03_flair_architecture.png", "03_flair_training.png", "03_flair_exit_metrics.png",
                "03_flair_exit_maps.png", "04_flair_training.png", "04_flair_attention_weights.png",
                "04_flair_final_cam.png", "05_flair_crf_steps.png", "05_flair_results.png",
                "05_flair_fig2.png", "05_flair_false_positives.png", "05_flair_browser.png"}
    assert expected <= figures, f"missing figures: {sorted(expected - figures)}"
    assert all((run_dir / "figures" / name).stat().st_size > 5000 for name in expected)
    manifest = read_manifest(run_dir)
    test_cases = set(manifest.loc[manifest["split"] == "test", "case_id"])
    masks = {p.name for p in (run_dir / "masks").glob("*.nii.gz")}
    assert masks == {f"{case}_flair_ame_cam_crf.nii.gz" for case in test_cases}


@pytest.mark.slow
def test_executed_notebooks_pass_nbval(smoke_run):
    run_dir, completed = smoke_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    checked = _nbval([str(run_dir / name) for name in EXPECTED], run_dir)
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert "passed" in checked.stdout


@pytest.mark.slow
def test_nbval_fails_on_a_wrong_checked_output(smoke_run, tmp_path):
    """The validation can fail: change one stored, checked number and nbval must object."""
    run_dir, completed = smoke_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    notebook = _read(run_dir / EXPECTED[0])
    checked = [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(CHECK_MARK)
               and "slices" in c.source and c.outputs]
    stream = checked[-1].outputs[0]
    tampered = stream["text"].replace(" 155 ", " 154 ", 1)
    assert tampered != stream["text"], "the per-case table should list 155-slice volumes"
    stream["text"] = tampered
    copy = tmp_path / EXPECTED[0]
    nbformat.write(notebook, copy)
    result = _nbval([str(copy)], tmp_path)
    assert result.returncode != 0, "nbval accepted a wrong slice count"
    assert "154" in result.stdout


def _nbval(paths: list[str], rootdir: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-sanitize-with", str(SANITIZE),
               "-p", "no:cacheprovider", f"--rootdir={rootdir}", "-q", *paths]
    return subprocess.run(command, cwd=REPO_ROOT, env=_environment(), capture_output=True, text=True,
                          timeout=1800)


@pytest.mark.slow
def test_pipeline_names_the_failing_notebook_and_cell(sample_dir, tmp_path):
    """A failure stops the series with exit status 1 and a one-paragraph message, no traceback dump."""
    completed = subprocess.run(
        [sys.executable, str(PIPELINE), "--preset", "smoke", "--data-dir", str(sample_dir),
         "--out", str(tmp_path / "empty_run"), "--only", "02"],
        cwd=REPO_ROOT, env=_environment(), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 1
    assert "FAILED: 02_supcon_pretraining.ipynb, cell" in completed.stderr
    assert "manifest.csv" in completed.stderr          # the library's message: slice the data first
    assert "Traceback" not in completed.stderr
    executed = json.loads((tmp_path / "empty_run" / EXPECTED[1]).read_text())
    assert any(o.get("output_type") == "error" for c in executed["cells"] for o in c.get("outputs", []))


@pytest.mark.slow
def test_notebook_01_names_the_split_and_case_left_without_slices(sample_dir, tmp_path):
    """A case whose FLAIR is blank keeps no slice; when it is its split's only case, notebook 01
    stops naming the split and the case (it said only "a split is empty")."""
    import nibabel as nib

    cases = ["Brats18_2013_3_1", "Brats18_TCIA01_425_1", "Brats18_TCIA13_623_1"]
    data = tmp_path / "data"
    for case_id in cases:                    # links to the sample's files; one FLAIR written blank
        (data / case_id).mkdir(parents=True)
        for source in sorted((sample_dir / case_id).iterdir()):
            if case_id == cases[1] and source.name.endswith("_flair.nii.gz"):
                image = nib.load(source)
                blank = np.zeros(image.shape, np.int16)
                nib.save(nib.Nifti1Image(blank, image.affine, image.header), data / case_id / source.name)
            else:
                (data / case_id / source.name).symlink_to(source)
    completed = subprocess.run(
        [sys.executable, str(PIPELINE), "--preset", "smoke", "--data-dir", str(data),
         "--out", str(tmp_path / "run"), "--only", "01"],
        cwd=REPO_ROOT, env=_environment(), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 1, completed.stderr
    assert "FAILED: 01_slicing.ipynb" in completed.stderr
    assert f"keep no slice: case(s) ['{cases[1]}'] lost every slice" in completed.stderr
    executed = (tmp_path / "run" / EXPECTED[0]).read_text()
    assert f"case {cases[1]}: no slice kept" in executed and "NO SLICE KEPT of 1 case(s)" in executed


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["t1", "t1ce", "t2"])
def test_the_series_runs_for_every_other_modality(sample_dir, tmp_path, modality):
    """Issue 11 §3: the smoke series for t1, t1ce and t2 too (flair is ``smoke_run``): every
    notebook executed without an error, results and 3-D scores for this modality only, masks and
    figures named by it, and report.html."""
    from amecam_lib.config import get_preset

    run_dir = tmp_path / f"smoke_{modality}"
    completed = subprocess.run(
        [sys.executable, str(PIPELINE), "--preset", "smoke", "--modality", modality,
         "--data-dir", str(sample_dir), "--out", str(run_dir)],
        cwd=REPO_ROOT, env=_environment(), capture_output=True, text=True, timeout=1800)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for name in EXPECTED:
        executed = _read(run_dir / name)
        assert not [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
                    if o.output_type == "error"], name
    table = pd.read_csv(run_dir / "results.csv")
    assert set(table["modality"]) == {modality}
    assert sorted(table["method"]) == sorted(get_preset("smoke").evaluation.methods)
    assert table["dice_mean"].between(0, 1).all() and (table["n_slices"] > 0).all()
    assert set(pd.read_csv(run_dir / "results_3d.csv")["modality"]) == {modality}
    assert (run_dir / "figures" / f"05_{modality}_results.png").is_file()
    masks = sorted(p.name for p in (run_dir / "masks").glob("*.nii.gz"))
    assert masks and all(name.endswith(f"_{modality}_ame_cam_crf.nii.gz") for name in masks)
    assert (run_dir / "report.html").is_file()
