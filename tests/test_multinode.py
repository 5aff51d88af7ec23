"""Two hosts for real: training across a network, its failures, and resume.

Each test makes two hosts (network namespaces joined by a veth pair, each with its own
address: netns.py). On each, `creps torchrun --nnodes=2 --nproc-per-node=1
--rdzv-backend=c10d --rdzv-endpoint=<host 0's address>:<port>` runs train.py on the CPU; gloo
talks over the veth pair (GLOO_SOCKET_IFNAME). Each host has its own --outdir, as on machines
without a shared filesystem, so what host 1 writes shows. Every process started is ended
and waited for, and the namespaces are removed, also when a test fails. The last tests check
the pieces (messages, option checks, launcher lines) without a network.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

import netns
from conftest import REPO, TINY_TRAIN_FLAGS, assert_same_tensors, final_snapshot, only_run_dir
from creps import parallel
from creps.errors import UserError

# 12 steps of 8 images; ticks (and snapshots, training states) at 0.008, 0.056 and 0.096 kimg.
FLAGS = [*[f for f in TINY_TRAIN_FLAGS if not f.startswith("--tick")], "--tick=0.048", "--kimg=0.096"]
METRIC = "eqs65"  # two batches of the generator (64 + 1 images): each host renders one
TIMEOUT_S = 20  # CREPS_DIST_TIMEOUT: no process of these runs waits longer for a peer
RDZV = "join_timeout=40,read_timeout=10,close_timeout=5"
_ports = itertools.count(29400)


@dataclass
class Launch:
    """`creps torchrun` running on one host; its stdout and stderr go to `output`."""

    host: netns.Host
    proc: subprocess.Popen
    output: Path
    started: float
    ended: Optional[float] = None

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def errors(self) -> list[str]:
        return [line for line in self.text().splitlines() if line.startswith("error:")]


def launch(hosts: netns.TwoHosts, name: str, outdirs, data: Path, flags, tmp_path: Path, rdzv: str = RDZV,
           timeout: float = TIMEOUT_S) -> list[Launch]:
    """The same training command on both hosts, each with its own --outdir. Host 1 starts once
    host 0 serves the rendezvous, so that a slow start-up never counts against its timeouts."""
    port = next(_ports)
    launches = []
    for rank, host in enumerate(hosts):
        command = [
            sys.executable, "-m", "creps", "torchrun", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={hosts[0].address}:{port}", f"--rdzv-id={name}-{port}", f"--rdzv-conf={rdzv}",
            str(REPO / "train.py"), f"--outdir={outdirs[rank]}", f"--data={data}", "--gpus=2", *flags]
        env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=host.ifname, CREPS_DIST_TIMEOUT=str(timeout))
        output = tmp_path / f"{name}-host{rank}.txt"
        with open(output, "w") as sink:
            proc = hosts.popen(rank, command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        launches.append(Launch(host, proc, output, time.monotonic()))
        if rank == 0:
            wait_listening(launches[0], port)
    return launches


def wait_listening(item: Launch, port: int, timeout: float = 180) -> None:
    """Until a socket listens on `port` in the launch's host (its /proc/PID/net/tcp, tcp6)."""
    deadline = time.monotonic() + timeout
    while True:
        table = []
        for name in ("tcp", "tcp6"):
            try:
                table += Path(f"/proc/{item.proc.pid}/net/{name}").read_text().splitlines()[1:]
            except OSError:
                pass
        if any(row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A" for row in table):  # 0A: LISTEN
            return
        if item.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"nothing listens on port {port} of {item.host.address}:\n{item.text()[-3000:]}")
        time.sleep(0.05)


def finish(launches: list[Launch], timeout: float) -> list[int]:
    """Exit codes, each launch waited for up to `timeout` s from now; one still running then is
    killed (its process group) and fails the test."""
    deadline = time.monotonic() + timeout
    for item in launches:
        try:
            item.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in launches:
                with_suppressed_lookup(os.killpg, other.proc.pid, signal.SIGKILL)
                other.proc.wait()
            pytest.fail(f"host {item.host.address} still runs after {timeout} s:\n" +
                        "\n".join(f"--- {x.host.address}\n{x.text()[-3000:]}" for x in launches))
        item.ended = time.monotonic()
    return [item.proc.returncode for item in launches]


def with_suppressed_lookup(fn, *args) -> None:
    try:
        fn(*args)
    except ProcessLookupError:
        pass


def wait_for(launch_: Launch, text: str, count: int = 1, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while launch_.text().count(text) < count:
        if launch_.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {text!r} x{count} from {launch_.host.address}:\n{launch_.text()[-3000:]}")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def assert_nothing_runs(hosts) -> None:
    """Agents and workers have all ended: no process is left in either host."""
    for host in hosts:
        assert host.pids() == [], f"processes left in {host.ns}"


def assert_whole(run_dir: Path) -> None:
    """Every file of a run directory whole: states verify their checksums, snapshots load, JSON
    and every JSON line parse, images decode, the log ends its last line; no temporary files."""
    from PIL import Image

    from creps.checkpoint import load_snapshot
    from creps.train.state import load_training_state

    names = sorted(p.name for p in run_dir.iterdir())
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names
    for path in run_dir.iterdir():
        if path.name.startswith("training-state-"):
            load_training_state(path)
        elif path.name.startswith("network-snapshot-"):
            load_snapshot(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
        elif path.suffix == ".png":
            Image.open(path).load()
    assert (run_dir / "log.txt").read_text().endswith("\n")


def one_error_line(item: Launch) -> str:
    """The failure's one line: no traceback, exactly one `error:` line."""
    text = item.text()
    assert "Traceback" not in text, text[-3000:]
    (line,) = item.errors()
    return line


@pytest.fixture
def hosts():
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    with netns.TwoHosts() as made:
        yield made


@pytest.fixture(scope="module")
def one_host(tiny_dataset, tmp_path_factory):
    """The same run on one host with 2 processes (--gpus=2 without torchrun): its final weights."""
    from creps.cli.train import train

    outdir = tmp_path_factory.mktemp("one-host")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        assert train([f"--outdir={outdir}", f"--data={tiny_dataset}", "--gpus=2", *FLAGS]) == 0
    return final_snapshot(outdir)


@pytest.fixture(scope="module")
def two_hosts_run(tiny_dataset, tmp_path_factory):
    """One uninterrupted 2-host run, with a metric at every snapshot."""
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("two-hosts")
    outdirs = [tmp / "host0-runs", tmp / "host1-runs"]
    with netns.TwoHosts() as made:
        launches = launch(made, "plain", outdirs, tiny_dataset, [*FLAGS, f"--metrics={METRIC}"], tmp)
        codes = finish(launches, timeout=300)
        assert codes == [0, 0], "\n".join(x.text()[-3000:] for x in launches)
        assert_nothing_runs(made)
        return {"outdirs": outdirs, "launches": launches, "hosts": made.hosts}


@pytest.mark.slow
def test_two_hosts_train_like_one_host(two_hosts_run, one_host):
    """One run directory, on rank 0's host; the kimg of every tick and every image of each
    global batch counted once; final weights bit for bit those of 2 processes on one host."""
    host0, host1 = two_hosts_run["outdirs"]
    assert not host1.exists()  # host 1 wrote nothing
    run_dir = only_run_dir(host0)
    assert run_dir.name.endswith("-gpus2-batch8-gamma1")
    log = (run_dir / "log.txt").read_text()
    a, b = two_hosts_run["hosts"]
    assert f"rank 0 on " in log and f"({a.address}), rank 1 on " in log and f"({b.address})" in log
    assert log.count("Training for") == 1 and log.count("Exiting...") == 1
    ticks = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [t["Progress/kimg"]["mean"] for t in ticks] == pytest.approx([0.008, 0.056, 0.096])
    assert sum(t["Loss/G/loss"]["num"] for t in ticks) == 96  # 12 steps of 8 images, 4 from each host
    assert_same_tensors(final_snapshot(host0), one_host)
    assert all(x.errors() == [] for x in two_hosts_run["launches"])


@pytest.mark.slow
def test_metrics_combine_across_hosts(two_hosts_run, tiny_dataset):
    """The metric of each snapshot, computed by both hosts together, is the one-process number."""
    from creps.checkpoint import load_snapshot
    from creps.metrics.registry import compute_metric

    run_dir = only_run_dir(two_hosts_run["outdirs"][0])
    lines = [json.loads(line) for line in (run_dir / f"metric-{METRIC}.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and {line["num_gpus"] for line in lines} == {2}
    final = sorted(run_dir.glob("network-snapshot-*.safetensors"))[-1]
    assert lines[-1]["snapshot_pkl"] == final.name
    G = load_snapshot(final, networks=("G_ema",)).G_ema
    alone = compute_metric(METRIC, G, str(tiny_dataset), mirror=False, device="cpu", progress=False)
    assert alone["num_gpus"] == 1
    assert lines[-1]["results"][METRIC] == pytest.approx(alone["results"][METRIC], rel=1e-6)


@pytest.mark.slow
def test_killed_host_ends_the_run_in_one_line_then_both_resume(hosts, tiny_dataset, one_host, tmp_path):
    """kill -9 of host 1's worker mid-run: host 0's worker and agent end within seconds with one
    line naming rank 1 and the run directory, which stays whole; --resume on both hosts then
    ends with the weights of the uninterrupted run."""
    outdirs = [tmp_path / "host0-runs", tmp_path / "host1-runs"]
    first = launch(hosts, "killed", outdirs, tiny_dataset, FLAGS, tmp_path)
    wait_for(first[0], "Saved training-state-", count=2)  # tick 1 (0.056 kimg) is saved
    (worker,) = children(first[1].proc.pid)
    os.kill(worker, signal.SIGKILL)
    killed_at = time.monotonic()
    codes = finish(first, timeout=TIMEOUT_S + 40)
    assert codes[0] == 1 and codes[1] == 128 + signal.SIGKILL
    assert first[0].ended - killed_at < TIMEOUT_S + 10  # a closed connection: seconds, at most the timeout
    assert_nothing_runs(hosts)  # both agents ended, no worker left
    run_dir = only_run_dir(outdirs[0])
    line = one_error_line(first[0])
    assert line.startswith(f"error: lost contact with rank 1 (host ") and f"{hosts[1].address})" in line
    assert line.endswith(f"continue with the same command on every host with --resume={run_dir}")
    assert one_error_line(first[1]) == f"error: rank 1 (pid {worker} on this host) was killed by SIGKILL"
    log = (run_dir / "log.txt").read_text()
    assert "Exiting..." not in log and log.splitlines()[-1] == line  # it stopped mid-run, and says why
    assert_whole(run_dir)
    assert not outdirs[1].exists()

    again = launch(hosts, "resumed", outdirs, tiny_dataset, [*FLAGS, f"--resume={run_dir}"], tmp_path)
    assert finish(again, timeout=300) == [0, 0], "\n".join(x.text()[-3000:] for x in again)
    assert "Resumed from training-state-000000.safetensors at 0.1 kimg" in (run_dir / "log.txt").read_text()
    assert only_run_dir(outdirs[0]) == run_dir and not outdirs[1].exists()
    assert_same_tensors(final_snapshot(outdirs[0]), one_host)


@pytest.mark.slow
def test_unreachable_host_ends_the_rendezvous_in_one_line(hosts, tiny_dataset, tmp_path):
    """Host 1's link is down from the start: each host's rendezvous gives up within its timeout,
    with one line naming the endpoint, and nothing is written."""
    hosts[1].link(False)
    outdirs = [tmp_path / "host0-runs", tmp_path / "host1-runs"]
    started = time.monotonic()
    launches = launch(hosts, "unreachable", outdirs, tiny_dataset, FLAGS, tmp_path,
                      rdzv="join_timeout=3,read_timeout=3")
    codes = finish(launches, timeout=90)
    assert codes == [1, 1]
    assert max(x.ended for x in launches) - started < 3 + 45  # the timeouts (+ start-up), not torchrun's 600 s / 60 s
    endpoint = f"{hosts[0].address}:"
    host0, host1 = (one_error_line(x) for x in launches)
    assert host0.startswith(f"error: the rendezvous at {endpoint}") and "timed out after 3 s" in host0
    assert host1.startswith(f"error: cannot reach the rendezvous at {endpoint}") and "within 3 s" in host1
    assert "Network is unreachable" in host1
    assert not outdirs[0].exists() and not outdirs[1].exists()
    assert_nothing_runs(hosts)


@pytest.mark.slow
def test_lost_link_mid_run_ends_within_the_timeout(hosts, tiny_dataset, tmp_path):
    """Host 1's link goes down mid-run, as when a machine loses power: no connection closes, so
    host 0's worker waits for rank 1 until CREPS_DIST_TIMEOUT, then ends with one line; host 1,
    cut off, ends too (its agent no longer reaches the rendezvous on host 0)."""
    outdirs = [tmp_path / "host0-runs", tmp_path / "host1-runs"]
    timeout = 3
    launches = launch(hosts, "cut", outdirs, tiny_dataset, FLAGS, tmp_path, rdzv="read_timeout=2,close_timeout=1",
                      timeout=timeout)
    wait_for(launches[0], "Saved training-state-", count=1)
    hosts[1].link(False)
    cut_at = time.monotonic()
    codes = finish(launches, timeout=120)
    assert codes == [1, 1]
    assert launches[0].ended - cut_at < timeout + 15  # the message below says it was the timeout
    # Host 1's worker ends on the same timeout; its agent, stuck on the rendezvous store that
    # it no longer reaches, is ended read_timeout + close_timeout + 10 s after it.
    assert launches[1].ended - cut_at < timeout + 2 + 1 + 10 + 15
    line = one_error_line(launches[0])
    assert line.startswith(f"error: lost contact with the other processes: no answer within {timeout} s")
    assert "Traceback" not in launches[1].text() and launches[1].errors()
    assert_whole(only_run_dir(outdirs[0]))
    assert_nothing_runs(hosts)



# --- the pieces, without a network ------------------------------------------------------

TWO_HOSTS = parallel.World(rank=0, size=4, hosts=(("a", "10.0.0.1"), ("a", "10.0.0.1"), ("b", "10.0.0.2"),
                                                 ("b", "10.0.0.2")))


def test_a_lost_peer_is_named_from_the_backend_error():
    closed = RuntimeError("[/src/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                          "[10.0.0.2]:44722. This is typically caused by a remote worker crashing. GLHF!")
    lost = parallel.lost_peer(closed, TWO_HOSTS)
    assert str(lost) == "lost contact with ranks 2-3 (host b, 10.0.0.2): Connection closed by peer"
    timed_out = RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 600000ms for recv "
                             "operation to complete")
    assert str(parallel.lost_peer(timed_out, TWO_HOSTS)) == (
        "lost contact with the other processes: no answer within 600 s (CREPS_DIST_TIMEOUT; Timed out waiting "
        "600000ms for recv operation to complete)")
    assert parallel.lost_peer(RuntimeError("Tensors must be contiguous"), TWO_HOSTS) is None  # a bug stays a bug
    assert parallel.roster(TWO_HOSTS) == "ranks 0-1 on a (10.0.0.1), ranks 2-3 on b (10.0.0.2)"
    assert parallel.where(2, TWO_HOSTS) == "rank 2 (host b, 10.0.0.2)" and parallel.where(2, parallel.SINGLE) == "rank 2"


def test_collective_errors_become_one_line_and_bugs_pass(monkeypatch):
    def closed(*args, **kwargs):
        raise RuntimeError("[pair.cc:553] Connection closed by peer [10.0.0.2]:1")

    monkeypatch.setattr(parallel.dist, "barrier", closed)
    world = parallel.World(rank=1, size=2, hosts=(("a", "10.0.0.1"), ("b", "10.0.0.2")))
    with pytest.raises(parallel.PeerLost, match=r"^lost contact with the process at 10.0.0.2: Connection closed"):
        parallel.barrier(world)  # its own address: not a peer of itself

    def bug(*args, **kwargs):
        raise RuntimeError("No backend type associated with device type cpu")

    monkeypatch.setattr(parallel.dist, "barrier", bug)
    with pytest.raises(RuntimeError, match="No backend type") as caught:
        parallel.barrier(world)
    assert not isinstance(caught.value, parallel.PeerLost)


def test_the_peer_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(parallel.TIMEOUT_ENV, raising=False)
    assert parallel.peer_timeout() == 600
    monkeypatch.setenv(parallel.TIMEOUT_ENV, "2.5")
    assert parallel.peer_timeout() == 2.5
    for bad in ("0", "-3", "ten", "nan"):
        monkeypatch.setenv(parallel.TIMEOUT_ENV, bad)
        with pytest.raises(UserError, match="CREPS_DIST_TIMEOUT=.*expected a number of seconds"):
            parallel.peer_timeout()


def test_a_host_started_with_other_options_or_data_is_refused(tiny_dataset, tmp_path):
    from creps.cli.train import follow_rank0, local_dataset_info, parse_options, prepare

    def options(*extra):
        return parse_options([f"--outdir={tmp_path / 'runs'}", f"--data={tiny_dataset}", "--gpus=1", *FLAGS, *extra],
                             "train.py", parallel.SINGLE)

    main = options()
    decided = prepare(main)
    other_host = options("--outdir=elsewhere", "--workers=2", "--resume=auto")  # host-local: allowed
    assert follow_rank0(other_host, decided).cfg.to_json() == decided.cfg.to_json()
    with pytest.raises(UserError, match=r"other options than rank 0: --batch=16 \(rank 0: 8\); --mirror=1 "
                                        r"\(rank 0: 0\); run the same command on every host"):
        follow_rank0(options("--batch=16", "--mirror=1"), decided)
    from creps.data.synthetic import make_synthetic_dataset

    smaller = tmp_path / "smaller.zip"
    make_synthetic_dataset(str(smaller), num_images=30, resolution=16, seed=0)
    with pytest.raises(UserError, match=r"holds 30 images of 16x16x3, rank 0's dataset 32 images of 16x16x3"):
        follow_rank0(parse_options([f"--outdir={tmp_path}", f"--data={smaller}", "--gpus=1", *FLAGS], "train.py",
                                   parallel.SINGLE), decided)
    assert local_dataset_info(main).size == 32


def test_launcher_lines_and_defaults():
    from argparse import Namespace

    from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError, RendezvousTimeoutError

    from creps.cli import torchrun

    args = Namespace(rdzv_endpoint="10.0.0.1:29400", rdzv_conf="join_timeout=30,read_timeout=5", nnodes="2",
                     rdzv_id="run1", master_addr=None, master_port=None)
    assert torchrun.failure_line(RendezvousTimeoutError(), args).startswith(
        "the rendezvous at 10.0.0.1:29400 timed out after 30 s waiting for --nnodes=2 hosts;")
    try:
        try:
            raise RuntimeError("The client socket has failed to connect to any network address of (10.0.0.1, 29400). "
                               "The client socket has failed to connect to 10.0.0.1:29400 (errno: 113 - No route "
                               "to host).")
        except RuntimeError as cause:
            raise RendezvousConnectionError("The connection to the C10d store has failed.") from cause
    except RendezvousConnectionError as err:
        line = torchrun.failure_line(err, args)
    assert line.startswith("cannot reach the rendezvous at 10.0.0.1:29400 within 5 s (No route to host);")
    assert torchrun.rdzv_options("is_host=1, read_timeout = 5") == {"is_host": "1", "read_timeout": "5"}
    assert torchrun.owns_address("127.0.0.1") and parallel.address_towards("127.0.0.1", 9) == "127.0.0.1"
