"""cams.score_cam on a hand-set linear network (tests/_hand_nets.py); no progress bars.

Last stage [x, 1 - x] (both in [0, 1], so their min-max masks are x and 1 - x); the tumour logit of
a slice y is mean(2y - 1), so the masked slices score 2 mean(x * x) - 1 and 2 mean(x (1 - x)) - 1;
softmax weights w0, w1; the map w0 x + w1 (1 - x) is n(x) when w0 > w1, i.e. when
sum(x^2) > sum(x (1 - x)), and n(1 - x) otherwise.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import tqdm

from _hand_nets import LinearStagesNet
from amecam_lib.cams.base import CamBatch, CamNetworks
from amecam_lib.cams.score_cam import ScoreCam, _without_progress_bars


def test_score_cam_by_hand():
    bright = torch.full((4, 4), 0.9)      # sum x^2 = 1 + 14 * 0.81 = 12.34 > sum x(1 - x) = 1.26
    dim = torch.full((4, 4), 0.3)         # sum x^2 = 1 + 14 * 0.09 = 2.26 < sum x(1 - x) = 2.94
    for slice_ in (bright, dim):
        slice_[0, 0], slice_[3, 3] = 0.0, 1.0
    images = torch.stack([bright, dim])[:, None]
    cam = ScoreCam()(CamBatch(images, CamNetworks(LinearStagesNet(), score_cam_batch_size=1)))
    assert cam.shape == (2, 4, 4) and cam.dtype == torch.float32
    np.testing.assert_allclose(cam[0].numpy(), bright.numpy(), atol=1e-5)
    np.testing.assert_allclose(cam[1].numpy(), 1.0 - dim.numpy(), atol=1e-5)


def test_progress_bars_are_dropped_and_warnings_kept(capsys):
    with pytest.warns(UserWarning, match="kept"):
        with _without_progress_bars():
            for _ in tqdm.tqdm(range(3), disable=False):   # a bar, whatever TQDM_DISABLE says
                pass
            warnings.warn("kept", UserWarning)
    assert "3/3" not in capsys.readouterr().err


def test_score_cam_of_a_non_square_slice_is_not_transposed():
    bright = torch.full((3, 5), 0.9)
    bright[0, 4], bright[2, 0], bright[1, 1] = 0.0, 1.0, 0.5     # sum x^2 > sum x (1 - x): the map is n(x)
    cam = ScoreCam()(CamBatch(bright[None, None], CamNetworks(LinearStagesNet(), score_cam_batch_size=2)))
    assert cam.shape == (1, 3, 5)
    np.testing.assert_allclose(cam[0].numpy(), bright.numpy(), atol=1e-5)
