"""losses.acwe: C&F's Chan-Vese (ACWE) loss and their label term (Chen et al. 2019's Active Contour
loss), on tiny images whose values are worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from amecam_lib.losses.acwe import acwe_loss, active_contour_label_loss, contour_length, soft_region_means


def image(rows) -> torch.Tensor:
    """A (1, 1, H, W) float32 tensor from nested lists."""
    return torch.tensor(rows, dtype=torch.float32)[None, None]


X = image([[1.0, 3.0], [5.0, 7.0]])
Y = image([[1.0, 0.5], [0.0, 0.0]])


def test_region_means_by_hand():
    # inside: (1*1 + 0.5*3) / (1 + 0.5) = 2.5 / 1.5 = 5/3; outside: (0.5*3 + 5 + 7) / (0.5 + 1 + 1) = 13.5 / 2.5 = 5.4
    c_in, c_out = soft_region_means(X, Y)
    assert c_in.shape == (1,) and c_in.item() == pytest.approx(5 / 3, rel=1e-5)
    assert c_out.item() == pytest.approx(5.4, rel=1e-5)
    # without the pixel 7 (outside Omega): outside = (1.5 + 5) / 1.5 = 13/3; inside unchanged
    region = image([[1, 1], [1, 0]]).bool()
    c_in, c_out = soft_region_means(X, Y, region)
    assert c_in.item() == pytest.approx(5 / 3, rel=1e-5) and c_out.item() == pytest.approx(13 / 3, rel=1e-5)


def test_acwe_energy_by_hand():
    # inside:  1 * (1 - 5/3)^2 + 0.5 * (3 - 5/3)^2 = 4/9 + 8/9 = 4/3
    # outside: 0.5 * (3 - 5.4)^2 + (5 - 5.4)^2 + (7 - 5.4)^2 = 2.88 + 0.16 + 2.56 = 5.6
    # area: 1.5; all divided by the 4 pixels
    plain = acwe_loss(X, Y, area_weight=0.0)
    assert plain.ndim == 0 and plain.item() == pytest.approx((4 / 3 + 5.6) / 4, rel=1e-5)
    with_area = acwe_loss(X, Y, area_weight=0.2, inside_weight=2.0, outside_weight=0.5)
    assert with_area.item() == pytest.approx((2 * 4 / 3 + 0.5 * 5.6 + 0.2 * 1.5) / 4, rel=1e-5)


def test_a_contour_on_the_edge_of_a_two_tone_image_costs_only_its_area():
    x = image([[0.2, 0.2], [0.8, 0.8]])
    y = image([[0.0, 0.0], [1.0, 1.0]])                         # c_in = 0.8, c_out = 0.2: no misfit
    assert acwe_loss(x, y, area_weight=0.1).item() == pytest.approx(0.1 * 2 / 4, abs=1e-6)
    flipped = acwe_loss(x, 1 - y, area_weight=0.0)               # the energy alone is symmetric in y <-> 1 - y
    assert flipped.item() == pytest.approx(0.0, abs=1e-6)


def test_pixels_outside_omega_do_not_count():
    # Omega = the first two pixels: x = 1, 3 with y = 1, 0 -> c_in = 1, c_out = 3, no misfit;
    # area 1; divided by the slice's 3 pixels. The air pixel (x = 100, y = 0.3) changes nothing.
    x, y = image([[1.0, 3.0, 100.0]]), image([[1.0, 0.0, 0.3]])
    region = image([[1, 1, 0]]).bool()
    assert acwe_loss(x, y, region, area_weight=0.3).item() == pytest.approx(0.3 * 1 / 3, abs=1e-6)
    assert acwe_loss(x, y, None, area_weight=0.0).item() > 1.0    # with the air pixel, a large misfit


def test_energy_gradient_is_the_chan_vese_force():
    # d E / d y_p = ((x_p - c_in)^2 - (x_p - c_out)^2 + nu) / (H W): the means' own contribution
    # vanishes because they minimise the region terms (Chan and Vese 2001, Eq. 6-9).
    y = Y.clone().requires_grad_(True)
    acwe_loss(X, y, area_weight=0.1).backward()
    c_in, c_out = 5 / 3, 5.4
    expected = ((X - c_in) ** 2 - (X - c_out) ** 2 + 0.1) / 4
    assert torch.allclose(y.grad, expected, rtol=1e-4, atol=1e-5)


def test_contour_length_by_hand():
    # one step from 0 to 1 to the right of pixel (0, 0): only (0, 0) has both forward neighbours
    assert contour_length(image([[0.0, 1.0], [0.0, 1.0]]), eps=0.0).item() == pytest.approx(1 / 4)
    # a single bright pixel in 3 x 3: pixels (0,1) and (1,0) see one step (1 each), (1,1) two
    # steps (sqrt 2), (0,0) none: (2 + sqrt 2) / 9
    dot = image([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert contour_length(dot, eps=0.0).item() == pytest.approx((2 + math.sqrt(2)) / 9, rel=1e-6)
    # without pixel (1, 2) in Omega, pixel (1, 1) (whose right neighbour it is) no longer counts
    region = torch.ones_like(dot, dtype=torch.bool)
    region[..., 1, 2] = False
    assert contour_length(dot, region, eps=0.0).item() == pytest.approx(2 / 9, rel=1e-6)
    # the length enters the energy with its weight
    x = image([[0.2, 0.2], [0.8, 0.8]])
    y = image([[0.0, 1.0], [0.0, 1.0]])
    assert (acwe_loss(x, y, length_weight=2.0, area_weight=0.0, length_eps=0.0)
            - acwe_loss(x, y, area_weight=0.0)).item() == pytest.approx(2 * 1 / 4, rel=1e-5)


def test_label_loss_by_hand():
    y = image([[1.0, 0.5], [0.25, 0.0]])
    m = image([[1.0, 0.0], [1.0, 0.0]])
    # region: sum y (m - 1)^2 = 0.5 (pixel (0, 1)); sum (1 - y) m^2 = 0 + 0.75 -> 1.25 / 4
    # length: pixel (0, 0) only: sqrt(0.75^2 + 0.5^2) = sqrt(0.8125) -> / 4
    region_only = active_contour_label_loss(y, m, length_weight=0.0)
    assert region_only.item() == pytest.approx(1.25 / 4, rel=1e-6)
    both = active_contour_label_loss(y, m, length_eps=0.0)
    assert both.item() == pytest.approx((1.25 + math.sqrt(0.8125)) / 4, rel=1e-6)
    assert active_contour_label_loss(y, m.bool(), length_weight=0.0).item() == pytest.approx(1.25 / 4, rel=1e-6)


def test_label_region_term_of_binary_maps_is_the_misclassified_fraction():
    rng = np.random.default_rng(0)
    y = rng.random((3, 1, 5, 6)) > 0.5
    m = rng.random((3, 1, 5, 6)) > 0.7
    ours = active_contour_label_loss(torch.from_numpy(y).float(), torch.from_numpy(m), length_weight=0.0,
                                     reduction="none")
    np.testing.assert_allclose(ours.numpy(), (y != m).mean(axis=(1, 2, 3)), rtol=1e-6)


def test_per_image_energies_and_their_mean():
    x = torch.cat([X, image([[0.2, 0.2], [0.8, 0.8]])])
    y = torch.cat([Y, image([[0.0, 0.0], [1.0, 1.0]])])
    per_image = acwe_loss(x, y, area_weight=0.0, reduction="none")
    assert per_image.shape == (2,)
    assert per_image[0].item() == pytest.approx((4 / 3 + 5.6) / 4, rel=1e-5)
    assert per_image[1].item() == pytest.approx(0, abs=1e-6)
    assert acwe_loss(x, y, area_weight=0.0).item() == pytest.approx(per_image.mean().item())


def test_minimising_the_energy_separates_a_two_tone_brain():
    """Chan-Vese's minimiser of a two-tone image is its partition: free logits optimised on the
    energy end with the bright square on one side and the rest of the brain on the other."""
    torch.manual_seed(0)
    x = torch.zeros(1, 1, 10, 10)
    x[..., 1:9, 1:9] = 0.3                          # brain in air
    x[..., 3:6, 4:7] = 0.9                          # a bright 3 x 3 "tumour"
    brain = x > 0
    logits = (0.1 * torch.randn_like(x)).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=0.1)
    for _ in range(300):
        optimizer.zero_grad()
        acwe_loss(x, torch.sigmoid(logits), brain, area_weight=0.0005).backward()
        optimizer.step()
    inside = (torch.sigmoid(logits) > 0.5) & brain
    bright = x > 0.5
    assert torch.equal(inside, bright) or torch.equal(inside, brain & ~bright)


@pytest.mark.parametrize("call, message", [
    (lambda: acwe_loss(X[0], Y[0]), "intensities must be"),
    (lambda: acwe_loss(X, Y * 2), "probability must lie in"),
    (lambda: acwe_loss(X, Y, area_weight=-1.0), "area_weight must be"),
    (lambda: acwe_loss(X, Y, reduction="sum"), "reduction must be"),
    (lambda: acwe_loss(X, Y, region=torch.ones_like(X)), "region must be a bool"),
    (lambda: acwe_loss(X, Y, region=torch.ones(1, 1, 3, 3, dtype=torch.bool)), "region must have"),
    (lambda: acwe_loss(X * float("nan"), Y), "intensities contains NaN"),
    (lambda: active_contour_label_loss(Y, image([[2.0, 0.0], [0.0, 0.0]])), "masks must lie in"),
    (lambda: active_contour_label_loss(Y, torch.ones(1, 1, 2, 3)), "masks must have"),
    (lambda: contour_length(image([[0.0, 1.0]])), "at least 2 x 2"),
])
def test_bad_input_names_the_parameter(call, message):
    with pytest.raises(ValueError, match=message):
        call()
