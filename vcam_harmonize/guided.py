"""The guided filter's core on NumPy planes (He et al.), shared by the mask refinement
and the Harmonizer's colour-transform fit; OpenCV box filters do the window means."""

from __future__ import annotations

import cv2
import numpy as np


def box_mean(plane: np.ndarray, size: int) -> np.ndarray:
    """Mean over a ``size x size`` window around every pixel of a float32 ``(H, W)``
    plane, borders reflected (like torch's "reflect" padding)."""
    return cv2.boxFilter(plane, -1, (size, size), borderType=cv2.BORDER_REFLECT_101)


def guided_coefficients(guide: np.ndarray, target: np.ndarray, size: int,
                        eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Local linear model ``target ~ a * guide + b`` in every ``size x size`` window,
    with ``a`` and ``b`` averaged over the windows once more (so ``a * guide + b`` is the
    guided filter's output). ``guide`` and ``target`` are float32 ``(H, W)`` planes;
    returns ``(a, b)`` of the same shape."""
    mean_i, mean_p = box_mean(guide, size), box_mean(target, size)
    var_i = box_mean(guide * guide, size) - mean_i * mean_i
    cov_ip = box_mean(guide * target, size) - mean_i * mean_p
    a = cov_ip / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    return box_mean(a, size), box_mean(b, size)
