"""Many processes on torch.distributed: one per GPU (NCCL) or per CPU worker (gloo), started
by `--gpus=N` on one machine (`spawn`) or by `torchrun` on many.

Training: every rank builds the same networks (rank 0's weights are broadcast), trains on its
own shard of each batch, and averages gradients after accumulation. Metrics: every rank
renders and embeds its share of the batches (`owns`), and the sums and rows are combined.
Rank 0 alone writes files.
"""

from __future__ import annotations

import datetime
import gc
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist

from creps.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def env_world() -> World:
    return World(rank=int(os.environ.get("RANK", 0)), size=int(os.environ.get("WORLD_SIZE", 1)),
                 local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def backend_for_devices() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init(world: World, init_method: str = "env://", timeout_min: float = 30) -> None:
    """Join the process group (a failed peer surfaces as an error within `timeout_min`)."""
    if not world.enabled or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend_for_devices(), init_method=init_method, rank=world.rank,
                            world_size=world.size, timeout=datetime.timedelta(minutes=timeout_min))


def shutdown() -> None:
    """Leave the group together: without the barrier a rank that tears its group down while
    a peer is still inside the last collective can abort at exit (seen with gloo)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            gc.collect()  # work objects caught in reference cycles would keep the group alive
            dist.destroy_process_group()


def device_for(world: World) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", world.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def broadcast_module(module: torch.nn.Module, world: World) -> None:
    """Make every rank's parameters and buffers equal to rank 0's."""
    if not world.enabled:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def average_gradients(params: Iterable[torch.nn.Parameter], world: World) -> None:
    """Gradients <- their mean over ranks (one flat all-reduce)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not world.enabled or not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def owns(batch_index: int, world: World) -> bool:
    """Whether this rank does batch `batch_index` of work split in turns across the ranks."""
    return batch_index % world.size == world.rank


def barrier(world: World) -> None:
    if world.enabled:
        dist.barrier()


def all_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """The element-wise sum over ranks, on every rank (a CPU tensor travels through the GPU
    under NCCL, which reduces CUDA tensors only)."""
    if not world.enabled:
        return values
    home = values.device
    through = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else home
    out = values.detach().to(through, copy=True)
    dist.all_reduce(out)
    return out.to(home)


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's Python object on every rank."""
    if not world.enabled:
        return obj
    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, world: World) -> list[Any]:
    if not world.enabled:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def spawn(fn: Callable[..., None], size: int, temp_dir: str, args: tuple = (), what: str = "worker") -> None:
    """Run fn(world, *args) in `size` local processes joined through a file in `temp_dir`;
    a rank that fails ends the others, and its error becomes one UserError line here
    ("a <what> process failed: ...")."""
    init_file = os.path.abspath(os.path.join(temp_dir, ".distributed_init"))
    try:
        torch.multiprocessing.spawn(_spawned, args=(fn, size, f"file://{init_file}", args), nprocs=size, join=True)
    except torch.multiprocessing.ProcessRaisedException as err:
        last = str(err).strip().splitlines()[-1]
        raise UserError(f"a {what} process failed: {last.split('Error: ', 1)[-1]}") from None


def _spawned(rank: int, fn: Callable[..., None], size: int, init_method: str, args: tuple) -> None:
    world = World(rank=rank, size=size, local_rank=rank)
    init(world, init_method=init_method)
    try:
        fn(world, *args)
    finally:
        shutdown()
    leave_process(0)


def leave_process(code: int) -> None:
    """End a finished rank's process now, with `code`. Interpreter finalization would destroy
    whatever the communication backend still holds (worker threads, pending work objects) in
    an order it does not control; with gloo this aborted one rank now and then (SIGABRT,
    "terminate called without an active exception") after training had succeeded. Only for
    processes that are ours: spawned ranks, and torchrun workers running our command line."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


__all__ = ["World", "SINGLE", "init", "shutdown", "device_for", "broadcast_module", "average_gradients",
           "all_sum", "barrier", "broadcast_object", "gather_objects", "owns", "spawn", "launched_by_torchrun",
           "env_world", "leave_process"]
