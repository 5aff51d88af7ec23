"""`creps torchrun`: torchrun, same arguments, whose expected failures end in one line.

It runs torchrun's own agent (torch.distributed.run) in this process, and with the c10d
rendezvous (`--rdzv-backend=c10d --rdzv-endpoint=HOST:PORT`) adds two defaults that make two
machines find each other where plain torchrun can hang:
- `--local-addr` (how the other hosts reach this one) is this host's address on the route
  to the endpoint, not its host name, which often resolves to a loopback address (Debian's
  127.0.1.1) that no other host can reach;
- `--rdzv-conf=is_host=1` on the host that owns the endpoint's address (it serves the
  rendezvous), `is_host=0` elsewhere: torchrun's own guess compares host names and misses
  addresses of a second network interface.
Given explicitly, both are left as they are.

A rendezvous that cannot be reached or does not fill in time, a worker killed by a signal,
or the agent stopped by one, ends with one line (`error: ...`) and a non-zero exit code,
instead of torchrun's tracebacks; a worker that failed has printed its own line already.
torchrun's log is off unless LOGLEVEL is set (e.g. LOGLEVEL=INFO).

A host cut off from the network mid-run (its workers end on their own timeout) would keep
torchrun's agent waiting on the rendezvous store for as long as TCP retries (about 15
minutes): once this host's workers have all ended, the agent gets `read_timeout` +
`close_timeout` + 10 s to finish (wait for the other hosts at the exit barrier, where all
arrive together since our ranks leave together; shut the rendezvous down), then this
process ends with one line. Not with --max-restarts, where an
agent without workers may be waiting for the next round.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Optional, Sequence

USAGE = """usage: creps torchrun [torchrun options] train.py|calc_metrics.py [their options]

Run `torchrun --help` for the torchrun options. On each of two hosts, for example:
  creps torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST0:29400 \\
      --rdzv-id=run1 train.py --outdir=runs --cfg=creps --data=data.zip --gpus=16 --batch=32 --gamma=2"""

DEFAULT_PORT = 29400  # torchrun's c10d rendezvous port


def owns_address(host: str) -> bool:
    """Whether `host` names an address of this machine (binding to it succeeds; nothing is sent)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, _, _, address in infos:
        try:
            with socket.socket(family, kind) as probe:
                probe.bind((address[0], 0))
                return True
        except OSError:
            continue
    return False


def rdzv_options(text: str) -> dict[str, str]:
    """'a=1,b=2' (torchrun's --rdzv-conf) -> {'a': '1', 'b': '2'}."""
    pairs = [item.split("=", 1) for item in (text or "").split(",") if "=" in item]
    return {key.strip(): value.strip() for key, value in pairs}


def endpoint_of(args) -> Optional[tuple[str, int]]:
    """(host, port) of a c10d rendezvous on other hosts, or None (static, standalone, local)."""
    from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint

    if args.standalone or args.rdzv_backend != "c10d" or not args.rdzv_endpoint:
        return None
    host, port = parse_rendezvous_endpoint(args.rdzv_endpoint, default_port=DEFAULT_PORT)
    return None if host in ("localhost", "127.0.0.1", "::1") else (host, port)


def fill_defaults(args) -> None:
    """--local-addr and is_host, when not given (see the module's description)."""
    from creps.parallel import address_towards

    endpoint = endpoint_of(args)
    if endpoint is None:
        return
    if args.local_addr is None:
        args.local_addr = address_towards(*endpoint)  # None without a route: the rendezvous says so
    if "is_host" not in rdzv_options(args.rdzv_conf):
        is_host = int(owns_address(endpoint[0]))
        args.rdzv_conf = ",".join(filter(None, [args.rdzv_conf, f"is_host={is_host}"]))


def quiet_torchrun_log() -> None:
    """torchrun's loggers (set up per module when imported) to errors that stop everything only."""
    import torch.distributed.elastic.rendezvous.c10d_rendezvous_backend  # noqa: F401  (imported late otherwise)
    import torch.distributed.elastic.rendezvous.dynamic_rendezvous  # noqa: F401

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def failure_line(err: BaseException, args) -> str:
    """The one line that a failed launch ends with (without 'error: ')."""
    from torch.distributed.elastic.rendezvous.api import (RendezvousClosedError, RendezvousConnectionError,
                                                          RendezvousTimeoutError)

    endpoint = args.rdzv_endpoint or f"{args.master_addr}:{args.master_port}"
    conf = rdzv_options(args.rdzv_conf)
    if isinstance(err, RendezvousConnectionError):
        cause = err.__cause__
        detail = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() else str(err)
        if "errno" in detail:
            detail = detail[detail.rindex("errno"):].split(" - ", 1)[-1].rstrip(").")
        elif "timed out" in detail:
            detail = "no answer"
        seconds = conf.get("read_timeout", "60")
        # While the workers run, the agent polls the rendezvous for hosts that want to join.
        if any(frame.name == "num_nodes_waiting" for frame in traceback.extract_tb(err.__traceback__)):
            return (f"lost the rendezvous at {endpoint}: no answer within {seconds} s ({detail}); the workers "
                    "here were stopped; continue on every host with --resume once the hosts reach each other")
        return (f"cannot reach the rendezvous at {endpoint} within {seconds} s ({detail}); start it on the "
                "endpoint's host first, check the address and that the port is open, or wait longer with "
                "--rdzv-conf=read_timeout=SECONDS")
    if isinstance(err, RendezvousTimeoutError):
        seconds = conf.get("join_timeout", "600")
        return (f"the rendezvous at {endpoint} timed out after {seconds} s waiting for --nnodes={args.nnodes} hosts; "
                "start the same command on every host, check that they reach this address and port, or wait "
                "longer with --rdzv-conf=join_timeout=SECONDS")
    if isinstance(err, RendezvousClosedError):
        return (f"the rendezvous {args.rdzv_id!r} at {endpoint} is closed (its run has ended); "
                "start every host again, with a new --rdzv-id")
    return f"the rendezvous at {endpoint} failed: {err or type(err).__name__}"


def worker_failure(err) -> tuple[Optional[str], int]:
    """(line or None, exit code) for workers that failed: one killed by a signal gets a line;
    one that exited with a code has said why itself."""
    rank, failure = err.get_first_failure()
    if failure.exitcode < 0:
        try:
            name = signal.Signals(-failure.exitcode).name
        except ValueError:
            name = f"signal {-failure.exitcode}"
        return f"rank {rank} (pid {failure.pid} on this host) was killed by {name}", 128 - failure.exitcode
    return None, failure.exitcode or 1


def running_children() -> Optional[list[int]]:
    """This process's children that have not exited (Linux /proc; an exited child stays a
    zombie until the agent reaps it), or None where /proc cannot tell."""
    try:
        tasks = os.listdir("/proc/self/task")
        pids = [int(pid) for task in tasks for pid in Path(f"/proc/self/task/{task}/children").read_text().split()]
    except OSError:
        return None
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # reaped meanwhile
        if state not in ("Z", "X"):
            running.append(pid)
    return running


def watch_workers(grace: float, endpoint: str, poll: float = 0.5) -> None:
    """In a daemon thread: once this host's workers have all ended, give the agent `grace`
    seconds to end too, then end this process with one line (see the module's description)."""
    def watch() -> None:
        seen, idle_since = False, None
        while True:
            children = running_children()
            if children is None:
                return
            if children:
                seen, idle_since = True, None
            elif seen:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > grace:
                    print(f"error: the workers here have ended, but the rendezvous at {endpoint} has not answered "
                          f"for {grace:g} s: this host has lost the others; continue on every host with --resume "
                          "once they reach each other", file=sys.stderr, flush=True)
                    os._exit(1)
            time.sleep(poll)

    threading.Thread(target=watch, name="creps-worker-watch", daemon=True).start()


def torchrun(argv: Optional[Sequence[str]] = None, prog: str = "creps torchrun") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE.replace("creps torchrun", prog, 1))
        return 0 if argv else 2
    quiet = "LOGLEVEL" not in os.environ
    if quiet and "torch" not in sys.modules and "TORCH_CPP_LOG_LEVEL" not in os.environ:
        os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"  # read once, when torch loads: the store's retry warnings
        import torch  # noqa: F401

        del os.environ["TORCH_CPP_LOG_LEVEL"]  # the workers keep the user's setting
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import parse_args, run

    args = parse_args(argv)
    fill_defaults(args)
    if quiet:
        quiet_torchrun_log()
    if endpoint_of(args) is not None and args.max_restarts == 0:
        conf = rdzv_options(args.rdzv_conf)
        grace = args.monitor_interval + float(conf.get("read_timeout", 60)) + float(conf.get("close_timeout", 30)) + 10
        watch_workers(grace, args.rdzv_endpoint)
    try:
        run(args)
    except ChildFailedError as err:
        line, code = worker_failure(err)
        if line:
            print(f"error: {line}", file=sys.stderr)
        return code
    except RendezvousError as err:
        print(f"error: {failure_line(err, args)}", file=sys.stderr)
        return 1
    except SignalException as err:
        print(f"error: torchrun was stopped by {err.sigval.name}", file=sys.stderr)
        return 128 + int(err.sigval)
    return 0
