"""Attention network A of Eq. 2: shapes, per-pixel softmax, the last-layer option, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from amecam_lib.models.attention import AttentionNet


def test_weights_are_a_softmax_over_maps_at_every_pixel():
    torch.manual_seed(0)
    attention = AttentionNet(n_maps=4)
    weights = attention(torch.rand(3, 4, 10, 12))
    assert weights.shape == (3, 4, 10, 12)
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(dim=1), torch.ones(3, 10, 12), atol=1e-6)


def test_architecture_four_3x3_convs_with_bn_relu_after_the_first_three():
    attention = AttentionNet(n_maps=2, hidden=32)
    convs = [m for m in attention.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (2, 32, (3, 3)), (32, 32, (3, 3)), (32, 32, (3, 3)), (32, 2, (3, 3))]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in attention.modules()) == 3
    assert isinstance(attention.layers[-1], nn.Conv2d)  # plain last conv by default
    authors = AttentionNet(n_maps=2, final_bn_relu=True)
    assert isinstance(authors.layers[-1], nn.ReLU) and isinstance(authors.layers[-2], nn.BatchNorm2d)


def test_known_weights_from_the_last_conv_bias():
    # last conv with zero kernel and bias (0, log 3): every pixel gets softmax = (1/4, 3/4)
    attention = AttentionNet(n_maps=2).eval()
    last = attention.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, torch.log(torch.tensor(3.0))]))
    weights = attention(torch.rand(1, 2, 5, 5))
    assert torch.allclose(weights[0, 0], torch.full((5, 5), 0.25), atol=1e-6)
    assert torch.allclose(weights[0, 1], torch.full((5, 5), 0.75), atol=1e-6)


def test_gradients_reach_every_layer():
    attention = AttentionNet(n_maps=4)
    weights = attention(torch.rand(2, 4, 8, 8))
    (weights[:, 0] * torch.rand(2, 8, 8)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in attention.parameters())


def test_bad_input_and_settings():
    with pytest.raises(ValueError, match="masked_images"):
        AttentionNet(n_maps=4)(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="n_maps"):
        AttentionNet(n_maps=0)
