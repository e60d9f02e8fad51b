"""Aggregation phase pieces (paper Eq. 3): C2AM features, frozen exit maps, folders; the brain
normalisation and pooling, the attention-weight report, a toy problem A must solve, and a frozen
classifier.

n(.) and Eq. 2 (normalise_maps, fuse) are tested in test_equations.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _tiny_run import one_thread  # noqa: F401  (fixture)
from amecam_lib.aggregation import (aggregation_dir, aggregation_step, attention_weight_summary, c2am_features,
                                    native_exit_maps, normalised_exit_maps)
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


def test_encoder_features_pooled_over_the_brain_only():
    """pool_region="brain": fg = M_f * brain, bg = (1 - M_f) * brain, area-averaged to the stage."""
    # one stage at full size (2x2), 2 channels; the right column is air
    stage = torch.tensor([[[[1.0, 7.0], [3.0, 7.0]], [[0.0, 7.0], [4.0, 7.0]]]])
    fused_map = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])       # foreground: the top-left pixel
    brain = torch.tensor([[[[True, False], [True, False]]]])
    fg, bg = c2am_features(torch.ones(1, 1, 2, 2), fused_map, "encoder", [stage], region=brain)
    # fg = (1, 0); bg over the brain only = the bottom-left pixel (3, 4) -> (0.6, 0.8); the air's 7s ignored
    assert torch.allclose(fg, torch.tensor([[1.0, 0.0]]), atol=1e-5)
    assert torch.allclose(bg, torch.tensor([[0.6, 0.8]]), atol=1e-5)
    _, bg_slice = c2am_features(torch.ones(1, 1, 2, 2), fused_map, "encoder", [stage])
    assert not torch.allclose(bg_slice, bg, atol=1e-3)                # the whole slice counts the air
    # a coarser stage: one cell, half of it brain; fg weight 1/4, bg weight 1/4 (area averages)
    coarse = torch.tensor([[[[2.0]], [[5.0]]]])
    fg, bg = c2am_features(torch.ones(1, 1, 2, 2), fused_map, "encoder", [coarse], region=brain)
    assert torch.allclose(fg, bg) and torch.allclose(fg, torch.tensor([[2.0, 5.0]]) / 29 ** 0.5, atol=1e-5)


def test_attention_weight_summary_by_hand():
    # 2 exits on a 1 x 3 slice; the last pixel is air (not counted)
    weights = torch.tensor([[[[0.5, 1.0, 0.0]], [[0.5, 0.0, 1.0]]]])
    brain = torch.tensor([[[[True, True, False]]]])
    summary = attention_weight_summary(weights, brain)
    np.testing.assert_allclose(summary["mean_weight"], [0.75, 0.25])
    np.testing.assert_allclose(summary["mean_abs_deviation"], [0.25, 0.25])    # |0|, |1/2| -> 1/4 each
    assert summary["brain_pixels"][0] == 2
    uniform = attention_weight_summary(torch.full((1, 4, 2, 2), 0.25), torch.ones(1, 1, 2, 2, dtype=torch.bool))
    np.testing.assert_array_equal(uniform["mean_abs_deviation"], np.zeros(4))   # A changed nothing
    empty = attention_weight_summary(weights, torch.zeros(1, 1, 1, 3, dtype=torch.bool))
    assert np.isnan(empty["mean_weight"]).all() and empty["brain_pixels"][0] == 0


def _save_attention(run_dir, exits, **config):
    from amecam_lib.models.attention import AttentionNet
    from amecam_lib.training import CHECKPOINT_FORMAT

    path = aggregation_dir(run_dir, "flair", exits) / "best.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "model": AttentionNet(n_maps=len(exits), hidden=4).state_dict(),
                "epoch": 1, "config": {"exits": list(exits), "aggregation": {"hidden": 4}, **config}}, path)


def test_load_attention_records_and_checks_its_normalisation(tmp_path):
    from amecam_lib.aggregation import load_attention
    from amecam_lib.cams import CamMethods
    from amecam_lib.config import EvaluationConfig

    _save_attention(tmp_path, (1, 2, 3, 4), restrict_to_brain=True)
    _save_attention(tmp_path, (2, 3))                                  # written before the setting existed
    assert load_attention(tmp_path, "flair").restrict_to_brain is True
    assert load_attention(tmp_path, "flair", (2, 3)).restrict_to_brain is False     # whole-slice n(.)
    assert load_attention(tmp_path, "flair", restrict_to_brain=True).n_maps == 4
    with pytest.raises(ValueError, match="restrict_to_brain=True.*restrict_to_brain=False"):
        load_attention(tmp_path, "flair", restrict_to_brain=False)
    with pytest.raises(ValueError, match="EvaluationConfig.restrict_to_brain"):
        CamMethods(MultiExitResNet().eval(), load_attention(tmp_path, "flair"), None,
                   EvaluationConfig(restrict_to_brain=False))
    with pytest.raises(ValueError, match="EvaluationConfig.restrict_to_brain"):
        CamMethods(MultiExitResNet().eval(), None, load_attention(tmp_path, "flair", (2, 3)),
                   EvaluationConfig(restrict_to_brain=True))


class _TwoChannelEncoder(torch.nn.Module):
    """A small frozen "encoder": stage 1 = [I, 1 - I] at full size, stage 2 = the same at half size."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 1.0]))
        self.requires_grad_(False)

    def feature_maps(self, images):
        full = self.conv(images)
        return [full, F.avg_pool2d(full, 2)]


def _squares(n, generator, size=20, right_exit=1, n_exits=4):
    """Slices: air border, grey brain (0.4), a bright 5 x 5 square (1.0) at a random place; exit
    ``right_exit`` = the square's indicator blurred by a 3 x 3 mean, the other exits uniform noise."""
    images = torch.zeros(n, 1, size, size)
    images[:, :, 2:size - 2, 2:size - 2] = 0.4
    square = torch.zeros(n, 1, size, size, dtype=torch.bool)
    for index in range(n):
        row, col = torch.randint(3, size - 8, (2,), generator=generator).tolist()
        square[index, :, row:row + 5, col:col + 5] = True
    images[square] = 1.0
    exit_maps = [torch.rand(n, 1, size, size, generator=generator) for _ in range(n_exits)]
    exit_maps[right_exit] = F.avg_pool2d(square.float(), 3, stride=1, padding=1)
    return images, exit_maps, square


def test_attention_learns_to_trust_the_right_exit_on_a_toy_problem(one_thread):
    """One exit map is right (a blurred indicator of a bright square that moves from slice to
    slice), the other three are noise; A trained with the C2AM loss (Eq. 3) must weight the right one.

    Features: ``"encoder"`` pooled over the brain (``pool_region="brain"``) from a small frozen
    network (channels I and 1 - I, at full and half size). Those features are *averages* under
    M_f, so the foregrounds of two slices look alike wherever their squares are: the problem is
    well posed. The masked-pixel features (``"pixels"``) compare slices position by position, so
    two squares at different places are dissimilar foregrounds whatever A does (SimMax cannot be
    met); with them the loss has no term that rewards the right exit for following the square
    (measured on this toy, A still drifts to the right exit through SimMin, but that is not what
    the test is about). The brain pooling keeps the air out of the background, as in the real
    setting. n(.) over the brain (``restrict_to_brain``), as the demo preset.
    """
    from amecam_lib.config import AggregationConfig
    from amecam_lib.equations import average_exits, brain_region, final_cam
    from amecam_lib.models.attention import AttentionNet

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    settings = AggregationConfig(features="encoder", pool_region="brain")
    model = torch.nn.Module()
    model.attention, model.classifier = AttentionNet(n_maps=4, hidden=8), _TwoChannelEncoder()
    optimiser = torch.optim.Adam(model.attention.parameters(), lr=1e-2)
    for _ in range(150):
        images, exit_maps, _ = _squares(16, generator)
        loss = aggregation_step(model, images, exit_maps, settings, restrict_to_brain=True)[0]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.attention.eval()
    images, exit_maps, square = _squares(32, generator)
    brain = brain_region(images)
    with torch.no_grad():
        _, weights, fused_map = aggregation_step(model, images, exit_maps, settings, restrict_to_brain=True)
    in_squares = attention_weight_summary(weights, square)["mean_weight"]
    in_brain = attention_weight_summary(weights, brain)["mean_weight"]
    assert in_squares[1] > 0.5 and in_brain[1] > 0.5, (in_squares, in_brain)      # uniform would be 1/4
    exit_maps_norm = normalised_exit_maps(exit_maps, images.shape[-2:], brain)
    ame_cam, avg_me = final_cam(exit_maps_norm, fused_map, brain), average_exits(exit_maps_norm, brain)
    assert float((ame_cam - avg_me).abs().max()) > 0.1


def test_training_the_attention_leaves_the_classifier_unchanged(tmp_path, monkeypatch, one_thread):
    """The classifier's weights and BatchNorm buffers (running_mean, running_var,
    num_batches_tracked) are bit-identical after train_attention, with the encoder features that
    run the classifier on every batch; also checks the stored normalisation and the report."""
    import amecam_lib.aggregation as aggregation
    from _tiny_run import tiny_preset, tiny_run
    from amecam_lib.phases import load_multi_exit

    run = tiny_run(tmp_path)
    classifier = load_multi_exit(run, "flair", "best")
    before = {name: tensor.clone() for name, tensor in classifier.state_dict().items()}
    assert any(name.endswith("num_batches_tracked") and int(t) > 0 for name, t in before.items())
    monkeypatch.setattr(aggregation, "load_multi_exit", lambda *args, **kwargs: classifier)
    preset = tiny_preset(**{"aggregation.epochs": 2, "aggregation.features": "encoder",
                            "aggregation.pool_region": "brain", "evaluation.restrict_to_brain": True})
    history = aggregation.train_attention(run, "flair", preset, device="cpu", progress=False)
    assert len(history) == 2
    after = classifier.state_dict()
    assert set(after) == set(before)
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name
    assert all(not parameter.requires_grad for parameter in classifier.parameters())
    checkpoint = torch.load(aggregation_dir(run, "flair") / "best.pt", weights_only=True)
    assert checkpoint["config"]["restrict_to_brain"] is True
    assert checkpoint["config"]["aggregation"]["pool_region"] == "brain"
    report = aggregation.read_attention_report(run, "flair")
    assert list(report.columns) == list(aggregation.ATTENTION_REPORT_COLUMNS)
    assert list(report["exit"]) == [1, 2, 3, 4] and report["mean_weight"].sum() == pytest.approx(1.0, abs=1e-5)
    assert (report["uniform_weight"] == 0.25).all() and (report["n_slices"] == 3).all()
    again = aggregation.attention_weight_report(run, "flair", preset, device="cpu", write=False)
    np.testing.assert_allclose(again["mean_weight"], report["mean_weight"], atol=1e-5)


def test_pool_region_must_be_known(tmp_path):
    from _tiny_run import tiny_preset
    from amecam_lib.aggregation import train_attention

    with pytest.raises(ValueError, match="pool_region"):
        train_attention(tmp_path, "flair", tiny_preset(**{"aggregation.pool_region": "skull"}), device="cpu")


def test_an_attention_network_trained_on_another_classifier_is_not_resumed(tmp_path, one_thread):
    """A is trained on the exit maps of multi_exit/best.pt: a classifier retrained to other weights
    (same epoch and settings, so the same config before) makes the finished A be redone, not returned."""
    import dataclasses

    from _tiny_run import tiny_preset, tiny_run
    from amecam_lib.aggregation import load_attention, train_attention
    from amecam_lib.config import MultiExitConfig
    from amecam_lib.models.multi_exit import MultiExitResNet
    from amecam_lib.phases import phase_dir
    from amecam_lib.training import CHECKPOINT_FORMAT

    run = tiny_run(tmp_path)
    preset = tiny_preset()
    train_attention(run, "flair", preset, device="cpu", progress=False)
    assert train_attention(run, "flair", preset, device="cpu", progress=False).resumed_epochs == 1
    torch.manual_seed(5)
    retrained = MultiExitResNet().eval()
    torch.save({"format": CHECKPOINT_FORMAT, "model": retrained.state_dict(), "epoch": 1,
                "config": {"multi_exit": dataclasses.asdict(MultiExitConfig())}},
               phase_dir(run, "flair", "multi_exit") / "best.pt")
    with pytest.raises(ValueError, match="trained on the exit maps of another classifier"):
        load_attention(run, "flair")              # evaluating the old A with the new classifier: refused
    with pytest.warns(UserWarning, match="another config.*weights_sha256"):
        history = train_attention(run, "flair", preset, device="cpu", progress=False)
    assert history.resumed_epochs == 0
    assert load_attention(run, "flair").restrict_to_brain is preset.evaluation.restrict_to_brain
