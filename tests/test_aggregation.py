"""Aggregation phase pieces (paper Eq. 3): C2AM features, frozen exit maps, folders.

n(.) and Eq. 2 (normalise_maps, fuse) are tested in test_equations.py."""

from __future__ import annotations

import pytest
import torch

from amecam_lib.aggregation import aggregation_dir, c2am_features, native_exit_maps, normalised_exit_maps
from amecam_lib.equations import normalise_maps
from amecam_lib.models.multi_exit import MultiExitResNet, upsample_maps


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
