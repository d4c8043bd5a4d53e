"""A pyvirtualcam backend for tests: records what a virtual camera would receive."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import numpy as np
import pyvirtualcam


class RecordingBackend:
    """Stores every frame sent, its time, and the format it was opened with."""

    instances: list[RecordingBackend] = []

    def __init__(self, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self._device = device or "/dev/video-test"
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.closed = False
        self.lock = threading.Lock()
        RecordingBackend.instances.append(self)

    def send(self, frame):
        with self.lock:
            self.frames.append(frame.reshape(self.height, self.width, 3).copy())
            self.times.append(time.monotonic())

    def close(self):
        self.closed = True

    def device(self):
        return self._device

    def native_fourcc(self):
        return None


@contextmanager
def recording_backend(name: str = "recording"):
    """Register :class:`RecordingBackend` under ``name`` for the duration of the block."""
    RecordingBackend.instances = []
    pyvirtualcam.register_backend(name, RecordingBackend)
    try:
        yield RecordingBackend
    finally:
        pyvirtualcam.camera.BACKENDS.pop(name, None)
