"""Masks enter training in one place only: the fully supervised reference rows (issue 9).

Every weakly supervised or unsupervised phase (SupCon pretraining, the multi-exit network, both
attention networks, C2AM's class-agnostic head, LFI-CAM's network, Swin-MIL, C&F without labels ``cf_ul``) runs
on the tiny synthetic run while every route to a stored mask raises: the library's mask reader
(``slices.read_stored_masks``), the slice store's array opener on a ``wt.npy`` file, and
``numpy.load`` of a ``wt.npy`` file. The fully supervised phases (the U-Net ``unet_fsl``, C&F with
labels ``cf_fsl``), which must read the training patients' masks, do trip it (the guard works)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

import amecam_lib.slices as slices_module
import amecam_lib.slicing as slicing_module
from _tiny_run import one_thread, tiny_preset, tiny_run  # noqa: F401  (fixture)


class MaskRead(AssertionError):
    """A weakly supervised phase opened a mask."""


@contextlib.contextmanager
def masks_forbidden():
    """Within the block, every route to a stored mask raises :class:`MaskRead`."""
    def forbidden_reader(*args, **kwargs):
        raise MaskRead(f"a mask was read: read_stored_masks{args}")

    def guarded(original):
        def opener(path, *args, **kwargs):
            if Path(str(path)).name == "wt.npy":
                raise MaskRead(f"a mask file was opened: {path}")
            return original(path, *args, **kwargs)
        return opener

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(slices_module, "read_stored_masks", forbidden_reader)
        patch.setattr(slices_module, "open_stored_array", guarded(slices_module.open_stored_array))
        patch.setattr(slicing_module, "open_stored_array", guarded(slicing_module.open_stored_array))
        patch.setattr(np, "load", guarded(np.load))
        yield


@pytest.mark.filterwarnings("ignore:.*was made with another config")
def test_no_weakly_supervised_phase_reads_a_mask(tmp_path, one_thread):
    from amecam_lib.aggregation import attention_weight_report, train_attention
    from amecam_lib.baselines.c2am_refine import train_c2am_head
    from amecam_lib.baselines.cf import train_cf_ul
    from amecam_lib.baselines.lfi_cam import train_lfi_cam
    from amecam_lib.baselines.swin_mil import train_swin_mil
    from amecam_lib.phases import pretrain_supcon, train_multi_exit

    run = tiny_run(tmp_path)                                   # sliced before the guard matters
    (run / "flair" / "multi_exit" / "best.pt").unlink()        # train the classifier here
    preset = tiny_preset(**{"pretrain.batch_size": 8, "multi_exit.epochs": 1, "multi_exit.batch_size": 8,
                            "c2am_refine.head_batch_size": 4, "lfi_cam.batch_size": 4, "lfi_cam.fin_hidden": 4,
                            "cf_ul.channels": (2, 2, 4, 4, 4, 2), "cf_ul.batch_size": 4,
                            "swin_mil.embed_dim": 4, "swin_mil.depths": (1, 1, 1),
                            "swin_mil.num_heads": (1, 1, 1), "swin_mil.window_size": 2, "swin_mil.patch_size": 2,
                            "swin_mil.epochs": 1, "swin_mil.batch_size": 4})
    with masks_forbidden():
        for lazy in (False, True):                             # in memory, and read lazily from the store
            settings = preset.with_overrides(**{"compute.lazy_slices": lazy, "seed": int(lazy)})
            pretrain_supcon(run, "flair", settings, device="cpu", progress=False)
            train_multi_exit(run, "flair", settings, device="cpu", progress=False)
            for exits in ((1, 2, 3, 4), (2, 3)):
                train_attention(run, "flair", settings, exits=exits, device="cpu", progress=False)
            attention_weight_report(run, "flair", settings, device="cpu")
            train_c2am_head(run, "flair", settings, device="cpu", progress=False)
            train_lfi_cam(run, "flair", settings, device="cpu", progress=False)
            train_cf_ul(run, "flair", settings, device="cpu", progress=False)
            train_swin_mil(run, "flair", settings, device="cpu", progress=False)


def test_the_guard_catches_the_fully_supervised_reader(tmp_path, one_thread):
    from amecam_lib.baselines.cf import train_cf_fsl
    from amecam_lib.baselines.unet_fsl import train_unet_fsl

    run = tiny_run(tmp_path)
    with masks_forbidden():
        with pytest.raises(MaskRead):
            train_unet_fsl(run, "flair", tiny_preset(), device="cpu", progress=False)
        with pytest.raises(MaskRead):
            train_cf_fsl(run, "flair", tiny_preset(), device="cpu", progress=False)
        with pytest.raises(MaskRead):
            slices_module.load_slices(run, "flair", "val")      # the default reads masks (evaluation)
