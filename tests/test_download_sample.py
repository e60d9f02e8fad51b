"""data_scripts/download_sample.py against a local HTTP server serving a copy of one case."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "data_scripts" / "download_sample.py"
CASE = "Brats18_TCIA03_265_1"


def load_script():
    spec = importlib.util.spec_from_file_location("download_sample", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


download = load_script()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(sample_dir, tmp_path):
    """(root folder served as {repo}/{commit}/{path}, base URL) holding a copy of CASE."""
    root = tmp_path / "server"
    for row in download.read_manifest(download.DEFAULT_MANIFEST, [CASE]):
        target = root / row["source_repo"] / row["source_commit"] / row["source_path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample_dir / row["file"], target)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/{{repo}}/{{commit}}/{{path}}"
    server.shutdown()
    server.server_close()


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_copy_matches_the_sample(sample_dir):
    assert (download.DEFAULT_MANIFEST.read_text()
            == (sample_dir / "manifest.csv").read_text())


def test_download_verifies_and_skips_valid_files(served, sample_dir, tmp_path):
    _, base_url = served
    out = tmp_path / "out"
    assert download.main(["--out", str(out), "--base-url", base_url, "--cases", CASE]) == 0
    files = sorted(out.rglob("*.nii.gz"))
    assert len(files) == 5
    for path in files:
        assert sha256(path) == sha256(sample_dir / CASE / path.name)
    assert download.download_sample(out, base_url=base_url, cases=[CASE]) == (0, 5)
    # an invalid local file is replaced
    (out / CASE / f"{CASE}_t1.nii.gz").write_bytes(b"broken")
    assert download.download_sample(out, base_url=base_url, cases=[CASE]) == (1, 4)


def test_mismatch_is_refused_and_leaves_no_file(served, tmp_path, capsys):
    root, base_url = served
    (seg,) = root.rglob(f"{CASE}_seg.nii.gz")
    data = bytearray(seg.read_bytes())
    data[100] ^= 0xFF  # same size, other content
    seg.write_bytes(bytes(data))
    (row,) = [r for r in download.read_manifest(download.DEFAULT_MANIFEST, [CASE])
              if r["modality"] == "seg"]
    out = tmp_path / "out"
    with pytest.raises(download.DownloadError, match="sha256"):
        download.fetch(row, out, base_url)
    assert [p for p in out.rglob("*") if p.is_file()] == []
    assert download.main(["--out", str(out), "--base-url", base_url, "--cases", CASE]) == 2
    assert "refused" in capsys.readouterr().err
    assert not (out / CASE / f"{CASE}_seg.nii.gz").exists()
    assert [p.name for p in out.rglob(".*")] == []


def test_missing_file_and_unknown_case_are_errors(served, tmp_path):
    root, base_url = served
    (flair,) = root.rglob(f"{CASE}_flair.nii.gz")
    flair.unlink()
    with pytest.raises(download.DownloadError, match="cannot download"):
        download.download_sample(tmp_path / "out", base_url=base_url, cases=[CASE])
    with pytest.raises(download.DownloadError, match="not in"):
        download.read_manifest(download.DEFAULT_MANIFEST, ["BraTS2021_99999"])
