"""Two hosts on one machine, for tests: two network namespaces joined by a veth pair, each
with its own loopback and a private address of a /30 that none of this machine's routes
touches. Processes started in a host see only its two interfaces, so what they do crosses a
real (virtual) network, which the tests can cut (link down).

Needs root (`ip netns`) and iproute2's `ip`, installed with apt-get when missing (as root).
Namespace names carry this process's id; namespaces left by an earlier test process that
was killed are removed, with their processes, when the next one starts.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Optional, Sequence

PREFIX = "creps-test"
_serial = itertools.count()
_unavailable: Optional[str] = None
_checked = False


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def ensure_iproute2() -> bool:
    """`ip` on the PATH, installing iproute2 with apt-get when missing and root; whether it is there."""
    if shutil.which("ip"):
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "install", "-y", "-q", "iproute2"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "iproute2"]):
        try:
            subprocess.run(command, capture_output=True, env=env, timeout=180)
        except subprocess.TimeoutExpired:
            return False
        if shutil.which("ip"):
            return True
    return False


def unavailable() -> Optional[str]:
    """Why two hosts cannot be made here (a skip reason), or None. Checked once per process,
    by making a pair and removing it."""
    global _unavailable, _checked
    if _checked:
        return _unavailable
    _checked = True
    if os.geteuid() != 0:
        _unavailable = "needs root to make network namespaces (ip netns)"
    elif not ensure_iproute2():
        _unavailable = "needs iproute2's `ip` (apt-get install iproute2)"
    else:
        try:
            TwoHosts().close()
        except (subprocess.CalledProcessError, RuntimeError) as err:
            detail = getattr(err, "stderr", None) or str(err)
            _unavailable = f"cannot make two network namespaces joined by a veth pair: {detail.strip()}"
    return _unavailable


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def namespace_pids(ns: str) -> list[int]:
    out = ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split()]


def kill_namespace(ns: str, timeout: float = 20) -> list[int]:
    """SIGKILL every process in `ns` until none is left; returns the pids that were there."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        pids = namespace_pids(ns)
        if not pids:
            return seen
        seen += [p for p in pids if p not in seen]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} in namespace {ns} do not end")
        time.sleep(0.05)


def remove_stale() -> None:
    """Namespaces of test processes that no longer run (killed before they cleaned up)."""
    listed = ip("netns", "list", check=False).stdout
    for name in re.findall(rf"^({re.escape(PREFIX)}-(\d+)-\S+)", listed, flags=re.M):
        ns, owner = name[0], int(name[1])
        if owner != os.getpid() and not _alive(owner):
            kill_namespace(ns)
            ip("netns", "del", ns, check=False)


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network in this machine's routing tables and addresses."""
    text = ip("-4", "route", "show", "table", "all", check=False).stdout + ip("-4", "addr", check=False).stdout
    nets = []
    for token in re.findall(r"\b(\d+\.\d+\.\d+\.\d+(?:/\d+)?)\b", text):
        try:
            nets.append(ipaddress.ip_network(token, strict=False))
        except ValueError:
            pass
    return nets


def free_subnet() -> ipaddress.IPv4Network:
    """A private /30 (two host addresses) that overlaps nothing this machine routes."""
    used = used_networks()
    for candidate in ipaddress.ip_network("10.213.0.0/16").subnets(new_prefix=30):
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise RuntimeError("no free /30 in 10.213.0.0/16")


@dataclass(frozen=True)
class Host:
    ns: str  # network namespace
    ifname: str  # its end of the veth pair (GLOO_SOCKET_IFNAME)
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """argv, run inside this host's network."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def pids(self) -> list[int]:
        return namespace_pids(self.ns)

    def link(self, up: bool) -> None:
        ip("-n", self.ns, "link", "set", self.ifname, "up" if up else "down")

    def wait_carrier(self, timeout: float = 10) -> None:
        """Until both ends are up (the link has carrier), so that the first connection goes through."""
        deadline = time.monotonic() + timeout
        while "LOWER_UP" not in ip("-n", self.ns, "link", "show", "dev", self.ifname).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.ifname} in {self.ns} has no carrier after {timeout} s")
            time.sleep(0.05)


class TwoHosts:
    """Two hosts (`pair[0]`, `pair[1]`), joined by a veth pair. `popen` starts a process in one;
    `close()` kills every process in them, waits for those it started, and removes them (also
    use it as a context manager)."""

    def __init__(self) -> None:
        remove_stale()
        net = free_subnet()
        a, b = list(net.hosts())
        tag = f"{PREFIX}-{os.getpid()}-{next(_serial)}"
        self.hosts = (Host(f"{tag}-h0", "creps0", str(a)), Host(f"{tag}-h1", "creps1", str(b)))
        self.prefix = net.prefixlen
        self.started: list[subprocess.Popen] = []
        try:
            for host in self.hosts:
                ip("netns", "add", host.ns)
                ip("-n", host.ns, "link", "set", "lo", "up")
            h0, h1 = self.hosts
            ip("link", "add", h0.ifname, "netns", h0.ns, "type", "veth", "peer", "name", h1.ifname, "netns", h1.ns)
            for host in self.hosts:
                ip("-n", host.ns, "addr", "add", f"{host.address}/{self.prefix}", "dev", host.ifname)
                host.link(True)
            for host in self.hosts:
                host.wait_carrier()
        except BaseException:
            self.close()
            raise

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __iter__(self):
        return iter(self.hosts)

    def popen(self, index: int, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """argv run in host `index`, in a session of its own (kill it and its children by group)."""
        proc = subprocess.Popen(self.hosts[index].command(argv), start_new_session=True, **kwargs)
        self.started.append(proc)
        return proc

    def close(self) -> list[int]:
        """Kill what still runs in the hosts (returns those pids), reap what was started here,
        and remove the hosts."""
        left: list[int] = []
        listed = {line.split()[0] for line in ip("netns", "list", check=False).stdout.splitlines() if line.strip()}
        for host in self.hosts:
            if host.ns in listed:
                left += kill_namespace(host.ns)
        for proc in self.started:
            proc.wait()
        for host in self.hosts:
            if host.ns in listed:
                ip("netns", "del", host.ns, check=False)
        return left

    def __enter__(self) -> "TwoHosts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
