"""The shared training loop (amecam_lib.training): schedule, logs, checkpoints, resume."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from amecam_lib.training import fit, load_checkpoint

CONFIG = {"phase": "test", "model": {"hidden": 8, "epochs": 4}, "seed": 0}


def _problem(seed=0):
    """A small regression y = x . w with a shuffled loader (shuffle uses torch's global RNG)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(64, 5, generator=generator)
    targets = inputs @ torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0])
    return DataLoader(TensorDataset(inputs, targets), batch_size=16, shuffle=True)


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1))


class CountingStep:
    """train_step that counts calls and can stop the run at a given epoch (a simulated kill)."""

    def __init__(self, fail_at_call=None):
        self.calls, self.fail_at_call = 0, fail_at_call

    def __call__(self, model, batch, device):
        self.calls += 1
        if self.fail_at_call is not None and self.calls == self.fail_at_call:
            raise KeyboardInterrupt("simulated kill")
        inputs, targets = (item.to(device) for item in batch)
        return nn.functional.mse_loss(model(inputs).squeeze(1), targets)


def _fit(out_dir, step, epochs=4, config=CONFIG, **kwargs):
    return fit(_model(), train_step=step, train_loader=_problem(), epochs=epochs, lr=0.05, min_lr=0.001,
               out_dir=out_dir, config=config, device="cpu", seed=3, progress=False, **kwargs)


def test_fit_writes_log_and_checkpoints_and_loss_goes_down(tmp_path):
    history = _fit(tmp_path, CountingStep())
    assert [r["epoch"] for r in history.records] == [1, 2, 3, 4]
    losses = history.column("train_loss")
    assert losses[-1] < 0.6 * losses[0]
    with open(tmp_path / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "seconds"] and len(rows) == 4
    assert float(rows[2]["train_loss"]) == pytest.approx(losses[2])
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 4 and "optimizer" in last and "rng" in last
    assert last["config"] == CONFIG
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 4 and history.best_epoch == 4 and "optimizer" not in best


def test_cosine_schedule_per_epoch(tmp_path):
    history = _fit(tmp_path, CountingStep())
    expected = [0.001 + (0.05 - 0.001) * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert history.column("lr") == pytest.approx(expected, rel=1e-6)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    straight_model = _model()
    fit(straight_model, train_step=CountingStep(), train_loader=_problem(), epochs=4, lr=0.05, min_lr=0.001,
        out_dir=tmp_path / "straight", config=CONFIG, device="cpu", seed=3, progress=False)

    steps_per_epoch = 4
    with pytest.raises(KeyboardInterrupt):      # killed during epoch 3
        _fit(tmp_path / "resumed", CountingStep(fail_at_call=2 * steps_per_epoch + 2))
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 2

    step = CountingStep()
    resumed_model = _model()
    history = fit(resumed_model, train_step=step, train_loader=_problem(), epochs=4, lr=0.05, min_lr=0.001,
                  out_dir=tmp_path / "resumed", config=CONFIG, device="cpu", seed=3, progress=False)
    assert step.calls == 2 * steps_per_epoch                   # only epochs 3 and 4 ran
    assert history.resumed_epochs == 2 and [r["epoch"] for r in history.records] == [1, 2, 3, 4]
    for straight, resumed in zip(straight_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(straight, resumed, rtol=0, atol=0)


def test_finished_run_returns_immediately_with_its_weights(tmp_path):
    first = _fit(tmp_path, CountingStep())
    step, model = CountingStep(), _model()
    again = fit(model, train_step=step, train_loader=_problem(), epochs=4, lr=0.05, min_lr=0.001,
                out_dir=tmp_path, config=CONFIG, device="cpu", seed=3, progress=False)
    assert step.calls == 0
    assert again.records == first.records and again.best_epoch == first.best_epoch
    saved = load_checkpoint(tmp_path / "last.pt")["model"]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name])


def test_more_epochs_extend_a_finished_run(tmp_path):
    _fit(tmp_path, CountingStep(), epochs=2)
    step = CountingStep()
    history = _fit(tmp_path, step, epochs=3)
    assert step.calls == 4 and [r["epoch"] for r in history.records] == [1, 2, 3]
    # the third epoch runs at the cosine value of a 3-epoch schedule
    assert history.records[2]["lr"] == pytest.approx(0.001 + 0.049 * (1 + math.cos(2 * math.pi / 3)) / 2, rel=1e-6)


def test_changed_config_starts_fresh_with_a_warning(tmp_path):
    _fit(tmp_path, CountingStep())
    step = CountingStep()
    with pytest.warns(UserWarning, match="another config"):
        history = _fit(tmp_path, step, config={**CONFIG, "model": {"hidden": 16}})
    assert step.calls == 16 and history.resumed_epochs == 0
    assert (tmp_path / "last.superseded.pt").is_file()
    assert load_checkpoint(tmp_path / "last.pt")["config"]["model"] == {"hidden": 16}


def test_nan_loss_raises_with_epoch_and_step(tmp_path):
    def nan_step(model, batch, device):
        nan_step.calls += 1
        loss = CountingStep()(model, batch, device)
        return loss * float("nan") if nan_step.calls == 6 else loss
    nan_step.calls = 0
    with pytest.raises(FloatingPointError, match="epoch 2, step 2"):
        _fit(tmp_path, nan_step)


def test_monitor_picks_best_checkpoint(tmp_path):
    scores = iter([0.5, 0.9, 0.7, 0.8])
    history = _fit(tmp_path, CountingStep(), evaluate=lambda model, device: {"auc": next(scores)},
                   monitor="auc", monitor_mode="max")
    assert history.best_epoch == 2 and history.best_value == 0.9
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    assert history.column("auc") == [0.5, 0.9, 0.7, 0.8]
    with open(tmp_path / "log.csv") as handle:
        assert next(csv.reader(handle)) == ["epoch", "lr", "train_loss", "seconds", "auc"]


def test_monitor_min_mode(tmp_path):
    losses = iter([3.0, 2.0, 2.5, 1.0])
    history = _fit(tmp_path, CountingStep(), evaluate=lambda model, device: {"val_loss": next(losses)},
                   monitor="val_loss", monitor_mode="min")
    assert history.best_epoch == 4


def test_sgd_and_params_subset(tmp_path):
    model = _model()
    frozen = [p.clone() for p in model[0].parameters()]
    fit(model, train_step=CountingStep(), train_loader=_problem(), epochs=1, lr=0.01, out_dir=tmp_path,
        config=CONFIG, params=model[2].parameters(), optimizer="sgd", device="cpu", progress=False)
    for before, after in zip(frozen, model[0].parameters()):
        assert torch.equal(before, after)


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="optimizer"):
        _fit(tmp_path, CountingStep(), optimizer="rmsprop")
    with pytest.raises(ValueError, match="epochs"):
        _fit(tmp_path, CountingStep(), epochs=0)
    with pytest.raises(ValueError, match="monitor"):
        _fit(tmp_path / "m", CountingStep(), evaluate=lambda model, device: {"auc": 1.0}, monitor="acc")
    with pytest.raises(ValueError, match="no batch"):
        fit(_model(), train_step=CountingStep(), train_loader=[], epochs=1, lr=0.1, out_dir=tmp_path / "e",
            config=CONFIG, device="cpu", progress=False)


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an amecam_lib checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_pick_device_and_seeding():
    import random

    import numpy as np

    from amecam_lib.device import pick_device, seed_everything

    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")
    seed_everything(5)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_best_epoch_tie_goes_to_the_later_epoch():
    from amecam_lib.training import History, _update_best

    history = History(monitor="auc_exit4", monitor_mode="max")
    assert _update_best(history, {"epoch": 1, "auc_exit4": 1.0})
    assert _update_best(history, {"epoch": 2, "auc_exit4": 1.0})
    assert not _update_best(history, {"epoch": 3, "auc_exit4": 0.99})
    assert history.best_epoch == 2
    losses = History(monitor="val_loss", monitor_mode="min")
    for epoch, loss in enumerate([0.9, 0.5, 0.7], start=1):
        _update_best(losses, {"epoch": epoch, "val_loss": loss})
    assert losses.best_epoch == 2


def test_unknown_select_by_is_named(tmp_path):
    import pytest

    from amecam_lib.config import get_preset
    from amecam_lib.phases import train_multi_exit

    preset = get_preset("smoke").with_overrides(**{"multi_exit.select_by": "dice"})
    with pytest.raises(ValueError, match="select_by"):
        train_multi_exit(tmp_path, "flair", preset, device="cpu", progress=False)
