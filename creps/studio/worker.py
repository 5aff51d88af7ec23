"""One render thread per server, so requests never pile up, and a bounded cache of networks.

Every job names the view it is for (the page's own id for one image on screen), its kind
(preview or full) and the view's version (`seq`, which the page increases with every change).
A newer job for a view replaces the same kind's older one that still waits, and stops the
one that runs at its next tile; a newer preview also stops an older full render (the view has
changed, so it is stale). Replaced jobs end with `Superseded`. Previews run before full
renders. The server's event loop only waits on futures: it never renders.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import sys
import threading
import traceback
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from creps.errors import UserError
from creps.studio.paths import StudioError

KINDS = {"preview": 0, "info": 0, "full": 1}  # kind -> priority (lower runs first)


class Superseded(Exception):
    """A newer request for the same view replaced this one."""


@dataclass
class Job:
    view: str
    kind: str
    seq: int
    work: Callable[[Callable[[], None]], Any]  # work(check): check() raises Superseded once replaced
    order: int
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    stop: threading.Event = field(default_factory=threading.Event)

    def replaced_by(self, newer: "Job") -> bool:
        return (self.view == newer.view and self.seq < newer.seq
                and (self.kind == newer.kind or (newer.kind == "preview" and self.kind == "full")))

    def check(self) -> None:
        if self.stop.is_set():
            raise Superseded(f"view {self.view}: replaced by a newer request")

    def fail(self, error: BaseException) -> None:
        """End the job with `error`, unless it ended already (its request may have gone away)."""
        try:
            self.future.set_exception(error)
        except concurrent.futures.InvalidStateError:
            pass


class RenderWorker:
    """Runs jobs one at a time on its own thread, newest view state first (see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._pending: list[Job] = []
        self._running: Optional[Job] = None
        self._order = itertools.count()
        self._closed = False
        self.ran: deque[tuple[str, str, int]] = deque(maxlen=1000)  # (view, kind, seq) of the jobs started lately
        self._thread = threading.Thread(target=self._loop, name="creps-studio-render", daemon=True)
        self._thread.start()

    def submit(self, view: str, kind: str, seq: int, work: Callable[[Callable[[], None]], Any]) -> concurrent.futures.Future:
        if kind not in KINDS:
            raise StudioError(f"kind: choose one of {', '.join(KINDS)}, got {kind!r}")
        job = Job(view, kind, seq, work, next(self._order))
        with self._lock:
            if self._closed:
                raise StudioError("the studio is shutting down", status=503)
            stale = [j for j in self._pending if j.view == view and j.kind == kind and j.seq >= seq]
            running = self._running
            if stale or (running is not None and running.view == view and running.kind == kind and running.seq >= seq):
                job.fail(Superseded(f"view {view}: a newer request is already there"))
                return job.future
            for old in [j for j in self._pending if j.replaced_by(job)]:
                self._pending.remove(old)
                old.fail(Superseded(f"view {view}: replaced by a newer request"))
            if running is not None and running.replaced_by(job):
                running.stop.set()
            self._pending.append(job)
            self._lock.notify()
        return job.future

    def state(self) -> dict[str, Any]:
        """What waits and what runs: {pending: [(view, kind, seq)], running: (view, kind, seq) or None}."""
        with self._lock:
            return {"pending": [(j.view, j.kind, j.seq) for j in self._pending],
                    "running": None if self._running is None else
                    (self._running.view, self._running.kind, self._running.seq)}

    def stop(self) -> None:
        """Take no more jobs, fail those that wait, and stop the running one at its next piece."""
        with self._lock:
            self._closed = True
            for job in self._pending:
                job.fail(StudioError("the studio is shutting down", status=503))
            self._pending.clear()
            if self._running is not None:
                self._running.stop.set()
            self._lock.notify_all()

    def close(self) -> None:
        self.stop()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                job = min(self._pending, key=lambda j: (KINDS[j.kind], j.order))
                self._pending.remove(job)
                if not job.future.set_running_or_notify_cancel():
                    continue  # its request went away while it waited
                self._running = job
                self.ran.append((job.view, job.kind, job.seq))
            try:
                job.check()
                result, error = job.work(job.check), None
            except BaseException as err:  # every failure goes to the request that asked
                result, error = None, err
            with self._lock:  # done before the answer leaves, so the next request sees it done
                self._running = None
            if error is not None:
                job.fail(error)
            else:
                job.future.set_result(result)


def network_error(source: str, err: BaseException) -> StudioError:
    """The one line the page shows for a network file that cannot be loaded."""
    name = os.path.basename(source.rstrip("/")) or source
    if isinstance(err, StudioError):
        return err
    if isinstance(err, UserError):
        return StudioError(str(err), status=422)
    if isinstance(err, NotImplementedError):
        return StudioError(f"{name}: {err}", status=422)
    traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    return StudioError(f"{name}: cannot be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
                       status=422)


class NetworkCache:
    """The last `capacity` networks loaded (G_ema only), keyed by file, size and modification time
    so that a rewritten file is loaded again. Used from the render thread only."""

    def __init__(self, device: torch.device, capacity: int = 3,
                 load: Optional[Callable[[str, torch.device], Any]] = None):
        self.device, self.capacity = device, max(1, capacity)
        self._load = load or _load_snapshot
        self._items: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, source: str) -> Any:
        key = _file_key(source)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        try:
            snap = self._load(source, self.device)
        except BaseException as err:
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            raise network_error(source, err) from None
        self._items[key] = snap
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return snap

    def __len__(self) -> int:
        return len(self._items)


def _file_key(source: str) -> tuple:
    try:
        st = os.stat(source)
    except OSError:
        return (source,)
    return (source, st.st_size, st.st_mtime_ns)


def _load_snapshot(source: str, device: torch.device):
    from creps.checkpoint import load_snapshot

    return load_snapshot(source, device=device, networks=("G_ema",))
