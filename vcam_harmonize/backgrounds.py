"""Backgrounds the person is put on: image, looped video, blur, solid colour, passthrough.

``load_background(spec, size)`` turns a user's choice into a :class:`Background` whose
``frame(camera_frame, mask)`` gives the background at the output size (width, height),
cover-cropped. Every bad file becomes a :class:`BackgroundError` (an InputError) with one
line.
"""

from __future__ import annotations

import logging
import math
import re
import struct
import time
from pathlib import Path

import cv2
import numpy as np

from vcam_harmonize.models.errors import BackgroundError, InputError
from vcam_harmonize.models.images import MAX_PIXELS, cover_crop, read_image

log = logging.getLogger(__name__)

DEFAULT_BLUR = 15.0
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".gif"}
_ASSETS = Path(__file__).parent / "assets" / "backgrounds"
_MAX_SKIPPED_FRAMES = 4
_BLUR_WORK_SIGMA = 2.0
_BLUR_WEIGHT_FLOOR = 1e-3


#: TIFF header byte orders, and the IFD layouts of classic TIFF (42) and BigTIFF (43):
#: (offset format, entry-count format, entry size, value format per field type).
_TIFF_ORDERS = {b"II": "<", b"MM": ">"}
_TIFF_LAYOUTS = {42: ("I", "H", 12, {3: "H2x", 4: "I"}), 43: ("Q", "Q", 20, {3: "H6x", 4: "I4x",
                                                                           16: "Q"})}
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257


def tiff_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of the first image in a TIFF or BigTIFF file, read from its header
    and first directory only (so a decompression bomb is refused before decoding); None
    for other files or a header cut short."""
    with open(path, "rb") as f:
        head = f.read(16)
        order = _TIFF_ORDERS.get(head[:2])
        if order is None or len(head) < 16:
            return None
        version = struct.unpack(order + "H", head[2:4])[0]
        if version not in _TIFF_LAYOUTS:
            return None
        offset_fmt, count_fmt, entry_size, value_fmts = _TIFF_LAYOUTS[version]
        first = head[4:8] if version == 42 else head[8:16]
        f.seek(struct.unpack(order + offset_fmt, first)[0])
        count_bytes = f.read(struct.calcsize(count_fmt))
        if len(count_bytes) < struct.calcsize(count_fmt):
            return None
        sizes = {}
        for _ in range(min(struct.unpack(order + count_fmt, count_bytes)[0], 4096)):
            entry = f.read(entry_size)
            if len(entry) < entry_size:
                return None
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag in (_TIFF_WIDTH, _TIFF_HEIGHT) and kind in value_fmts:
                value_at = 8 if version == 42 else 12
                sizes[tag] = struct.unpack(order + value_fmts[kind], entry[value_at:])[0]
        if _TIFF_WIDTH in sizes and _TIFF_HEIGHT in sizes:
            return sizes[_TIFF_WIDTH], sizes[_TIFF_HEIGHT]
    return None


def _refuse_tiff_bomb(path: Path) -> None:
    """BackgroundError for a TIFF whose header declares more than ``MAX_PIXELS`` pixels (the
    PNG, JPEG, BMP and WebP headers are checked by ``read_image`` itself)."""
    try:
        size = tiff_size(path)
    except OSError as err:
        raise BackgroundError(f"cannot read {path}: {err.strerror}; check the path") from None
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise BackgroundError(f"image {path} is {size[0]}x{size[1]} pixels, over the "
                         f"{MAX_PIXELS // 1_000_000} megapixel limit; use a smaller image")


def default_backgrounds() -> list[Path]:
    """The background images shipped with the package, sorted by name."""
    return sorted(p for p in _ASSETS.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def blur_background(frame: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Blur of ``frame`` (uint8 RGB (H, W, 3)) with the person (``mask`` (H, W)) left out.

    Normalized convolution ``blur(frame * w) / blur(w)`` with ``w = 1 - mask``, so no
    person colour bleeds into the background (no halo). Computed at a size reduced by a
    power of two that leaves the Gaussian sigma at 2-4 px, then upsampled.
    """
    height, width = frame.shape[:2]
    # a power-of-two reduction (OpenCV's fast path) that leaves sigma at 2-4 px
    factor = 2 ** max(0, int(math.log2(sigma / _BLUR_WORK_SIGMA)))
    work_size = (max(1, width // factor), max(1, height // factor))
    small = cv2.resize(frame, work_size, interpolation=cv2.INTER_AREA).astype(np.float32)
    mask = mask.astype(np.float32, copy=False)
    weight = 1.0 - cv2.resize(mask, work_size, interpolation=cv2.INTER_AREA)
    # a reduced pixel that mixes person and background counts as person: nothing leaks
    weight = cv2.erode(weight, np.ones((3, 3), np.uint8)) + _BLUR_WEIGHT_FLOOR
    work_sigma = sigma / factor
    numerator = cv2.GaussianBlur(small * weight[:, :, None], (0, 0), work_sigma)
    denominator = cv2.GaussianBlur(weight, (0, 0), work_sigma)
    blurred = (numerator / denominator[:, :, None] + 0.5).astype(np.uint8)
    return cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)


class Background:
    """A background source; ``frame()`` returns uint8 RGB at ``size`` = (width, height).

    ``passthrough`` is True when the real camera background is kept (harmonization off).
    """

    passthrough = False

    def __init__(self, spec: str, size: tuple[int, int]) -> None:
        self.spec, self.size = spec, size

    def frame(self, camera_frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The background for this camera frame and person mask."""
        raise NotImplementedError

    def close(self) -> None:
        """Release files or devices held (nothing for most backgrounds)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, size={self.size})"


class StillBackground(Background):
    """A fixed picture: an image file or a solid colour."""

    def __init__(self, spec: str, image: np.ndarray, size: tuple[int, int]) -> None:
        super().__init__(spec, size)
        self._image = np.ascontiguousarray(cover_crop(image, size))

    def frame(self, camera_frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._image


class VideoBackground(Background):
    """A looped video file played at its own frame rate; holds its last good frame."""

    def __init__(self, path: Path, size: tuple[int, int]) -> None:
        super().__init__(str(path), size)
        self._cap = cv2.VideoCapture(str(path))
        ok, bgr = self._cap.read() if self._cap.isOpened() else (False, None)
        if not ok:
            self._cap.release()
            raise BackgroundError(f"cannot read {path}: not an image or video OpenCV can decode")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self._period = 1.0 / fps if 0 < fps < 1000 else 1.0 / 30
        self._frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._image = cover_crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size)
        self._position = 1  # frames read since the last rewind
        self._shown = 0  # playback frames shown since start
        self._start: float | None = None
        self._warned = False
        self._broken = False

    def frame(self, camera_frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = int((now - self._start) / self._period)
        if due > self._shown and not self._broken:
            self._advance(min(due - self._shown, _MAX_SKIPPED_FRAMES))
            self._shown = due
        return self._image

    def close(self) -> None:
        self._cap.release()

    def _advance(self, steps: int) -> None:
        """Move ``steps`` frames on (looping at the end) and decode the last one."""
        for _ in range(steps):
            if not self._cap.grab():
                if self._position < 0.9 * self._frame_count:
                    self._warn_once(
                        f"video background {self.spec} ended early (truncated?); "
                        "looping the part that plays"
                    )
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                self._position = 0
                if not self._cap.grab():
                    self._warn_once(
                        f"video background {self.spec} stopped decoding; "
                        "keeping its last good frame"
                    )
                    self._broken = True
                    return
            self._position += 1
        ok, bgr = self._cap.retrieve()
        if ok:
            self._image = cover_crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.size)

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            log.warning(message)
            self._warned = True


class BlurBackground(Background):
    """The real background, blurred with Gaussian ``sigma`` px, without a person halo."""

    def __init__(self, spec: str, sigma: float, size: tuple[int, int]) -> None:
        super().__init__(spec, size)
        self.sigma = sigma

    def frame(self, camera_frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return cover_crop(blur_background(camera_frame, mask, self.sigma), self.size)


class PassthroughBackground(Background):
    """The real camera background, untouched; harmonization is off."""

    passthrough = True

    def frame(self, camera_frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return cover_crop(camera_frame, self.size)


def load_background(spec: str | Path, size: tuple[int, int]) -> Background:
    """Make the background ``spec`` names, at output ``size`` = (width, height).

    ``spec``: an image or video path, ``"blur"`` / ``"blur:N"`` (Gaussian sigma N px,
    default 15), ``"#rrggbb"`` or ``"none"`` (passthrough). Raises BackgroundError if unusable.
    """
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() == "none":
            return PassthroughBackground("none", size)
        if is_blur(text):
            return BlurBackground(text, blur_strength(text), size)
        if text.startswith("#"):
            if not re.fullmatch(r"#[0-9a-fA-F]{6}", text):
                raise BackgroundError(f"colour {text!r} is not of the form #rrggbb")
            rgb = tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))
            return StillBackground(text, np.full((size[1], size[0], 3), rgb, np.uint8), size)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise BackgroundError(f"background file not found: {path}")
    if path.stat().st_size == 0:
        raise BackgroundError(f"background file {path} is empty (0 bytes)")
    if path.suffix.lower() != ".gif" and cv2.haveImageReader(str(path)):
        _refuse_tiff_bomb(path)
        try:
            image = read_image(path)
        except InputError as err:  # the image reader's message, as a background's error
            raise BackgroundError(str(err)) from None
        return StillBackground(str(path), image, size)
    return VideoBackground(path, size)


def is_blur(spec: str) -> bool:
    """Whether ``spec`` asks for the blurred real background (``blur`` or ``blur:N``)."""
    text = spec.strip().lower()
    return text == "blur" or text.startswith("blur:")


def blur_strength(text: str) -> float:
    """The Gaussian sigma (px) of a ``blur[:N]`` spec; BackgroundError for a bad N."""
    if ":" not in text:
        return DEFAULT_BLUR
    value = text.split(":", 1)[1]
    try:
        sigma = float(value)
    except ValueError:
        sigma = 0.0
    if not 0 < sigma <= 200:
        raise BackgroundError(f"blur strength {value!r} must be a number in (0, 200], e.g. blur:15")
    return sigma


class BackgroundCycler:
    """Cycles through the images and videos of a folder (sorted by name).

    Unreadable files are skipped with a warning; ``current`` is the loaded Background.
    """

    def __init__(self, folder: str | Path, size: tuple[int, int]) -> None:
        self.folder, self.size = Path(folder).expanduser(), size
        if not self.folder.is_dir():
            raise BackgroundError(f"background folder not found: {self.folder}")
        suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in suffixes)
        if not self.paths:
            raise BackgroundError(f"no images or videos in background folder {self.folder}")
        self._position = -1
        self.current: Background | None = None
        self.next()

    def next(self) -> Background:
        """Load the next readable file (wrapping around) and make it ``current``."""
        for _ in self.paths:
            self._position = (self._position + 1) % len(self.paths)
            try:
                background = load_background(self.paths[self._position], self.size)
            except BackgroundError as err:
                log.warning("skipping background: %s", err)
                continue
            if self.current is not None:
                self.current.close()
            self.current = background
            return background
        raise BackgroundError(f"no readable image or video in background folder {self.folder}")


class BackgroundChoice:
    """The current background, from a spec: a file, a folder (cycled), "default"
    (the bundled ones, cycled), "blur[:N]", "#rrggbb" or "none"."""

    def __init__(self, spec: str, size: tuple[int, int]):
        self.spec = spec
        self._cycler: BackgroundCycler | None = None
        if spec == "default":
            self._cycler = BackgroundCycler(default_backgrounds()[0].parent, size)
        elif Path(spec).expanduser().is_dir():
            self._cycler = BackgroundCycler(spec, size)
        self.current: Background = self._cycler.current if self._cycler else \
            load_background(spec, size)

    def next(self) -> Background:
        """The next background of a folder or of the bundled ones (others stay)."""
        if self._cycler is not None:
            self.current = self._cycler.next()
        return self.current

    def close(self) -> None:
        """Release the current background (an open video file)."""
        self.current.close()
