"""One way to run a command in one process, in N local processes, or in torchrun's workers.

`train.py` and `calc_metrics.py` are written as four steps, and `run` runs them wherever the
command was started:

    check(world)        every process: parse and check the command line -> options
    prepare(options)    the only process, or rank 0: decide the job (load, resolve, fetch what
                        it needs); None when there is nothing to run (a dry run)
    follow(options, job)  under torchrun, every other rank: take rank 0's job, checked against
                        its own command line and files (other hosts see only their own disks)
    work(world, job)    every process

Started plainly, prepare runs here and, when `processes(job)` > 1, the work runs in that many
spawned ranks. Each rank gets its own copy of the job, by value, as torchrun's ranks do (not
tensors shared through memory: a rank that updates a loaded optimizer state in place must not
update the others'). Under torchrun the ranks
join first, so that a problem any of them finds stops all of them at once, and rank 0's job
is sent to the others over the process group. A job drops what it should not carry between
processes (e.g. loaded detectors) in its own __getstate__.
"""

from __future__ import annotations

import pickle
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Generic, Optional, TypeVar

from creps.parallel import (SINGLE, World, broadcast_object, env_world, joined, launched_by_torchrun, leave_process,
                            spawn, together)

Options = TypeVar("Options")
Job = TypeVar("Job")


@dataclass(frozen=True)
class Command(Generic[Options, Job]):
    what: str  # "training", "metrics": names a failed spawned process
    check: Callable[[World], Options]
    prepare: Callable[[Options, World], Optional[Job]]
    follow: Callable[[Options, Job], Job]
    work: Callable[[World, Job], Any]
    processes: Callable[[Job], int]


def run(command: Command) -> None:
    """Run `command` in this process, its spawned ranks, or with the other torchrun workers."""
    if launched_by_torchrun() and env_world().enabled:
        with joined(env_world()) as world:
            options = together(lambda: command.check(world), world)
            job = together(lambda: command.prepare(options, world) if world.is_main else None, world)
            job = broadcast_object(job, world)
            if job is None:
                return
            job = together(lambda: job if world.is_main else command.follow(options, job), world)
            command.work(world, job)
        return
    options = command.check(SINGLE)
    job = command.prepare(options, SINGLE)
    if job is None:
        return
    count = command.processes(job)
    if count <= 1:
        command.work(SINGLE, job)
        return
    with tempfile.TemporaryDirectory() as tmp:
        spawn(_unpacked, count, tmp, args=(command.work, pickle.dumps(job)), what=command.what)


def _unpacked(world: World, work: Callable[[World, Any], Any], job: bytes) -> None:
    work(world, pickle.loads(job))


def is_main() -> bool:
    """Whether this process speaks for the command: not a torchrun worker of rank above 0."""
    return not launched_by_torchrun() or env_world().is_main


def exit_code(body: Callable[[], int]) -> int:
    """A command line's exit code; a torchrun worker ends its process here (see leave_process)."""
    if not (launched_by_torchrun() and env_world().enabled):
        return body()
    try:
        code = body()
    except SystemExit as stop:  # --help
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    leave_process(code)
    return code
