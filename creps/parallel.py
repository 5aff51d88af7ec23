"""Many processes on torch.distributed: one per GPU (NCCL) or per CPU worker (gloo), started
by `--gpus=N` on one machine (`spawn`) or by `torchrun` on many.

Training: every rank builds the same networks (rank 0's weights are broadcast), trains on its
own shard of each batch, and averages gradients after accumulation. Metrics: every rank
renders and embeds its share of the batches (`owns`), and the sums and rows are combined.
Rank 0 alone writes files.

Peers can vanish (a host loses power, a process is killed). No rank waits for them longer
than $CREPS_DIST_TIMEOUT seconds (default 600) in one collective or when joining; a collective
that fails because a peer is gone (its connection closed, or the timeout) raises `PeerLost`,
one line naming the rank and host, instead of hanging or printing a backend traceback.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import re
import socket
import sys
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

import torch
import torch.distributed as dist

from creps.errors import RunFailure, UserError

TIMEOUT_ENV = "CREPS_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    # (host name, address) of every rank, learned when joining (init); names peers in messages
    hosts: tuple[tuple[str, str], ...] = ()

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


def peer_timeout() -> float:
    """Seconds a process waits for its peers, in one collective or to join the group, before
    the run ends with one line: $CREPS_DIST_TIMEOUT, default 600 (rank 0 alone writes
    snapshots and fetches detector weights meanwhile, so keep it above those)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise UserError(f"{TIMEOUT_ENV}={text!r}: expected a number of seconds above 0, e.g. {TIMEOUT_ENV}=600")
    return seconds


def address_towards(host: str, port: int) -> Optional[str]:
    """This machine's address on the route to host:port (the one peers there reach it at), or
    None when there is no route. Asks the routing table only: nothing is sent."""
    try:
        family, _, _, _, target = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(target)
            return probe.getsockname()[0]
    except OSError:
        return None


def init(world: World, init_method: str = "env://") -> World:
    """Join the process group and learn where every rank runs; returns `world` with its
    roster. Peers that do not all arrive within peer_timeout() end it with one line."""
    if not world.enabled or dist.is_initialized():
        return world
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
    timeout = peer_timeout()
    try:
        dist.init_process_group(backend=backend_for_devices(), init_method=init_method, rank=world.rank,
                                world_size=world.size, timeout=datetime.timedelta(seconds=timeout))
    except RuntimeError as err:  # torch.distributed's store and backend errors
        raise RunFailure(f"the {world.size} processes did not all connect within {timeout:g} s ({_first_line(err)}); "
                         "start the same command on every host, and let GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME "
                         "name the network interface the hosts share") from err
    master = os.environ.get("MASTER_ADDR")
    own = (address_towards(master, int(os.environ.get("MASTER_PORT", 0))) if master else None) or ""
    return replace(world, hosts=tuple(gather_objects((socket.gethostname(), own), world)))


def shutdown(world: World = SINGLE) -> None:
    """Leave the group together: without the barrier a rank that tears its group down while
    a peer is still inside the last collective can abort at exit (seen with gloo)."""
    if dist.is_available() and dist.is_initialized():
        try:
            with _talking(world):
                dist.barrier()
        finally:
            gc.collect()  # work objects caught in reference cycles would keep the group alive
            dist.destroy_process_group()


@contextlib.contextmanager
def joined(world: World, init_method: str = "env://") -> Iterator[World]:
    """The process group around a body, which gets `world` with its roster. After the body
    succeeds the ranks leave together (shutdown); after a failure this rank does not wait for
    peers that may be gone, and its process is to end (leave_process) without tearing down."""
    world = init(world, init_method)
    yield world
    shutdown(world)


class PeerLost(RunFailure):
    """A collective failed because a peer is gone: its connection closed, or it did not answer
    within peer_timeout(). The message names the rank and host when the backend says which."""


# What the backends say when a peer is gone (gloo, NCCL, the TCP store), lower case.
_LOST_SIGNS = ("closed by peer", "reset by peer", "broken pipe", "timed out", "timeout", "connection refused",
               "no route to host", "network is unreachable", "communicator was aborted", "remote process exited")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    line = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", line)  # the backend's [source.cc:123] prefix
    return line.split(". This is typically")[0].rstrip(".")


def who_at(address: str, world: World) -> str:
    """'rank 1 (host b, 10.0.0.2)' / 'ranks 8-15 (...)' for a peer address, from the roster."""
    ranks = [r for r, (_, addr) in enumerate(world.hosts) if addr == address and r != world.rank]
    if not ranks:
        return f"the process at {address}"
    name = world.hosts[ranks[0]][0]
    label = f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {ranks[0]}-{ranks[-1]}"
    return f"{label} (host {name}, {address})"


def where(rank: int, world: World) -> str:
    """'rank 1 (host b, 10.0.0.2)', or 'rank 1' before the roster is known."""
    if rank < len(world.hosts):
        name, address = world.hosts[rank]
        return f"rank {rank} (host {name}{', ' + address if address else ''})"
    return f"rank {rank}"


def roster(world: World) -> str:
    """Where the ranks run: 'rank 0 on a (10.0.0.1), rank 1 on b (10.0.0.2)', with runs of ranks
    on one host as 'ranks 0-7 on a (10.0.0.1)'."""
    parts, start = [], 0
    for rank in range(1, len(world.hosts) + 1):
        if rank == len(world.hosts) or world.hosts[rank] != world.hosts[start]:
            name, address = world.hosts[start]
            ranks = f"rank {start}" if rank - 1 == start else f"ranks {start}-{rank - 1}"
            parts.append(f"{ranks} on {name}" + (f" ({address})" if address else ""))
            start = rank
    return ", ".join(parts)


def lost_peer(err: BaseException, world: World) -> Optional[PeerLost]:
    """The PeerLost that a failed collective's error means, or None when it is something else."""
    text = str(err)
    if not any(sign in text.lower() for sign in _LOST_SIGNS):
        return None
    peer = re.search(r"\[([0-9A-Fa-f.:]+)\]:\d+", text)
    if peer:
        detail = re.sub(r"\s*\[[0-9A-Fa-f.:]+\]:\d+", "", _first_line(err))
        return PeerLost(f"lost contact with {who_at(peer.group(1), world)}: {detail}")
    if "timed out" in text.lower() or "timeout" in text.lower():
        return PeerLost(f"lost contact with the other processes: no answer within {peer_timeout():g} s "
                        f"({TIMEOUT_ENV}; {_first_line(err)})")
    return PeerLost(f"lost contact with the other processes: {_first_line(err)}")


@contextlib.contextmanager
def _talking(world: World) -> Iterator[None]:
    """Around a collective: an error that says a peer is gone becomes PeerLost; others (bugs) pass."""
    try:
        yield
    except RuntimeError as err:  # DistBackendError, DistNetworkError, and gloo's plain RuntimeErrors
        lost = lost_peer(err, world)
        if lost is None:
            raise
        raise lost from err


def together(fn: Callable[[], T], world: World) -> T:
    """fn() on every rank; when it raises UserError on any rank, every rank raises it (naming
    the rank it came from, on the others), so no rank waits in vain for one that stopped."""
    problem, result = None, None
    try:
        result = fn()
    except UserError as err:
        problem = str(err)
    if not world.enabled:
        if problem is not None:
            raise UserError(problem)
        return result  # type: ignore[return-value]
    problems = gather_objects(problem, world)
    if problem is not None:
        raise UserError(problem)
    for rank, text in enumerate(problems):
        if text is not None:
            raise UserError(f"{where(rank, world)}: {text}")
    return result  # type: ignore[return-value]


def device_for(world: World) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", world.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def broadcast_module(module: torch.nn.Module, world: World) -> None:
    """Make every rank's parameters and buffers equal to rank 0's."""
    if not world.enabled:
        return
    with _talking(world):
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def average_gradients(params: Iterable[torch.nn.Parameter], world: World) -> None:
    """Gradients <- their mean over ranks (one flat all-reduce)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not world.enabled or not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    with _talking(world):
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
        with _talking(world):
            dist.barrier()


def all_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """The element-wise sum over ranks, on every rank (a CPU tensor travels through the GPU
    under NCCL, which reduces CUDA tensors only)."""
    if not world.enabled:
        return values
    home = values.device
    through = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else home
    out = values.detach().to(through, copy=True)
    with _talking(world):
        dist.all_reduce(out)
    return out.to(home)


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's Python object on every rank."""
    if not world.enabled:
        return obj
    box = [obj if world.is_main else None]
    with _talking(world):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, world: World) -> list[Any]:
    if not world.enabled:
        return [obj]
    out: list[Any] = [None] * world.size
    with _talking(world):
        dist.all_gather_object(out, obj)
    return out


def spawn(fn: Callable[..., None], size: int, temp_dir: str, args: tuple = (), what: str = "worker") -> None:
    """Run fn(world, *args) in `size` local processes joined through a file in `temp_dir`;
    a rank that fails ends the others, and its error becomes one UserError line here
    ("a <what> process failed: ..."); ranks that stopped on request (KeyboardInterrupt) make it
    a KeyboardInterrupt here, once every rank is done."""
    temp_dir = os.path.abspath(temp_dir)
    try:
        torch.multiprocessing.spawn(_spawned, args=(fn, size, temp_dir, args), nprocs=size, join=True)
    except torch.multiprocessing.ProcessRaisedException as err:
        last = str(err).strip().splitlines()[-1]
        raise UserError(f"a {what} process failed: {last.split('Error: ', 1)[-1]}") from None
    if any(name.startswith("stopped-") for name in os.listdir(temp_dir)):
        raise KeyboardInterrupt  # the ranks stopped on request (SIGINT/SIGTERM), not at the end


def _spawned(rank: int, fn: Callable[..., None], size: int, temp_dir: str, args: tuple) -> None:
    init_method = f"file://{os.path.join(temp_dir, '.distributed_init')}"
    try:
        with joined(World(rank=rank, size=size, local_rank=rank), init_method=init_method) as world:
            fn(world, *args)
    except KeyboardInterrupt:
        # A stop on request: the rank ends as one that finished (an exit code would make the
        # parent end the others, which may still be writing the training state) and leaves a
        # mark that the parent reads once all are done.
        open(os.path.join(temp_dir, f"stopped-{rank}"), "w").close()
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


__all__ = ["World", "SINGLE", "init", "shutdown", "joined", "device_for", "broadcast_module", "average_gradients",
           "all_sum", "barrier", "broadcast_object", "gather_objects", "owns", "spawn", "launched_by_torchrun",
           "env_world", "leave_process", "together", "PeerLost", "peer_timeout", "address_towards", "where",
           "TIMEOUT_ENV", "roster"]
