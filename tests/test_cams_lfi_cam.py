"""cams.lfi_cam, models.lfi_cam and baselines.lfi_cam: the LFI-CAM baseline of paper Table 1 (Lee et al.,
ICCV 2021), with hand-known answers for each step of its attention branch, the method on a stand-in
network, and the training phase on the tiny synthetic run (slice labels, checkpoints, resume, the
SupCon encoder as the start, load)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from _hand_nets import FixedExitsNet
from _tiny_run import one_thread, tiny_preset, tiny_run  # noqa: F401  (fixture)
from amecam_lib.baselines.lfi_cam import lfi_cam_loss, load_lfi_cam, train_lfi_cam
from amecam_lib.cams.base import CamBatch, CamNetworks
from amecam_lib.cams.lfi_cam import LfiCam
from amecam_lib.config import PretrainConfig
from amecam_lib.models.lfi_cam import (FeatureImportanceNetwork, LfiCamNet, LfiOutput, attention_map, masked_inputs,
                                       normalise_feature_maps)
from amecam_lib.models.projection import SupConNet
from amecam_lib.phases import phase_dir
from amecam_lib.training import CHECKPOINT_FORMAT


# --- the attention branch, step by step ------------------------------------------------------------------

def test_feature_maps_are_min_max_normalised_each_on_its_own():
    features = torch.tensor([[[[0.0, 2.0], [4.0, 8.0]],          # varying: (x - 0) / 8
                              [[-1.0, 1.0], [1.0, 3.0]],         # varying: (x + 1) / 4
                              [[3.0, 3.0], [3.0, 3.0]],          # constant, non-zero -> 1 (the authors' 0/0 -> 1)
                              [[0.0, 0.0], [0.0, 0.0]]]])        # constant zero -> 0
    expected = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.5], [0.5, 1.0]],
                              [[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    assert torch.equal(normalise_feature_maps(features), expected)


def test_the_fin_sees_the_slice_masked_by_each_normalised_map():
    # a 4 x 4 slice of 2 x 2 blocks: bilinear to 2 x 2 (align_corners=False) samples each block's centre
    images = torch.tensor([[0.2, 0.2, 0.6, 0.6], [0.2, 0.2, 0.6, 0.6],
                           [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])[None, None]
    features = torch.tensor([[[[0.0, 2.0], [4.0, 8.0]], [[5.0, 5.0], [5.0, 5.0]]]])
    masked = masked_inputs(images, features)
    expected = torch.tensor([[[[0.0, 0.25 * 0.6], [0.5 * 1.0, 0.0]], [[0.2, 0.6], [1.0, 0.0]]]])
    assert torch.allclose(masked, expected, atol=1e-6)
    with pytest.raises(ValueError, match="same batch size"):
        masked_inputs(images.expand(2, 1, 4, 4), features)


def test_the_attention_map_is_the_importance_weighted_sum_relu_then_min_max():
    features = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [-1.0, 2.0]]]])
    weights = torch.tensor([[0.25, 0.75]])
    # 0.25 F1 + 0.75 F2 = [[0.25, 0], [-0.75, 1.5]] -> ReLU [[0.25, 0], [0, 1.5]] -> / 1.5
    expected = torch.tensor([[[[1 / 6, 0.0], [0.0, 1.0]]]])
    assert torch.allclose(attention_map(features, weights), expected, atol=1e-6)
    constant = attention_map(torch.ones(1, 2, 2, 2), torch.tensor([[0.5, 0.25]]))
    assert torch.allclose(constant, torch.full((1, 1, 2, 2), 0.75))       # a constant map keeps its value
    with pytest.raises(ValueError, match="weights must be"):
        attention_map(features, torch.ones(1, 3))


def test_the_fin_gives_one_positive_weight_per_map_summing_to_one():
    torch.manual_seed(0)
    fin = FeatureImportanceNetwork(6, hidden=3).eval()
    weights = fin(torch.rand(2, 6, 3, 4))
    assert weights.shape == (2, 6) and (weights > 0).all()
    assert torch.allclose(weights.sum(dim=1), torch.ones(2), atol=1e-6)
    assert len([m for m in fin.modules() if isinstance(m, nn.Conv2d)]) == 4
    with pytest.raises(ValueError, match=r"masked must be \(B, 6, h, w\)"):
        fin(torch.rand(2, 5, 3, 4))


class OneHotImportance(nn.Module):
    """A stand-in FIN: all importance on one feature map; records what it was given."""

    def __init__(self, channels, chosen):
        super().__init__()
        self.channels, self.chosen, self.seen = channels, chosen, None

    def forward(self, masked):
        self.seen = masked
        weights = torch.zeros(masked.shape[0], self.channels)
        weights[:, self.chosen] = 1.0
        return weights


def test_the_network_wires_extractor_fin_attention_and_perception():
    torch.manual_seed(0)
    net = LfiCamNet(fin_hidden=4).eval()
    images = torch.full((2, 1, 64, 77), 0.5)                              # the smoke geometry, H != W
    net.fin = OneHotImportance(256, chosen=7)
    with torch.no_grad():
        out = net(images)
        features = net.features(images)
    assert isinstance(out, LfiOutput) and features.shape == (2, 256, 4, 5)   # stage 3: 1/16
    assert out.logits.shape == (2, 1) and out.attention.shape == (2, 1, 4, 5)
    # a uniform slice: the FIN's input is 0.5 * n(F_k); one-hot importance: A = n(ReLU(F_7))
    assert torch.allclose(net.fin.seen, 0.5 * normalise_feature_maps(features))
    chosen = features[:, 7:8]
    low, high = chosen.amin(dim=(2, 3), keepdim=True), chosen.amax(dim=(2, 3), keepdim=True)
    assert torch.allclose(out.attention, (chosen - low) / (high - low), atol=1e-5)


def test_classification_loss_trains_every_part_end_to_end():
    torch.manual_seed(0)
    net = LfiCamNet(fin_hidden=4).train()
    loss = lfi_cam_loss(net(torch.rand(3, 1, 64, 64)).logits, torch.tensor([0, 1, 1]))
    loss.backward()
    for part in (net.backbone.conv1, net.backbone.layer3, net.fin, net.backbone.layer4, net.classifier):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()), part


def test_loss_is_the_binary_cross_entropy_of_the_tumour_logit():
    # logit 0 -> log 2 whatever the label; logit log 3 with label 1 -> -log(3/4)
    assert lfi_cam_loss(torch.zeros(4, 1), torch.tensor([0, 1, 0, 1])).item() == pytest.approx(math.log(2.0))
    value = lfi_cam_loss(torch.tensor([[math.log(3.0)]]), torch.tensor([1])).item()
    assert value == pytest.approx(-math.log(0.75), abs=1e-6)
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        lfi_cam_loss(torch.zeros(2, 1), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="logits must be"):
        lfi_cam_loss(torch.zeros(2, 2), torch.tensor([0, 1]))


def test_the_supcon_encoder_loads_into_the_resnet():
    from amecam_lib.models.projection import load_pretrained_backbone

    torch.manual_seed(3)
    supcon = SupConNet()
    net = LfiCamNet(fin_hidden=4)
    assert load_pretrained_backbone(net, supcon.state_dict()) == len(supcon.backbone.state_dict())
    assert torch.equal(net.backbone.layer3[0].conv1.weight, supcon.backbone.layer3[0].conv1.weight)


# --- the CAM method ----------------------------------------------------------------------------------------

class FixedAttention(nn.Module):
    """A stand-in LFI-CAM network: the given (h, w) attention map whatever the slice."""

    def __init__(self, attention):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.attention = torch.as_tensor(attention, dtype=torch.float32)

    def forward(self, images):
        batch = images.shape[0]
        return LfiOutput(logits=torch.zeros(batch, 1), attention=self.attention.expand(batch, 1, *self.attention.shape),
                         weights=torch.ones(batch, 1))


def test_the_map_is_the_attention_upsampled_and_normalised():
    # 2 x 2 -> 4 x 4 bilinear (align_corners=False) samples columns at -0.25, 0.25, 0.75, 1.25 (clamped)
    networks = CamNetworks(FixedExitsNet([torch.zeros(1, 1)]),
                           references={"lfi_cam": FixedAttention([[0.2, 0.6], [0.2, 0.6]])})
    images = torch.full((2, 1, 4, 4), 0.5)
    cam = LfiCam()(CamBatch(images, networks))
    # values 0.2, 0.3, 0.5, 0.6 across each row -> min-max: 0, 1/4, 3/4, 1
    assert cam.shape == (2, 4, 4) and torch.allclose(cam, torch.tensor([0.0, 0.25, 0.75, 1.0]).expand(2, 4, 4),
                                                     atol=1e-6)
    images[:, :, :, 3] = 0.0                                               # the last column is air
    restricted = LfiCam()(CamBatch(images, networks, restrict_to_brain=True))
    # over the brain: 0.2, 0.3, 0.5 -> 0, 1/3, 1; air -> 0
    assert torch.allclose(restricted, torch.tensor([0.0, 1 / 3, 1.0, 0.0]).expand(2, 4, 4), atol=1e-6)
    assert LfiCam.name == "lfi_cam" and LfiCam.supervision == "WSSS" and LfiCam.network == "lfi_cam"


def test_missing_network_is_named():
    with pytest.raises(ValueError, match="no 'lfi_cam' network"):
        LfiCam()(CamBatch(torch.rand(1, 1, 2, 2), CamNetworks(FixedExitsNet([torch.zeros(1, 1)]))))


# --- the training phase ------------------------------------------------------------------------------------

def test_training_on_the_tiny_run_starts_from_supcon_resumes_and_loads(tmp_path, one_thread):
    run = tiny_run(tmp_path)
    torch.manual_seed(4)
    supcon = SupConNet()
    pretrain = phase_dir(run, "flair", "pretrain") / "best.pt"
    pretrain.parent.mkdir(parents=True)
    torch.save({"format": CHECKPOINT_FORMAT, "model": supcon.state_dict(), "epoch": 1,
                "config": {"pretrain": dataclasses.asdict(PretrainConfig())}}, pretrain)
    preset = tiny_preset(**{"lfi_cam.epochs": 2, "lfi_cam.batch_size": 4, "lfi_cam.fin_hidden": 4,
                            "lfi_cam.max_train_slices": 6})
    history = train_lfi_cam(run, "flair", preset, device="cpu", progress=False)
    assert len(history) == 2 and np.isfinite(history.column("train_loss")).all()
    assert {p.name for p in (run / "flair" / "lfi_cam").iterdir()} >= {"log.csv", "last.pt", "best.pt"}
    checkpoint = torch.load(run / "flair" / "lfi_cam" / "best.pt", weights_only=True)
    assert checkpoint["config"]["init"]["checkpoint"] == str(pretrain)
    assert checkpoint["config"]["lfi_cam"]["max_train_slices"] == 6
    again = train_lfi_cam(run, "flair", preset, device="cpu", progress=False)
    assert again.resumed_epochs == 2
    net = load_lfi_cam(run, "flair")
    assert net.fin.hidden == 4 and not net.training
    trained_conv = net.backbone.layer3[0].conv1.weight
    assert not torch.equal(trained_conv, supcon.backbone.layer3[0].conv1.weight)   # fine-tuned, end to end
    with torch.no_grad():
        out = net(torch.rand(1, 1, 32, 32))
    assert out.attention.shape == (1, 1, 2, 2) and ((out.attention >= 0) & (out.attention <= 1)).all()


def test_load_before_training_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_lfi_cam"):
        load_lfi_cam(tmp_path, "flair")
