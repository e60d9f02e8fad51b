"""cams.swin_mil, models.swin_mil, losses.mil and baselines.swin_mil: paper Table 1's Swin-MIL row.

Known answers by hand: the generalised mean and the deep-supervision BCE on constant maps, the
fusion of side outputs whose logits are set by hand, the zero padding; timm's Swin blocks on a
non-square odd slice; the map (as it is, 0 outside the brain); the training phase on the tiny
synthetic run (slice labels only, checkpoints, resume, load); and that the MIL loss does learn a
bright "tumour" square from slice labels alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from _hand_nets import FixedExitsNet
from _tiny_run import one_thread, tiny_preset, tiny_run  # noqa: F401  (fixture)
from amecam_lib.baselines.swin_mil import load_swin_mil, train_swin_mil
from amecam_lib.cams.base import CamBatch, CamNetworks
from amecam_lib.cams.swin_mil import SwinMil
from amecam_lib.losses.mil import deep_mil_loss, generalized_mean
from amecam_lib.models.swin_mil import SwinMilNet, SwinMilOutput, pad_to_multiple

TINY = {"embed_dim": 4, "depths": (1, 1, 1), "num_heads": (1, 1, 1), "window_size": 2, "patch_size": 2}
"""A tiny Swin-MIL: 3 stages of one block, 2 x 2 windows, 2 px patches (slices padded to 16 px)."""
TINY_SETTINGS = {f"swin_mil.{name}": value for name, value in TINY.items()}


def test_generalized_mean_by_hand():
    maps = torch.zeros(2, 3, 2, 2)
    maps[0, 0] = 0.5                                   # constant 1/2: (1/16 + eps)^(1/4) ~ 1/2
    maps[0, 1, 0, 0] = 1.0                             # one pixel of four at 1: (1/4)^(1/4) = 0.7071
    maps[0, 2] = torch.tensor([[0.0, 0.5], [1.0, 1.0]])   # (0 + 1/16 + 1 + 1) / 4 = 0.515625 -> ^(1/4)
    bags = generalized_mean(maps, r=4.0, eps=0.0)
    assert bags.shape == (2, 3) and bags.dtype == torch.float32
    assert torch.allclose(bags[0], torch.tensor([0.5, 0.25 ** 0.25, 0.515625 ** 0.25]), atol=1e-6)
    assert torch.allclose(bags[1], torch.zeros(3))                        # all-zero maps, no eps
    assert torch.allclose(generalized_mean(torch.zeros(1, 1, 3, 3)), torch.full((1, 1), 1e-6 ** 0.25))
    assert torch.allclose(generalized_mean(maps[:1, 2:], r=1.0, eps=0.0), torch.tensor([[2.5 / 4]]))  # the mean
    assert generalized_mean(maps[:1, 2:], r=64.0, eps=0.0) > 0.97                                   # ~ the max


def test_generalized_mean_over_the_brain_only_by_hand():
    maps = torch.tensor([[[[0.0, 1.0], [0.5, 0.0]]]])
    brain = torch.tensor([[[[False, True], [True, False]]]])
    assert generalized_mean(maps, r=4.0, eps=0.0, region=brain).item() == pytest.approx((1.0625 / 2) ** 0.25)
    assert generalized_mean(maps, r=4.0, eps=0.0).item() == pytest.approx((1.0625 / 4) ** 0.25)   # whole slice
    air = torch.zeros_like(brain)                                  # no brain pixel: eps^(1/r)
    assert generalized_mean(maps, r=4.0, eps=1e-6, region=air).item() == pytest.approx(1e-6 ** 0.25)
    # marking the whole brain scores a small and a large brain alike over the brain, not over the slice
    small, large = torch.zeros(1, 1, 4, 4, dtype=torch.bool), torch.ones(1, 1, 4, 4, dtype=torch.bool)
    small[..., :1, :1] = True
    both = torch.cat([small, large]).float()
    over_brain = generalized_mean(both, eps=0.0, region=torch.cat([small, large]))
    assert torch.allclose(over_brain, torch.ones(2, 1))
    assert torch.allclose(generalized_mean(both, eps=0.0), torch.tensor([[(1 / 16) ** 0.25], [1.0]]))
    with pytest.raises(ValueError, match="region must be"):
        generalized_mean(maps, region=brain[0])


def test_deep_mil_loss_by_hand():
    sides, fused = torch.full((2, 3, 4, 5), 0.5), torch.full((2, 1, 4, 5), 0.5)
    sides[1], fused[1] = 0.25, 0.25
    # slice 0, label 1, bags 1/2: -ln(1/2) per map; slice 1, label 0, bags 1/4: -ln(3/4) per map;
    # each map's BCE is the batch mean, and the four maps (3 sides + fused) add up.
    expected = 4 * (math.log(2.0) - math.log(0.75)) / 2
    loss = deep_mil_loss(sides, fused, torch.tensor([1, 0]), eps=0.0)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(expected, abs=1e-6)
    assert deep_mil_loss(sides, fused, torch.tensor([0, 1]), eps=0.0).item() == \
        pytest.approx(4 * (-math.log(0.5) - math.log(0.25)) / 2, abs=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):            # float32 BCE inside autocast
        assert deep_mil_loss(sides, fused, torch.tensor([1, 0]), eps=0.0).item() == pytest.approx(expected, abs=1e-6)


def test_loss_and_pooling_name_bad_arguments():
    with pytest.raises(ValueError, match="labels must be"):
        deep_mil_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 1, 4, 4), torch.tensor([1]))
    with pytest.raises(ValueError, match="fused"):
        deep_mil_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 1, 4, 5), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="r must be"):
        generalized_mean(torch.rand(1, 1, 2, 2), r=0.0)
    with pytest.raises(ValueError, match="probabilities"):
        generalized_mean(torch.rand(2, 2, 2))


def test_padding_adds_zeros_at_the_bottom_and_right():
    images = torch.arange(1.0, 36.0).reshape(1, 1, 5, 7)
    padded = pad_to_multiple(images, 4)
    assert padded.shape == (1, 1, 8, 8)
    assert torch.equal(padded[..., :5, :7], images) and padded[..., 5:, :].abs().sum() == 0
    assert padded[..., :, 7:].abs().sum() == 0
    assert pad_to_multiple(images, 1) is images


def test_timm_swin_blocks_on_a_non_square_odd_slice(one_thread):
    from timm.models.swin_transformer import SwinTransformerStage

    torch.manual_seed(0)
    net = SwinMilNet(**TINY).eval()
    swin_t_windows = SwinMilNet(embed_dim=4, depths=(1, 1, 1), num_heads=(1, 1, 1))   # Swin-T's window 7, patch 4
    assert net.multiple == 2 * 2 ** 2 * 2 == 16 and swin_t_windows.multiple == 4 * 2 ** 2 * 7 == 112
    assert all(isinstance(stage, SwinTransformerStage) for stage in net.stages) and len(net.stages) == 3
    with torch.no_grad():
        output = net(torch.rand(2, 1, 37, 50))
    assert isinstance(output, SwinMilOutput)
    assert output.sides.shape == (2, 3, 37, 50) and output.fused.shape == (2, 1, 37, 50)
    assert 0.0 <= float(output.fused.min()) and float(output.fused.max()) <= 1.0
    with torch.no_grad():                      # the smoke preset's slice size, its windows (multiple of 32 px)
        smoke = SwinMilNet(embed_dim=4, depths=(1, 1, 1), num_heads=(1, 1, 1), window_size=2).eval()
        assert smoke(torch.rand(1, 1, 64, 77)).fused.shape == (1, 1, 64, 77)


def test_fused_map_is_the_weighted_sum_of_hand_set_side_outputs(one_thread):
    net = SwinMilNet(**TINY, side_weights=(0.3, 0.4, 0.3)).eval()
    logits = (0.0, math.log(3.0), -math.log(3.0))                 # side outputs 1/2, 3/4, 1/4 everywhere
    with torch.no_grad():
        for conv, logit in zip(net.side_convs, logits):
            conv.weight.zero_()
            conv.bias.fill_(logit)
        output = net(torch.rand(3, 1, 21, 30))
    assert torch.allclose(output.sides[:, 0], torch.full((3, 21, 30), 0.5), atol=1e-6)
    assert torch.allclose(output.sides[:, 1], torch.full((3, 21, 30), 0.75), atol=1e-6)
    assert torch.allclose(output.sides[:, 2], torch.full((3, 21, 30), 0.25), atol=1e-6)
    # 0.3 * 1/2 + 0.4 * 3/4 + 0.3 * 1/4 = 0.525
    assert torch.allclose(output.fused, torch.full((3, 1, 21, 30), 0.525), atol=1e-6)


def test_network_names_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="side_weights"):
        SwinMilNet(**TINY, side_weights=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="side_weights"):
        SwinMilNet(**TINY, side_weights=(0.5, 0.5))
    with pytest.raises(ValueError, match="num_heads"):
        SwinMilNet(embed_dim=4, depths=(1, 1), num_heads=(1,))
    with pytest.raises(ValueError, match="window_size"):
        SwinMilNet(**{**TINY, "window_size": 0})
    with pytest.raises(ValueError, match="images must be"):
        SwinMilNet(**TINY)(torch.rand(1, 3, 16, 16))


class FixedFused(nn.Module):
    """A stand-in Swin-MIL: the given (H, W) fused map whatever the slice."""

    def __init__(self, fused):
        super().__init__()
        self.fused = torch.as_tensor(fused, dtype=torch.float32)

    def forward(self, images):
        fused = self.fused.expand(images.shape[0], 1, *self.fused.shape)
        return SwinMilOutput(fused.expand(-1, 3, -1, -1), fused)


def test_the_map_is_the_fused_probability_as_it_is_and_zero_outside_the_brain():
    fused = torch.tensor([[0.2, 0.4], [0.6, 0.3]])               # not min-max normalised: 0.5 keeps its meaning
    networks = CamNetworks(FixedExitsNet([torch.zeros(1, 1)]), references={"swin_mil": FixedFused(fused)})
    images = torch.tensor([[[[0.5, 0.5], [0.0, 0.5]]]]).repeat(2, 1, 1, 1)     # one air pixel
    cam = SwinMil()(CamBatch(images, networks))
    assert cam.shape == (2, 2, 2) and torch.allclose(cam, fused.expand(2, 2, 2))
    restricted = SwinMil()(CamBatch(images, networks, restrict_to_brain=True))
    assert torch.allclose(restricted, torch.tensor([[0.2, 0.4], [0.0, 0.3]]).expand(2, 2, 2))
    assert SwinMil.name == "swin_mil" and SwinMil.supervision == "WSSS" and SwinMil.network == "swin_mil"


def test_missing_network_is_named():
    with pytest.raises(ValueError, match="no 'swin_mil' network"):
        SwinMil()(CamBatch(torch.rand(1, 1, 2, 2), CamNetworks(FixedExitsNet([torch.zeros(1, 1)]))))


@pytest.mark.filterwarnings("ignore:.*was made with another config")
def test_training_on_the_tiny_run_resumes_and_loads(tmp_path, one_thread):
    run = tiny_run(tmp_path)
    preset = tiny_preset(**TINY_SETTINGS, **{"swin_mil.batch_size": 4, "swin_mil.epochs": 2})
    history = train_swin_mil(run, "flair", preset, device="cpu", progress=False)
    assert len(history) == 2 and np.isfinite(history.column("train_loss")).all()
    assert {p.name for p in (run / "flair" / "swin_mil").iterdir()} >= {"log.csv", "last.pt", "best.pt"}
    again = train_swin_mil(run, "flair", preset, device="cpu", progress=False)
    assert again.resumed_epochs == 2
    net = load_swin_mil(run, "flair")
    with torch.no_grad():
        assert net(torch.rand(1, 1, 33, 40)).fused.shape == (1, 1, 33, 40)    # another, odd size
    subset = tiny_preset(**TINY_SETTINGS, **{"swin_mil.batch_size": 4, "swin_mil.epochs": 1,
                                             "swin_mil.max_train_slices": 4, "swin_mil.pool_region": "brain"})
    assert train_swin_mil(run, "flair", subset, device="cpu", progress=False).resumed_epochs == 0   # new config
    with pytest.raises(ValueError, match="pool_region"):
        train_swin_mil(run, "flair", subset.with_overrides(**{"swin_mil.pool_region": "image"}), device="cpu")
    with pytest.raises(FileNotFoundError, match="train_swin_mil"):
        load_swin_mil(tmp_path / "nowhere", "flair")


def test_slice_labels_alone_teach_it_where_the_bright_square_is(one_thread):
    """MIL from bag labels only: slices with a bright 4 x 4 square (label 1) and without (label 0).
    After training, the fused map is above 0.5 on the square and below it on the normal slices, and
    higher on the square than on the rest of the tumour slices. (The rest of a tumour slice stays
    fairly high: the generalised mean of a perfect map, 1 on 1/16 of the pixels, is only 1/2, so
    the loss keeps pushing the whole tumour slice up; measured 0.72 square, 0.57 rest, 0.16 normal.
    The training loop is written here, not fit's.)"""
    torch.manual_seed(0)
    images = 0.3 * torch.ones(32, 1, 16, 16) + 0.05 * torch.rand(32, 1, 16, 16)
    labels = torch.arange(32) % 2
    rows, cols = torch.randint(0, 12, (32,)), torch.randint(0, 12, (32,))
    square = torch.zeros(32, 16, 16, dtype=torch.bool)
    for index in torch.nonzero(labels).flatten().tolist():
        square[index, rows[index]:rows[index] + 4, cols[index]:cols[index] + 4] = True
    images[:, 0][square] = 0.9
    net = SwinMilNet(**TINY)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(80):
        output = net(images)
        loss = deep_mil_loss(output.sides, output.fused, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        fused = net.eval()(images).fused[:, 0]
    tumour = labels == 1
    on_square, rest, normal = fused[tumour][square[tumour]].mean(), fused[tumour][~square[tumour]].mean(), \
        fused[~tumour].mean()
    assert on_square > 0.5 > normal and on_square > rest + 0.1 and rest > normal + 0.2
