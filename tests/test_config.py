"""Presets and settings (amecam_lib.config): the slice geometry, square resampling or a crop."""

from __future__ import annotations

import pytest

from amecam_lib.config import (AUTHORS_PRETRAIN, PRETRAIN_MODES, DataConfig, PretrainConfig, get_preset,
                               with_geometry, zoomed_size)


def test_zoomed_size_rounds_halves_up():
    assert zoomed_size(160, 0.4) == 64 and zoomed_size(192, 0.4) == 77      # 64.0, 76.8
    assert zoomed_size(5, 0.5) == 3 and zoomed_size(7, 0.5) == 4            # 2.5 -> 3, 3.5 -> 4
    assert zoomed_size(160, 1.0) == 160


def test_image_shape_of_each_geometry():
    assert DataConfig().image_shape == (240, 240)
    assert DataConfig(image_size=None, crop_size=(160, 192)).image_shape == (160, 192)
    assert DataConfig(image_size=None, crop_size=[160, 192], crop_zoom=0.4).image_shape == (64, 77)
    assert DataConfig(image_size=None, crop_size=[160, 192]).crop_size == (160, 192)  # list -> tuple


def test_presets_geometry():
    assert get_preset("paper").data.image_shape == (240, 240)
    assert get_preset("demo").data.image_shape == (160, 192)
    smoke = get_preset("smoke").data
    assert (smoke.image_size, smoke.crop_size, smoke.crop_zoom) == (None, (160, 192), 0.4)


def test_conflicting_geometry_names_both_parameters():
    with pytest.raises(ValueError, match=r"image_size=240 and crop_size=\(160, 192\)"):
        DataConfig(crop_size=(160, 192))
    with pytest.raises(ValueError, match="image_size and crop_size are both None"):
        DataConfig(image_size=None)
    with pytest.raises(ValueError, match="crop_zoom=0.5 applies only with crop_size"):
        DataConfig(crop_zoom=0.5)


def test_overrides_switch_geometry():
    demo, smoke = get_preset("demo"), get_preset("smoke")
    cropped = demo.with_overrides(crop_size=[176, 208])
    assert (cropped.data.image_size, cropped.data.crop_size, cropped.data.crop_zoom) == (None, (176, 208), 1.0)
    resampled = smoke.with_overrides(**{"data.image_size": 96})
    assert (resampled.data.image_size, resampled.data.crop_size, resampled.data.crop_zoom) == (96, None, 1.0)
    assert smoke.with_overrides(crop_size=(176, 208)).data.crop_zoom == 0.4     # the preset's zoom kept
    assert smoke.with_overrides(crop_zoom=1.0).data.image_shape == (160, 192)
    assert smoke.with_overrides(image_size=None, crop_size=None, crop_zoom=None) == smoke
    with pytest.raises(ValueError, match=r"image_size=96 and crop_size=\(160, 192\) both given"):
        demo.with_overrides(image_size=96, crop_size=(160, 192))
    with pytest.raises(ValueError, match="crop_zoom"):
        demo.with_overrides(image_size=128).with_overrides(crop_zoom=0.5)
    assert demo.with_overrides(crop_zoom=0.5).data.image_shape == (80, 96)
    with pytest.raises(ValueError, match="crop_zoom=0.5 applies only with crop_size, not with image_size=96"):
        with_geometry(smoke.data, image_size=96, crop_zoom=0.5)


def test_authors_pretraining_overrides():
    assert PretrainConfig().mode == "supcon" and "simclr_authors" in PRETRAIN_MODES
    authors = get_preset("paper").with_overrides(**AUTHORS_PRETRAIN).pretrain
    assert (authors.mode, authors.optimizer, authors.lr, authors.min_lr, authors.projection_dim) == \
        ("simclr_authors", "sgd", 1e-3, 0.0, 256)
    assert (authors.batch_size, authors.epochs, authors.weight_decay, authors.temperature) == (512, 100, 1e-5, 0.07)
    assert get_preset("demo").with_overrides(**AUTHORS_PRETRAIN).pretrain.batch_size == 64   # the preset's
