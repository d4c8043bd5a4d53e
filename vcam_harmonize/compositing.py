"""Put the person on the background: alpha compositing."""

from __future__ import annotations

import cv2
import numpy as np


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
