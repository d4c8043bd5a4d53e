"""Camera and video-file capture on a thread that keeps only the newest frame.

``Capture`` reads ``cv2.VideoCapture`` on its own thread and hands over the newest frame
through a one-slot buffer, so a slow consumer never sees stale frames. Video files loop
(paced at their frame rate unless ``paced=False``); a camera that stops delivering is
reopened with a growing back-off while the thread keeps running.

Cameras are asked for MJPG first: most UVC webcams deliver 720p or 1080p at 30 fps only
in MJPG, and at 5-10 fps in their default YUYV. A camera that refuses MJPG keeps its
default format. What the camera agreed to is :attr:`Capture.negotiated`.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple, Protocol

import cv2
import numpy as np

from vcam_harmonize.models.errors import CameraError
from vcam_harmonize.models.images import cover_crop

log = logging.getLogger(__name__)

_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 5.0
_JOIN_TIMEOUT_S = 2.0
#: the format asked of cameras first.
PREFERRED_FOURCC = "MJPG"
#: the driver name v4l2loopback devices (virtual cameras, ours among them) report.
LOOPBACK_DRIVER = "v4l2 loopback"
#: where the V4L2 device nodes are (Linux).
DEV = Path("/dev")
_V4L2_CAPABILITY = struct.Struct("16s32s32sIII12x")  # struct v4l2_capability
_VIDIOC_QUERYCAP = 0x80685600  # _IOR('V', 0, struct v4l2_capability)


class Frame(NamedTuple):
    """One captured frame: RGB uint8 (H, W, 3), running index, ``time.monotonic()`` stamp."""

    image: np.ndarray
    index: int
    timestamp: float


class CameraFormat(NamedTuple):
    """What a camera (or video file) delivers: FourCC code, frame size and frame rate."""

    fourcc: str
    width: int
    height: int
    fps: float

    def __str__(self) -> str:
        return f"{self.fourcc} {self.width}x{self.height} @ {self.fps:g} fps"


class FrameSource(Protocol):
    """What the pipeline needs from an input: started, read, stopped."""

    state: str
    fps: float

    def start(self) -> FrameSource: ...

    def read(self, timeout: float = 1.0) -> Frame | None: ...

    def stop(self) -> None: ...


def _camera_index(source: int | str | Path) -> int | None:
    """The camera index ``source`` names (``2``, ``"2"``, ``/dev/video2``), else None."""
    if isinstance(source, int):
        return source
    text = str(source)
    if text.isdigit():
        return int(text)
    match = re.fullmatch(r"/dev/video(\d+)", text)
    return int(match.group(1)) if match else None


def decode_fourcc(code: float) -> str:
    """The four characters of an OpenCV ``CAP_PROP_FOURCC`` value; "?" if it has none."""
    chars = "".join(chr((int(code) >> (8 * i)) & 0xFF) for i in range(4))
    return chars.strip() if chars.isprintable() and chars.strip() else "?"


def negotiate(cap: cv2.VideoCapture, width: int | None = None, height: int | None = None,
              fps: float | None = None, fourcc: str | None = PREFERRED_FOURCC) -> CameraFormat:
    """Ask an open camera for ``fourcc`` (MJPG; None: its default format) at ``width`` x
    ``height`` and ``fps``; return what it agreed to.

    The FourCC goes first, because V4L2 drivers offer sizes and rates per format. A
    camera that refuses it keeps its own default format (OpenCV's V4L2 backend puts the
    old one back), and the size and rate are then asked in that format.
    """
    if fourcc:
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
    for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height),
                        (cv2.CAP_PROP_FPS, fps)):
        if value:
            cap.set(prop, value)
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return current_format(cap)


def current_format(cap: cv2.VideoCapture) -> CameraFormat:
    """The format an open ``cv2.VideoCapture`` reports (a file: its codec, size and rate)."""
    return CameraFormat(decode_fourcc(cap.get(cv2.CAP_PROP_FOURCC)),
                        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                        int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                        round(float(cap.get(cv2.CAP_PROP_FPS)), 2))


def v4l2_driver(device: str | Path) -> str | None:
    """The driver name a V4L2 device reports (``VIDIOC_QUERYCAP``), e.g. "uvcvideo" or
    "v4l2 loopback"; None where it cannot be asked (not Linux, no such device)."""
    try:
        import fcntl  # POSIX only
    except ImportError:
        return None
    try:
        fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        data = bytearray(_V4L2_CAPABILITY.size)
        fcntl.ioctl(fd, _VIDIOC_QUERYCAP, data, True)
    except OSError:
        return None
    finally:
        os.close(fd)
    return _V4L2_CAPABILITY.unpack(data)[0].split(b"\0", 1)[0].decode("ascii", "replace")


def _candidate_indices(max_index: int) -> list[int]:
    """Camera indices worth trying: on Linux the ``/dev/videoN`` nodes that exist and are
    no v4l2loopback device (a virtual camera is an output, ours among them, and reading
    one that nobody writes to blocks for seconds); elsewhere every index."""
    if not sys.platform.startswith("linux"):
        return list(range(max_index))
    return [index for index in range(max_index)
            if (DEV / f"video{index}").exists()
            and v4l2_driver(DEV / f"video{index}") != LOOPBACK_DRIVER]


def probe_cameras(max_index: int = 10, width: int | None = None, height: int | None = None,
                  fps: float | None = None) -> list[tuple[int, CameraFormat]]:
    """The cameras below ``max_index`` that open and deliver a frame, each with the format
    it agreed to for ``width`` x ``height`` at ``fps`` (asked as :class:`Capture` asks).

    Virtual cameras (v4l2loopback devices, such as our own output) are not listed.
    """
    found = []
    for index in _candidate_indices(max_index):
        cap = cv2.VideoCapture(index)
        try:
            if not cap.isOpened():
                continue
            agreed = negotiate(cap, width, height, fps)
            ok, frame = cap.read()
            if ok and frame is not None:
                found.append((index, agreed._replace(width=frame.shape[1],
                                                     height=frame.shape[0])))
        finally:
            cap.release()
    return found


def list_cameras(max_index: int = 10) -> list[int]:
    """Indices below ``max_index`` of the cameras that open and deliver a frame (virtual
    cameras left out; see :func:`probe_cameras`)."""
    return [index for index, _ in probe_cameras(max_index)]


class Capture:
    """Threaded capture from a camera index, a ``/dev/videoN`` path or a video file.

    Args:
        source: camera index (``0``), device path (``/dev/video0``) or video file path.
        width, height: wanted frame size; asked of the camera, and every frame is
            cover-cropped to it when both are given.
        fps: frame rate asked of the camera.
        paced: play video files at their own frame rate (``False`` reads them as fast as
            possible, for benchmarks).
        lossless: hand over every frame (the reader waits for the consumer) instead of
            only the newest; for benchmarks and exact frame counts.

    ``state`` is ``"running"``, ``"reconnecting"`` or ``"stopped"``; ``fps`` is the
    measured delivery rate; ``negotiated`` is the :class:`CameraFormat` the camera agreed
    to (a file's codec, size and rate), None before it opened. Use as a context manager
    or call ``start()``/``stop()``.
    """

    def __init__(
        self,
        source: int | str | Path,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        paced: bool = True,
        lossless: bool = False,
    ) -> None:
        self.source = source
        self.lossless = lossless
        self.width, self.height, self.requested_fps = width, height, fps
        self.paced = paced
        self.index = _camera_index(source)
        self.state = "stopped"
        self.negotiated: CameraFormat | None = None
        self._cap: cv2.VideoCapture | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Condition()
        self._latest: Frame | None = None
        self._last_read = -1
        self._stamps: deque[float] = deque(maxlen=30)
        self._backoff = _BACKOFF_START_S

    @property
    def is_file(self) -> bool:
        """True when the source is a video file (looped) rather than a camera."""
        return self.index is None

    @property
    def fps(self) -> float:
        """Frames per second delivered over the last (up to) 30 frames; 0 before two."""
        with self._ready:
            stamps = list(self._stamps)
        if len(stamps) < 2 or stamps[-1] <= stamps[0]:
            return 0.0
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])

    def start(self) -> Capture:
        """Open the source and start the reader thread; raise CameraError if it won't open."""
        if self._thread is not None:
            return self
        if self.is_file and not Path(self.source).is_file():
            raise CameraError(f"video file not found: {self.source}")
        self._cap = self._open()
        if self._cap is None or (self.is_file and not self._cap.grab()):
            if self._cap is not None:
                self._cap.release()
            raise CameraError(self._open_failure_message())
        if self.is_file:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._stop.clear()
        self._latest, self._last_read = None, -1
        self._stamps.clear()
        self.state = "running"
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (joined within 2 s) and release the device."""
        self._stop.set()
        with self._ready:
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("capture thread did not stop within %.0f s", _JOIN_TIMEOUT_S)
            self._thread = None
        self.state = "stopped"

    def read(self, timeout: float = 1.0) -> Frame | None:
        """Wait up to ``timeout`` s for a frame newer than the last one read.

        Returns the newest frame (frames in between are dropped), or None on timeout or
        when stopped.
        """
        deadline = time.monotonic() + timeout
        with self._ready:
            while self._latest is None or self._latest.index <= self._last_read:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return None
                self._ready.wait(remaining)
            self._last_read = self._latest.index
            self._ready.notify_all()
            return self._latest

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open(self) -> cv2.VideoCapture | None:
        """A ready ``cv2.VideoCapture`` for the source, or None if it won't open; sets
        :attr:`negotiated`."""
        cap = cv2.VideoCapture(str(self.source) if self.is_file else self.index)
        if not cap.isOpened():
            cap.release()
            return None
        if self.is_file:
            self.negotiated = current_format(cap)
            return cap
        self.negotiated = negotiate(cap, self.width, self.height, self.requested_fps)
        if self.negotiated.fourcc == PREFERRED_FOURCC and not cap.grab():
            # it took MJPG but delivers nothing in it: start over in its default format
            cap.release()
            cap = cv2.VideoCapture(self.index)
            if not cap.isOpened():
                cap.release()
                return None
            self.negotiated = negotiate(cap, self.width, self.height, self.requested_fps,
                                        fourcc=None)
        if self.negotiated.fourcc != PREFERRED_FOURCC:
            log.debug("camera %s gives no %s; using its default format: %s",
                     self.source, PREFERRED_FOURCC, self.negotiated)
        return cap

    def _open_failure_message(self) -> str:
        if self.is_file:
            return f"cannot read video file {self.source} (not a video OpenCV can decode)"
        cameras = list_cameras()
        offer = ", ".join(map(str, cameras)) if cameras else "none found"
        return f"camera {self.source} does not open; cameras that do: {offer}"

    def _run(self) -> None:
        """Reader loop: deliver frames; loop files; reopen cameras that stop."""
        cap = self._cap
        frame_period = self._file_frame_period(cap)
        next_due = time.monotonic()
        index = 0
        try:
            while not self._stop.is_set():
                ok, bgr = cap.read()
                if not ok and self.is_file:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, bgr = cap.read()
                if not ok:
                    cap.release()
                    cap = self._reconnect()
                    if cap is None:
                        break
                    continue
                self._backoff = _BACKOFF_START_S
                if frame_period:
                    delay = next_due - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    next_due = max(next_due, time.monotonic() - frame_period) + frame_period
                self._publish(bgr, index)
                index += 1
        finally:
            if cap is not None:
                cap.release()
            self._cap = None
            self.state = "stopped"

    def _file_frame_period(self, cap: cv2.VideoCapture) -> float:
        """Seconds between frames when pacing a file; 0 for cameras or unpaced files."""
        if not (self.is_file and self.paced):
            return 0.0
        fps = cap.get(cv2.CAP_PROP_FPS)
        return 1.0 / fps if 0 < fps < 1000 else 1.0 / 30

    def _reconnect(self) -> cv2.VideoCapture | None:
        """Reopen the source with back-off until it opens; None once stopped.

        The wait starts at 0.5 s and doubles up to 5 s; it only starts over after a frame
        arrives, so a device that opens but delivers nothing is not hammered.
        """
        self.state = "reconnecting"
        log.warning("%s stopped delivering frames; reconnecting", self.source)
        while not self._stop.wait(self._backoff):
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)
            cap = self._open()
            if cap is not None:
                log.info("%s reopened", self.source)
                self.state = "running"
                return cap
        return None

    def _publish(self, bgr: np.ndarray, index: int) -> None:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.width and self.height:
            rgb = cover_crop(rgb, (self.width, self.height))
        with self._ready:
            while self.lossless and self._latest is not None and \
                    self._latest.index > self._last_read and not self._stop.is_set():
                self._ready.wait(0.1)
            now = time.monotonic()
            self._stamps.append(now)
            self._latest = Frame(rgb, index, now)
            self._ready.notify_all()
