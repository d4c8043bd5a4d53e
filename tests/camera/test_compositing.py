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


def _person_mask(height: int, width: int, seed: int) -> np.ndarray:
    """A soft head-and-shoulders mask: an ellipse and a wider body, blurred edges."""
    import cv2

    mask = np.zeros((height, width), np.float32)
    cv2.ellipse(mask, (width // 2, height // 3), (width // 8, height // 5), 0, 0, 360, 1.0, -1)
    cv2.ellipse(mask, (width // 2, height), (width // 3, height // 2), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 3 + seed % 3)
    return np.clip(mask * 1.2, 0, 1).astype(np.float32)


@pytest.mark.parametrize("strength", [1.0, 0.6])
@pytest.mark.parametrize("shape", [(72, 128), (181, 241)])
def test_the_fused_pass_equals_composite_then_transform_within_one_level(shape, strength):
    import cv2

    from vcam_harmonize.compositing import composite_transformed

    height, width = shape
    rng = np.random.default_rng(height)
    fg = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = _person_mask(height, width, height)
    # smooth maps, strong enough to saturate some pixels
    gain = cv2.resize(rng.uniform(0.5, 1.6, (4, 4, 3)).astype(np.float32), (width, height))
    offset = cv2.resize(rng.uniform(-60, 60, (4, 4, 3)).astype(np.float32), (width, height))
    fused = composite_transformed(fg, bg, mask, gain, offset, strength)
    separate = composite(fg, bg, mask)
    composite_transformed(separate, separate, mask, gain, offset, strength, out=separate)
    assert np.abs(fused.astype(int) - separate).max() <= 1
    # and both are the float64 rendering of the definition, within one level
    comp = composite(fg, bg, mask).astype(np.float64)
    corrected = np.clip(np.rint(gain * comp + offset), 0, 255)
    alpha = strength * mask[..., None].astype(np.float64)
    expected = np.rint(comp + alpha * (corrected - comp))
    assert np.abs(fused - expected).max() <= 1
    assert np.array_equal(fused[mask == 0], bg[mask == 0])


@pytest.mark.parametrize("strength", [1.0, 0.6])
@pytest.mark.parametrize("shape", [(72, 128), (181, 241)])
def test_the_colour_matrix_pass_equals_composite_then_transform_within_one_level(shape,
                                                                                 strength):
    from vcam_harmonize.compositing import composite_matrix

    height, width = shape
    rng = np.random.default_rng(width)
    fg = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = _person_mask(height, width, width)
    # channels mixed, strong enough to saturate some pixels
    matrix = np.float32([[1.3, 0.2, -0.1, -20], [0.05, 0.8, 0.1, 15], [-0.2, 0.1, 1.1, 30]])
    fused = composite_matrix(fg, bg, mask, matrix, strength)
    separate = composite(fg, bg, mask)
    assert composite_matrix(separate, separate, mask, matrix, strength, out=separate) \
        is separate
    assert np.abs(fused.astype(int) - separate).max() <= 1
    comp = composite(fg, bg, mask).astype(np.float64)
    corrected = np.clip(np.rint(comp @ matrix[:, :3].T.astype(np.float64) + matrix[:, 3]),
                        0, 255)
    alpha = strength * mask[..., None].astype(np.float64)
    expected = np.rint(comp + alpha * (corrected - comp))
    assert np.abs(fused - expected).max() <= 1
    assert (fused != expected).mean() < 0.05  # rounding twice, as the definition does
    assert np.array_equal(fused[mask == 0], bg[mask == 0])
    # no person: the background as it is
    empty = composite_matrix(fg, bg, np.zeros_like(mask), matrix)
    assert np.array_equal(empty, bg)


def test_the_bands_cover_every_pixel_of_the_person_and_skip_the_corners():
    from vcam_harmonize.compositing import MASK_FLOOR, bounding_box, person_bands

    mask = _person_mask(180, 320, 1)
    region = mask >= MASK_FLOOR
    box = bounding_box(region)
    bands = person_bands(region, box)
    covered = np.zeros_like(region)
    for rows, cols in bands:
        covered[rows, cols] = True
    assert not (region & ~covered).any()
    box_area = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
    assert covered.sum() < 0.9 * box_area


@pytest.mark.parametrize("transform", ["global", "local"])
def test_the_harmonizer_composites_and_harmonizes_in_one_pass_as_it_does_in_two(transform):
    """Harmonizer.composite_harmonized(fg, bg, mask) == harmonize(composite(fg, bg, mask))
    within one level, frame after frame (the same network runs and smoothing)."""
    from vcam_harmonize.harmonizer import Harmonizer

    rng = np.random.default_rng(5)
    height, width = 96, 160
    mask = _person_mask(height, width, 2)
    one = Harmonizer(res=32, smoothing=0.9, refresh_every=3, transform=transform)
    two = Harmonizer(res=32, smoothing=0.9, refresh_every=3, transform=transform)
    for index in range(7):
        fg = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        bg = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        inputs = fg.copy(), bg.copy()
        # frames 0, 3, 6 make the full composite for the network and transform it in
        # place; the others composite and transform in the fused pass
        fused = one.composite_harmonized(fg, bg, mask, timestamp=index / 30)
        assert np.array_equal(fg, inputs[0]) and np.array_equal(bg, inputs[1])
        separate = two.harmonize(composite(fg, bg, mask), mask, timestamp=index / 30)
        assert fused.shape == fg.shape and fused.dtype == np.uint8
        assert np.abs(fused.astype(int) - separate).max() <= 1
        assert np.array_equal(fused[mask == 0], bg[mask == 0])


def test_the_colour_matrix_pass_takes_a_little_blur_to_keep_the_noise_down():
    """With ``smooth`` the matrix reads the colours mixed with their 3x3 box blur: a
    flat person comes out as without it, a noisy one with less noise, and 0 changes
    nothing."""
    from vcam_harmonize.compositing import composite_matrix
    from vcam_harmonize.harmonizer import noise_mix

    height, width = 120, 160
    rng = np.random.default_rng(3)
    bg = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.float32)
    mask[20:, 40:120] = 1
    flat = np.full((height, width, 3), (90, 120, 150), np.uint8)
    noisy = (flat + rng.normal(0, 6, flat.shape)).clip(0, 255).astype(np.uint8)
    gain = 1.3
    matrix = np.float32([[gain, 0, 0, -20], [0, gain, 0, -30], [0, 0, gain, -40]])
    w = noise_mix(gain)
    assert 0 < w < 1
    plain = composite_matrix(flat, bg, mask, matrix)
    assert np.abs(composite_matrix(flat, bg, mask, matrix, smooth=w).astype(int)
                  - plain).max() <= 1
    assert np.array_equal(composite_matrix(noisy, bg, mask, matrix, smooth=0.0),
                          composite_matrix(noisy, bg, mask, matrix))
    core = np.zeros_like(mask, bool)
    core[30:-10, 50:110] = True
    camera_noise = noisy[core].astype(float).std(axis=0)
    raised = composite_matrix(noisy, bg, mask, matrix)[core].astype(float).std(axis=0)
    kept = composite_matrix(noisy, bg, mask, matrix, smooth=w)[core].astype(float).std(axis=0)
    assert np.all(raised > 1.2 * camera_noise)  # the matrix alone raises the noise
    assert np.all(kept <= 0.99 * camera_noise)   # the mix brings it under the camera's
    assert np.array_equal(composite_matrix(noisy, bg, mask, matrix, smooth=w)[mask == 0],
                          bg[mask == 0])
    with pytest.raises(ValueError, match="smooth"):
        composite_matrix(noisy, bg, mask, matrix, smooth=1.0)
