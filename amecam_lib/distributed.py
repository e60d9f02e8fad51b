"""Several processes, one training: the few pieces of PyTorch's own distributed engine the
phases use, and nothing when there is one process.

``torchrun --nproc_per_node N script.py`` starts N copies of a script and gives each the
environment variables ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`setup` reads them and joins the process group (``nccl`` on CUDA,
``gloo`` on the CPU); without them it does nothing and every helper below behaves as in a single
process (rank 0 of 1), so the same code runs unchanged with and without torchrun.

What each helper is for:

- :func:`rank`, :func:`world_size`, :func:`is_main`, :func:`active`: who am I; only the main
  process (rank 0) writes logs, checkpoints, tables and figures;
- :func:`barrier`: wait until every process got here (e.g. after rank 0 wrote a file the others
  read);
- :func:`gather_with_grad`: the concatenation of a tensor over all ranks, in rank order, with
  the gradient flowing back to every rank's own part (SupCon over the global batch);
- :func:`all_gather_objects`, :func:`gather_objects_to_main`, :func:`broadcast_object`,
  :func:`all_reduce_sum`: values between ranks (metrics, RNG states, one method's maps and
  per-slice scores for rank 0);
- :func:`batch_shard`: which batches of a fixed batching a rank computes, so that sharded work
  sees exactly the batches one process would (evaluation, validation);
- :func:`per_rank_batch_size`: the per-process share of a global batch size.

A batch size in the presets is the **global** batch: ``pretrain.batch_size = 512`` on 8 GPUs is
64 slices per GPU, and the SupCon loss then sees all 512 (:func:`gather_with_grad`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

ENV_VARIABLES: tuple[str, ...] = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""What torchrun sets for every process it starts."""


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its
    node, ``device`` it computes on, ``backend`` of the process group (None: one process)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set ``WORLD_SIZE`` > 1 for this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str | torch.device | None = "auto", backend: str | None = None) -> Context:
    """Join the process group when started by torchrun; otherwise return a one-process context.

    Args:
        device: ``"auto"``/None (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``. Under
            torchrun on CUDA each process takes GPU ``LOCAL_RANK`` (``torch.cuda.set_device``).
        backend: ``"nccl"`` or ``"gloo"``; default ``nccl`` on CUDA, ``gloo`` on the CPU.

    Returns:
        the :class:`Context`; calling it again returns the same one.

    Raises:
        RuntimeError: torchrun's variables are incomplete, or CUDA asked for and missing.
    """
    from amecam_lib.device import pick_device

    if not launched_by_torchrun():
        return Context(0, 1, 0, pick_device(device), None)
    missing = [name for name in ENV_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE > 1 but {missing} not set: start the script with torchrun")
    local_rank = int(os.environ["LOCAL_RANK"])
    chosen = pick_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        # The store torchrun's agent keeps lives across restarts (--max-restarts): keys of a killed
        # generation (e.g. the gloo address of a dead rank) would be read by the next one, which then
        # connects to nobody ("connectFullMesh failed ... Connection refused"). Each generation
        # gets its own namespace.
        store, store_rank, store_size = next(dist.rendezvous("env://"))
        generation = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend or ("nccl" if chosen.type == "cuda" else "gloo"),
                                store=dist.PrefixStore(f"amecam/generation_{generation}/", store),
                                rank=store_rank, world_size=store_size,
                                device_id=chosen if chosen.type == "cuda" else None)
    return Context(dist.get_rank(), dist.get_world_size(), local_rank, chosen, dist.get_backend())


def cleanup() -> None:
    """Leave the process group (at the end of a torchrun script); nothing in one process."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True when a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 in one process)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of processes (1 without torchrun)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0, the only process that writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (nothing in one process)."""
    if active():
        dist.barrier()


def per_rank_batch_size(global_batch_size: int) -> int:
    """The per-process share of a global batch size.

    Raises:
        ValueError: the global batch does not divide evenly (e.g. 512 on 3 GPUs): each process
            must hold the same number of slices, or the gathered SupCon batch and the averaged
            gradients would not be those of the global batch.
    """
    processes = world_size()
    if global_batch_size % processes:
        raise ValueError(f"batch size {global_batch_size} does not split evenly over {processes} processes; "
                         f"choose a batch size divisible by the number of processes (--nproc_per_node)")
    return global_batch_size // processes


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward: each rank's part of the gradient summed over every rank's
    loss (one ``all_reduce`` of the gathered gradient, then the rank's own rows). The same
    gradient as ``torch.distributed.nn.functional.all_gather`` (deprecated), with public
    collectives that every backend supports."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: tuple[int, ...]):
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        largest = max(sizes)
        padded = tensor.new_zeros((largest, *tensor.shape[1:]))
        padded[:tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (``(B_r, ...)`` on rank r) over all ranks, in rank order.

    The gradient of a loss computed on the result flows back to every rank's own rows: rank r's
    ``tensor.grad`` is the sum, over the ranks, of the gradient of their losses with respect to
    its rows. When every rank computes the same loss L on the gathered batch (the SupCon loss of
    the global batch), rank r's rows get ``world_size * dL/dz_r``, and DistributedDataParallel's
    averaging of the parameter gradients over the ranks then gives exactly ``dL/dtheta`` of one
    process holding the whole batch.

    In one process: ``tensor`` itself. Ranks may hold different numbers of rows (same trailing
    shape and dtype).
    """
    if not active():
        return tensor
    sizes = all_gather_objects(int(tensor.shape[0]))
    return _GatherWithGrad.apply(tensor, tuple(sizes))


def gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` over all ranks in rank order, without gradient (e.g. labels)."""
    if not active():
        return tensor
    with torch.no_grad():
        return gather_with_grad(tensor.detach())


def all_gather_objects(value) -> list:
    """``[value of rank 0, value of rank 1, ...]`` on every rank (pickled; small values only)."""
    if not active():
        return [value]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def gather_objects_to_main(value) -> list | None:
    """``[value of rank 0, value of rank 1, ...]`` on rank 0, None on the others (pickled; for
    results only rank 0 keeps, e.g. one method's maps and scores)."""
    if not active():
        return [value]
    gathered = [None] * world_size() if is_main() else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def broadcast_object(value, source: int = 0):
    """Rank ``source``'s ``value`` on every rank (pickled; small values only)."""
    if not active():
        return value
    holder = [value if rank() == source else None]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of a tensor over the ranks (a copy; the input is unchanged)."""
    if not active():
        return values
    summed = values.clone()
    dist.all_reduce(summed)
    return summed


def batch_shard(n_items: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the batches this rank computes when ``n_items`` are cut into batches
    of ``batch_size`` in order: batch b goes to rank ``b % world_size``. Every batch is exactly
    one a single process would compute, so per-item results do not depend on the number of
    processes, and batch-level ones (a loss per batch) neither."""
    starts = range(0, n_items, batch_size)
    return [(start, min(start + batch_size, n_items))
            for index, start in enumerate(starts) if index % world_size() == rank()]
