"""Side-by-side frames: what plain background replacement gives (the composite) beside
what PHNet Cam sends (harmonized), each labelled, so the effect is seen at a glance."""

from __future__ import annotations

import cv2
import numpy as np

LABELS = ("composite (no harmonization)", "PHNet Cam (harmonized)")


def _label(image: np.ndarray, text: str) -> None:
    """Write ``text`` in the top-left corner of ``image`` (in place) on a dark strip."""
    height, width = image.shape[:2]
    scale = max(0.4, height / 720.0 * 0.8)
    thickness = max(1, int(round(scale * 2)))
    (text_w, text_h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(4, text_h // 2)
    strip = image[: min(height, text_h + base + 2 * pad), : min(width, text_w + 2 * pad)]
    strip //= 3  # darken what lies under the label
    cv2.putText(image, text, (pad, pad + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)


def side_by_side(composite: np.ndarray, harmonized: np.ndarray,
                 labels: tuple[str, str] = LABELS) -> np.ndarray:
    """One frame twice as wide: ``composite`` on the left, ``harmonized`` on the right,
    both uint8 RGB ``(H, W, 3)`` of the same size, each with its label.

    Returns a new uint8 ``(H, 2W, 3)`` array; the inputs are not changed.
    """
    if composite.shape != harmonized.shape:
        raise ValueError(f"side_by_side needs frames of one size, got {composite.shape} "
                         f"and {harmonized.shape}")
    width = composite.shape[1]
    out = np.concatenate([composite, harmonized], axis=1)
    _label(out[:, :width], labels[0])
    _label(out[:, width:], labels[1])
    return out
