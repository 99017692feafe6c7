"""Scale-out with torch.distributed (DDP): one process per device, rank 0 writes.

Two ways in:

* ``mrisr_train ... --num-gpus N`` spawns N processes on this machine
  (:func:`spawn`, free port on localhost);
* ``torchrun --nnodes ... --nproc-per-node ... -m mrisr.cli.train ...`` (multi-node): the
  ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_*`` variables are picked up by
  :func:`context_from_env`.

Backend: NCCL on CUDA, gloo otherwise (CPU processes, used by the tests). Each rank draws
its own patches (the batch seed includes the rank) and takes ``batch_size // world_size``
of the planned batch, so the effective batch is the planned one.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mrisr.utilities.errors import MrisrError
from mrisr.utilities.threads import set_compute_threads

TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def device_for(device: str, ctx: DistContext) -> torch.device:
    """The device of this rank (``cuda:LOCAL_RANK`` under DDP on CUDA)."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise MrisrError("--device cuda: no CUDA device is available; use --device cpu")
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise MrisrError("--device mps: MPS is not available; use --device cpu")
        return torch.device("mps")
    return torch.device("cpu")


def init_process_group(device: str, rank: int, world_size: int, local_rank: int) -> DistContext:
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=TIMEOUT)
    if device == "cpu":
        # share the cores between the processes instead of oversubscribing them
        set_compute_threads(processes=world_size)
    return DistContext(rank, world_size, local_rank)


def context_from_env(device: str) -> DistContext:
    """A DDP context from torchrun's variables, or the single-process context."""
    ws = env_world_size()
    if ws <= 1:
        return DistContext()
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]))
    return init_process_group(
        device, int(os.environ["RANK"]), ws, int(os.environ.get("LOCAL_RANK", "0"))
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, fn: Callable, world_size: int, device: str, port: int, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    ctx = init_process_group(device, rank, world_size, rank)
    try:
        fn(ctx, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, world_size: int, device: str, args: tuple = ()) -> None:
    """Run ``fn(ctx, *args)`` in ``world_size`` new processes on this machine (one per GPU,
    or CPU processes with gloo); ``fn`` must be importable (module level)."""
    import torch.multiprocessing as mp

    mp.spawn(_entry, args=(fn, world_size, device, free_port(), args), nprocs=world_size, join=True)


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized() and "TORCHELASTIC_RUN_ID" in os.environ:
        dist.destroy_process_group()
