"""Content fingerprints: what a rerun compares before it trusts earlier work.

A rerun may reuse earlier work only when its inputs are the same *content*. File sizes, modification
times and file names are not content: a NIfTI file replaced by another of the same size keeps its
size, an archive unpacked with preserved times (``tar``, ``rsync -t``, ``cp -p``) keeps the times,
and a retrained checkpoint keeps its path. Every reuse decision of the project compares these
fingerprints instead:

- slicing reuses a case folder only when the sha256 of each source file (the sliced modalities and
  the segmentation) equals the one in its ``case.json`` (``sources``): :func:`file_sha256`;
- a training resumes from ``last.pt`` only when its config is the same, and the config holds
  :func:`amecam_lib.slices.data_fingerprint` (the split, every case's source hashes and slicing
  settings), the pretrained weights a multi-exit network starts from and the classifier an
  attention network is trained on (:func:`tensors_sha256` of their weights);
- the 3-D scores read the expert segmentation of a test patient from the data folder only when its
  sha256 is the one the case was sliced from (the evaluation-only reader of :mod:`amecam_lib.volumes`).

This module imports no third-party package at import time (the slicing workers stay free of torch).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

CHUNK_BYTES = 1 << 20
"""Bytes read at a time when hashing a file."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (64 lowercase hex digits), read in 1 MiB chunks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(state: Mapping[str, Any]) -> str:
    """SHA-256 of a model's weights (a ``state_dict``): every entry's name, dtype, shape and bytes, in
    sorted name order. Two state dicts have the same fingerprint exactly when they hold the same
    tensors bit for bit (whatever the device or memory layout); non-tensor entries count by ``repr``.
    """
    import torch

    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        digest.update(name.encode("utf-8") + b"\0")
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to("cpu").contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode("utf-8"))
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()
