"""Image files and image geometry shared by the camera and the training pipeline:
header-checked decoding (decompression bombs are refused before decoding), conversion
of any stored format to uint8 RGB, and cover-cropping.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from vcam_harmonize.models.errors import InputError

#: the largest image (in pixels) that is decoded at all.
MAX_PIXELS = 50_000_000


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) declared in a PNG, JPEG, BMP or WebP header; None otherwise.

    Reads only the header, so a decompression bomb can be refused before decoding.
    A header cut short also gives None (decoding the file then fails cleanly).
    """
    with open(path, "rb") as f:
        head = f.read(32)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return struct.unpack(">II", head[16:24]) if len(head) >= 24 else None
        if head.startswith(b"BM"):
            if len(head) < 26:
                return None
            width, height = struct.unpack("<ii", head[18:26])
            return abs(width), abs(height)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp_size(head)
        if head.startswith(b"\xff\xd8"):
            f.seek(2)
            return _jpeg_size(f)
    return None


#: bytes of a WebP file up to the end of the size fields, per first chunk type.
_WEBP_HEADER_BYTES = {b"VP8 ": 30, b"VP8L": 25, b"VP8X": 30}


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if len(head) < _WEBP_HEADER_BYTES.get(chunk, 0):
        return None
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def _jpeg_size(f: BinaryIO) -> tuple[int, int] | None:
    """Walk JPEG marker segments (file positioned after SOI) to the first SOFn."""
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind == 0xFF:  # fill byte
            f.seek(-1, 1)
            continue
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            return None
        length = struct.unpack(">H", length_bytes)[0]
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
            frame_header = f.read(5)
            if len(frame_header) < 5:
                return None
            height, width = struct.unpack(">xHH", frame_header)
            return width, height
        f.seek(length - 2, 1)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any ``cv2.imread(..., IMREAD_UNCHANGED)`` result -> uint8 RGB (H, W, 3).

    Handles grey, BGR, BGRA (alpha dropped) and 16-bit or float images.
    """
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) * (1.0 / 257.0) + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:  # the colours as stored; transparency is not a colour
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_file(path: str | Path) -> np.ndarray:
    """The file's pixels as OpenCV stores them (BGR(A) order, any depth), after refusing
    images over :data:`MAX_PIXELS` from their header; InputError names the file."""
    path = Path(path)
    try:
        size = header_size(path)
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}; check the path") from None
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise InputError(f"image {path} is {size[0]}x{size[1]} pixels, over the "
                         f"{MAX_PIXELS // 1_000_000} megapixel limit; use a smaller image")
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if pixels is None or pixels.size == 0:
        raise InputError(f"cannot decode image {path} (not an image, or a corrupt or "
                         f"truncated file); replace or remove it")
    if pixels.shape[0] * pixels.shape[1] > MAX_PIXELS:
        raise InputError(f"image {path} is over the {MAX_PIXELS // 1_000_000} megapixel limit")
    return pixels


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 RGB ``(H, W, 3)``: grey, RGBA, 16-bit and float
    files are converted."""
    return to_rgb8(decode_file(path))


def cover_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale ``image`` (H, W, ...) to cover ``size`` = (width, height), then crop the centre.

    The aspect ratio is kept; whatever sticks out on one axis is cut off evenly on both
    sides. An image already at ``size`` is returned as is (no copy).
    """
    width, height = size
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = max(width / w, height / h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    x, y = (new_w - width) // 2, (new_h - height) // 2
    return resized[y : y + height, x : x + width]
