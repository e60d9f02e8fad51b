"""Paper Eq. 1, the multi-exit loss (amecam_lib.losses.exits)."""

from __future__ import annotations

import math

import pytest
import torch

from amecam_lib.losses.exits import multi_exit_loss

LN3 = math.log(3.0)
# Two slices, four exits. sigmoid(0) = 1/2, sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4.
LOGITS = torch.tensor([[0.0, LN3, -LN3, 0.0],
                       [0.0, LN3, -LN3, 0.0]])
LABELS = torch.tensor([1, 0])
# Per-exit batch means of the BCE:
#   exit 1, 4: (ln 2 + ln 2) / 2 = ln 2
#   exit 2:    (-ln 3/4 - ln 1/4) / 2 = ln(16/3) / 2;   exit 3: the same by symmetry
PER_EXIT = [math.log(2), math.log(16 / 3) / 2, math.log(16 / 3) / 2, math.log(2)]


def test_eq1_plain_sum_by_hand():
    loss = multi_exit_loss(LOGITS, LABELS)
    assert loss.item() == pytest.approx(sum(PER_EXIT), rel=1e-6)
    assert loss.dtype == torch.float32 and loss.ndim == 0


def test_eq1_authors_exit_weights_by_hand():
    weights = (0.25, 0.5, 0.75, 1.0)
    loss = multi_exit_loss(LOGITS, LABELS, weights=weights)
    assert loss.item() == pytest.approx(sum(w * l for w, l in zip(weights, PER_EXIT)), rel=1e-6)


def test_pos_weight_scales_tumour_term_by_hand():
    # One tumour slice with logit 0 in every exit: each exit gives pos_weight * ln 2.
    loss = multi_exit_loss(torch.zeros(1, 4), torch.tensor([1]), pos_weight=3.0)
    assert loss.item() == pytest.approx(4 * 3 * math.log(2), rel=1e-6)


def test_float_labels_and_gradient():
    logits = LOGITS.clone().requires_grad_(True)
    loss = multi_exit_loss(logits, LABELS.float())
    loss.backward()
    # d BCE / dz = (sigmoid(z) - y) / B
    expected = (torch.sigmoid(LOGITS) - LABELS.float()[:, None]) / 2
    torch.testing.assert_close(logits.grad, expected)


@pytest.mark.parametrize("logits, labels, kwargs, match", [
    (torch.zeros(4), torch.zeros(4), {}, "exit_logits"),
    (torch.zeros(2, 4), torch.zeros(3), {}, "labels must be"),
    (torch.zeros(2, 4), torch.tensor([0, 2]), {}, "0 or 1"),
    (torch.zeros(2, 4), torch.tensor([0, 1]), {"weights": (1.0, 1.0)}, "weights"),
    (torch.zeros(2, 4), torch.tensor([0, 1]), {"weights": (1.0, 1.0, -1.0, 1.0)}, "weights"),
    (torch.zeros(2, 4), torch.tensor([0, 1]), {"pos_weight": 0.0}, "pos_weight"),
])
def test_bad_input_raises(logits, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        multi_exit_loss(logits, labels, **kwargs)
