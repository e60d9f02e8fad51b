"""cams.registry: the stable names, one object per method, ame_cam_crf = ame_cam."""

from __future__ import annotations

import pytest

from amecam_lib.cams.base import CamMethod
from amecam_lib.cams.exits import EXIT_MAPS
from amecam_lib.cams.gradient_pass import GRADIENTS
from amecam_lib.cams.registry import (CRF_METHODS, GRADIENT_METHODS, METHODS, REGISTRY, SUPERVISION, get_method,
                                      reference_networks)


def test_the_stable_names_in_table_order():
    assert METHODS == ("ame_cam_crf", "ame_cam", "avg_me", "m_f", "exit1", "exit2", "exit3", "exit4", "exit2_3",
                       "grad_cam", "layer_cam", "layer_cam_last", "score_cam", "swin_mil", "intensity", "avg_me_c2am",
                       "lfi_cam",
                       "unet_fsl", "cf_ul", "cf_fsl")


def test_paper_types_and_reference_networks():
    assert SUPERVISION["unet_fsl"] == "FSL" and SUPERVISION["intensity"] == "UL"
    assert SUPERVISION["cf_ul"] == "UL" and SUPERVISION["cf_fsl"] == "FSL"
    assert {name for name, kind in SUPERVISION.items() if kind == "WSSS"} == \
        set(METHODS) - {"unet_fsl", "intensity", "cf_ul", "cf_fsl"}
    assert reference_networks(["ame_cam", "grad_cam"]) == set()
    assert reference_networks(["unet_fsl", "avg_me_c2am", "bogus"]) == {"unet_fsl", "c2am_head"}
    assert SUPERVISION["lfi_cam"] == "WSSS" and reference_networks(["lfi_cam"]) == {"lfi_cam"}
    assert reference_networks(["cf_ul", "cf_fsl"]) == {"cf_ul", "cf_fsl"}
    assert SUPERVISION["swin_mil"] == "WSSS" and reference_networks(["swin_mil"]) == {"swin_mil"}


def test_each_name_is_a_method_of_that_name():
    for name, method in REGISTRY.items():
        assert isinstance(method, CamMethod)
        assert method.name == CRF_METHODS.get(name, name)
    assert get_method("ame_cam_crf") is get_method("ame_cam")       # the CRF acts on masks, later
    assert len({id(method) for method in REGISTRY.values()}) == len(METHODS) - 1


def test_shared_passes_are_declared_not_dispatched_by_name():
    assert {n for n, m in REGISTRY.items() if m.shared_pass is EXIT_MAPS} == \
        {"ame_cam_crf", "ame_cam", "avg_me", "m_f", "exit1", "exit2", "exit3", "exit4", "exit2_3", "avg_me_c2am"}
    assert GRADIENT_METHODS == ("grad_cam", "layer_cam", "layer_cam_last")
    assert get_method("score_cam").shared_pass is None and get_method("intensity").shared_pass is None
    assert get_method("grad_cam").shared_pass is GRADIENTS


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown CAM method 'grad_cam_plus'"):
        get_method("grad_cam_plus")
