#!/usr/bin/env python
"""Make the README's figures under docs/ from a finished run folder.

The figures are the run's own (``RUN/figures/``: exit maps, attention weights, results chart) or
re-plotted from its files through ``amecam_lib.plots`` (the final CAM and its masks beside the
ground truth, from ``RUN/<modality>/predictions.npz``), never drawn by hand; each is resized to at
most 800 px wide as a 256-colour PNG. ``docs/README.md`` then says which run made them (preset,
modality, date, git commit, from ``RUN/run.json``). See :func:`amecam_lib.report.make_docs_figures`.

Example::

    python data_scripts/make_docs_figures.py runs/demo_flair          # -> docs/*.png, docs/README.md
    python data_scripts/make_docs_figures.py runs/demo_all/demo_t1ce --modality t1ce --out /tmp/docs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amecam_lib.config import MODALITIES
from amecam_lib.report import DOCS_MAX_WIDTH, make_docs_figures
from amecam_lib.runs import REPO_ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a finished run folder (notebooks 01-05), e.g. runs/demo_flair")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs", help="where to write (default: docs/)")
    parser.add_argument("--modality", choices=MODALITIES, default=None,
                        help="modality to show (default: the run's, flair when it holds several)")
    parser.add_argument("--max-width", type=int, default=DOCS_MAX_WIDTH, help="widest side in pixels (default 800)")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        print(f"make_docs_figures: {args.run_dir} is not a run folder", file=sys.stderr)
        return 2
    try:
        written = make_docs_figures(args.run_dir, args.out, modality=args.modality, max_width=args.max_width)
    except (FileNotFoundError, KeyError) as error:
        print(f"make_docs_figures: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"{path}  {path.stat().st_size / 1024:6.0f} KB")
    print(f"total {sum(p.stat().st_size for p in written) / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
