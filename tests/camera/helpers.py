"""Small video files standing in for a webcam: frames whose grey level encodes their number."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_video(path: Path, frames: list[np.ndarray], fps: float = 30.0) -> Path:
    """Write RGB uint8 frames to an MJPG .avi file and return its path."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def grey_frames(count: int, width: int = 64, height: int = 48, step: int = 20) -> list[np.ndarray]:
    """Uniform frames whose grey level (``step * i``) encodes their position ``i``."""
    return [np.full((height, width, 3), step * i, np.uint8) for i in range(count)]


def frame_number(frame: np.ndarray, step: int = 20) -> int:
    """Position encoded by :func:`grey_frames` (robust to JPEG error)."""
    return int(round(float(frame.mean()) / step))
