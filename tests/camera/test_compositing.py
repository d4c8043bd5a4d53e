"""Alpha compositing exactness and cover-crop geometry."""

from __future__ import annotations

import numpy as np
import pytest

from vcam_harmonize.compositing import composite
from vcam_harmonize.models.images import cover_crop


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    fg = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
    return fg, bg


def test_mask_zero_gives_background_and_one_gives_foreground_exactly(pair):
    fg, bg = pair
    mask = np.zeros(fg.shape[:2], np.float32)
    mask[:, 64:] = 1.0
    out = composite(fg, bg, mask)
    assert out.dtype == np.uint8 and out.shape == fg.shape
    assert np.array_equal(out[:, :64], bg[:, :64])
    assert np.array_equal(out[:, 64:], fg[:, 64:])


def test_soft_mask_blends_linearly(pair):
    fg, bg = pair
    mask = np.random.default_rng(1).random(fg.shape[:2])  # float64 is accepted too
    out = composite(fg, bg, mask).astype(np.float64)
    expected = fg * mask[..., None] + bg * (1 - mask[..., None])
    assert np.abs(out - expected).max() <= 1.0
    half = composite(np.full_like(fg, 200), np.full_like(bg, 100), np.full(mask.shape, 0.5))
    assert np.all(half == 150)


def test_shape_mismatch_is_refused(pair):
    fg, bg = pair
    with pytest.raises(ValueError, match="shape mismatch"):
        composite(fg, bg[:10], np.zeros(fg.shape[:2], np.float32))


def test_cover_crop_keeps_aspect_and_centre():
    tall = np.zeros((400, 100), np.uint8)
    tall[150:250] = 255  # a band in the middle survives a wide crop
    out = cover_crop(tall, (64, 48))
    assert out.shape == (48, 64)
    assert out.min() == 255
    same = np.zeros((48, 64, 3), np.uint8)
    assert cover_crop(same, (64, 48)) is same
    assert cover_crop(np.zeros((10, 13, 3), np.uint8), (1280, 720)).shape == (720, 1280, 3)


def test_bounding_box_of_a_region():
    from vcam_harmonize.compositing import bounding_box

    region = np.zeros((6, 9), bool)
    assert bounding_box(region) is None
    region[2, 3] = region[4, 7] = True
    assert bounding_box(region) == (slice(2, 5), slice(3, 8))
    region[:] = True
    assert bounding_box(region) == (slice(0, 6), slice(0, 9))
