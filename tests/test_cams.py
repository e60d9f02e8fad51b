"""The CamMethods facade on a tiny random network: every method by name, formulas, ranges, brain
restriction, shared passes, timings, polarity check; and what importing amecam_lib.cams loads.

Each method on its own, with hand-known answers: tests/test_cams_<module>.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from amecam_lib.cams import METHODS, REGISTRY, CamMethods, polarity_check
from amecam_lib.config import EvaluationConfig
from amecam_lib.equations import fuse, normalise_maps
from amecam_lib.baselines.cf import ActiveContourUNet
from amecam_lib.baselines.unet_fsl import unet_network
from amecam_lib.models.attention import AttentionNet
from amecam_lib.models.c2am_head import ClassAgnosticHead
from amecam_lib.models.lfi_cam import LfiCamNet
from amecam_lib.models.swin_mil import SwinMilNet
from amecam_lib.models.multi_exit import ExitOutput, MultiExitResNet, upsample_maps

SIZE = 32


@pytest.fixture(scope="module")
def cams():
    torch.manual_seed(0)
    net = MultiExitResNet().eval()
    return CamMethods(net, AttentionNet(4).eval(), AttentionNet(2).eval(),
                      EvaluationConfig(score_cam_batch_size=256), references=tiny_references())


def tiny_references() -> dict:
    """Untrained reference networks: a tiny MONAI U-Net (unet_fsl), C2AM's head (avg_me_c2am) and
    LFI-CAM's network with a narrow FIN (lfi_cam), C&F's U-Nets (cf_ul, cf_fsl) and a tiny Swin-MIL (swin_mil)."""
    torch.manual_seed(2)
    return {"unet_fsl": unet_network((2, 2, 2, 2, 2, 2)), "c2am_head": ClassAgnosticHead(256 + 512),
            "lfi_cam": LfiCamNet(fin_hidden=4),
            "swin_mil": SwinMilNet(embed_dim=4, depths=(1, 1, 1), num_heads=(1, 1, 1), window_size=2, patch_size=2),
            "cf_ul": ActiveContourUNet((2, 2, 2, 2, 2, 2)), "cf_fsl": ActiveContourUNet((2, 2, 2, 2, 2, 2))}


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    slices = torch.rand(2, 1, SIZE, SIZE)
    slices[:, :, :4] = 0.0  # "outside the brain" rows
    return slices


def test_every_method_gives_normalised_maps(cams, images):
    maps = cams.compute(images)
    assert tuple(maps) == METHODS
    for name, cam in maps.items():
        assert cam.shape == (2, SIZE, SIZE) and cam.dtype == np.float32, name
        assert np.isfinite(cam).all() and cam.min() >= 0.0 and cam.max() <= 1.0, name


def test_ame_family_formulas(cams, images):
    maps = cams.compute(images, ["ame_cam", "ame_cam_crf", "avg_me", "m_f", "exit1", "exit4", "exit2_3"])
    with torch.no_grad():
        exit_maps = normalise_maps(upsample_maps(cams.model(images).maps, SIZE))
        _, fused_all = fuse(images, exit_maps, cams.attention)
        _, fused_2_3 = fuse(images, exit_maps[:, 1:3], cams.attention_2_3)
    expected = {
        "exit1": exit_maps[:, 0], "exit4": exit_maps[:, 3],
        "avg_me": normalise_maps(exit_maps.mean(dim=1)),
        "m_f": normalise_maps(fused_all[:, 0]),
        "ame_cam": normalise_maps(torch.cat([exit_maps, fused_all], dim=1).mean(dim=1)),
        "exit2_3": normalise_maps(torch.cat([exit_maps[:, 1:3], fused_2_3], dim=1).mean(dim=1)),
    }
    for name, cam in expected.items():
        np.testing.assert_allclose(maps[name], cam.numpy(), atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(maps["ame_cam_crf"], maps["ame_cam"])


def test_intensity_is_the_normalised_slice(cams, images):
    np.testing.assert_allclose(cams.compute(images, ["intensity"])["intensity"],
                               normalise_maps(images[:, 0]).numpy(), atol=1e-6)


def test_brain_restriction_applies_to_every_method(images):
    torch.manual_seed(0)
    restricted = CamMethods(MultiExitResNet().eval(), AttentionNet(4).eval(), AttentionNet(2).eval(),
                            EvaluationConfig(restrict_to_brain=True), references=tiny_references())
    maps = restricted.compute(images, [m for m in METHODS if m != "score_cam"])
    outside = (images[:, 0] == 0).numpy()
    for name, cam in maps.items():
        assert (cam[outside] == 0).all(), name
        if REGISTRY[name].network is not None:     # unet_fsl / swin_mil probability, (avg_me + P) / 2:
            continue                               # in [0, 1] but not min-max normalised (the 0.5 decision)
        for index in range(len(cam)):     # normalised over the brain: min 0 and max 1 there (or constant 0:
            inside = cam[index][~outside[index]]    # exit 4 is 1 x 1 px at 32 px, all zeros after n(.))
            assert inside.min() == 0.0 and inside.max() in (0.0, pytest.approx(1.0, abs=1e-6)), name


def test_brain_restriction_normalises_the_exit_maps_that_feed_the_attention(images):
    """m_f, ame_cam and avg_me are built from n(M_i) over the brain: not the whole-slice maps cut."""
    torch.manual_seed(0)
    net, attention = MultiExitResNet().eval(), AttentionNet(4).eval()
    maps = CamMethods(net, attention, None, EvaluationConfig(restrict_to_brain=True)).compute(
        images, ["m_f", "ame_cam", "avg_me"])
    brain = images > 0
    with torch.no_grad():
        exit_maps = normalise_maps(upsample_maps(net(images).maps, SIZE), brain)
        _, fused_map = fuse(images, exit_maps, attention)
    expected = {"m_f": normalise_maps(fused_map[:, 0], brain[:, 0]),
                "ame_cam": normalise_maps(torch.cat([exit_maps, fused_map], dim=1).mean(dim=1), brain[:, 0]),
                "avg_me": normalise_maps(exit_maps.mean(dim=1), brain[:, 0])}
    for name, cam in expected.items():
        np.testing.assert_allclose(maps[name], cam.numpy(), atol=1e-5, err_msg=name)


def test_an_attention_trained_with_the_other_normalisation_is_refused(images):
    torch.manual_seed(0)
    attention = AttentionNet(4).eval()
    attention.restrict_to_brain = False            # as load_attention records it
    with pytest.raises(ValueError, match="restrict_to_brain"):
        CamMethods(MultiExitResNet().eval(), attention, None, EvaluationConfig(restrict_to_brain=True))
    same = CamMethods(MultiExitResNet().eval(), attention, None, EvaluationConfig(restrict_to_brain=False))
    assert same.compute(images, ["m_f"])["m_f"].shape == (2, SIZE, SIZE)


def test_errors(cams, images):
    with pytest.raises(ValueError, match="unknown"):
        cams.compute(images, ["grad_cam_plus"])
    with pytest.raises(ValueError, match="images"):
        cams.compute(torch.rand(2, 3, SIZE, SIZE), ["exit1"])
    without_attention = CamMethods(cams.model)
    with pytest.raises(ValueError, match="attention"):
        without_attention.compute(images, ["ame_cam"])
    assert without_attention.compute(images, ["exit2"])["exit2"].shape == (2, SIZE, SIZE)


class BrightSpotClassifier(nn.Module):
    """Stand-in classifier: exit-4 tumour logit = 20 * (brightest pixel - 0.5)."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        logit = 20.0 * (images.amax(dim=(1, 2, 3)) - 0.5) + self.anchor
        return ExitOutput(logits=logit[:, None].repeat(1, 4), maps=[images] * 4)


def test_polarity_check_tells_a_right_map_from_a_flipped_one():
    images = torch.full((3, 1, 8, 8), 0.3)
    images[:, :, 2:4, 2:4] = 1.0  # bright "tumour"
    images[2] = 0.3                # last slice: the classifier calls it normal
    right = (images[:, 0] > 0.5).float().numpy()
    right[2] = 0.0
    reports = {r.method: r for r in polarity_check(BrightSpotClassifier(), images,
                                                   {"right": right, "flipped": 1.0 - right})}
    assert reports["right"].n_slices == 2  # only slices called tumour
    assert reports["right"].logit_gap > 0 and reports["right"].fraction_positive == 1.0
    assert reports["flipped"].logit_gap < 0 and reports["flipped"].fraction_positive == 0.0
    assert reports["right"].high_fraction == pytest.approx(4 / 64)


def test_gradient_baselines_work_on_a_frozen_network(cams, images):
    reference = cams.compute(images, ["layer_cam_last"])["layer_cam_last"]
    torch.manual_seed(0)
    frozen = MultiExitResNet().eval()
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    maps = CamMethods(frozen).compute(images, ["layer_cam_last"])["layer_cam_last"]
    np.testing.assert_allclose(maps, reference, atol=1e-5)


def test_shared_gradient_pass_gives_the_same_maps_as_separate_calls(cams, images):
    """grad_cam, layer_cam and layer_cam_last asked together share one forward + backward pass;
    each must equal its map computed alone."""
    together = cams.compute(images, ["layer_cam", "grad_cam", "layer_cam_last"])
    for method in ("grad_cam", "layer_cam", "layer_cam_last"):
        alone = cams.compute(images, [method])[method]
        np.testing.assert_allclose(together[method], alone, atol=1e-5, err_msg=method)


def test_timings_are_reported_per_method(cams, images):
    timings = {}
    maps = cams.compute(images, ["ame_cam_crf", "ame_cam", "exit1", "grad_cam", "intensity"], timings=timings)
    assert set(timings) == set(maps)
    assert all(seconds >= 0.0 for seconds in timings.values())
    assert timings["ame_cam_crf"] == timings["ame_cam"]          # the same map, computed once
    assert timings["ame_cam"] >= timings["exit1"] - 1e-9 or timings["exit1"] < 1e-3  # exit maps + A


def test_tumour_probability_is_exit4_sigmoid(cams, images):
    probability = cams.tumour_probability(images)
    with torch.no_grad():
        expected = torch.sigmoid(cams.model(images).logits[:, 3]).numpy()
    np.testing.assert_allclose(probability, expected, atol=1e-6)
    assert probability.shape == (2,) and probability.dtype == np.float32


def test_an_all_zero_slice_gives_empty_masks_for_every_method():
    """An all-zero slice through an instance-norm multi-exit network at 240 px: every stage is 0, each
    exit map is its 1x1 convolution's bias (constant), and bilinear upsampling to 240 px perturbs its
    last float bits. Min-max must not stretch that noise: every method's map is 0 and its mask empty
    (before the float-noise rule, ame_cam / avg_me / m_f / exit4 masked 477 px here, the tester's
    network 57,122 of 57,600). Score-CAM (one forward per channel, 512) runs on a 64 px slice; the
    CRF mask of ame_cam_crf is checked too."""
    from amecam_lib.evaluation import crf_masks, threshold_masks

    torch.manual_seed(0)
    net = MultiExitResNet(norm="instance").eval()
    zero = np.zeros((1, 1, 240, 240), dtype=np.float32)
    with torch.no_grad():
        upsampled = upsample_maps(list(net(torch.from_numpy(zero)).maps), 240)
    assert (upsampled.amax(dim=(2, 3)) > upsampled.amin(dim=(2, 3))).any()   # the noise is there
    for restrict in (False, True):
        config = EvaluationConfig(restrict_to_brain=restrict, score_cam_batch_size=512)
        cams = CamMethods(net, AttentionNet(4).eval(), AttentionNet(2).eval(), config)
        cam_methods = [m for m in METHODS if REGISTRY[m].network is None]    # min-max maps (not the references)
        maps = cams.compute(zero, methods=[m for m in cam_methods if m != "score_cam"])
        if not restrict:                                              # (with it: an empty brain, zeros)
            maps |= cams.compute(np.zeros((1, 1, 64, 64), dtype=np.float32), methods=["score_cam"])
        assert set(maps) == set(cam_methods) - ({"score_cam"} if restrict else set())
        for name, cam in maps.items():
            assert float(np.abs(cam).max()) == 0.0, (name, restrict)
            masks = (crf_masks(cam, zero[:, :, :cam.shape[1], :cam.shape[2]], config, [(1.0, 1.0)])
                     if name == "ame_cam_crf" else threshold_masks(cam, config.threshold))
            assert not masks.any(), (name, restrict)


def test_importing_cams_leaves_the_training_stack_out():
    """CAMs need the models and the formulas, not the training code (phases, aggregation, slices)."""
    code = "import sys, amecam_lib.cams; print(' '.join(sorted(m for m in sys.modules if m.startswith('amecam_lib'))))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert {"amecam_lib.cams", "amecam_lib.equations", "amecam_lib.models.multi_exit"} <= loaded
    assert not loaded & {"amecam_lib.training", "amecam_lib.phases", "amecam_lib.aggregation", "amecam_lib.slices"}
