"""Put the person on the background: alpha compositing."""

from __future__ import annotations

import cv2
import numpy as np


def composite(fg: np.ndarray, bg: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Alpha-composite ``fg`` over ``bg``: ``fg * mask + bg * (1 - mask)``, rounded.

    Only the bounding box of the person (mask > 0) is blended; the rest is a copy of
    ``bg``, which is several times cheaper for a person who fills part of the frame.

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
    person = alpha > 0
    rows = np.flatnonzero(person.any(axis=1))
    out = np.empty(bg.shape, np.uint8)
    out[:] = bg
    if rows.size == 0:
        return out
    cols = np.flatnonzero(person[rows[0] : rows[-1] + 1].any(axis=0))
    box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    weights = alpha[box]
    cv2.blendLinear(fg[box], bg[box], weights, 1.0 - weights, dst=out[box])
    return out
