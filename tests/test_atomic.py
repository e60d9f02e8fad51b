"""Atomic writes leave the old file or the whole new one, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from amecam_lib.atomic import atomic_dir, atomic_path, clean_stale_tmp, write_json, write_text


def test_write_text_replaces_whole_file_with_umask_permissions(tmp_path):
    target = tmp_path / "a" / "table.csv"
    write_text(target, "old\n")
    write_text(target, "new\n")
    assert target.read_text() == "new\n"
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["table.csv"]


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "scores.json"
    write_json(target, {"dice": 0.5})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert '"dice": 0.5' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_atomic_path_keeps_suffixes_for_writers_that_dispatch_on_them(tmp_path):
    with atomic_path(tmp_path / "mask.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"x")


def test_atomic_dir_replaces_folder_whole_and_cleans_stale(tmp_path):
    target = tmp_path / "case"
    with atomic_dir(target) as tmp:
        (tmp / "flair.npy").write_bytes(b"1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "flair.npy").write_bytes(b"2")
            raise RuntimeError("killed")
    assert (target / "flair.npy").read_bytes() == b"1"
    stale = tmp_path / ".case.tmp-dead"
    stale.mkdir()
    assert clean_stale_tmp(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]
