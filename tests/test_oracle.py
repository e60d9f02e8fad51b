"""oracle: the per-pixel oracle M_f that reads the ground truth, by hand; its table on a tiny run;
and its refusal of every split but val."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from _tiny_run import one_thread  # noqa: F401  (fixture)
from amecam_lib.metrics import slice_scores
from amecam_lib.oracle import (COMPARED_METHODS, ORACLE_COLUMNS, ORACLE_METHODS, oracle_final_cam_with_masks,
                               oracle_fused_map_with_masks, oracle_scores_with_masks, oracle_verdict)

# two exits on a 1 x 4 slice; tumour = the first two pixels
EXIT_MAPS = torch.tensor([[[[1.0, 0.0, 0.0, 1.0]], [[0.0, 1.0, 0.0, 1.0]]]])     # (1, 2, 1, 4)
TUMOUR = torch.tensor([[[True, True, False, False]]])                             # (1, 1, 4)


def test_oracle_by_hand_with_two_exits():
    # M_f_oracle: max on tumour (1, 1), min elsewhere (0, 1)
    fused = oracle_fused_map_with_masks(EXIT_MAPS, TUMOUR)
    assert torch.equal(fused, torch.tensor([[[[1.0, 1.0, 0.0, 1.0]]]]))
    # final = n(mean(n(M_1), n(M_2), M_f)) = n([2/3, 2/3, 0, 1]) = [2/3, 2/3, 0, 1]
    cam = oracle_final_cam_with_masks(EXIT_MAPS, TUMOUR)
    assert torch.allclose(cam, torch.tensor([[[2 / 3, 2 / 3, 0.0, 1.0]]]))
    # threshold 0.5: [1, 1, 0, 1] against [1, 1, 0, 0]: Dice = 2 * 2 / (3 + 2) = 0.8
    mask = cam[0].numpy() >= 0.5
    assert slice_scores(mask, TUMOUR[0].numpy()).dice == pytest.approx(0.8)
    # in the brain only: pixel 3 is air -> n over pixels 0..2 of [2/3, 2/3, 0] = [1, 1, 0], 0 in the air: Dice 1
    region = torch.tensor([[[True, True, True, False]]])
    cam_in_brain = oracle_final_cam_with_masks(EXIT_MAPS, TUMOUR, region)
    assert torch.allclose(cam_in_brain, torch.tensor([[[1.0, 1.0, 0.0, 0.0]]]))


def test_oracle_shape_errors():
    with pytest.raises(ValueError, match="tumour_masks"):
        oracle_fused_map_with_masks(EXIT_MAPS, TUMOUR[:, :, :2])


@pytest.mark.parametrize("split", ["test", "train"])
def test_the_oracle_refuses_every_split_but_val(tmp_path, split):
    from _tiny_run import tiny_preset

    with pytest.raises(ValueError, match=f"split='{split}'"):
        oracle_scores_with_masks(tmp_path, "flair", tiny_preset(), split=split)


def test_the_verdict_reads_the_table():
    def table(avg_me, ame_cam, oracle):
        return pd.DataFrame({"method": ["avg_me", "m_f", "ame_cam", "oracle_m_f", "oracle_ame_cam"],
                             "dice_mean": [avg_me, 0.0, ame_cam, 1.0, oracle]})
    assert "no choice of A can win" in oracle_verdict(table(0.50, 0.49, 0.53))
    assert "chose badly" in oracle_verdict(table(0.40, 0.41, 0.70))
    assert "as well as the exits allow" in oracle_verdict(table(0.40, 0.68, 0.70))


def test_oracle_table_on_a_tiny_run(tmp_path, one_thread):
    from _tiny_run import tiny_preset, tiny_run
    from amecam_lib.aggregation import train_attention

    run = tiny_run(tmp_path)
    preset = tiny_preset(**{"evaluation.restrict_to_brain": True})
    train_attention(run, "flair", preset, device="cpu", progress=False)
    table = oracle_scores_with_masks(run, "flair", preset, device="cpu")
    assert list(table.columns) == list(ORACLE_COLUMNS)
    assert list(table["method"]) == list(COMPARED_METHODS + ORACLE_METHODS)
    assert (table["n_slices"] == 3).all() and table["dice_mean"].between(0, 1).all()
    assert list(table["uses_masks"]) == [False, False, False, True, True]
    assert np.isfinite(table["dice_std"]).all()
