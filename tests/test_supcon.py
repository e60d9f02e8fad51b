"""SupCon / SimCLR loss (amecam_lib.losses.supcon) against hand values and pytorch-metric-learning."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning.losses import SupConLoss

from amecam_lib.losses.supcon import supcon_loss


def _reference(view_features, labels, temperature):
    """pytorch-metric-learning's SupConLoss on the B*V projections (views concatenated)."""
    batch, n_views, dim = view_features.shape
    flat = view_features.transpose(0, 1).reshape(batch * n_views, dim)
    return SupConLoss(temperature=temperature)(flat, labels.repeat(n_views))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_views", [2, 3])
def test_supcon_matches_pytorch_metric_learning(seed, n_views):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(10, n_views, 16, generator=generator)
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1, 1, 1])
    ours = supcon_loss(features, labels=labels, temperature=0.07)
    torch.testing.assert_close(ours, _reference(features, labels, 0.07), rtol=1e-5, atol=1e-5)


def test_simclr_matches_pytorch_metric_learning_with_sample_ids():
    features = torch.randn(8, 2, 32, generator=torch.Generator().manual_seed(3))
    ours = supcon_loss(features, labels=None, temperature=0.07)
    torch.testing.assert_close(ours, _reference(features, torch.arange(8), 0.07), rtol=1e-5, atol=1e-5)


def test_two_view_tensors_equal_stacked_views_and_scale_invariance():
    first, second = torch.randn(6, 8), torch.randn(6, 8)
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    stacked = supcon_loss(torch.stack([first, second], dim=1), labels=labels)
    torch.testing.assert_close(supcon_loss(first, second, labels=labels), stacked)
    torch.testing.assert_close(supcon_loss(5 * first, 5 * second, labels=labels), stacked)


def test_simclr_by_hand():
    # Two slices, two identical views each, orthogonal unit vectors. Anchor: similarity 1/tau to
    # its partner view, 0 to the two other projections -> loss = log(1 + 2 exp(-1/tau)).
    unit_x, unit_y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    features = torch.stack([torch.stack([unit_x, unit_x]), torch.stack([unit_y, unit_y])])
    loss = supcon_loss(features, labels=None, temperature=1.0)
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-1.0)), rel=1e-6)


def test_lonely_anchor_is_masked_out():
    # One view; labels 0, 0, 1: the class-1 anchor has no positive and must not contribute.
    features = torch.randn(3, 1, 8, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 0, 1])
    loss = supcon_loss(features, labels=labels, temperature=0.07)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, _reference(features, labels, 0.07), rtol=1e-5, atol=1e-5)


def test_all_lonely_batch_gives_zero_with_graph():
    features = torch.randn(4, 8, requires_grad=True)
    loss = supcon_loss(features, labels=torch.tensor([0, 1, 2, 3]))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.isfinite(features.grad).all()


def test_gradient_is_finite_and_half_precision_input_is_computed_in_float32():
    features = torch.randn(8, 2, 16).to(torch.bfloat16).requires_grad_(True)
    loss = supcon_loss(features, labels=torch.tensor([0, 1] * 4))
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(features.grad.float()).all()


@pytest.mark.parametrize("args, kwargs, match", [
    ((torch.randn(4, 8), torch.randn(3, 8)), {}, "two views"),
    ((torch.randn(4, 2, 8),), {"labels": torch.zeros(3)}, "labels"),
    ((torch.randn(4, 2, 8),), {"temperature": 0.0}, "temperature"),
    ((torch.full((4, 2, 8), float("nan")),), {}, "NaN"),
    ((torch.randn(4, 2, 2, 8),), {}, r"\(B, V, D\)"),
])
def test_bad_input_raises(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        supcon_loss(*args, **kwargs)
