"""Put the person on the background: alpha compositing and cover-crop geometry."""

from __future__ import annotations

import cv2
import numpy as np


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


def composite(fg: np.ndarray, bg: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Alpha-composite ``fg`` over ``bg``: ``fg * mask + bg * (1 - mask)``, rounded.

    Args:
        fg: person frame, uint8 (H, W, 3).
        bg: background, uint8 (H, W, 3).
        mask: person alpha in [0, 1], float32 (H, W).

    Returns:
        uint8 (H, W, 3); exactly ``bg`` where mask is 0 and exactly ``fg`` where it is 1.
    """
    if fg.shape != bg.shape or fg.shape[:2] != mask.shape[:2]:
        raise ValueError(f"shape mismatch: fg {fg.shape}, bg {bg.shape}, mask {mask.shape}")
    alpha = mask if mask.dtype == np.float32 else mask.astype(np.float32)
    return cv2.blendLinear(fg, bg, alpha, 1.0 - alpha)
