"""cams.cf and baselines.cf: C&F's Chan-Vese U-Nets, ``cf_ul`` (no label) and ``cf_fsl`` (with the
training masks) (paper Table 1, UL / FSL C&F; Chen and Frey 2020).

The methods on hand-made networks (known logits -> known maps), the label-free orientation rule,
and both training phases on the tiny synthetic run: what they read, checkpoints, resume, load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from _hand_nets import FixedExitsNet
from _tiny_run import one_thread, tiny_preset, tiny_run  # noqa: F401  (fixture)
from amecam_lib.baselines.cf import (ActiveContourUNet, load_cf_fsl, load_cf_ul, pooled_region_means, slice_minmax,
                                     train_cf_fsl, train_cf_ul, tumour_is_outside)
from amecam_lib.baselines.unet_fsl import brain_zscore
from amecam_lib.cams.base import CamBatch, CamNetworks
from amecam_lib.cams.cf import CfFsl, CfUl
from amecam_lib.slices import load_slices

TINY = {"channels": (2, 2, 4, 4, 4, 2), "batch_size": 4, "epochs": 2}


def tiny_settings(phase: str, **more) -> dict:
    return {f"{phase}.{name}": value for name, value in {**TINY, **more}.items()}


class FixedLogits(nn.Module):
    """A stand-in network: the given (H, W) logits whatever the slice."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def forward(self, images):
        return self.logits.expand(images.shape[0], 1, *self.logits.shape)


@pytest.mark.parametrize("method, name, supervision", [(CfUl, "cf_ul", "UL"), (CfFsl, "cf_fsl", "FSL")])
def test_the_map_is_the_sigmoid_inside_the_brain_always(method, name, supervision):
    logits = torch.tensor([[0.0, math.log(3.0)], [-math.log(3.0), 20.0]])   # -> 1/2, 3/4, 1/4, ~1
    networks = CamNetworks(FixedExitsNet([torch.zeros(1, 1)]), references={name: FixedLogits(logits)})
    images = torch.tensor([[[[0.5, 0.5], [0.5, 0.0]]]]).repeat(2, 1, 1, 1)     # one air pixel
    expected = torch.tensor([[0.5, 0.75], [0.25, 0.0]]).expand(2, 2, 2)      # 0 in the air, restricted or not
    for restrict in (False, True):
        cam = method()(CamBatch(images, networks, restrict_to_brain=restrict))
        assert cam.shape == (2, 2, 2) and torch.allclose(cam, expected, atol=1e-6)
    assert method.name == name and method.supervision == supervision and method.network == name
    assert method.gated is False            # a segmenter of its own: not gated by the multi-exit classifier


def test_missing_network_is_named():
    with pytest.raises(ValueError, match="no 'cf_ul' network"):
        CfUl()(CamBatch(torch.rand(1, 1, 2, 2), CamNetworks(FixedExitsNet([torch.zeros(1, 1)]))))


def test_flip_negates_the_logit(one_thread):
    torch.manual_seed(0)
    net = ActiveContourUNet((2, 2, 2, 2, 2, 2)).eval()
    images = torch.rand(1, 1, 16, 20)
    with torch.no_grad():
        plain = net(images)
        net.flip.fill_(True)
        assert torch.allclose(net(images), -plain) and plain.shape == (1, 1, 16, 20)
        assert torch.allclose(torch.sigmoid(net(images)), 1 - torch.sigmoid(plain), atol=1e-6)


@pytest.mark.parametrize("c_in, c_out, modality, outside", [
    (0.2, 0.6, "flair", True), (0.6, 0.2, "flair", False), (0.2, 0.6, "t2", True), (0.2, 0.6, "t1ce", True),
    (0.2, 0.6, "t1", False), (0.6, 0.2, "t1", True), (0.4, 0.4, "flair", False)])
def test_orientation_rule_by_modality_contrast(c_in, c_out, modality, outside):
    assert tumour_is_outside(c_in, c_out, modality) is outside


def test_orientation_rule_refuses_an_unknown_modality():
    with pytest.raises(ValueError, match="modality must be one of"):
        tumour_is_outside(0.1, 0.2, "pd")


def test_slice_minmax_by_hand():
    images = torch.tensor([[[[0.0, 0.2], [0.4, 0.5]]], [[[0.3, 0.3], [0.3, 0.3]]]])
    expected = torch.tensor([[[[0.0, 0.4], [0.8, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    assert torch.allclose(slice_minmax(images), expected, atol=1e-6)


class ConstantLogits(ActiveContourUNet):
    """An ActiveContourUNet whose raw "inside" logit is fixed (for the pooled means)."""

    def __init__(self, logits):
        super().__init__((2, 2, 2, 2, 2, 2))
        self.fixed = torch.as_tensor(logits, dtype=torch.float32)

    def contour_logits(self, zscored):
        return self.fixed.expand(zscored.shape[0], 1, *self.fixed.shape)


def test_pooled_region_means_by_hand():
    # inside = the left column (logit +20 -> 1), outside the right (-20 -> 0); the air pixel
    # (0, 1) of slice 1 is not brain. Min-max per slice: slice 1 (0 .. 0.8) [[0.5, 0], [1, 0.25]],
    # slice 2 (0.2 .. 0.4, no air) [[1, 0], [0, 1]]. Inside: (0.5 + 1 + 1 + 0) / 4 = 0.625;
    # outside (brain): (0.25 + 0 + 1) / 3 = 5/12.
    net = ConstantLogits([[20.0, -20.0], [20.0, -20.0]])
    images = torch.tensor([[[[0.4, 0.0], [0.8, 0.2]]], [[[0.4, 0.2], [0.2, 0.4]]]])
    c_in, c_out = pooled_region_means(net, images, "cpu", batch_size=1)
    assert c_in == pytest.approx(0.625, abs=1e-6) and c_out == pytest.approx(5 / 12, abs=1e-6)


def test_cf_ul_trains_without_masks_orients_resumes_and_loads(tmp_path, one_thread):
    run = tiny_run(tmp_path)
    preset = tiny_preset(**tiny_settings("cf_ul"))
    history = train_cf_ul(run, "flair", preset, device="cpu", progress=False)
    assert len(history) == 2 and np.isfinite(history.column("train_loss")).all()
    assert {p.name for p in (run / "flair" / "cf_ul").iterdir()} >= {"log.csv", "last.pt", "best.pt"}
    again = train_cf_ul(run, "flair", preset, device="cpu", progress=False)
    assert again.resumed_epochs == 2
    net = load_cf_ul(run, "flair")
    orientation = torch.load(run / "flair" / "cf_ul" / "best.pt", weights_only=False)["config"]["orientation"]
    assert bool(net.flip) == orientation["flipped"] and orientation["tumour_is_bright"] is True
    # the oriented map's "tumour" is the brighter region of the training brains (FLAIR), by hand
    train = load_slices(run, "flair", "train", with_masks=False).images
    with torch.no_grad():
        tumour = torch.sigmoid(net(torch.from_numpy(train))).numpy()
    brain = train > 0
    x = train / train.max(axis=(1, 2, 3), keepdims=True)
    inside = (tumour * x)[brain].sum() / tumour[brain].sum()
    outside = ((1 - tumour) * x)[brain].sum() / (1 - tumour)[brain].sum()
    assert inside >= outside
    raw = (orientation["c_out"], orientation["c_in"]) if orientation["flipped"] else (orientation["c_in"],
                                                                                      orientation["c_out"])
    assert (inside, outside) == pytest.approx(raw, abs=1e-4)


def test_cf_ul_trains_on_a_subset_of_slices(tmp_path, one_thread):
    run = tiny_run(tmp_path)
    preset = tiny_preset(**tiny_settings("cf_ul", epochs=1, max_slices=4, batch_size=2))
    train_cf_ul(run, "flair", preset, device="cpu", progress=False)
    log = (run / "flair" / "cf_ul" / "log.csv").read_text()
    assert len(log.strip().splitlines()) == 2
    with pytest.raises(ValueError, match="max_slices must be >= 1"):
        train_cf_ul(tmp_path / "run", "flair", tiny_preset(**tiny_settings("cf_ul", max_slices=0)),
                    device="cpu", progress=False)


def test_cf_fsl_reads_training_masks_resumes_and_loads(tmp_path, one_thread, monkeypatch):
    import amecam_lib.baselines.cf as cf_module
    import amecam_lib.slices as slices_module

    run = tiny_run(tmp_path)
    read = []
    original = slices_module.read_training_masks_for_fully_supervised

    def recording(*args, **kwargs):
        read.append(args[:2])
        result = original(*args, **kwargs)
        assert result.split == "train" and result.masks is not None
        return result

    monkeypatch.setattr(cf_module, "read_training_masks_for_fully_supervised", recording)
    preset = tiny_preset(**tiny_settings("cf_fsl", flip=True, patch_size=(24, 24)))
    history = train_cf_fsl(run, "flair", preset, device="cpu", progress=False)
    assert read == [(run, "flair")] and len(history) == 2 and np.isfinite(history.column("train_loss")).all()
    again = train_cf_fsl(run, "flair", preset, device="cpu", progress=False)
    assert again.resumed_epochs == 2
    net = load_cf_fsl(run, "flair")
    assert not bool(net.flip)
    with torch.no_grad():
        assert net(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_load_before_training_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_cf_ul"):
        load_cf_ul(tmp_path, "flair")
    with pytest.raises(FileNotFoundError, match="train_cf_fsl"):
        load_cf_fsl(tmp_path, "flair")


def test_training_views_normalise_whole_slices_then_cut_one_window():
    from amecam_lib.baselines.cf import _views
    from amecam_lib.config import CfUlConfig

    torch.manual_seed(0)
    images = torch.zeros(2, 1, 6, 8)
    images[:, :, 1:5, 1:7] = torch.rand(2, 1, 4, 6) * 0.5 + 0.1          # brain in air
    masks = (images > 0.4).float()
    zscored, intensities, brain, cut = _views(images, masks, CfUlConfig(patch_size=(3, 4)))
    assert zscored.shape == intensities.shape == brain.shape == cut.shape == (2, 1, 3, 4)
    # find the window: the min-max is the WHOLE slice's (x / slice max), not the window's
    whole = images / images.amax(dim=(1, 2, 3), keepdim=True)
    hits = [(r, c) for r in range(4) for c in range(5)
            if torch.allclose(whole[..., r:r + 3, c:c + 4], intensities)]
    assert len(hits) >= 1
    row, col = hits[0]
    assert torch.equal(brain, images[..., row:row + 3, col:col + 4] > 0)
    assert torch.equal(cut, masks[..., row:row + 3, col:col + 4])
    assert torch.allclose(zscored, brain_zscore(images)[..., row:row + 3, col:col + 4])
