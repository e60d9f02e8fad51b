"""cams.avg_me_c2am, models.c2am_head and baselines.c2am_refine: paper Table 2's "Avg. ME + C2AM"
(C2AM, Xie et al. CVPR 2022), with hand-known answers, and the head's training on the tiny run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from _tiny_run import one_thread, tiny_preset, tiny_run  # noqa: F401  (fixture)
from amecam_lib.baselines.c2am_refine import load_c2am_head, train_c2am_head
from amecam_lib.cams.avg_me_c2am import AverageExitsC2am
from amecam_lib.cams.base import CamBatch, CamNetworks
from amecam_lib.models.c2am_head import ClassAgnosticHead, border_mean, head_features, pooled_features
from amecam_lib.models.multi_exit import ExitOutput


class StagesAndExits(nn.Module):
    """Exit maps given by hand and four stage outputs (stage 3: 1 channel 2 x 2, stage 4: 1 channel 1 x 1)."""

    def __init__(self, exit_maps):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.exit_maps = [torch.as_tensor(m, dtype=torch.float32) for m in exit_maps]

    def forward(self, images):
        maps = [m.expand(images.shape[0], 1, *m.shape) for m in self.exit_maps]
        return ExitOutput(logits=torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1), maps=maps)

    def feature_maps(self, images):
        batch = images.shape[0]
        return [torch.zeros(batch, 1, 2, 2), torch.zeros(batch, 1, 2, 2), torch.ones(batch, 1, 2, 2),
                torch.full((batch, 1, 1, 1), 2.0)]


class ConstantHead(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, features):
        assert features.shape[1:] == (2, 2, 2)       # stage 3 + stage 4 upsampled to stage 3's grid
        return torch.full((features.shape[0], 1, *features.shape[-2:]), self.value)


def test_refined_map_is_the_mean_of_avg_me_and_the_class_agnostic_map():
    # avg_me of these exits: n(mean) = [[0, 1], [1, 0]] (as tests/test_cams_avg_me.py); P = 0.25 everywhere
    net = StagesAndExits([torch.tensor([[0.0, 4.0], [0.0, 0.0]]), torch.tensor([[-2.0, -2.0], [3.0, -2.0]]),
                          torch.full((2, 2), 1.5), torch.zeros(2, 2)])
    networks = CamNetworks(net, references={"c2am_head": ConstantHead(0.25)})
    cam = AverageExitsC2am()(CamBatch(torch.rand(3, 1, 2, 2) + 0.1, networks))
    assert torch.allclose(cam, torch.tensor([[0.125, 0.625], [0.625, 0.125]]).expand(3, 2, 2))
    # >= 0.5 exactly where avg_me >= 1 - P (C2AM's arg max over [background cue, CAM])
    assert ((cam >= 0.5) == (torch.tensor([[0.0, 1.0], [1.0, 0.0]]) >= 0.75)).all()
    images = torch.full((1, 1, 2, 2), 0.5)
    images[0, 0, 0, 1] = 0.0                                          # one air pixel
    restricted = AverageExitsC2am()(CamBatch(images, networks, restrict_to_brain=True))
    assert restricted[0, 0, 1] == 0.0
    assert AverageExitsC2am.name == "avg_me_c2am" and AverageExitsC2am.supervision == "WSSS"


def test_head_features_pooling_border_and_polarity():
    stages = [None, None, torch.ones(1, 2, 2, 3), torch.full((1, 1, 1, 1), 5.0)]
    features = head_features(stages)
    assert features.shape == (1, 3, 2, 3) and torch.all(features[:, 2] == 5.0)
    activation = torch.tensor([[[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]])
    fg, bg = pooled_features(features, activation)
    # fg: sum over the 2 active cells / 6 cells; bg: the 4 others / 6
    assert torch.allclose(fg, torch.tensor([[2 / 6, 2 / 6, 10 / 6]]))
    assert torch.allclose(bg, torch.tensor([[4 / 6, 4 / 6, 20 / 6]]))
    ring = torch.zeros(1, 1, 4, 4)
    ring[..., 0, :] = 1.0                                               # 4 of the 12 border cells
    assert border_mean(ring) == pytest.approx(1 / 3)
    head = ClassAgnosticHead(3).eval()
    raw = head.raw_map(features)
    head.flip.fill_(True)
    assert torch.allclose(head(features), 1.0 - raw) and ((raw >= 0) & (raw <= 1)).all()


def test_head_training_on_the_tiny_run(tmp_path, one_thread):
    run = tiny_run(tmp_path)
    preset = tiny_preset(**{"c2am_refine.head_epochs": 2, "c2am_refine.head_batch_size": 4})
    history = train_c2am_head(run, "flair", preset, device="cpu", progress=False)
    assert len(history) == 2 and np.isfinite(history.column("train_loss")).all()
    checkpoint = torch.load(run / "flair" / "c2am_head" / "best.pt", weights_only=True)
    polarity = checkpoint["config"]["polarity"]
    assert polarity["flipped"] == (polarity["border_mean"] > 0.5)
    head = load_c2am_head(run, "flair")
    assert bool(head.flip) == polarity["flipped"] and head.in_channels == 256 + 512
    again = train_c2am_head(run, "flair", preset, device="cpu", progress=False)
    assert again.resumed_epochs == 2
