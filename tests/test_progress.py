"""amecam_lib.progress: widget bars in a live notebook, plain text in executed copies (run_pipeline.py),
so an executed notebook does not show bars stuck at 0 % (a widget's state is not saved)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from amecam_lib.progress import PLAIN_PROGRESS_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
BAR_CELL = "from amecam_lib.progress import tqdm\nfor _ in tqdm(range(3), desc='bar', disable=False):\n    pass"


def _bar_class(plain: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != PLAIN_PROGRESS_ENV}
    if plain is not None:
        env[PLAIN_PROGRESS_ENV] = plain
    code = "from amecam_lib.progress import tqdm as bar; import tqdm.auto, tqdm.std; " \
           "print('auto' if bar is tqdm.auto.tqdm else 'text' if issubclass(bar, tqdm.std.tqdm) else '?')"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_variable_chooses_text_bars():
    assert _bar_class(None) == "auto"
    assert _bar_class("0") == "auto"
    assert {_bar_class(word) for word in ("1", "true", "YES", "on")} == {"text"}


def _run_bar_in_a_kernel(tmp_path: Path) -> list:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(BAR_CELL)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return notebook.cells[0].outputs


def test_executed_copies_keep_the_bar_as_text(tmp_path, monkeypatch):
    """In a kernel (as papermill runs it): a widget view without the variable (JupyterLab shows it
    at 0 %: its state is not saved), stderr text ending at 100 % with it."""
    monkeypatch.delenv(PLAIN_PROGRESS_ENV, raising=False)
    widget_outputs = _run_bar_in_a_kernel(tmp_path)
    assert any(WIDGET_VIEW in output.get("data", {}) for output in widget_outputs)

    monkeypatch.setenv(PLAIN_PROGRESS_ENV, "1")
    outputs = _run_bar_in_a_kernel(tmp_path)
    assert not any(WIDGET_VIEW in output.get("data", {}) for output in outputs)
    text = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert text.rstrip().rsplit("\r", 1)[-1].startswith("bar: 100%|") and "3/3" in text


def test_run_pipeline_asks_its_kernels_for_text_bars(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("run_pipeline", REPO_ROOT / "data_scripts" / "run_pipeline.py")
    run_pipeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_pipeline)
    monkeypatch.setenv(PLAIN_PROGRESS_ENV, "")          # restored (unset) after the test
    monkeypatch.delenv(PLAIN_PROGRESS_ENV)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert run_pipeline.main(["--preset", "smoke", "--out", str(not_a_folder)]) == 2
    assert os.environ[PLAIN_PROGRESS_ENV] == "1"


def test_report_shows_each_text_bar_once_at_its_last_state(tmp_path):
    from amecam_lib.report import build_report

    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=text) for text in
                    ("\repoch 1/1:   0%|          | 0/4", "\repoch 1/1:  50%|#####     | 2/4",
                     "\repoch 1/1: 100%|##########| 4/4 [00:02<00:00]", "\n")]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 Slicing"), cell])
    nbformat.write(notebook, tmp_path / "01_slicing.ipynb")
    page = build_report(tmp_path, settings={})
    assert "100%|##########| 4/4" in page
    assert "0/4" not in page and "2/4" not in page


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
