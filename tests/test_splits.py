"""Patient-level splits: sizes, determinism, user split files."""

from __future__ import annotations

import pytest

from amecam_lib.releases import BratsDataError
from amecam_lib.splits import make_split, read_split, read_split_file, split_sizes, write_split

CASES = [f"BraTS2021_{i:05d}" for i in range(7)]


def test_demo_fractions_on_seven_cases_give_4_1_2():
    assert split_sizes(7, val_fraction=0.1, test_fraction=0.25) == {"train": 4, "val": 1, "test": 2}
    split = make_split(CASES, 0.1, 0.25, seed=0)
    assert sorted(split) == CASES
    assert [list(split.values()).count(s) for s in ("train", "val", "test")] == [4, 1, 2]


def test_sizes_round_up_without_float_noise():
    assert split_sizes(30, 0.1, 0.1) == {"train": 24, "val": 3, "test": 3}  # 30 * 0.1 = 3.0000000000000004
    assert split_sizes(1251, 0.1, 0.1) == {"train": 999, "val": 126, "test": 126}
    assert split_sizes(3, 0.01, 0.01) == {"train": 1, "val": 1, "test": 1}


@pytest.mark.parametrize("n, val, test", [(2, 0.1, 0.1), (4, 0.4, 0.4), (10, 0.0, 0.1), (10, 0.1, 1.0)])
def test_impossible_splits_are_errors(n, val, test):
    with pytest.raises(BratsDataError):
        split_sizes(n, val, test)


def test_split_is_deterministic_and_order_independent():
    first = make_split(CASES, 0.1, 0.25, seed=3)
    assert make_split(list(reversed(CASES)), 0.1, 0.25, seed=3) == first
    other_seeds = [make_split(CASES, 0.1, 0.25, seed=s) for s in range(4, 10)]
    assert any(split != first for split in other_seeds)


def test_write_then_read_round_trip(tmp_path):
    split = make_split(CASES, 0.1, 0.25, seed=0)
    write_split(tmp_path / "split.csv", split)
    assert (tmp_path / "split.csv").read_text().splitlines()[0] == "case_id,split"
    assert read_split_file(tmp_path / "split.csv", CASES) == split


def write_csv(path, rows):
    path.write_text("case_id,split\n" + "".join(f"{c},{s}\n" for c, s in rows))
    return path


GOOD = [(CASES[0], "test"), (CASES[1], "val")] + [(c, "train") for c in CASES[2:]]


@pytest.mark.parametrize("rows, message", [
    (GOOD[:-1], r"no split for case\(s\) \['BraTS2021_00006'\]"),
    (GOOD + [("BraTS2021_99999", "train")], r"BraTS2021_99999.*not in the dataset"),
    ([(CASES[0], "testing")] + GOOD[1:], r"line 2: split 'testing'"),
    ([(CASES[0], "train")] + GOOD[1:], r"\['test'\] have no case"),
    (GOOD + [GOOD[0]], "listed twice"),
])
def test_user_split_file_errors(tmp_path, rows, message):
    with pytest.raises(BratsDataError, match=message):
        read_split_file(write_csv(tmp_path / "s.csv", rows), CASES)


def test_user_split_file_missing_or_bad_header(tmp_path):
    with pytest.raises(BratsDataError, match="does not exist"):
        read_split_file(tmp_path / "none.csv", CASES)
    with pytest.raises(BratsDataError, match="is a folder, not a CSV file"):
        read_split_file(tmp_path, CASES)
    (tmp_path / "h.csv").write_text("case,fold\nBraTS2021_00000,train\n")
    with pytest.raises(BratsDataError, match="header"):
        read_split_file(tmp_path / "h.csv", CASES)


def test_user_split_file_is_used_as_given(tmp_path):
    assert read_split_file(write_csv(tmp_path / "s.csv", GOOD), CASES) == dict(sorted(GOOD))


def test_read_split_reads_a_run_split_without_a_case_list(tmp_path):
    path = tmp_path / "split.csv"
    write_split(path, {"b": "val", "a": "train", "c": "test"})
    assert read_split(path) == {"a": "train", "b": "val", "c": "test"}
    path.write_text("case_id,split\na,train\na,val\n")
    with pytest.raises(BratsDataError, match="line 3: case 'a' listed twice"):
        read_split(path)


def test_user_split_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    """A spreadsheet's "CSV UTF-8" export starts with a byte-order mark; the header is still
    ``case_id,split`` (it was refused as ``'\\ufeffcase_id'``)."""
    path = tmp_path / "s.csv"
    path.write_bytes(b"\xef\xbb\xbf" + write_csv(tmp_path / "plain.csv", GOOD).read_bytes())
    assert read_split_file(path, CASES) == dict(sorted(GOOD))
    path.write_bytes(b"\xef\xbb\xbfcase,fold\nBraTS2021_00000,train\n")   # a wrong header is still named
    with pytest.raises(BratsDataError, match=r"s\.csv: expected the header 'case_id,split', got \['case', 'fold'\]"):
        read_split_file(path, CASES)
