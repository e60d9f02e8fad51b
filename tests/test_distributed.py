"""Several processes on this CPU: PyTorch's DistributedDataParallel over gloo, 2 processes started by
torchrun (``tests/_distributed_worker.py``), checked against one process.

What is checked, and how closely:

- SupCon over the global batch: the loss every rank computes on the gathered projections equals
  the one-process loss on the concatenated batch (1e-6), rank r's own gradient is 2 x the part of
  the one-process gradient that flows through its slices (1e-6), and after DDP's averaging every
  rank holds the one-process gradient (1e-6);
- DDP equivalence: ``fit`` with 2 processes x batch 4 ends with the parameters of 1 process x
  batch 8 (same seed, the same DistributedSampler order, no augmentation, no batch statistics,
  SGD) after 2 epochs of 2 steps: max |difference| < 1e-5 while the parameters moved by about
  0.1 (float sums in another order; measured about 1e-7); the DDP gradient of the multi-exit
  ResNet-18 (InstanceNorm) on 2 x 4 slices is that of 1 x 8 to 1e-5 of its largest entry;
- evaluation sharded over 2 processes writes the same ``results.csv`` (every column but the
  timing ``seconds_per_slice``), ``results_3d.csv``, ``per_slice_scores.csv`` and predictions as 1;
- a run killed mid-epoch under torchrun (``--max-restarts 1``) resumes from ``last.pt`` and ends
  with bit-identical checkpoints to an uninterrupted run.

Each torchrun start costs 10-30 s of imports on a busy 2-core machine, so everything but the
killed run shares one start (a module fixture). The workers use one thread each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from _distributed_worker import equivalence_fit, equivalence_network
from _tiny_run import tiny_preset, tiny_run
from amecam_lib.aggregation import train_attention
from amecam_lib.baselines import train_reference_networks
from amecam_lib.evaluation import evaluate
from amecam_lib.training import load_checkpoint

pytestmark = pytest.mark.distributed

TORCHRUN = Path(sys.executable).parent / "torchrun"
WORKER = Path(__file__).resolve().parent / "_distributed_worker.py"
REPO = Path(__file__).resolve().parent.parent


def torchrun(args: list[str], *, restarts: int = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 WORKER args`` on one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "--max-restarts", str(restarts),
               str(WORKER), *args]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise AssertionError(f"torchrun failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}")
    return done


@pytest.fixture(scope="module")
def one_thread_module():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TRAIN_ARGS = ["--preset", "smoke", "--image-size", "32", "--modality", "flair", "--phases", "pretrain",
              "multi_exit", "--device", "cpu", "--set", "pretrain.epochs=1", "--set", "pretrain.batch_size=4",
              "--set", "multi_exit.epochs=3", "--set", "multi_exit.batch_size=4"]
"""data_scripts/train.py on the tiny run: SupCon 1 epoch and the multi-exit network 3 epochs, global
batch 4 (2 per process): 12 train slices, 3 steps per epoch."""


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, one_thread_module):
    """One torchrun start running the supcon, equivalence, evaluate and (uninterrupted) train
    scenarios. The evaluation run (tiny synthetic run with both attention networks trained here,
    one process) is copied so one copy is evaluated by 1 process (the test) and the other by 2;
    the train scenario trains a fresh copy of the tiny run."""
    root = tmp_path_factory.mktemp("distributed")
    run = tiny_run(root)
    training_run = root / "train_uninterrupted"
    shutil.copytree(run, training_run)
    shutil.rmtree(training_run / "flair" / "multi_exit")           # tiny_run's untrained classifier
    preset = tiny_preset()
    for exits in ((1, 2, 3, 4), (2, 3)):
        train_attention(run, "flair", preset, exits=exits, device="cpu", progress=False)
    train_reference_networks(run, "flair", preset, device="cpu", progress=False)   # unet_fsl, avg_me_c2am, swin_mil
    shutil.copytree(run, root / "run_two")
    out = root / "out"
    out.mkdir()
    started = time.perf_counter()
    torchrun(["supcon", "equivalence", "evaluate", "train", "--out", str(out), "--run-dir", str(root / "run_two"),
              "--data-dir", str(root / "data"), "--", "--run-dir", str(training_run), *TRAIN_ARGS])
    return {"root": root, "out": out, "one": run, "two": root / "run_two", "trained": training_run,
            "seconds": time.perf_counter() - started}


def test_gathered_supcon_is_the_loss_and_gradient_of_the_whole_batch(two_processes):
    records = pd.read_json(two_processes["out"] / "supcon.json")
    assert len(records) == 2
    for record in records.to_dict("records"):
        assert record["loss_gathered"] == pytest.approx(record["loss_whole"], abs=1e-6)
        # each rank's own gradient: the world size times the part flowing through its slices...
        assert record["raw_grad_norm"] > 1e-3
        assert record["raw_vs_world_times_own_part"] < 1e-6
        # ... so DDP's average is the one-process gradient of the whole batch, on every rank
        assert record["ddp_vs_whole"] < 1e-6
        assert record["whole_grad_norm"] > 1e-3


def test_two_processes_with_batch_b_equal_one_with_batch_2b(two_processes, tmp_path):
    model, history = equivalence_fit(tmp_path / "one", batch_size=8, num_replicas=1, rank=0)
    two = torch.load(two_processes["out"] / "equivalence_params.pt", weights_only=True)
    one = model.state_dict()
    assert one.keys() == two.keys()
    largest = max(float((one[name].float() - two[name].float()).abs().max()) for name in one)
    assert largest < 1e-5, largest
    moved = max(float((one[name].float() - start.float()).abs().max())
                for name, start in equivalence_network().state_dict().items())
    assert moved > 0.05                              # the parameters did change
    record = json.loads((two_processes["out"] / "equivalence.json").read_text())
    np.testing.assert_allclose(history.column("train_loss"), record["losses"], rtol=1e-5)
    assert record["multi_exit_grad_relative"] < 1e-5


def test_sharded_evaluation_writes_what_one_process_writes(two_processes):
    run_one, run_two = two_processes["one"], two_processes["two"]
    evaluate(run_one, "flair", tiny_preset(**{"evaluation.batch_size": 2}), device="cpu", progress=False,
             data_dir=two_processes["root"] / "data")
    one = pd.read_csv(run_one / "results.csv")
    two = pd.read_csv(run_two / "results.csv")
    assert list(one.columns) == list(two.columns)
    assert len(one) == len(two) > 10 and "score_cam" in set(one["method"])
    columns = [c for c in one.columns if c != "seconds_per_slice"]
    pd.testing.assert_frame_equal(one[columns], two[columns], check_exact=True)
    for name in ("results_3d.csv", "flair/per_slice_scores.csv"):
        assert (run_one / name).read_text() == (run_two / name).read_text(), name
    with np.load(run_one / "flair" / "predictions.npz") as first, np.load(run_two / "flair" / "predictions.npz") as second:
        assert sorted(first.files) == sorted(second.files)
        for name in first.files:
            np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_one_torchrun_start_served_four_scenarios(two_processes):
    print(f"torchrun start with supcon + equivalence + evaluate + train: {two_processes['seconds']:.1f} s")
    assert {path.name for path in two_processes["out"].glob("*.json")} == {"supcon.json", "equivalence.json",
                                                                          "evaluate.json"}
    assert (two_processes["trained"] / "flair" / "multi_exit" / "val_metrics.csv").is_file()


def test_killed_mid_epoch_resumes_from_last_pt_and_ends_as_an_uninterrupted_run(two_processes, tmp_path):
    tiny_run(tmp_path)
    shutil.rmtree(tmp_path / "run" / "flair" / "multi_exit")          # tiny_run's untrained classifier
    started = time.perf_counter()
    # rank 1 dies (SIGKILL) at its 5th multi-exit step: step 2 of epoch 2; torchrun restarts both
    done = torchrun(["train", "--out", str(tmp_path), "--kill-at", "5", "--",
                     "--run-dir", str(tmp_path / "run"), *TRAIN_ARGS], restarts=1)
    print(f"killed and restarted under torchrun: {time.perf_counter() - started:.1f} s")
    assert (tmp_path / "killed_once").is_file()
    assert "resuming after epoch 1 of 3" in done.stdout
    assert "finished run found (1 epochs)" in done.stdout          # the restarted pretraining
    uninterrupted, killed = two_processes["trained"] / "flair", tmp_path / "run" / "flair"
    for phase in ("pretrain", "multi_exit"):
        for name in ("last.pt", "best.pt"):
            first = load_checkpoint(uninterrupted / phase / name)
            second = load_checkpoint(killed / phase / name)
            assert first["epoch"] == second["epoch"]
            for key, tensor in first["model"].items():
                assert torch.equal(tensor, second["model"][key]), (phase, name, key)
        first_log = pd.read_csv(uninterrupted / phase / "log.csv").drop(columns="seconds")
        second_log = pd.read_csv(killed / phase / "log.csv").drop(columns="seconds")
        pd.testing.assert_frame_equal(first_log, second_log, check_exact=True)
    assert (uninterrupted / "multi_exit" / "val_metrics.csv").read_text() == \
        (killed / "multi_exit" / "val_metrics.csv").read_text()
