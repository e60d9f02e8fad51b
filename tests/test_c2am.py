"""C2AM loss (paper Eq. 3) on tiny vectors whose losses are known by hand."""

from __future__ import annotations

import math

import pytest
import torch

from amecam_lib.losses.c2am import (c2am_loss, cosine_similarity_matrix, rank_weights, sim_max_loss,
                                    sim_min_loss)

LOW, HIGH = 0.0005, 0.9995


def test_similarity_is_clamped():
    first = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    second = torch.tensor([[0.0, 3.0], [1.0, 0.0]])
    similarity = cosine_similarity_matrix(first, second)
    assert torch.allclose(similarity, torch.tensor([[LOW, HIGH], [LOW, HIGH]]))


def test_rank_weights_follow_the_row_order():
    similarity = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8]])
    weights = rank_weights(similarity, rank_decay=0.25)
    # row 0: ranks 1, 3, 2; row 1: ranks 3, 2, 1
    expected = torch.exp(-0.25 * torch.tensor([[0.0, 2.0, 1.0], [2.0, 1.0, 0.0]]))
    assert torch.allclose(weights, expected)
    assert torch.equal(rank_weights(similarity, rank_decay=0.0), torch.ones(2, 3))


def test_perfectly_separated_batch_has_the_smallest_loss():
    # fg all along x, bg all along y: sim(fg, bg) = 0 -> LOW; sim(fg, fg) = sim(bg, bg) = 1 -> HIGH
    fg = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    bg = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    sim_min = -math.log(1 - LOW)
    # each SimMax row has two equal pairs, ranks 1 and 2: mean weight (1 + e^-0.25) / 2
    sim_max = -math.log(HIGH) * (1 + math.exp(-0.25)) / 2
    assert sim_min_loss(fg, bg).item() == pytest.approx(sim_min, rel=1e-4)
    assert sim_max_loss(fg).item() == pytest.approx(sim_max, rel=1e-4)
    assert c2am_loss(fg, bg).item() == pytest.approx(sim_min + 2 * sim_max, rel=1e-4)


def test_hand_computed_mixed_batch():
    # fg_0 = x, fg_1 = (x + y)/sqrt2 -> cos 1/sqrt2; bg_0 = bg_1 = y
    fg = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    bg = torch.tensor([[0.0, 1.0], [0.0, 5.0]])
    c = 1 / math.sqrt(2)
    # SimMin pairs: cos(fg_0, bg_j) = 0 -> LOW (twice); cos(fg_1, bg_j) = c (twice)
    sim_min = (2 * -math.log(1 - LOW) + 2 * -math.log(1 - c)) / 4
    # SimMax(fg): each row has its own pair (HIGH, rank 1) and the cross pair (c, rank 2)
    sim_max_fg = (2 * -math.log(HIGH) + 2 * -math.log(c) * math.exp(-0.25)) / 4
    sim_max_bg = -math.log(HIGH) * (1 + math.exp(-0.25)) / 2
    assert c2am_loss(fg, bg).item() == pytest.approx(sim_min + sim_max_fg + sim_max_bg, rel=1e-4)


def test_loss_prefers_separated_features_and_has_gradients():
    fg_good = torch.tensor([[1.0, 0.1], [0.9, 0.0]], requires_grad=True)
    bg_good = torch.tensor([[0.0, 1.0], [0.1, 1.0]], requires_grad=True)
    mixed = torch.tensor([[1.0, 1.0], [1.0, 0.9]])
    assert c2am_loss(fg_good, bg_good) < c2am_loss(mixed, mixed)
    c2am_loss(fg_good, bg_good).backward()
    assert fg_good.grad is not None and torch.isfinite(fg_good.grad).all()


def test_all_zero_features_stay_finite():
    zeros = torch.zeros(3, 4)
    assert torch.isfinite(c2am_loss(zeros, torch.ones(3, 4)))


@pytest.mark.parametrize("fg, bg", [(torch.zeros(2, 3), torch.zeros(3, 3)), (torch.zeros(2), torch.zeros(2)),
                                    (torch.zeros(0, 3), torch.zeros(0, 3))])
def test_bad_shapes(fg, bg):
    with pytest.raises(ValueError, match="fg_features"):
        c2am_loss(fg, bg)


def test_bad_clamp():
    with pytest.raises(ValueError, match="sim_clamp"):
        c2am_loss(torch.ones(2, 2), torch.ones(2, 2), sim_clamp=(0.0, 1.0))
