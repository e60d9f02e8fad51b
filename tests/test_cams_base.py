"""cams.base: the batch context validates slices and runs each shared pass once; the networks bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _hand_nets import FixedExitsNet, HalfHalf
from amecam_lib.cams.base import CamBatch, CamMethod, CamNetworks, SharedPass


class CountingPass(SharedPass):
    name = "counting"

    def __init__(self):
        self.runs = 0

    def run(self, batch):
        self.runs += 1
        return batch.images.sum()


class UsesThePass(CamMethod):
    def __init__(self, name, shared_pass):
        self.name, self.shared_pass = name, shared_pass

    def __call__(self, batch):
        return batch.shared(self.shared_pass) * torch.ones_like(batch.images[:, 0])


@pytest.fixture()
def networks():
    return CamNetworks(FixedExitsNet([torch.full((2, 2), float(i)) for i in (1, 2, 3, 4)]),
                       {(2, 3): HalfHalf(), (1, 2, 3, 4): None})


def test_a_shared_pass_runs_once_per_batch(networks):
    shared_pass = CountingPass()
    first, second = UsesThePass("a", shared_pass), UsesThePass("b", shared_pass)
    batch = CamBatch(np.full((2, 1, 3, 3), 0.5, dtype=np.float32), networks, [first, second])
    assert not batch.has_run(shared_pass)
    assert torch.equal(first(batch), torch.full((2, 3, 3), 9.0))   # 18 pixels of 0.5
    assert torch.equal(second(batch), torch.full((2, 3, 3), 9.0))
    assert shared_pass.runs == 1 and batch.has_run(shared_pass)
    first(CamBatch(torch.zeros(1, 1, 3, 3), networks))               # a new batch runs it again
    assert shared_pass.runs == 2


def test_batch_images_become_float32_on_the_networks_device(networks):
    batch = CamBatch(np.ones((1, 1, 2, 2), dtype=np.float64), networks)
    assert batch.images.dtype == torch.float32 and batch.images.device == networks.device
    assert batch.methods == ()


def test_batch_rejects_bad_images(networks):
    with pytest.raises(ValueError, match="images must be"):
        CamBatch(torch.zeros(2, 3, 4, 4), networks)
    with pytest.raises(ValueError, match="NaN"):
        CamBatch(torch.full((1, 1, 2, 2), float("nan")), networks)


def test_networks_hold_the_attention_networks_by_exits(networks):
    assert isinstance(networks.attention((2, 3)), HalfHalf)
    assert networks.attention([2, 3]) is networks.attention((2, 3))
    with pytest.raises(ValueError, match="attention network over exits \\(1, 2, 3, 4\\)"):
        networks.attention((1, 2, 3, 4))                             # given as None: skipped
    assert not networks.model.training and not networks.tumour_logit.training
    assert torch.equal(networks.tumour_logit(torch.zeros(3, 1, 2, 2)), torch.full((3, 1), 4.0))  # exit 4
