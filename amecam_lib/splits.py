"""Patient-level train / val / test split: every slice of a case lands in the same split.

Splitting by slice would put neighbouring, nearly identical slices of one patient in both the
training and the test set and inflate every score; the project therefore splits *cases*, from a
seed (:func:`make_split`) or from a user's CSV (:func:`read_split_file`), and writes the split to
``RUN/split.csv`` (:func:`write_split`; read back by :func:`read_split`). Paper Sec. 3.1 uses the official 8:1:1 split;
REFERENCE_NOTES "Data".
"""

from __future__ import annotations

import csv
import io
import math
import random
from pathlib import Path

from amecam_lib.atomic import write_text
from amecam_lib.releases import BratsDataError

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Split names, in the order they are written."""


def split_sizes(n_cases: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Number of cases in each split.

    ``n_test = ceil(n * test_fraction)``, ``n_val = ceil(n * val_fraction)``, the rest trains;
    each split gets at least one case. Example: 7 cases, val 0.1, test 0.25 -> 4 / 1 / 2.

    Raises:
        BratsDataError: fractions outside ``(0, 1)``, or too few cases for three non-empty
            splits (fewer than 3, or fractions leaving no training case).
    """
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < fraction < 1.0:
            raise BratsDataError(f"{name} must be in (0, 1), got {fraction}")
    # The small tolerance keeps float noise from rounding up: 30 * 0.1 = 3.0000000000000004.
    n_test = max(1, math.ceil(n_cases * test_fraction - 1e-9))
    n_val = max(1, math.ceil(n_cases * val_fraction - 1e-9))
    n_train = n_cases - n_val - n_test
    if n_train < 1:
        raise BratsDataError(
            f"{n_cases} cases are too few for a train/val/test split with val_fraction="
            f"{val_fraction} and test_fraction={test_fraction} (each split needs at least one case)")
    return {"train": n_train, "val": n_val, "test": n_test}


def make_split(case_ids: list[str], val_fraction: float, test_fraction: float,
               seed: int) -> dict[str, str]:
    """Random patient-level split, deterministic from ``seed``.

    The case IDs are sorted, shuffled with ``random.Random(seed)``; the first ``n_test`` go to
    test, the next ``n_val`` to val, the rest to train (sizes from :func:`split_sizes`). The result
    depends only on the set of IDs and the seed, not on the order they were found in.

    Returns:
        case_id -> ``"train"`` | ``"val"`` | ``"test"``.

    Raises:
        BratsDataError: duplicate IDs, or as :func:`split_sizes`.
    """
    if len(set(case_ids)) != len(case_ids):
        raise BratsDataError("duplicate case IDs given to make_split")
    sizes = split_sizes(len(case_ids), val_fraction, test_fraction)
    shuffled = sorted(case_ids)
    random.Random(seed).shuffle(shuffled)
    test = shuffled[: sizes["test"]]
    val = shuffled[sizes["test"]: sizes["test"] + sizes["val"]]
    assignment = {case_id: "train" for case_id in shuffled}
    assignment.update({case_id: "test" for case_id in test})
    assignment.update({case_id: "val" for case_id in val})
    return dict(sorted(assignment.items()))


def read_split_file(path: str | Path, case_ids: list[str]) -> dict[str, str]:
    """Read a user's split CSV (header ``case_id,split``) and check it against the dataset.

    Args:
        path: CSV file with one row per case; split names from :data:`SPLITS`.
        case_ids: the cases found in the data folder.

    Returns:
        case_id -> split name, for exactly the given cases.

    Raises:
        BratsDataError: missing file (or a folder given) or columns; a bad split name; a case
            listed twice; a case of the dataset missing from the file; a case in the file that is
            not in the dataset; a split with no case. The message names the file and the
            offending entries.
    """
    path = Path(path)
    assignment = read_split(path)
    missing = sorted(set(case_ids) - set(assignment))
    if missing:
        raise BratsDataError(f"split file {path}: no split for case(s) {missing}")
    unknown = sorted(set(assignment) - set(case_ids))
    if unknown:
        raise BratsDataError(f"split file {path}: case(s) {unknown} are not in the dataset")
    empty = [split for split in SPLITS if split not in assignment.values()]
    if empty:
        raise BratsDataError(f"split file {path}: split(s) {empty} have no case")
    return assignment


def read_split(path: str | Path) -> dict[str, str]:
    """Read a split CSV (header ``case_id,split``, e.g. ``RUN/split.csv``) as it stands.

    Checks the format only, not the cases against a dataset (that is :func:`read_split_file`).
    UTF-8, with or without a byte-order mark.

    Returns:
        case_id -> ``"train"`` | ``"val"`` | ``"test"``, sorted by case ID.

    Raises:
        BratsDataError: the file is missing or a folder; missing columns; a bad split name; a
            case listed twice (the message names the file and line).
    """
    path = Path(path)
    if path.is_dir():
        raise BratsDataError(f"split file {path} is a folder, not a CSV file")
    if not path.is_file():
        raise BratsDataError(f"split file {path} does not exist")
    # utf-8-sig: a byte-order mark (spreadsheets' "CSV UTF-8" export) is not part of the header
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"case_id", "split"} <= set(reader.fieldnames):
            raise BratsDataError(f"split file {path}: expected the header 'case_id,split', "
                                 f"got {reader.fieldnames}")
        assignment: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            case_id, split = (row["case_id"] or "").strip(), (row["split"] or "").strip()
            if split not in SPLITS:
                raise BratsDataError(
                    f"split file {path}, line {line}: split {split!r} of case {case_id!r} is not "
                    f"one of {SPLITS}")
            if case_id in assignment:
                raise BratsDataError(f"split file {path}, line {line}: case {case_id!r} listed twice")
            assignment[case_id] = split
    return dict(sorted(assignment.items()))


def write_split(path: str | Path, assignment: dict[str, str]) -> None:
    """Atomically write ``assignment`` as CSV ``case_id,split``, sorted by case ID."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case_id", "split"])
    writer.writerows(sorted(assignment.items()))
    write_text(path, buffer.getvalue())
