"""Where finished frames go: the virtual camera, a preview window or a video file.

All sinks are a :class:`Sink`, the protocol the pipeline and the CLI talk to: made
(opened) by :func:`make_sinks`, then ``send(frame_rgb)``, ``pump()``, ``close()``, a
``failure`` and the rest, with defaults for what a sink lacks (no card, nothing to
pump). ``VirtualCameraSink`` keeps the stream alive on its own thread: it sends at a
steady rate, repeats the last frame when none arrives in time, and shows a card while
paused or when asked (e.g. "camera lost").
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import pyvirtualcam

from vcam_harmonize.config import CameraConfig
from vcam_harmonize.models.errors import InputError, VirtualCameraError
from vcam_harmonize.models.images import cover_crop

log = logging.getLogger(__name__)

DEFAULT_NAME = "PHNet Cam"
PAUSED_TEXT = "Camera paused"
SYSFS_VIDEO = Path("/sys/class/video4linux")
_CARD_GREY = 24
_JOIN_TIMEOUT_S = 2.0


@runtime_checkable
class Sink(Protocol):
    """Where finished frames go: all that the pipeline and the CLI know of a sink.

    Making a sink opens it, as with ``pyvirtualcam.Camera`` (:func:`make_sinks` makes the
    ones a config names). Then ``send`` each frame, ``pump`` from the thread that made
    it, and ``close`` it once (a second ``close`` does nothing). Its attributes:

    - ``mirror``: flip frames left-right (may change while running);
    - ``paused``: while True, a sink that can shows the "Camera paused" card (the
      virtual camera; the others simply get no frames meanwhile);
    - ``device``: what the output is called in messages (``/dev/video10``, a path);
    - ``failure``: None, or the error that made the sink stop taking frames (the
      pipeline then stops and reports it);
    - ``quit_requested``: the user asked to quit through the sink (a window's ``q``).

    The sinks here subclass it for its defaults (no card, nothing to pump, no failure,
    no quitting); anything else with these members is a sink too.
    """

    mirror: bool
    paused: bool
    device: str
    failure: InputError | None
    quit_requested: bool

    def __init__(self, mirror: bool = False, device: str = "") -> None:
        self.mirror = mirror
        self.paused = False
        self.device = device
        self.failure = None
        self.quit_requested = False

    def send(self, frame: np.ndarray) -> None:
        """Output one uint8 RGB frame (H, W, 3)."""
        raise NotImplementedError

    def show_card(self, text: str | None) -> None:
        """Show ``text`` on a dark card instead of the frames until the next ``send``
        (None ends it); a sink without cards ignores it."""

    def pump(self) -> None:
        """Drive the sink's own window from the thread that made it; most have none."""

    def close(self) -> None:
        """Flush and release the output; a second call does nothing."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _flipped(frame: np.ndarray, mirror: bool) -> np.ndarray:
    """``frame`` mirrored left-right when ``mirror``, else itself."""
    return cv2.flip(frame, 1) if mirror else frame


def video_devices(sysfs: Path = SYSFS_VIDEO) -> list[tuple[str, str]]:
    """``(/dev/videoN, card label)`` of every v4l2 device (Linux; empty elsewhere)."""
    found = []
    for node in sorted(sysfs.glob("video*")):
        try:
            found.append((f"/dev/{node.name}", (node / "name").read_text().strip()))
        except OSError:
            continue
    return found


def find_loopback_device(name: str = DEFAULT_NAME, sysfs: Path = SYSFS_VIDEO) -> str | None:
    """``/dev/videoN`` of the v4l2 device whose card label is ``name``, or None (Linux)."""
    return next((dev for dev, label in video_devices(sysfs) if label == name), None)


_MODPROBE_OPTIONS = 'devices=1 video_nr=10 card_label="{name}" exclusive_caps=1'


def setup_commands(name: str = DEFAULT_NAME, platform: str = sys.platform) -> list[str]:
    """The steps that create a virtual camera called ``name`` on ``platform``."""
    options = _MODPROBE_OPTIONS.format(name=name)
    if platform.startswith("linux"):
        return [
            "sudo apt install v4l2loopback-dkms v4l2loopback-utils   # Fedora: "
            "akmod-v4l2loopback, Arch: v4l2loopback-dkms",
            f"sudo modprobe v4l2loopback {options}",
            "# keep it after a reboot:",
            "echo v4l2loopback | sudo tee /etc/modules-load.d/v4l2loopback.conf",
            f"echo 'options v4l2loopback {options}' | sudo tee "
            "/etc/modprobe.d/v4l2loopback.conf",
        ]
    if platform == "win32":
        return [
            "install OBS Studio 26 or newer (gives 'OBS Virtual Camera'), or, to be listed "
            f"as '{name}', Unity Capture as administrator:",
            f'regsvr32 UnityCaptureFilter64bit.dll "/i:UnityCaptureName={name}"',
        ]
    return ["install OBS Studio 30 or newer, click Start Virtual Camera once, allow the "
            "system extension in System Settings > Privacy & Security, then quit OBS (a "
            "reboot may be needed)"]


def setup_hint(name: str = DEFAULT_NAME, error: str = "") -> str:
    """One line: the step that makes a virtual camera available on this OS."""
    if "ermission denied" in error:
        return "add yourself to the video group: sudo usermod -aG video $USER (then log in again)"
    commands = setup_commands(name)
    if sys.platform.startswith("linux"):
        return f"load v4l2loopback: {commands[1]}"
    return " ".join(commands)


def draw_card(text: str, width: int, height: int) -> np.ndarray:
    """A dark uint8 RGB frame (height, width, 3) with ``text`` centred in light grey."""
    card = np.full((height, width, 3), _CARD_GREY, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.4, width / 640)
    thickness = max(1, round(2 * scale))
    (text_w, text_h), _ = cv2.getTextSize(text, font, scale, thickness)
    origin = ((width - text_w) // 2, (height + text_h) // 2)
    cv2.putText(card, text, origin, font, scale, (220, 220, 220), thickness, cv2.LINE_AA)
    return card


class VirtualCameraSink(Sink):
    """The virtual camera (pyvirtualcam, RGB), fed at a steady ``fps`` by a sender thread.

    Args:
        width, height, fps: output geometry and rate; an odd width loses one column.
        device: e.g. ``/dev/video10``; on Linux, None picks the loopback labelled ``name``.
        backend: pyvirtualcam backend name (None: the OS default).
        name: the v4l2loopback card label to look for (Linux only).
        mirror: flip frames left-right.

    Set ``paused`` to send a "Camera paused" card; ``show_card(text)`` shows a card until
    the next ``send()`` (or ``show_card(None)``).
    """

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        device: str | None = None,
        backend: str | None = None,
        name: str = DEFAULT_NAME,
        mirror: bool = False,
    ) -> None:
        super().__init__(mirror)
        if width < 2 or height < 1 or fps <= 0:
            raise VirtualCameraError(f"bad virtual camera format {width}x{height} at {fps} fps")
        self.width, self.height, self.fps = width - width % 2, height, fps
        if backend is not None and backend not in pyvirtualcam.camera.BACKENDS:
            known = ", ".join(pyvirtualcam.camera.BACKENDS)
            raise VirtualCameraError(f"no {backend!r} virtual camera backend here; "
                                     f"available: {known}")
        if device is None and backend in (None, "v4l2loopback") and sys.platform == "linux":
            device = find_loopback_device(name)
        try:
            self._camera = _open_camera(self.width, height, fps, device, backend, name)
        except (RuntimeError, ValueError, OSError) as err:
            message = " / ".join(str(err).splitlines())
            hint = setup_hint(name, message)
            raise VirtualCameraError(f"virtual camera not available ({message}); {hint}") \
                from err
        self.device = self._camera.device
        self._card_text: str | None = None
        self._cards: dict[str, np.ndarray] = {}
        self._latest = np.zeros((height, self.width, 3), np.uint8)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failures = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="virtual-camera", daemon=True)
        self._thread.start()

    def send(self, frame: np.ndarray) -> None:
        """Queue ``frame`` (uint8 RGB; cover-cropped if its size differs); clears a card."""
        fitted = cover_crop(frame, (self.width, self.height))
        fitted = _flipped(fitted, self.mirror)
        if fitted is frame:
            fitted = frame.copy()
        with self._lock:
            self._latest = fitted
            self._card_text = None

    def show_card(self, text: str | None) -> None:
        """Send a dark card with ``text`` (e.g. "camera lost") instead of frames; None ends it."""
        with self._lock:
            self._card_text = text

    def close(self) -> None:
        """Stop the sender thread and close the virtual camera (once)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(_JOIN_TIMEOUT_S)
        with self._lock:
            closed, self._closed = self._closed, True
        if not closed:
            self._camera.close()

    def _current(self) -> np.ndarray:
        with self._lock:
            text = PAUSED_TEXT if self.paused else self._card_text
            if text is None:
                return self._latest
        if text not in self._cards:
            self._cards[text] = draw_card(text, self.width, self.height)
        return self._cards[text]

    def _run(self) -> None:
        """Sender loop: one frame per tick, paced by pyvirtualcam.

        A device that refuses writes for about a second (unplugged, module unloaded)
        sets ``failure`` and ends the loop; the pipeline then stops cleanly.
        """
        while not self._stop.is_set():
            try:
                self._camera.send(self._current())
                self._failures = 0
            except Exception as err:  # a refused write must not kill the thread silently
                self._failures += 1
                if self._failures == 1:
                    log.warning("virtual camera write failed: %s", err)
                if self._failures >= max(3, int(self.fps)):
                    self.failure = VirtualCameraError(
                        f"the virtual camera {self.device} stopped accepting frames ({err}); "
                        "check it with 'vcam-harmonize doctor'")
                    return
            self._camera.sleep_until_next_frame()


def _open_camera(width: int, height: int, fps: float, device: str | None,
                 backend: str | None, name: str) -> pyvirtualcam.Camera:
    """Open the virtual camera; on Windows a Unity Capture device registered as ``name``
    comes first (it carries the product's name), else pyvirtualcam's default order."""
    if sys.platform == "win32" and backend is None and device is None and \
            "unitycapture" in pyvirtualcam.camera.BACKENDS:
        try:
            return pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                       device=name, backend="unitycapture")
        except (RuntimeError, ValueError, OSError):
            log.info("no Unity Capture device named %r; trying OBS Virtual Camera", name)
    return pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB,
                               device=device, backend=backend)


class WindowSink(Sink):
    """A preview window (cv2.imshow); pressing ``q`` or closing it sets ``quit_requested``.

    ``send`` only hands the frame over; the thread that created the window shows it with
    :meth:`pump` (GUI toolkits want their windows driven from one thread).
    """

    def __init__(self, title: str = "vcam-harmonize", mirror: bool = False) -> None:
        super().__init__(mirror, device="window")
        has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        if sys.platform == "linux" and not has_display:
            raise InputError("no display for the preview window (DISPLAY is not set)")
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as err:
            raise InputError(f"cannot open a preview window: {err.err}") from err
        self._frame: np.ndarray | None = None

    def send(self, frame: np.ndarray) -> None:
        self._frame = frame

    def pump(self) -> None:
        """Show the newest frame and read the keyboard (call from the window's thread)."""
        frame, self._frame = self._frame, None
        if frame is not None:
            shown = cv2.cvtColor(_flipped(frame, self.mirror), cv2.COLOR_RGB2BGR)
            cv2.imshow(self.title, shown)
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        if key == ord("q") or closed:
            self.quit_requested = True

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass  # already closed by the user


class VideoFileSink(Sink):
    """Writes an MPEG-4 (mp4v) video; it appears at ``path`` only once closed.

    Frames go to a hidden temporary file in the same folder, renamed on ``close()``, so
    no half-written file is left under the final name. ``size`` = (width, height) opens
    the writer at once (so an unwritable format fails before any frame); without it the
    first frame sets the size.
    """

    def __init__(self, path: str | Path, fps: float, mirror: bool = False,
                 size: tuple[int, int] | None = None) -> None:
        self.path = Path(path).expanduser()
        super().__init__(mirror, device=str(self.path))
        folder = self.path.parent
        if not folder.is_dir():
            raise InputError(f"cannot write {self.path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise InputError(f"cannot write {self.path}: folder {folder} is not writable")
        if fps <= 0:
            raise InputError(f"video frame rate must be positive, got {fps}")
        self.fps = fps
        self.frames_written = 0
        self._writer: cv2.VideoWriter | None = None
        self._temp: Path | None = None
        self._size: tuple[int, int] = (0, 0)
        if size is not None:
            self._open(*size)

    def send(self, frame: np.ndarray) -> None:
        if self._writer is None:
            self._open(frame.shape[1], frame.shape[0])
        fitted = _flipped(cover_crop(frame, self._size), self.mirror)
        self._writer.write(cv2.cvtColor(fitted, cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and move it to ``path`` (nothing is written if no frame came)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if self.frames_written:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(self._temp, 0o666 & ~umask)  # mkstemp made it private
                os.replace(self._temp, self.path)
            else:
                self._temp.unlink(missing_ok=True)

    def _open(self, width: int, height: int) -> None:
        handle, name = tempfile.mkstemp(
            prefix=f".{self.path.stem}.", suffix=self.path.suffix, dir=self.path.parent
        )
        os.close(handle)
        self._temp = Path(name)
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        writer = cv2.VideoWriter(str(self._temp), fourcc, self.fps, (width, height))
        if not writer.isOpened():
            self._temp.unlink(missing_ok=True)
            raise InputError(f"cannot write video {self.path}; use a .mp4 or .avi file name")
        self._writer, self._size = writer, (width, height)


def make_sinks(config: CameraConfig) -> list[Sink]:
    """The sinks that ``config.output`` names: the virtual camera, a preview window or a
    video file (twice as wide when ``config.compare`` puts two pictures side by side)."""
    if config.output == "virtualcam":
        return [VirtualCameraSink(config.width, config.height, config.fps,
                                  device=config.camera_device or None, name=config.camera_name,
                                  mirror=config.mirror)]
    if config.output == "window":
        return [WindowSink("vcam-harmonize", mirror=config.mirror)]
    width, height = config.output_size
    return [VideoFileSink(config.output, config.fps, mirror=config.mirror,
                          size=(width * (2 if config.compare else 1), height))]
