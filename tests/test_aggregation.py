"""Aggregation phase pieces (paper Eq. 2-3): normalisation, fusion, C2AM features, folders."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from amecam_lib.aggregation import (aggregation_dir, c2am_features, fuse, native_exit_maps, normalise_maps,
                                    normalised_exit_maps)
from amecam_lib.models.multi_exit import MultiExitResNet, upsample_maps


class FixedWeights(nn.Module):
    """Stand-in for A: puts all weight on one map everywhere."""

    def __init__(self, n_maps: int, chosen: int):
        super().__init__()
        self.n_maps, self.chosen = n_maps, chosen

    def forward(self, masked_images):
        weights = torch.zeros_like(masked_images)
        weights[:, self.chosen] = 1.0
        return weights


def test_normalise_maps_by_hand():
    maps = torch.tensor([[[[0.0, 2.0], [4.0, 8.0]], [[-1.0, -1.0], [-1.0, -1.0]]]])
    normalised = normalise_maps(maps)
    assert torch.allclose(normalised[0, 0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.equal(normalised[0, 1], torch.zeros(2, 2))  # constant map -> zeros, not NaN
    with pytest.raises(ValueError, match="NaN"):
        normalise_maps(torch.tensor([[float("nan"), 0.0]]))


def test_fuse_is_the_weighted_sum_of_normalised_maps():
    images = torch.rand(2, 1, 6, 6)
    exit_maps_norm = normalise_maps(torch.rand(2, 4, 6, 6))
    weights, fused_map = fuse(images, exit_maps_norm, FixedWeights(4, chosen=2))
    assert weights.shape == (2, 4, 6, 6) and fused_map.shape == (2, 1, 6, 6)
    assert torch.allclose(fused_map[:, 0], exit_maps_norm[:, 2])


def test_fuse_with_half_half_weights():
    class Half(nn.Module):
        def forward(self, masked_images):
            return torch.full_like(masked_images, 0.5)

    exit_maps_norm = torch.stack([torch.zeros(3, 3), torch.ones(3, 3)])[None]
    _, fused_map = fuse(torch.ones(1, 1, 3, 3), exit_maps_norm, Half())
    assert torch.allclose(fused_map, torch.full((1, 1, 3, 3), 0.5))


def test_fuse_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="exit_maps_norm"):
        fuse(torch.rand(2, 1, 6, 6), torch.rand(2, 4, 5, 5), FixedWeights(4, 0))


def test_pixel_features_are_the_masked_slices():
    images = torch.tensor([[[[1.0, 0.5], [0.25, 0.0]]]])
    fused_map = torch.tensor([[[[1.0, 0.0], [0.5, 1.0]]]])
    fg, bg = c2am_features(images, fused_map, "pixels")
    assert torch.allclose(fg, torch.tensor([[1.0, 0.0, 0.125, 0.0]]))
    assert torch.allclose(bg, torch.tensor([[0.0, 0.5, 0.125, 0.0]]))


def test_encoder_features_pool_under_the_map():
    # one stage, 2 channels on a 2x2 grid; M_f = 1 on the top row (4x4 input -> 2x2 by area)
    stage = torch.tensor([[[[1.0, 3.0], [10.0, 10.0]], [[0.0, 0.0], [5.0, 5.0]]]])
    fused_map = torch.zeros(1, 1, 4, 4)
    fused_map[..., :2, :] = 1.0
    fg, bg = c2am_features(torch.ones(1, 1, 4, 4), fused_map, "encoder", [stage])
    # foreground = mean of the top row (2, 0), background = bottom row (10, 5), L2-normalised
    assert torch.allclose(fg, torch.tensor([[1.0, 0.0]]), atol=1e-5)
    assert torch.allclose(bg, torch.tensor([[10.0, 5.0]]) / torch.tensor(125.0).sqrt(), atol=1e-5)
    with pytest.raises(ValueError, match="stage_features"):
        c2am_features(torch.ones(1, 1, 4, 4), fused_map, "encoder")
    with pytest.raises(ValueError, match="features"):
        c2am_features(torch.ones(1, 1, 4, 4), fused_map, "bogus")


def test_gradient_flows_from_the_loss_to_the_fused_map():
    fused_map = torch.rand(2, 1, 4, 4, requires_grad=True)
    fg, bg = c2am_features(torch.rand(2, 1, 4, 4), fused_map, "pixels")
    (fg.sum() - bg.sum()).backward()
    assert fused_map.grad is not None and fused_map.grad.abs().sum() > 0


def test_native_exit_maps_match_the_network():
    torch.manual_seed(0)
    net = MultiExitResNet().eval()
    images = torch.rand(3, 1, 32, 32)
    native = native_exit_maps(net, images, exits=(2, 3), batch_size=2)
    with torch.no_grad():
        expected = net(images).maps
    assert [tuple(m.shape) for m in native] == [(3, 1, 4, 4), (3, 1, 2, 2)]
    assert torch.allclose(native[0], expected[1], atol=1e-5) and torch.allclose(native[1], expected[2], atol=1e-5)
    assert torch.allclose(normalised_exit_maps(native, 32), normalise_maps(upsample_maps(expected[1:3], 32)), atol=1e-5)


def test_aggregation_dir_names(tmp_path):
    assert aggregation_dir(tmp_path, "flair") == tmp_path / "flair" / "aggregation"
    assert aggregation_dir(tmp_path, "t1ce", (2, 3)) == tmp_path / "t1ce" / "aggregation_exit2_3"
    for bad in [(), (3, 2), (0, 1), (2, 2)]:
        with pytest.raises(ValueError, match="exits"):
            aggregation_dir(tmp_path, "flair", bad)


def test_load_attention_rebuilds_the_trained_hidden_width(tmp_path):
    """A checkpoint trained with AggregationConfig.hidden=8 loads back with 8 hidden channels."""
    from amecam_lib.aggregation import load_attention
    from amecam_lib.models.attention import AttentionNet
    from amecam_lib.training import CHECKPOINT_FORMAT

    trained = AttentionNet(n_maps=2, hidden=8)
    path = aggregation_dir(tmp_path, "flair", (2, 3)) / "best.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "model": trained.state_dict(), "epoch": 1,
                "config": {"exits": [2, 3], "aggregation": {"hidden": 8, "final_bn_relu": False}}}, path)
    loaded = load_attention(tmp_path, "flair", (2, 3))
    assert loaded.hidden == 8 and loaded.n_maps == 2
    for name, tensor in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
