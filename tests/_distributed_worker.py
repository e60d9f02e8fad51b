"""What each process runs in the multi-process tests (``tests/test_distributed.py``), started by
``torchrun --nproc_per_node 2 tests/_distributed_worker.py SCENARIO... --out DIR [...]`` on the
CPU (gloo). Each scenario writes its numbers to ``DIR/<scenario>.json`` (rank 0) for the test to
check against one process.

Scenarios:

- ``supcon``: the gathered SupCon loss and its gradient, beside one process on the whole batch;
- ``equivalence``: :func:`amecam_lib.training.fit` over DDP with batch B per process, the final
  parameters saved for the test (one process with batch 2B is run by the test);
- ``evaluate``: :func:`amecam_lib.evaluation.evaluate` of ``--run`` sharded over the processes;
- ``train``: ``data_scripts/train.py`` with the arguments after ``--`` (last when with others:
  train.py leaves the process group at its end); alone, with ``--kill-at K``, rank 1 kills itself
  (SIGKILL) at its K-th multi-exit training step, once (a marker file in ``--out`` remembers), so
  that torchrun restarts the group and the run resumes from ``last.pt``.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import signal
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from amecam_lib import distributed  # noqa: E402

EQUIVALENCE_SAMPLES, EQUIVALENCE_SIZE, EQUIVALENCE_EPOCHS = 16, 32, 2


def supcon_batch(n_slices: int = 8, views: int = 2, features: int = 16):
    """The whole batch of the SupCon scenario (the same on every rank and in the test)."""
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(n_slices, views, features, generator=generator)
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1][:n_slices])
    return inputs, labels


def supcon_encoder(features: int = 16, dim: int = 8) -> torch.nn.Module:
    torch.manual_seed(5)
    return torch.nn.Sequential(torch.nn.Linear(features, 12), torch.nn.Tanh(), torch.nn.Linear(12, dim))


def equivalence_data():
    """Fixed slices and labels for the equivalence scenario."""
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(1)
    images = torch.rand(EQUIVALENCE_SAMPLES, 1, EQUIVALENCE_SIZE, EQUIVALENCE_SIZE, generator=generator)
    labels = torch.arange(EQUIVALENCE_SAMPLES) % 2
    return TensorDataset(images, labels)


def equivalence_network() -> torch.nn.Module:
    """A small CNN without batch statistics whose training is well conditioned: a 1e-7 change of
    its weights stays about 1e-7 after 4 SGD steps (measured), so float rounding cannot hide a real
    difference. (ResNet-18 without BatchNorm statistics is not: InstanceNorm over the 2 x 2 pixels
    of stage 4 turns a 1e-7 change into 5e-3 after one step; its DDP gradient is checked alone.)"""
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 1))


def equivalence_fit(out_dir: Path, batch_size: int, num_replicas: int, rank: int):
    """fit() of :func:`equivalence_network` with SGD (momentum 0.9), no augmentation; the loader
    is a DistributedSampler's (the same order of slices whatever the number of processes)."""
    from torch.nn.functional import binary_cross_entropy_with_logits
    from torch.utils.data import DataLoader, DistributedSampler

    from amecam_lib.training import fit

    dataset = equivalence_data()
    sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=7)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    model = equivalence_network()

    def train_step(net, batch, device):
        images, labels = batch
        return binary_cross_entropy_with_logits(net(images.to(device))[:, 0], labels.to(device).float())

    history = fit(model, train_step=train_step, train_loader=loader, epochs=EQUIVALENCE_EPOCHS, lr=0.5,
                  optimizer="sgd", out_dir=out_dir, config={"test": "equivalence"}, device="cpu",
                  seed=0, progress=False)
    return model, history


def multi_exit_gradient_check() -> dict:
    """DDP gradient of the multi-exit ResNet-18 (InstanceNorm, 64 px, Eq. 1) with 4 slices per
    process beside one process with all 8: the largest difference relative to the largest
    gradient entry, per tensor."""
    from torch.nn.parallel import DistributedDataParallel

    from amecam_lib.losses.exits import multi_exit_loss
    from amecam_lib.models.multi_exit import MultiExitResNet

    generator = torch.Generator().manual_seed(2)
    images = torch.rand(8, 1, 64, 64, generator=generator)
    labels = torch.arange(8) % 2
    torch.manual_seed(0)
    model = MultiExitResNet(norm="instance")
    multi_exit_loss(model(images).logits, labels).backward()
    whole = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    share = slice(4 * distributed.rank(), 4 * distributed.rank() + 4)
    ddp = DistributedDataParallel(model)         # kept: its reducer averages in backward
    multi_exit_loss(ddp(images[share]).logits, labels[share]).backward()
    relative = max(float((p.grad - whole[name]).abs().max() / whole[name].abs().max().clamp_min(1e-12))
                   for name, p in model.named_parameters())
    return {"multi_exit_grad_relative": relative}


def run_supcon(out: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from amecam_lib.phases import global_supcon_loss
    from amecam_lib.losses.supcon import supcon_loss

    inputs, labels = supcon_batch()
    size, rank = distributed.world_size(), distributed.rank()
    share = len(inputs) // size
    mine = slice(rank * share, (rank + 1) * share)

    # One process on the whole batch (the reference, computed here on every rank).
    encoder = supcon_encoder()
    whole_loss = supcon_loss(encoder(inputs), labels=labels)
    whole_loss.backward()
    whole_grad = [p.grad.clone() for p in encoder.parameters()]
    # The part of that gradient that flows through this rank's slices only.
    encoder.zero_grad()
    projections = encoder(inputs)
    projections = torch.cat([projections[:mine.start].detach(), projections[mine], projections[mine.stop:].detach()])
    supcon_loss(projections, labels=labels).backward()
    own_part = [p.grad.clone() for p in encoder.parameters()]

    # This rank's share, gathered: no DDP (the raw per-rank gradient), then DDP (averaged).
    encoder = supcon_encoder()
    gathered_loss = global_supcon_loss(encoder(inputs[mine]), labels[mine])
    gathered_loss.backward()
    raw_grad = [p.grad.clone() for p in encoder.parameters()]
    encoder = supcon_encoder()
    ddp = DistributedDataParallel(encoder)
    global_supcon_loss(ddp(inputs[mine]), labels[mine]).backward()
    ddp_grad = [p.grad.clone() for p in encoder.parameters()]

    def largest(first, second):
        return max(float((a - b).abs().max()) for a, b in zip(first, second))

    record = {"rank": rank, "loss_gathered": float(gathered_loss), "loss_whole": float(whole_loss),
              "raw_vs_world_times_own_part": largest(raw_grad, [size * g for g in own_part]),
              "raw_grad_norm": float(torch.cat([g.flatten() for g in raw_grad]).norm()),
              "ddp_vs_whole": largest(ddp_grad, whole_grad),
              "whole_grad_norm": float(torch.cat([g.flatten() for g in whole_grad]).norm())}
    records = distributed.all_gather_objects(record)
    if distributed.is_main():
        (out / "supcon.json").write_text(json.dumps(records))


def run_equivalence(out: Path) -> None:
    model, history = equivalence_fit(out / "equivalence_fit", batch_size=4, num_replicas=distributed.world_size(),
                                     rank=distributed.rank())
    check = multi_exit_gradient_check()
    if distributed.is_main():
        torch.save(model.state_dict(), out / "equivalence_params.pt")
        (out / "equivalence.json").write_text(json.dumps({"losses": history.column("train_loss"), **check}))


def run_evaluate(out: Path, run_dir: Path, data_dir: Path) -> None:
    from _tiny_run import tiny_preset
    from amecam_lib.evaluation import evaluate

    result = evaluate(run_dir, "flair", tiny_preset(**{"evaluation.batch_size": 2}), device="cpu",
                      progress=False, data_dir=data_dir)
    if distributed.is_main():
        (out / "evaluate.json").write_text(json.dumps({"methods": list(result.table["method"])}))


def run_train(out: Path, kill_at: int | None, train_args: list[str]) -> None:
    """data_scripts/train.py in this process; rank 1 may kill itself in the multi-exit phase."""
    if kill_at is not None and int(os.environ.get("RANK", "0")) == 1:     # before train.py joins the group
        import amecam_lib.phases as phases

        original, calls, marker = phases.multi_exit_loss, [0], out / "killed_once"

        def counting_loss(*args, **kwargs):
            if torch.is_grad_enabled():
                calls[0] += 1
                if calls[0] == kill_at and not marker.exists():
                    marker.write_text(f"killed at multi-exit training step {kill_at}\n")
                    os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        phases.multi_exit_loss = counting_loss
    sys.argv = [str(REPO / "data_scripts" / "train.py"), *train_args]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exit_:
        if exit_.code:
            raise


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenarios", nargs="+", choices=("supcon", "equivalence", "evaluate", "train"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--kill-at", type=int)
    mine, train_args = sys.argv[1:], []
    if "--" in mine:                              # what follows "--" is for train.py
        split_at = mine.index("--")
        mine, train_args = mine[:split_at], mine[split_at + 1:]
    args = parser.parse_args(mine)
    if args.scenarios == ["train"]:
        run_train(args.out, args.kill_at, train_args)       # train.py joins the group itself
        return
    distributed.setup("cpu")
    try:
        for scenario in args.scenarios:
            if scenario == "supcon":
                run_supcon(args.out)
            elif scenario == "equivalence":
                run_equivalence(args.out)
            elif scenario == "evaluate":
                run_evaluate(args.out, args.run_dir, args.data_dir)
            else:                                   # last: train.py leaves the group at its end
                run_train(args.out, None, train_args)
            distributed.barrier()
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    main()
