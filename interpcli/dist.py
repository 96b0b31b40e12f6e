"""The one place for running on several processes: ``torchrun`` ranks and ``--shard I/N`` slices.

    rank, world, device = setup("auto")          # reads RANK / WORLD_SIZE set by torchrun
    shard = parse_shard("1/4")                   # (1, 4): the second of four slices
    mine = shard_range(n_chunks, *shard)         # a contiguous range of whole chunks

Under ``torchrun --nproc_per_node=N`` every process sees ``RANK`` and ``WORLD_SIZE``; the
process group is initialised once (gloo on the CPU, nccl on CUDA, one GPU per local rank).
A command run without torchrun is rank 0 of a world of 1 and never touches
``torch.distributed``.  Slices are contiguous runs of whole chunks (never strided), so the
rows, batches and seeds a process sees are exactly those of the same chunks in a single
process run: merged results equal the single-process ones bit for bit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from .device import resolve_device
from .errors import ConfigError

__all__ = ["setup", "teardown", "session", "all_reduce", "all_reduce_tensors", "barrier", "broadcast_object",
           "gather", "env_world", "is_main", "parse_shard", "shard_range"]


def env_world() -> tuple[int, int]:
    """(rank, world size) of this process from torchrun's environment; (0, 1) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return (int(os.environ.get("RANK", "0") or 0), world) if world > 1 else (0, 1)


def is_main() -> bool:
    """Whether this process is the one that writes final outputs and prints them (rank 0)."""
    return env_world()[0] == 0


def setup(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world, device) for this process; under torchrun the process group is initialised
    (gloo on the CPU, nccl on CUDA) and a CUDA device is the local rank's GPU."""
    rank, world = env_world()
    device = resolve_device(device_name)
    if world <= 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def teardown(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce(values: list[float], world: int, device: torch.device) -> list[float]:
    if world <= 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_tensors(tensors: dict[str, torch.Tensor], world: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Every tensor summed over the ranks (on ``device``: nccl reduces CUDA tensors), back on the CPU."""
    if world <= 1:
        return tensors
    out = {}
    for k, t in tensors.items():
        d = t.to(device)
        dist.all_reduce(d)
        out[k] = d.cpu()
    return out


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def broadcast_object(obj: Any, world: int, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (a path, a small dict)."""
    if world <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj: Any, world: int) -> list[Any] | None:
    """The ``obj`` of every rank, in rank order, on rank 0 (None on the others); ``[obj]`` alone.
    For small results (per-row scores), pickled between this run's own processes."""
    if world <= 1:
        return [obj]
    rank = dist.get_rank()
    box: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(obj, box, dst=0)
    return box


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> (I, N) with 0 <= I < N; None stays None."""
    if spec is None:
        return None
    text = str(spec).strip()
    i, sep, n = text.partition("/")
    try:
        index, count = int(i), int(n)
    except ValueError:
        index, count = -1, 0
    if not sep or count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard expects I/N with 0 <= I < N (e.g. 0/4 for the first of four); got '{spec}'")
    return index, count


def shard_range(n_chunks: int, index: int, count: int) -> range:
    """The chunks of slice ``index`` of ``count``: contiguous, sizes differing by at most one, the
    larger slices first (slice 0 always holds chunk 0; the last slices are empty when there are
    fewer chunks than slices)."""
    return range(-(-n_chunks * index // count), -(-n_chunks * (index + 1) // count))


@contextlib.contextmanager
def session(device_name: str) -> Iterator[tuple[int, int, torch.device]]:
    """:func:`setup` on entry; on exit :func:`teardown` (after a barrier) when the block succeeded,
    else the process group is only destroyed (the other ranks are stopped by torchrun)."""
    rank, world, device = setup(device_name)
    try:
        yield rank, world, device
    except BaseException:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
        raise
    teardown(world)
