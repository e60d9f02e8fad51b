"""The notebooks where students use them: JupyterLab in a real (headless) browser.

Each test starts JupyterLab on 127.0.0.1 (a free port, a random token, its own root folder in a
temporary directory holding copies of the notebooks), opens a notebook in headless Chromium driven
by Playwright, runs every cell through JupyterLab's menu (Run > Run All Cells) in the ``smoke``
preset, and checks what a student would see:

- no cell shows an error (no error output in the saved notebook, no traceback on the page);
- notebook 01's slice browser renders (dropdowns, z slider, contour toggle) and moving its z slider
  changes the picture; notebook 05's method browser renders and choosing another method changes it,
  and its 3-D viewer (NiiVue, a WebGL canvas) draws the case's MRI.

How the copies run in the smoke preset: the ``parameters`` cell of each copy gets override lines
appended (``preset = "smoke"``, ``run_dir`` and ``data_dir`` in the temporary folder,
``interactive = True``), as a student would edit a copy; the committed notebooks are not touched.
Notebook 05 needs the phases 02-04 of a smoke run: it reuses the session's smoke pipeline run
(``smoke_run`` in conftest.py, shared with tests/test_notebooks.py), copied so that nothing here
changes the run the notebook tests check.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``; ``.ci/run`` installs it). Playwright
never downloads a browser here: it is pointed at that executable. A missing browser is a failure
with the command that installs it, not a skip. Screenshots go to ``test-artifacts/browser/``
(git-ignored).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]   # minutes: JupyterLab, Chromium, the smoke run

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
CHROMIUM = Path(os.environ.get("AMECAM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INSTALL_HINT = ("install Debian's chromium: `apt-get update && apt-get install -y --no-install-recommends "
                "chromium` (with sudo when not root; .ci/run does it), or set AMECAM_CHROMIUM to a "
                "Chromium executable. Never `playwright install`: browser downloads are not possible here.")
RUN_ALL_TIMEOUT_S = 300
LAB_SETTINGS = {   # JupyterLab user settings: every cell in the DOM, no news / update toasts
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


# --- the browser and the server -------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from Debian, driven by Playwright; a clear failure when it is missing."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"no Chromium at {CHROMIUM}: {INSTALL_HINT}", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Python package playwright missing: `.venv/bin/pip install -r requirements.txt`",
                    pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Lab:
    """A JupyterLab server in a subprocess, serving ``root`` on 127.0.0.1 with a token."""

    def __init__(self, root: Path, log: Path):
        self.root, self.port, self.token = root, _free_port(), secrets.token_hex(16)
        home = root.parent / "jupyter"
        settings = home / "settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"),
               "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "PYTHONPATH": str(REPO_ROOT)}
        command = [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1",
                   f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}", "--ServerApp.open_browser=False",
                   "--allow-root", f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={settings}",
                   f"--LabApp.workspaces_dir={home / 'workspaces'}", "--LabApp.news_url=None"]
        self.log = log.open("w")
        self.process = subprocess.Popen(command, cwd=root, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self._wait_until_up(log)

    def url(self, notebook: str) -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{notebook}?token={self.token}"

    def _wait_until_up(self, log: Path, timeout_s: float = 90) -> None:
        status = f"http://127.0.0.1:{self.port}/api/status?token={self.token}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {self.process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(status, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"JupyterLab did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def _copy_with_overrides(name: str, root: Path, **overrides) -> None:
    """Copy a notebook into ``root`` with override lines appended to its parameters cell."""
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    lines = "".join(f"\n{key} = {value!r}" for key, value in overrides.items())
    cell.source = f"{cell.source}\n# browser test: the smoke preset in a temporary folder{lines}"
    nbformat.write(notebook, root / name)


# --- driving a notebook ---------------------------------------------------------------------------

def _open_and_run_all(page, lab: Lab, name: str) -> None:
    """Open ``name`` in JupyterLab, wait for its kernel, Run > Run All Cells, wait until done."""
    page.goto(lab.url(name))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
    _wait_for_idle_kernel(page, timeout_s=60)
    page.locator(".jp-NotebookPanel .jp-Notebook").first.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    _wait_for_all_cells(page, timeout_s=RUN_ALL_TIMEOUT_S)
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !document.querySelector('.jp-mod-dirty')", timeout=30_000)


def _wait_for_idle_kernel(page, timeout_s: float) -> None:
    page.wait_for_function(
        "() => { const s = document.querySelector('.jp-NotebookPanel .jp-Toolbar-kernelStatus, "
        ".jp-NotebookPanel [data-jp-item-name=\"kernelStatus\"], .jp-Notebook-ExecutionIndicator');"
        " return s && /idle/i.test((s.getAttribute('data-status') || '') + ' ' + (s.title || '') + ' '"
        " + (s.getAttribute('aria-label') || '') + ' ' + s.textContent); }",
        timeout=timeout_s * 1000)


PROMPTS_JS = ("() => Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell "
              ".jp-InputArea-prompt')).map(p => p.textContent.trim())")


def _wait_for_all_cells(page, timeout_s: float) -> None:
    """Until every code cell shows an execution count ``[n]:``, or a cell shows an error."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        prompts = page.evaluate(PROMPTS_JS)
        if prompts and all(p[1:-2].isdigit() for p in prompts):
            return
        if page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                        has_text="Traceback").count() and "[*]:" not in prompts:
            return
        time.sleep(1)
    pytest.fail(f"the notebook did not finish within {timeout_s} s; prompts: {page.evaluate(PROMPTS_JS)}")


def _assert_no_error(page, saved: Path) -> None:
    tracebacks = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                              has_text="Traceback")
    shown = [tracebacks.nth(i).inner_text()[-1500:] for i in range(tracebacks.count())]
    assert not shown, "a cell shows a traceback:\n" + "\n---\n".join(shown)
    notebook = nbformat.read(saved, as_version=4)
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(notebook.cells)
              if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"error outputs in the saved notebook: {errors}"
    unrun = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and c.execution_count is None]
    assert not unrun, f"code cells not executed: {unrun}"


def _widget_picture(widget) -> bytes:
    """The PNG shown in a browser widget's Output area (its data URI), as bytes."""
    image = widget.locator(".widget-output img").first
    image.wait_for(timeout=30_000)
    return image.get_attribute("src").encode()


def _wait_for_new_picture(widget, before: bytes, timeout_s: float = 60) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        after = _widget_picture(widget)
        if after != before:
            return after
        time.sleep(0.5)
    return before


def _screenshot(target, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(ARTIFACTS / name))


# --- the tests ------------------------------------------------------------------------------------

@pytest.fixture
def lab(tmp_path):
    root = tmp_path / "lab"
    root.mkdir()
    server = Lab(root, tmp_path / "jupyterlab.log")
    yield server
    server.stop()
    shutil.copy(tmp_path / "jupyterlab.log", _artifact_dir() / f"{tmp_path.name}_jupyterlab.log")


def _artifact_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()


def test_notebook_01_slice_browser_in_jupyterlab(lab, page, sample_dir, tmp_path):
    name = "01_slicing.ipynb"
    _copy_with_overrides(name, lab.root, preset="smoke", data_dir=str(sample_dir),
                         run_dir=str(tmp_path / "run"), interactive=True)
    _open_and_run_all(page, lab, name)
    _screenshot(page, "01_after_run_all.png")
    _assert_no_error(page, lab.root / name)

    browser_widget = page.locator(".widget-vbox", has=page.locator(".widget-slider")).first
    browser_widget.scroll_into_view_if_needed()
    assert browser_widget.locator(".widget-dropdown select").count() == 2, "case and modality dropdowns"
    assert browser_widget.locator(".widget-checkbox input").count() == 1, "WT contour toggle"
    slider = browser_widget.locator(".widget-slider").first
    assert "z" in slider.locator(".widget-label").first.inner_text()
    before = _widget_picture(browser_widget)
    readout_before = slider.locator(".widget-readout").inner_text()
    _screenshot(browser_widget, "01_slice_browser_before.png")

    handle = slider.locator(".noUi-handle").first
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 - 25, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    after = _wait_for_new_picture(browser_widget, before)
    readout_after = slider.locator(".widget-readout").inner_text()
    _screenshot(browser_widget, "01_slice_browser_after.png")
    assert readout_after != readout_before, "the z slider did not move"
    assert after != before, f"moving z from {readout_before} to {readout_after} did not change the picture"


def test_notebook_05_method_browser_in_jupyterlab(lab, page, smoke_run, sample_dir, tmp_path):
    run_dir, completed = smoke_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    run_copy = tmp_path / "run"
    shutil.copytree(run_dir, run_copy, ignore=shutil.ignore_patterns("*.ipynb", "report.html"))
    name = "05_crf_and_evaluation.ipynb"
    _copy_with_overrides(name, lab.root, preset="smoke", data_dir=str(sample_dir), run_dir=str(run_copy),
                         interactive=True)
    _open_and_run_all(page, lab, name)
    _screenshot(page, "05_after_run_all.png")
    _assert_no_error(page, lab.root / name)

    selects = page.locator(".widget-hbox", has_text="method").locator(".widget-dropdown select")
    browser_widget = page.locator(".widget-vbox", has=selects.first).first
    browser_widget.scroll_into_view_if_needed()
    assert browser_widget.locator(".widget-dropdown select").count() == 2, "slice and method dropdowns"
    method = browser_widget.locator(".widget-dropdown select").nth(1)
    options = method.locator("option").all_inner_texts()
    assert len(options) >= 2, f"method options: {options}"
    before = _widget_picture(browser_widget)
    _screenshot(browser_widget, "05_method_browser_before.png")
    current = method.locator("option:checked").inner_text()
    other = next(o for o in options if o != current and o != "intensity")
    method.select_option(label=other)
    after = _wait_for_new_picture(browser_widget, before)
    _screenshot(browser_widget, "05_method_browser_after.png")
    assert after != before, f"choosing method {other} instead of {current} did not change the picture"

    viewer = page.locator(".jp-OutputArea-output canvas").first      # NiiVue draws into a WebGL canvas
    viewer.scroll_into_view_if_needed()
    box = viewer.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 200, f"3-D viewer canvas: {box}"
    picture = _wait_for_drawn_canvas(viewer)
    (ARTIFACTS / "05_case_viewer.png").write_bytes(picture)


def _wait_for_drawn_canvas(canvas, timeout_s: float = 60) -> bytes:
    """The canvas' screenshot once it shows an MRI: at least 2 % of its pixels bright (a blank or
    black canvas, WebGL missing, fails)."""
    import io

    import numpy as np
    from PIL import Image

    deadline, bright = time.monotonic() + timeout_s, 0.0
    while time.monotonic() < deadline:
        picture = canvas.screenshot()
        grey = np.asarray(Image.open(io.BytesIO(picture)).convert("L"))
        bright = float((grey > 60).mean())
        if bright > 0.02:
            return picture
        time.sleep(1)
    pytest.fail(f"the 3-D viewer's canvas stayed blank ({bright:.1%} bright pixels)")
