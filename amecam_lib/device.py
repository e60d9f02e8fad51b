"""Where to compute and how to make a run repeatable."""

from __future__ import annotations

import random

import numpy as np
import torch


def pick_device(requested: str | torch.device | None = "auto") -> torch.device:
    """The torch device to use.

    Args:
        requested: ``"auto"`` or None (CUDA if available, else CPU), or an explicit device such as
            ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.

    Raises:
        RuntimeError: CUDA (or MPS) was asked for but is not available.
    """
    if requested is None or requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {requested!r} requested but MPS is not available; use 'auto' or 'cpu'")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) random generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
