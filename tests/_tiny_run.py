"""A tiny synthetic run folder for the phase-2 tests: four 32 x 32 x 6 cases, a classifier checkpoint.

``tiny_run(root)`` writes four cases (a grey disc of brain in air, a bright 6 x 6 tumour on z = 2..4),
slices them at 32 px with a fixed split (2 train / 1 val / 1 test cases) and saves an untrained
``MultiExitResNet`` as ``RUN/flair/multi_exit/best.pt``, after a few forward passes in train mode
so that its BatchNorm running statistics are not the defaults. Returns the run folder.
``tiny_preset(...)`` gives quick settings for it; ``one_thread`` is a fixture for tiny tensors.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from _synthetic import write_case
from amecam_lib.config import DataConfig, MultiExitConfig, get_preset
from amecam_lib.models.multi_exit import MultiExitResNet
from amecam_lib.phases import phase_dir
from amecam_lib.slicing import slice_dataset
from amecam_lib.training import CHECKPOINT_FORMAT

SIZE, DEPTH = 32, 6
CASES = {"BraTS2021_00001": "train", "BraTS2021_00002": "train", "BraTS2021_00003": "val",
         "BraTS2021_00004": "test"}


def _case_volumes(index: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[:SIZE, :SIZE]
    disc = (rows - SIZE / 2) ** 2 + (cols - SIZE / 2) ** 2 < 12 ** 2
    volume = np.zeros((SIZE, SIZE, DEPTH), np.int16)
    volume[disc] = 100 + 10 * index
    seg = np.zeros((SIZE, SIZE, DEPTH), np.uint8)
    top = 10 + 2 * index
    for z in (2, 3, 4):
        volume[top:top + 6, 12:18, z] = 400
        seg[top:top + 6, 12:18, z] = 2
    return volume, seg


def tiny_run(root: Path) -> Path:
    data, run = Path(root) / "data", Path(root) / "run"
    for index, case_id in enumerate(CASES):
        volume, seg = _case_volumes(index)
        write_case(data, case_id, shape=volume.shape, images={m: volume for m in ("t1", "t1ce", "t2", "flair")},
                   seg=seg)
    split_file = Path(root) / "split.csv"
    split_file.write_text("case_id,split\n" + "".join(f"{c},{s}\n" for c, s in CASES.items()))
    slice_dataset(data, run, DataConfig(modalities=("flair",), image_size=SIZE), split_file=split_file,
                  progress=False)
    torch.manual_seed(0)
    net = MultiExitResNet().train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 1, SIZE, SIZE))
    path = phase_dir(run, "flair", "multi_exit") / "best.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "model": net.state_dict(), "epoch": 1,
                "config": {"multi_exit": dataclasses.asdict(MultiExitConfig())}}, path)
    return run


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is many times faster than two on a busy 2-core machine
    (measured: 2 s instead of 30 s for the toy training). Import it into a test module to use it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_preset(**overrides):
    """The smoke preset at 32 px with a small, quick attention network (overrides on top)."""
    settings = {"aggregation.epochs": 1, "aggregation.batch_size": 4, "aggregation.hidden": 4,
                "evaluation.batch_size": 4, **overrides}
    return get_preset("smoke").with_overrides(image_size=SIZE, **settings)
