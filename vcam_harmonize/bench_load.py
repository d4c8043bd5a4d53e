"""Busy processes beside the benchmark (``python -m vcam_harmonize.bench --load N``).

In a call the camera shares the machine with the call app, whose video encoder keeps a
core or so busy; :func:`busy_load` stands in for it with ``N`` processes that each spin on
the CPU in a pure-Python loop, pinned to a core of their own (the last ones) where the
platform lets us, so the pipeline is timed on the cores that are left.

The load must never outlive the benchmark: it is stopped in a ``finally`` (an exception
or Ctrl-C in the body stops it too: terminate, join with a timeout, kill), and a load
process whose parent died hard (SIGKILL, ``os._exit``) exits by itself: on Linux the
kernel sends it SIGKILL (``PR_SET_PDEATHSIG``), and everywhere it checks ``os.getppid()``
every :data:`POLL_S` seconds while it spins.

This module imports nothing heavy (no torch, OpenCV or MediaPipe), so a load process
costs a few MB.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: seconds between a load process's checks of its parent (and reports of its CPU time)
POLL_S = 0.1
#: seconds to wait for the load processes to start spinning, and for each to stop
START_TIMEOUT_S, STOP_TIMEOUT_S = 10.0, 2.0
#: ask the kernel to kill a load process when its parent dies (Linux); the
#: ``os.getppid()`` check stands behind it either way (the tests turn this off to see it)
USE_PDEATHSIG = True
_PR_SET_PDEATHSIG = 1


def _find_prctl():
    """libc's ``prctl``, looked up here in the parent: a forked child then only calls it
    (no dynamic loader work after the fork). None off Linux or without it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _find_prctl()


@dataclass
class LoadInfo:
    """What a :func:`busy_load` ran: filled in as it starts, completed when it stops
    (``busy_cpu_s`` and ``wall_s`` are only final after the ``with`` block)."""

    processes: int
    pinned: bool = False
    #: the core each process was pinned to, None when they ran unpinned
    cores: list[int] | None = None
    #: the load processes' ids (to check from outside that they are gone)
    pids: list[int] = field(default_factory=list)
    #: seconds from the first start until every process spun
    start_s: float = 0.0
    #: CPU seconds the load processes burnt, by their own ``time.process_time()``
    busy_cpu_s: float = 0.0
    #: seconds from all of them spinning until they were told to stop
    wall_s: float = 0.0

    def as_json(self) -> dict:
        """The benchmark's ``load`` object (the pids stay out: they mean nothing later)."""
        return {"processes": self.processes, "pinned": self.pinned, "cores": self.cores,
                "busy_cpu_s": round(self.busy_cpu_s, 3), "wall_s": round(self.wall_s, 3),
                "start_s": round(self.start_s, 3)}


def usable_cores() -> list[int]:
    """The cores this process may run on, sorted (all of ``os.cpu_count()`` where the
    platform cannot tell)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def max_load() -> int:
    """The most load processes allowed: one core at least stays for the pipeline."""
    return min(os.cpu_count() or 1, len(usable_cores())) - 1


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies. (The signal
    follows the parent *thread* that started the process: start the load from a thread
    that lives as long as the load, as the benchmark's main thread does.)"""
    if USE_PDEATHSIG and _PRCTL is not None:  # else the getppid() check alone
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def _spin(parent: int, ready, cpu_s) -> None:
    """A load process: spin until SIGTERM or until the parent is gone, writing its own CPU
    time to ``cpu_s`` every :data:`POLL_S` seconds and on the way out (a SIGKILLed process
    so loses at most one interval of its figure)."""
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop.append(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent; it stops us
    _die_with_parent()
    if os.getppid() != parent:  # it died before the prctl above took hold
        return
    ready.set()
    count, due = 0, time.monotonic() + POLL_S
    while not stop:
        for _ in range(20_000):
            count += 1
        now = time.monotonic()
        if now >= due:
            cpu_s.value = time.process_time()
            if os.getppid() != parent:
                break
            due = now + POLL_S
    cpu_s.value = time.process_time()


def _context(method: str | None):
    """``fork`` on Linux: the target is a pure-Python loop that touches none of the
    parent's torch, OpenCV or thread state, and it starts in milliseconds; ``spawn``
    would import the benchmark's ``__main__`` (``python -m vcam_harmonize.bench``: torch
    and OpenCV, about 3 s and a few hundred MB per process) before it could spin.
    Elsewhere ``spawn`` (macOS cannot fork safely once frameworks are loaded)."""
    if method is None:
        method = "fork" if sys.platform.startswith("linux") else "spawn"
    return multiprocessing.get_context(method)


def _pin(processes: list, info: LoadInfo) -> None:
    """Pin load process ``i`` to the ``i``-th core from the end, so one load on two cores
    holds the last one; leave them all unpinned where affinity is missing or refused."""
    if not hasattr(os, "sched_setaffinity"):
        return
    cores = usable_cores()
    chosen = [cores[-1 - i] for i in range(len(processes))]
    try:
        for process, core in zip(processes, chosen, strict=True):
            os.sched_setaffinity(process.pid, {core})
    except OSError:
        for process in processes:  # best effort: all unpinned rather than some
            try:
                os.sched_setaffinity(process.pid, set(cores))
            except OSError:
                pass
        return
    info.pinned, info.cores = True, chosen


@contextmanager
def busy_load(n: int, method: str | None = None) -> Iterator[LoadInfo]:
    """Run ``n`` busy processes for the duration of the ``with`` block.

    The block starts once every process spins (so what it times is timed under load);
    on the way out, however the block ends, each is sent SIGTERM, joined for up to
    :data:`STOP_TIMEOUT_S` seconds and killed if still there, and the returned
    :class:`LoadInfo` gets their CPU seconds and wall time. ``n == 0`` runs nothing.
    ``method`` is a multiprocessing start method (default: see :func:`_context`).
    Raises ValueError for ``n`` outside ``0..max_load()`` and RuntimeError when a
    process does not start spinning within :data:`START_TIMEOUT_S` seconds.
    """
    if not 0 <= n <= max_load():
        raise ValueError(f"load must be 0 to {max_load()} processes, got {n}")
    info = LoadInfo(processes=n)
    if n == 0:
        yield info
        return
    ctx = _context(method)
    parent = os.getpid()
    processes, readies, cpus = [], [], []
    started = time.perf_counter()
    spinning: float | None = None
    try:
        for index in range(n):
            ready, cpu_s = ctx.Event(), ctx.Value("d", 0.0, lock=False)
            process = ctx.Process(target=_spin, args=(parent, ready, cpu_s),
                                  name=f"vcam-bench-load-{index}", daemon=True)
            process.start()
            processes.append(process)
            readies.append(ready)
            cpus.append(cpu_s)
            info.pids.append(process.pid)
        _pin(processes, info)
        deadline = started + START_TIMEOUT_S
        for process, ready in zip(processes, readies, strict=True):
            while not ready.wait(0.05):
                if not process.is_alive() or time.perf_counter() > deadline:
                    raise RuntimeError(f"load process {process.pid} did not start spinning "
                                       f"(exit code {process.exitcode})")
        spinning = time.perf_counter()
        info.start_s = spinning - started
        yield info
    finally:
        stopping = time.perf_counter()
        _stop(processes)
        info.wall_s = stopping - spinning if spinning is not None else 0.0
        info.busy_cpu_s = sum(cpu_s.value for cpu_s in cpus)


def _stop(processes: list) -> None:
    """Terminate, join with a timeout, kill what is left, join again, release."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join(STOP_TIMEOUT_S)
    for process in processes:
        if not process.is_alive():
            process.close()
