"""Synthetic scale (issue 10): 200 small BraTS-like cases, made by the test in tmp_path, sliced by
``data_scripts/slice_brats.py --workers 2``: the manifest is complete and peak memory is flat in
the number of cases.

Each case is 64 x 64 x 16 voxels, four modalities and a segmentation with a tumour in 6 of the 16
slices. Slicing one case holds about 1 MB of volumes (4 modalities read as float, plus codes and
masks), so a slicer that kept every case's arrays (or its images in the report) would grow by
~150 MB between 50 and 200 cases; the assertion allows 25 MiB of growth (allocator and import
noise, the manifest's rows, which do grow with the number of slices: 3,200 rows here), per
process: the main process and the worker processes are measured separately
(``ru_maxrss`` of the CLI process itself and of its children, read inside a fresh interpreter
that runs the CLI, so no other process of the test counts). Measured when this test was written:
main 58.8 / 58.8 MiB, workers 40.9 / 41.2 MiB at 50 / 200 cases; with a worker made to keep 1 MB per
case (a sitecustomize patch, by hand) the workers went 67.9 -> 151.0 MiB, which this test fails.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _synthetic import ramp, write_case

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "data_scripts" / "slice_brats.py"
SHAPE = (64, 64, 16)
TUMOUR_SLICES = range(5, 11)          # 6 slices with a 20 x 20 px tumour: 9.8 % of the slice
N_CASES = 200
SMALL = 50
GROWTH_TOLERANCE_MIB = 25.0

# Runs the CLI in this fresh interpreter, then prints the peak RSS of this process (the CLI's main
# process) and of its waited-for children (the slicing workers), in MiB (Linux: ru_maxrss is KiB).
_MEASURE = """
import json, resource, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as stop:
    if stop.code not in (0, None):
        raise
print(json.dumps({"main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "workers_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _case_id(index: int) -> str:
    return f"BraTS2021_{index:05d}"


def _write_cases(root: Path, n_cases: int) -> None:
    seg = np.zeros(SHAPE, np.uint8)
    seg[20:40, 20:40, TUMOUR_SLICES.start:TUMOUR_SLICES.stop] = 2
    for index in range(n_cases):
        images = {m: ramp(SHAPE, offset=1 + 10 * k + index % 7) for k, m in enumerate(("t1", "t1ce", "t2", "flair"))}
        write_case(root, _case_id(index + 1), shape=SHAPE, images=images, seg=seg)


def _slice(data_dir: Path, out_dir: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(CLI), "--data-dir", str(data_dir), "--out", str(out_dir),
         "--preset", "paper", "--image-size", str(SHAPE[0]), "--modalities", "t1", "t1ce", "t2", "flair",
         "--workers", "2", "--no-progress"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def scale_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("scale")
    data = base / "data200"
    _write_cases(data, N_CASES)
    small = base / "data50"
    small.mkdir()
    for index in range(SMALL):                       # the first 50 cases, not copied
        (small / _case_id(index + 1)).symlink_to(data / _case_id(index + 1), target_is_directory=True)
    return {"small": _slice(small, base / "run50"), "large": _slice(data, base / "run200"),
            "run": base / "run200"}


def test_manifest_is_complete_at_200_cases(scale_runs):
    run = scale_runs["run"]
    with open(run / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = {_case_id(i + 1) for i in range(N_CASES)}
    assert {row["case_id"] for row in rows} == expected
    assert len(rows) == N_CASES * SHAPE[2]                       # every slice of every case, none dropped
    by_case: dict[str, list[int]] = {}
    for row in rows:
        by_case.setdefault(row["case_id"], []).append(int(row["z"]))
    assert all(sorted(z) == list(range(SHAPE[2])) for z in by_case.values())
    assert sum(int(row["label"]) for row in rows) == N_CASES * len(TUMOUR_SLICES)
    with open(run / "split.csv", newline="") as handle:
        split = {row["case_id"]: row["split"] for row in csv.DictReader(handle)}
    assert set(split) == expected and set(split.values()) == {"train", "val", "test"}
    for case_id in expected:                                     # every case's store is there, whole
        folder = run / "slices" / case_id
        for name in ("t1", "t1ce", "t2", "flair", "wt"):
            array = np.load(folder / f"{name}.npy", mmap_mode="r")
            assert array.shape == (SHAPE[2], SHAPE[0], SHAPE[1]), (case_id, name)
        assert (folder / "case.json").is_file()


def test_peak_memory_is_flat_in_the_number_of_cases(scale_runs):
    small, large = scale_runs["small"], scale_runs["large"]
    for key in ("main_mib", "workers_mib"):
        assert small[key] > 0 and large[key] > 0
        assert large[key] - small[key] <= GROWTH_TOLERANCE_MIB, \
            f"{key}: {small[key]:.1f} MiB at {SMALL} cases, {large[key]:.1f} MiB at {N_CASES}"
