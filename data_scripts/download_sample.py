"""Download the 7-case BraTS sample from the public GitHub repositories it was copied from.

The manifest (``brats_sample_manifest.csv`` beside this script, a copy of the sample's
``manifest.csv``) lists for every file its ``source_repo``, ``source_commit``, ``source_path``,
``bytes`` and ``sha256``. Each file is fetched from
``https://raw.githubusercontent.com/{repo}/{commit}/{path}`` (``--base-url`` changes that), written
to a temporary file beside its target, checked (size and sha256) and only then renamed into place,
so a failed or tampered download leaves no file behind. Files already present with the right
size and hash are skipped.

Example::

    python data_scripts/download_sample.py --out data/brats_sample
    python data_scripts/download_sample.py --out /tmp/s --cases Brats18_TCIA03_265_1

The data are BraTS challenge data: research use, cite the BraTS papers (see the sample's README).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from amecam_lib.atomic import atomic_path  # noqa: E402

DEFAULT_MANIFEST = Path(__file__).resolve().parent / "brats_sample_manifest.csv"
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched, or its size or sha256 differs from the manifest."""


def read_manifest(path: Path, cases: list[str] | None = None) -> list[dict]:
    """Rows of the sample manifest (optionally only the given case IDs).

    Raises:
        DownloadError: missing file or columns, or a requested case not in the manifest.
    """
    if not path.is_file():
        raise DownloadError(f"manifest {path} not found")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    needed = {"case_id", "file", "bytes", "sha256", "source_repo", "source_commit", "source_path"}
    if not rows or not needed <= set(rows[0]):
        raise DownloadError(f"manifest {path} lacks columns {sorted(needed - set(rows[0] if rows else {}))}")
    if cases:
        unknown = sorted(set(cases) - {row["case_id"] for row in rows})
        if unknown:
            raise DownloadError(f"case(s) {unknown} are not in {path}")
        rows = [row for row in rows if row["case_id"] in cases]
    return rows


def file_matches(path: Path, size: int, sha256: str) -> bool:
    """True when ``path`` exists with exactly ``size`` bytes and the given sha256 (hex)."""
    if not path.is_file() or path.stat().st_size != size:
        return False
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest() == sha256


def source_url(row: dict, base_url: str = DEFAULT_BASE_URL) -> str:
    """URL of one manifest row's file (path components percent-encoded: some contain spaces)."""
    return base_url.format(repo=row["source_repo"], commit=row["source_commit"],
                           path=urllib.parse.quote(row["source_path"]))


def fetch(row: dict, out_dir: Path, base_url: str = DEFAULT_BASE_URL, timeout: float = 60.0) -> bool:
    """Download one manifest row's file into ``out_dir / row["file"]`` unless already valid.

    Returns:
        ``True`` if downloaded, ``False`` if an existing valid file was kept.

    Raises:
        DownloadError: network error, or size / sha256 mismatch; then no file is left at the
            target (an earlier invalid file there stays untouched) and no temporary file remains.
    """
    target = out_dir / row["file"]
    size, sha256 = int(row["bytes"]), row["sha256"]
    if file_matches(target, size, sha256):
        return False
    url = source_url(row, base_url)
    digest, received = hashlib.sha256(), 0
    try:
        with atomic_path(target) as tmp, urllib.request.urlopen(url, timeout=timeout) as response:
            with tmp.open("wb") as handle:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    received += len(chunk)
                    if received > size:
                        raise DownloadError(f"{url}: more than the expected {size} bytes")
                    handle.write(chunk)
            if received != size or digest.hexdigest() != sha256:
                raise DownloadError(
                    f"{url}: got {received} bytes with sha256 {digest.hexdigest()}, expected "
                    f"{size} bytes with sha256 {sha256}; file refused")
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"cannot download {url}: {error}") from error
    return True


def download_sample(out_dir: Path, manifest: Path = DEFAULT_MANIFEST, base_url: str = DEFAULT_BASE_URL,
                    cases: list[str] | None = None) -> tuple[int, int]:
    """Fetch every file of the manifest (or of ``cases``) into ``out_dir``.

    Returns:
        ``(downloaded, skipped)`` file counts.

    Raises:
        DownloadError: as :func:`fetch` (stops at the first failing file).
    """
    downloaded = skipped = 0
    for row in read_manifest(manifest, cases):
        if fetch(row, out_dir, base_url):
            downloaded += 1
            print(f"downloaded {row['file']} ({int(row['bytes']):,} bytes, sha256 ok)")
        else:
            skipped += 1
    return downloaded, skipped


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 2 error)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to put the case folders in")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST,
                        help=f"manifest CSV (default: {DEFAULT_MANIFEST.name} beside this script)")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                        help="URL template with {repo}, {commit}, {path} (default: raw GitHub)")
    parser.add_argument("--cases", nargs="+", default=None, help="only these case IDs")
    args = parser.parse_args(argv)
    try:
        downloaded, skipped = download_sample(args.out, args.manifest, args.base_url, args.cases)
    except DownloadError as error:
        print(f"download_sample: error: {error}", file=sys.stderr)
        return 2
    print(f"{downloaded} file(s) downloaded, {skipped} already present and valid, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
