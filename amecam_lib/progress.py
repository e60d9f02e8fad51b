"""Progress bars: ipywidgets bars in a live notebook, plain text in executed copies.

Every progress bar of the library is this module's ``tqdm``. ``tqdm.auto`` draws an ipywidgets bar
whenever the code runs in a Jupyter kernel, and a kernel started by papermill is one. But an executed
copy stores only the widget's *view*, not its state (the kernel is gone, the notebook is untrusted), so
JupyterLab shows every bar of ``runs/<run>/*.ipynb`` stuck at 0 % and report.html shows nothing useful.
A text bar writes its state into the cell's stderr output instead, so the copy keeps the last one
("100%|##########| 12/12 [00:03<00:00]").

So: when the environment variable ``AMECAM_PLAIN_PROGRESS`` is set to 1 (true / yes / on),
the bars are tqdm's plain text ones (``tqdm.std``); otherwise ``tqdm.auto`` chooses (widgets in a
live notebook, text in a terminal). ``data_scripts/run_pipeline.py`` sets it for the kernels papermill
starts; set it yourself when you run papermill by hand (``AMECAM_PLAIN_PROGRESS=1 papermill ...``).
It is read once, when this module is first imported (by the kernel, at the notebook's imports).
``TQDM_DISABLE=1`` (the test suite) hides every bar either way.

Why not ``TQDM_DISABLE`` in executed copies: a run of many minutes then shows no sign of life in the
terminal log of papermill's cells, nor how long each epoch took in the copy.
"""

from __future__ import annotations

import os

PLAIN_PROGRESS_ENV = "AMECAM_PLAIN_PROGRESS"
"""Name of the environment variable that asks for plain-text bars."""


def plain_progress() -> bool:
    """True when ``$AMECAM_PLAIN_PROGRESS`` asks for text bars (1, true, yes or on; any case)."""
    return os.environ.get(PLAIN_PROGRESS_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


PLAIN_MININTERVAL_S = 2.0
"""Seconds between two updates of a text bar: each update is one more stream output in the executed
notebook (JupyterLab and report.html show only the last state, the file keeps every one)."""

if plain_progress():
    from tqdm.std import tqdm as _text_tqdm

    class tqdm(_text_tqdm):
        """tqdm's text bar, updated at most every :data:`PLAIN_MININTERVAL_S` seconds."""

        def __init__(self, *args, mininterval: float = PLAIN_MININTERVAL_S, **kwargs):
            super().__init__(*args, mininterval=mininterval, **kwargs)
else:
    from tqdm.auto import tqdm

__all__ = ["PLAIN_MININTERVAL_S", "PLAIN_PROGRESS_ENV", "plain_progress", "tqdm"]
