"""What the camera costs: the process's CPU time per wall second, over a recent window.

:func:`time.process_time` counts the CPU time of the whole process, all its threads
(capture, segmentation, harmonization, the network, the libraries' own pools), so CPU
seconds per wall second is how many cores the camera keeps busy on average, and that
divided by the machine's cores is its share of the whole machine.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable

#: the shortest wall time a figure is given for (shorter spans are noise).
MIN_SPAN = 0.1


def machine_cores() -> int:
    """The machine's cores (:func:`os.cpu_count`; 1 where unknown)."""
    return os.cpu_count() or 1


class CpuMeter:
    """Cores kept busy by this process over the last ``window`` seconds.

    Sampled lazily: each :meth:`cores` call takes a sample (CPU time and wall time
    together) and keeps those of the last ``window`` s, plus the newest one before
    it, so the figure follows the recent price rather than the whole run's average
    (``window=math.inf``: the average since the start). Samples closer than
    ``MIN_SPAN`` s to the last kept one are not kept, so frequent reads stay cheap and
    the history small. The meter starts with a sample (made at construction and at
    :meth:`reset`).

    Args:
        window: seconds of history the figure covers.
        clock, cpu_clock: wall and CPU clocks (injectable for tests).
        machine: the machine's cores (default :func:`machine_cores`).
    """

    def __init__(self, window: float = 3.0, clock: Callable[[], float] = time.monotonic,
                 cpu_clock: Callable[[], float] = time.process_time,
                 machine: int | None = None):
        self.window = window
        self.machine = machine or machine_cores()
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._samples: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget the history; the figure is measured from now on."""
        with self._lock:
            self._samples.clear()
            self._samples.append((self._clock(), self._cpu_clock()))

    def cores(self) -> float | None:
        """CPU seconds per wall second since the oldest kept sample (e.g. 0.43: on average
        0.43 of a core busy); None until the meter spans ``MIN_SPAN`` s."""
        now, cpu = self._clock(), self._cpu_clock()
        with self._lock:
            samples = self._samples
            if now - samples[-1][0] >= MIN_SPAN:
                samples.append((now, cpu))
                # keep one sample at or before the window's start: the span covers it all
                while len(samples) > 2 and samples[1][0] <= now - self.window:
                    samples.popleft()
            since, cpu_since = samples[0]
        span = now - since
        if span < MIN_SPAN:
            return None
        return max(0.0, (cpu - cpu_since) / span)

    def share(self, cores: float | None) -> float | None:
        """``cores`` as a fraction of the whole machine (0..1); None for None."""
        return None if cores is None else cores / self.machine
