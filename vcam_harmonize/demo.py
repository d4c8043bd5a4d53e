"""The demo clip: a real person (NASA's public-domain portrait of astronaut Eileen
Collins, shipped as ``assets/demo_person.jpg``) who sways, leans in and goes through a
lighting change, rendered on the fly so no webcam is needed.

:class:`DemoClip` is a frame source like :class:`~vcam_harmonize.capture.Capture`;
:func:`write_demo_clip` saves the same frames as a video file.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from vcam_harmonize.capture import Frame
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.images import read_image

DEMO_PHOTO = Path(__file__).resolve().parent / "assets" / "demo_person.jpg"
DEMO_SECONDS = 6.0


def demo_frame(photo: np.ndarray, t: float, size: tuple[int, int]) -> np.ndarray:
    """The demo at ``t`` seconds: uint8 RGB ``(height, width, 3)``.

    The person sways sideways, leans in and out, and the light goes from cool and dim
    to warm and bright and back (a 6-second loop).
    """
    width, height = size
    phase = 2 * math.pi * (t % DEMO_SECONDS) / DEMO_SECONDS
    zoom = 1.0 + 0.08 * math.sin(phase)
    scale = zoom * height / photo.shape[0]
    shift_x = 0.04 * width * math.sin(phase)
    shift_y = 0.03 * height * math.sin(2 * phase)
    matrix = np.array([[scale, 0, width / 2 - scale * photo.shape[1] / 2 + shift_x],
                       [0, scale, height / 2 - scale * photo.shape[0] / 2 + shift_y]])
    frame = cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(96, 96, 96))
    light = 0.5 - 0.5 * math.cos(phase)  # 0 -> 1 -> 0
    gain = np.array([0.8 + 0.35 * light, 0.85 + 0.2 * light, 0.95], np.float32)
    return np.clip(frame * gain, 0, 255).astype(np.uint8)


def load_demo_photo() -> np.ndarray:
    if not DEMO_PHOTO.is_file():
        raise InputError(f"the demo photo {DEMO_PHOTO} is missing; reinstall vcam-harmonize")
    return read_image(DEMO_PHOTO)


class DemoClip:
    """A frame source that renders the demo (looping) at ``fps``.

    ``paced=False`` renders as fast as the consumer reads (every frame handed over).
    """

    def __init__(self, size: tuple[int, int] = (1280, 720), fps: float = 30.0,
                 paced: bool = True):
        self.size, self.paced = size, paced
        self.fps = float(fps)
        self.state = "stopped"
        self._photo = load_demo_photo()
        self._index = 0
        self._started = 0.0
        self._stop = threading.Event()

    def start(self) -> DemoClip:
        self._stop.clear()
        self._started = time.monotonic()
        self.state = "running"
        return self

    def stop(self) -> None:
        self._stop.set()
        self.state = "stopped"

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._stop.is_set():
            return None
        if self.paced:
            due = self._started + self._index / self.fps
            delay = due - time.monotonic()
            if delay > timeout or (delay > 0 and self._stop.wait(delay)):
                return None
        image = demo_frame(self._photo, self._index / self.fps, self.size)
        frame = Frame(image, self._index, time.monotonic())
        self._index += 1
        return frame


def write_demo_clip(path: str | Path, size: tuple[int, int] = (640, 360), fps: float = 30.0,
                    seconds: float = DEMO_SECONDS) -> Path:
    """Save the demo as an MJPG ``.avi`` (or any container OpenCV writes) file."""
    path = Path(path)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    if not writer.isOpened():
        raise InputError(f"cannot write video file {path}")
    photo = load_demo_photo()
    try:
        for i in range(int(round(seconds * fps))):
            writer.write(cv2.cvtColor(demo_frame(photo, i / fps, size), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
