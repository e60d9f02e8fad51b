"""data_scripts/bench_gpu.py runs on the CPU at tiny sizes and prints its two tables (issue 10).

Nothing is timed against a threshold: the test checks that every expected row is there, that the
measured figures are positive and finite, that AMP and GPU memory say "n/a" on the CPU, and that
the N-GPU projection is the 1-GPU one divided by N (the stated linear-scaling assumption).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "data_scripts" / "bench_gpu.py"
sys.path.insert(0, str(ROOT / "data_scripts"))

import bench_gpu  # noqa: E402


def _table_rows(text: str, header_start: str) -> list[list[str]]:
    """Cells of the markdown table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _hours(cell: str) -> float:
    match = re.match(r"([0-9.]+) h", cell)
    assert match, cell
    return float(match.group(1))


@pytest.fixture(scope="module")
def cpu_output() -> str:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--batch-size", "4", "--image-size", "32",
         "--steps", "1", "--warmup", "1", "--gpus", "4"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_step_table_has_every_phase_and_amp_setting(cpu_output):
    rows = _table_rows(cpu_output, "| phase | batch | AMP |")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("supcon", "4", "off"), ("supcon", "4", "on"), ("multi_exit", "4", "off"), ("multi_exit", "4", "on")]
    for phase, _batch, amp, rate, per_step, memory in rows:
        if amp == "off":
            assert math.isfinite(float(rate)) and float(rate) > 0
            assert math.isfinite(float(per_step)) and float(per_step) > 0
            assert float(rate) == pytest.approx(4 / float(per_step), rel=0.01)
            assert memory == "n/a"
        else:
            assert rate == per_step == memory == "n/a on CPU"


def test_projection_uses_the_preset_and_scales_linearly(cpu_output):
    assert "1,251 cases, 193,905 slices" in cpu_output
    assert "training split 999 cases = 154,845 slices" in cpu_output   # paper preset: 0.1 / 0.1 split
    rows = _table_rows(cpu_output, "| phase | epochs |")
    assert [r[0] for r in rows] == ["supcon", "multi_exit", "total"]
    assert rows[0][1] == "100" and rows[1][1] == "10"                  # the paper preset's epochs
    for row in rows:
        one, four = _hours(row[4]), _hours(row[5])
        assert math.isfinite(one) and one > 0
        assert four == pytest.approx(one / 4, rel=0.01, abs=0.1)
    assert _hours(rows[2][4]) == pytest.approx(_hours(rows[0][4]) + _hours(rows[1][4]), rel=0.01, abs=0.1)
    assert "scale linearly" in cpu_output and "not GPU figures" in cpu_output


def test_projection_picks_the_largest_batch_within_the_preset():
    rows = [bench_gpu.Row("supcon", b, "off", images_per_s=float(b), seconds_per_step=1.0) for b in (64, 512, 1024)]
    assert bench_gpu.projection_rate(rows, "supcon", 512, "off").batch == 512
    assert bench_gpu.projection_rate(rows, "supcon", 32, "off").batch == 64      # none within: the smallest
    assert bench_gpu.projection_rate(rows, "supcon", 512, "bf16") is None
    assert bench_gpu.training_slices(bench_gpu.get_preset("paper")) == (999, 999 * 155)
    assert bench_gpu.BRATS2021_SLICES == 193_905
