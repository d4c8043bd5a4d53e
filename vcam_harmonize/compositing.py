"""Put the person on the background: alpha compositing."""

from __future__ import annotations

import cv2
import numpy as np


def bounding_box(region: np.ndarray) -> tuple[slice, slice] | None:
    """Row and column slices of the smallest box around the non-zero pixels of a
    boolean or uint8 ``(H, W)`` array; None when there are none."""
    if region.dtype == bool:
        region = region.view(np.uint8)
    x, y, w, h = cv2.boundingRect(region)
    if w == 0:
        return None
    return slice(y, y + h), slice(x, x + w)


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
    out = np.empty(bg.shape, np.uint8)
    out[:] = bg
    box = bounding_box(alpha > 0)
    if box is None:
        return out
    weights = alpha[box]
    cv2.blendLinear(fg[box], bg[box], weights, 1.0 - weights, dst=out[box])
    return out
