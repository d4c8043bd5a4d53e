"""A library call changes nothing process-wide: after a Harmonizer has worked (with its
refresh worker thread), the caller's PyTorch and OpenCV thread counts are as before."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from vcam_harmonize.harmonizer import Harmonizer


def test_harmonizer_leaves_the_callers_thread_counts_alone():
    torch_before, cv_before = torch.get_num_threads(), cv2.getNumThreads()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
    mask = np.zeros((72, 128), np.float32)
    mask[20:, 40:90] = 1.0
    for background_refresh in (False, True):
        harmonizer = Harmonizer(res=64, refresh_every=2, background_refresh=background_refresh)
        try:
            for _ in range(6):
                out = harmonizer.harmonize(frame, mask)
                assert out.shape == frame.shape
        finally:
            harmonizer.close()
        assert torch.get_num_threads() == torch_before
        assert cv2.getNumThreads() == cv_before
