"""SupCon / SimCLR loss (amecam_lib.losses.supcon) against hand values and pytorch-metric-learning,
with L2-normalised projections (the default) and without (``normalise=False``, the authors' code)."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning.distances import DotProductSimilarity
from pytorch_metric_learning.losses import SupConLoss
from pytorch_metric_learning.reducers import MeanReducer

from amecam_lib.losses.supcon import supcon_loss


def _reference(view_features, labels, temperature, normalise=True):
    """pytorch-metric-learning's SupConLoss on the B*V projections (views concatenated); cosine
    similarity (its default) or, for ``normalise=False``, the plain dot product. Its default reducer
    averages the non-zero anchor losses only; raw dot products can make an anchor's loss exactly 0 in
    float32, so the dot-product variant averages over every anchor (all have a positive here), as ours."""
    batch, n_views, dim = view_features.shape
    flat = view_features.transpose(0, 1).reshape(batch * n_views, dim)
    unnormalised = {"distance": DotProductSimilarity(normalize_embeddings=False), "reducer": MeanReducer()}
    return SupConLoss(temperature=temperature, **({} if normalise else unnormalised))(flat, labels.repeat(n_views))


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


@pytest.mark.parametrize("labels", [None, torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])], ids=["simclr", "supcon"])
def test_unnormalised_matches_pytorch_metric_learning_dot_product(labels):
    features = 0.5 * torch.randn(8, 2, 16, generator=torch.Generator().manual_seed(5))
    ours = supcon_loss(features, labels=labels, temperature=0.07, normalise=False)
    reference_labels = torch.arange(8) if labels is None else labels
    torch.testing.assert_close(ours, _reference(features, reference_labels, 0.07, normalise=False),
                               rtol=1e-5, atol=1e-5)


def test_unnormalised_simclr_by_hand():
    # Slice a: views (1, 0) and (2, 0); slice b: views (0, 1) twice; tau = 1. Raw dot products:
    # anchor a1 = (1, 0): 2 with its partner a2, 0 with b1 and b2 -> -log(e^2 / (e^2 + 2)) = log(1 + 2 e^-2);
    # anchor a2 = (2, 0): 2 with a1, 0 with the others -> the same; anchors b1, b2: 1 with each other,
    # 0 with a1 and a2 -> log(1 + 2 e^-1). Mean of the four anchors:
    features = torch.tensor([[[1.0, 0.0], [2.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    expected = (math.log(1 + 2 * math.exp(-2.0)) + math.log(1 + 2 * math.exp(-1.0))) / 2
    loss = supcon_loss(features, labels=None, temperature=1.0, normalise=False)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # L2-normalised, (2, 0) becomes (1, 0): every anchor gives log(1 + 2 e^-1)
    assert supcon_loss(features, temperature=1.0).item() == pytest.approx(math.log(1 + 2 * math.exp(-1.0)), rel=1e-6)
    # at tau = 0.5 the raw dot products are divided by 0.5: log(1 + 2 e^-4) and log(1 + 2 e^-2)
    at_half = (math.log(1 + 2 * math.exp(-4.0)) + math.log(1 + 2 * math.exp(-2.0))) / 2
    assert supcon_loss(features, temperature=0.5, normalise=False).item() == pytest.approx(at_half, rel=1e-5)


def test_unnormalised_loss_depends_on_the_length_of_the_projections():
    first, second = torch.randn(6, 8), torch.randn(6, 8)
    plain = supcon_loss(first, second, normalise=False)
    assert not torch.isclose(supcon_loss(3 * first, 3 * second, normalise=False), plain)
    torch.testing.assert_close(supcon_loss(3 * first, 3 * second), supcon_loss(first, second))


def test_loss_is_float32_under_autocast():
    # large raw dot products (|z| about 20, / 0.07) would lose their low bits in bfloat16
    features = 5 * torch.randn(8, 2, 16, generator=torch.Generator().manual_seed(6))
    reference = supcon_loss(features, normalise=False)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_autocast = supcon_loss(features, normalise=False)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, reference)


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
