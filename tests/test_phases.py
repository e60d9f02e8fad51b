"""Phase 1 wired to a run folder (amecam_lib.phases), on the real sample sliced at 64 px."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from _tiny_run import one_thread  # noqa: F401  (fixture)
from amecam_lib.config import AUTHORS_PRETRAIN, get_preset
from amecam_lib.models.multi_exit import MultiExitResNet
from amecam_lib.models.projection import load_pretrained_backbone
from amecam_lib.phases import (SELECT_MODES, best_multi_exit_choice, embed, evaluate_exits, load_multi_exit,
                               phase_dir, predict_exits, pretrain_supcon, train_multi_exit)
from amecam_lib.slices import load_slices
from amecam_lib.training import CHECKPOINT_FORMAT, load_checkpoint

METRICS = [f"{kind}_exit{i}" for kind in ("acc", "auc") for i in range(1, 5)]


@pytest.fixture(scope="module")
def trained_run(sliced_run):
    """SupCon for one epoch, then three multi-exit epochs (smoke preset, FLAIR, 64 x 77 px crops)."""
    preset = get_preset("smoke").with_overrides(**{"multi_exit.epochs": 3})
    pretrain_history = pretrain_supcon(sliced_run, "flair", preset, device="cpu", progress=False)
    multi_exit_history = train_multi_exit(sliced_run, "flair", preset, device="cpu", progress=False)
    return SimpleNamespace(run_dir=sliced_run, preset=preset, pretrain=pretrain_history,
                           multi_exit=multi_exit_history)


@pytest.mark.slow
def test_pretrain_writes_checkpoints_and_finite_loss(trained_run):
    out_dir = phase_dir(trained_run.run_dir, "flair", "pretrain")
    assert {"log.csv", "last.pt", "best.pt"} <= {p.name for p in out_dir.iterdir()}
    assert len(trained_run.pretrain) == 1 and np.isfinite(trained_run.pretrain.last["train_loss"])


@pytest.mark.slow
def test_multi_exit_loss_goes_down_and_metrics_are_logged(trained_run):
    history = trained_run.multi_exit
    losses = history.column("train_loss")
    assert len(losses) == 3 and losses[-1] < losses[0]
    for name in METRICS:
        assert all(0.0 <= value <= 1.0 for value in history.column(name))
    # best.pt is the epoch with the best preset.multi_exit.select_by (smoke: lowest val_loss),
    # the later epoch on a tie
    select_by = trained_run.preset.multi_exit.select_by
    values = history.column(select_by)
    best_value = max(values) if SELECT_MODES[select_by] == "max" else min(values)
    last_best_epoch = max(i for i, value in enumerate(values, start=1) if value == best_value)
    assert history.best_value == best_value and history.best_epoch == last_best_epoch
    best_auc = history.records[history.best_epoch - 1]["auc_exit4"]
    with open(phase_dir(trained_run.run_dir, "flair", "multi_exit") / "val_metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["exit"] for row in rows] == ["1", "2", "3", "4"]
    assert float(rows[3]["auc"]) == pytest.approx(best_auc, abs=1e-6)


@pytest.mark.slow
def test_rerun_returns_the_finished_history(trained_run):
    again = train_multi_exit(trained_run.run_dir, "flair", trained_run.preset, device="cpu", progress=False)
    assert again.resumed_epochs == 3 and again.records == trained_run.multi_exit.records


@pytest.mark.slow
def test_load_multi_exit_reproduces_logged_validation(trained_run):
    net = load_multi_exit(trained_run.run_dir, "flair", "best")
    assert isinstance(net, MultiExitResNet) and not net.training
    val_set = load_slices(trained_run.run_dir, "flair", "val")
    metrics = evaluate_exits(net, val_set, device="cpu")
    best = trained_run.multi_exit.records[trained_run.multi_exit.best_epoch - 1]
    for name in METRICS:
        assert metrics[name] == pytest.approx(best[name], abs=1e-5)
    probabilities = predict_exits(net, val_set.images[:5])
    assert probabilities.shape == (5, 4) and probabilities.dtype == np.float32
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


@pytest.mark.slow
def test_embed_pretrained_and_untrained(trained_run):
    images = load_slices(trained_run.run_dir, "flair", "val").images[:6]
    pretrained = embed(trained_run.run_dir, "flair", images, which="pretrain")
    untrained = embed(trained_run.run_dir, "flair", images, which="untrained")
    assert pretrained.shape == untrained.shape == (6, 512) and pretrained.dtype == np.float32
    assert not np.allclose(pretrained, untrained)
    with pytest.raises(ValueError, match="which"):
        embed(trained_run.run_dir, "flair", images, which="imagenet")


@pytest.mark.slow
def test_best_multi_exit_choice_of_the_smoke_run(trained_run):
    # the smoke preset selects by the validation loss, lowest wins
    history = trained_run.multi_exit
    assert best_multi_exit_choice(trained_run.run_dir, "flair") == (
        f"best.pt = epoch {history.best_epoch} of 3, chosen by val_loss (lowest, Eq. 1 on the val split) "
        f"= {history.best_value:.4f}")


def test_best_multi_exit_choice_reads_the_checkpoint(tmp_path):
    # a checkpoint chosen by the last exit's AUC says so, whatever today's preset
    path = phase_dir(tmp_path, "flair", "multi_exit") / "best.pt"
    path.parent.mkdir(parents=True)
    torch.save({"format": CHECKPOINT_FORMAT, "model": {}, "epoch": 7, "epochs": 10, "best_value": 0.93126,
                "monitor": "auc_exit4", "config": {"multi_exit": {"select_by": "auc_exit4"}}}, path)
    assert best_multi_exit_choice(tmp_path, "flair") == (
        "best.pt = epoch 7 of 10, chosen by auc_exit4 (highest, ROC AUC of exit 4 on the val split) = 0.9313")
    with pytest.raises(FileNotFoundError, match="train it first"):
        best_multi_exit_choice(tmp_path, "t1")


def test_evaluate_exits_by_hand_and_single_class_error():
    class ConstantExits(MultiExitResNet):
        """Exit i scores slice n with logit (n - 1.5) * sign_i: exits 1-2 rank perfectly, 3-4 inversely."""

        def forward(self, images):
            base = images.flatten(1).mean(1, keepdim=True) * 4 - 1.5
            return SimpleNamespace(logits=torch.cat([base, base, -base, -base], dim=1))

    images = torch.stack([torch.full((1, 8, 8), n / 4) for n in range(4)]).numpy()   # logits -1.5..1.5
    slice_set = SimpleNamespace(images=images, labels=np.array([0, 0, 1, 1]))
    metrics = evaluate_exits(ConstantExits(), slice_set, device="cpu")
    assert [metrics[f"auc_exit{i}"] for i in range(1, 5)] == [1.0, 1.0, 0.0, 0.0]
    assert [metrics[f"acc_exit{i}"] for i in range(1, 5)] == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="4 normal and 0 tumour"):
        evaluate_exits(ConstantExits(), SimpleNamespace(images=images, labels=np.zeros(4)), name="val split")


def test_load_multi_exit_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no multi-exit checkpoint"):
        load_multi_exit(tmp_path, "flair")
    with pytest.raises(ValueError, match="modality"):
        phase_dir(tmp_path, "pd", "pretrain")


def test_checkpoint_config_carries_the_split_and_data_fingerprints(tmp_path):
    """A run folder re-sliced with another split, or from changed source files, must not resume
    models trained on the old slices."""
    import json

    from amecam_lib.phases import checkpoint_data_config

    for case_id in "ABC":
        (tmp_path / "slices" / case_id).mkdir(parents=True)
        (tmp_path / "slices" / case_id / "case.json").write_text(json.dumps(
            {"sources": {"flair": {"file": f"{case_id}_flair.nii.gz", "bytes": 10, "sha256": "0" * 64}},
             "settings": {"format": 3}}))
    (tmp_path / "split.csv").write_text("case_id,split\nA,train\nB,val\nC,test\n")
    before = checkpoint_data_config(tmp_path, get_preset("smoke"))
    (tmp_path / "split.csv").write_text("case_id,split\nA,test\nB,val\nC,train\n")
    after = checkpoint_data_config(tmp_path, get_preset("smoke"))
    assert before["crop_size"] == (160, 192) and before["crop_zoom"] == 0.4
    assert before["split_fingerprint"] != after["split_fingerprint"]
    assert before["data_fingerprint"] != after["data_fingerprint"]
    info_path = tmp_path / "slices" / "B" / "case.json"
    info_path.write_text(info_path.read_text().replace("0" * 64, "1" * 64))   # B re-sliced from another file
    changed = checkpoint_data_config(tmp_path, get_preset("smoke"))
    assert changed["split_fingerprint"] == after["split_fingerprint"]
    assert changed["data_fingerprint"] != after["data_fingerprint"]


def test_pretrain_simclr_authors_on_a_tiny_run(tmp_path, one_thread):
    """The authors' pretraining (AUTHORS_PRETRAIN): no labels, no L2 normalisation, a 256-d head
    without the first bias, plain SGD lr 1e-3; its backbone initialises the multi-exit network and
    ``embed`` rebuilds the network from the checkpoint."""
    from _tiny_run import tiny_preset, tiny_run

    run = tiny_run(tmp_path)
    preset = tiny_preset(**AUTHORS_PRETRAIN, **{"pretrain.epochs": 1, "pretrain.batch_size": 8})
    history = pretrain_supcon(run, "flair", preset, device="cpu", progress=False)
    assert len(history) == 1 and np.isfinite(history.last["train_loss"])
    last = load_checkpoint(phase_dir(run, "flair", "pretrain") / "last.pt")
    assert last["config"]["pretrain"]["mode"] == "simclr_authors"
    sgd = last["optimizer"]["param_groups"]
    assert len(sgd) == 1 and sgd[0]["momentum"] == 0.0 and sgd[0]["initial_lr"] == 1e-3
    assert sgd[0]["weight_decay"] == 1e-5
    state = last["model"]
    assert tuple(state["head.layers.2.weight"].shape) == (256, 512) and "head.layers.0.bias" not in state
    net = MultiExitResNet()
    assert load_pretrained_backbone(net, state) == len(net.backbone.state_dict())
    images = load_slices(run, "flair", "val").images[:3]
    assert embed(run, "flair", images, which="pretrain").shape == (3, 512)


def test_a_pretraining_on_changed_slices_is_not_resumed(tmp_path, one_thread):
    """Resume is decided by the slices' content: a train case's FLAIR replaced by another volume and
    re-sliced (same split, same settings) changes the checkpoint config's data fingerprint, so the
    finished pretraining is set aside and redone instead of being returned (the split fingerprint
    alone did not change)."""
    from _tiny_run import SIZE, tiny_preset, tiny_run
    from _synthetic import write_case
    from amecam_lib.config import DataConfig
    from amecam_lib.slicing import slice_dataset

    run = tiny_run(tmp_path)
    preset = tiny_preset(**{"pretrain.epochs": 1, "pretrain.batch_size": 8})
    pretrain_supcon(run, "flair", preset, device="cpu", progress=False)
    assert pretrain_supcon(run, "flair", preset, device="cpu", progress=False).resumed_epochs == 1   # unchanged
    config_before = load_checkpoint(phase_dir(run, "flair", "pretrain") / "last.pt")["config"]["data"]
    case_id = "BraTS2021_00001"                                        # a train case
    flair = np.zeros((SIZE, SIZE, 6), np.int16)
    flair[4:28, 4:28, :] = 250                                          # another brain
    write_case(tmp_path / "data", case_id, shape=flair.shape, images={"flair": flair},
               seg=np.zeros(flair.shape, np.uint8))
    with pytest.warns(UserWarning, match=f"{case_id}: the content of its source file"):
        slice_dataset(tmp_path / "data", run, DataConfig(modalities=("flair",), image_size=SIZE),
                      split_file=tmp_path / "split.csv", progress=False)
    with pytest.warns(UserWarning, match="another config"):
        history = pretrain_supcon(run, "flair", preset, device="cpu", progress=False)
    assert history.resumed_epochs == 0
    config_after = load_checkpoint(phase_dir(run, "flair", "pretrain") / "last.pt")["config"]["data"]
    assert config_after["split_fingerprint"] == config_before["split_fingerprint"]
    assert config_after["data_fingerprint"] != config_before["data_fingerprint"]


def test_a_multi_exit_network_started_from_other_pretrained_weights_is_not_resumed(tmp_path, one_thread):
    """The multi-exit network starts from pretrain/best.pt: pretrained again to other weights (same
    epoch count and settings), the finished multi-exit training is redone, not returned."""
    import dataclasses

    from _tiny_run import tiny_preset, tiny_run
    from amecam_lib.phases import pretrain_network

    run = tiny_run(tmp_path)
    preset = tiny_preset(**{"multi_exit.epochs": 1, "multi_exit.batch_size": 8})
    pretrain_path = phase_dir(run, "flair", "pretrain") / "best.pt"
    pretrain_path.parent.mkdir(parents=True, exist_ok=True)

    def save_pretrained(seed):
        torch.manual_seed(seed)
        net = pretrain_network(preset.multi_exit.arch, preset.multi_exit.norm, dataclasses.asdict(preset.pretrain))
        torch.save({"format": CHECKPOINT_FORMAT, "model": net.state_dict(), "epoch": 1,
                    "config": {"pretrain": dataclasses.asdict(preset.pretrain)}}, pretrain_path)

    save_pretrained(1)
    train_multi_exit(run, "flair", preset, device="cpu", progress=False)
    assert train_multi_exit(run, "flair", preset, device="cpu", progress=False).resumed_epochs == 1
    save_pretrained(2)
    with pytest.warns(UserWarning, match="another config.*weights_sha256"):
        history = train_multi_exit(run, "flair", preset, device="cpu", progress=False)
    assert history.resumed_epochs == 0


# --- slice_subset: the fixed training subset of the baselines ----------------------------------------------

class _NumberedSlices(torch.utils.data.Dataset):
    """Slice i is a 1 x 2 x 2 image filled with i; labels 1 at 0 and 3, else 0 (2 tumour, 6 normal)."""
    labels = [1, 0, 0, 1, 0, 0, 0, 0]

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return torch.full((1, 2, 2), float(index)), self.labels[index]


def test_slice_subset_keeps_all_or_draws_a_seeded_sorted_subset_with_labels():
    from amecam_lib.phases import slice_subset
    dataset = _NumberedSlices()
    assert slice_subset(dataset, None, 0) is dataset and slice_subset(dataset, 8, 0) is dataset
    assert slice_subset(dataset, 100, 0) is dataset
    subset = slice_subset(dataset, 3, seed=5)
    assert len(subset) == 3 and list(subset.indices) == sorted(set(subset.indices))
    assert list(subset.indices) == list(slice_subset(dataset, 3, seed=5).indices)   # fixed by the seed
    assert subset.labels == [dataset.labels[index] for index in subset.indices]
    assert [int(subset[i][0][0, 0, 0]) for i in range(3)] == list(subset.indices)   # the items are those slices
    with pytest.raises(ValueError, match="preset.cf_ul.max_slices must be >= 1"):
        slice_subset(dataset, 0, 0, name="preset.cf_ul.max_slices")


def test_slice_subset_with_labels_keeps_each_class_share():
    from amecam_lib.phases import slice_subset
    dataset = _NumberedSlices()
    for seed in range(5):
        # 4 of 8: round(4 * 2/8) = 1 tumour slice, round(4 * 6/8) = 3 normal ones
        subset = slice_subset(dataset, 4, seed, labels=dataset.labels)
        assert len(subset) == 4 and sum(subset.labels) == 1
        # 2 of 8: round(2 * 2/8) = round(0.5) = 0, but each class present keeps one slice: 1 + 1
        assert sorted(slice_subset(dataset, 2, seed, labels=dataset.labels).labels) == [0, 1]
        # 7 of 8: round(7 * 2/8) = 2 tumour (all of them), 5 normal
        assert sorted(slice_subset(dataset, 7, seed, labels=dataset.labels).labels) == [0] * 5 + [1] * 2
    with pytest.raises(ValueError, match="max_train_slices must be >= 2"):
        slice_subset(dataset, 1, 0, labels=dataset.labels, name="preset.swin_mil.max_train_slices")
    with pytest.raises(ValueError, match="labels must be 8 values"):
        slice_subset(dataset, 4, 0, labels=[0, 1, 2, 0, 0, 0, 0, 0])
