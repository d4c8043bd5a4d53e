"""Property-based tests of the mask, compositing and colour-transform functions."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vcam_harmonize.compositing import composite
from vcam_harmonize.harmonizer import ColourTransform, Harmonizer
from vcam_harmonize.segmentation import smooth_mask

HARMONIZER = Harmonizer(res=32)
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def frames_and_masks(draw):
    height = draw(st.integers(1, 40))
    width = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    kind = draw(st.sampled_from(["empty", "full", "pixel", "random", "soft"]))
    mask = np.zeros((height, width), np.float32)
    if kind == "full":
        mask[:] = 1
    elif kind == "pixel":
        mask[rng.integers(height), rng.integers(width)] = 1
    elif kind == "random":
        mask = (rng.random((height, width)) > 0.5).astype(np.float32)
    elif kind == "soft":
        mask = rng.random((height, width)).astype(np.float32)
    return frame, mask


@SETTINGS
@given(frames_and_masks(), st.integers(0, 2**31 - 1))
def test_composite_is_exact_at_zero_and_one_and_in_range(data, seed):
    fg, mask = data
    bg = np.random.default_rng(seed).integers(0, 256, fg.shape, dtype=np.uint8)
    out = composite(fg, bg, mask)
    assert out.dtype == np.uint8 and out.shape == fg.shape
    assert np.array_equal(out[mask == 0], bg[mask == 0])
    assert np.array_equal(out[mask == 1], fg[mask == 1])
    low, high = np.minimum(fg, bg).astype(int), np.maximum(fg, bg).astype(int)
    assert np.all(out >= low - 1) and np.all(out <= high + 1)


@SETTINGS
@given(frames_and_masks(), st.floats(-3, 3), st.floats(-1, 1), st.floats(0, 1))
def test_colour_transform_output_is_in_range_and_background_exact(data, gain, offset, strength):
    frame, mask = data
    transform = ColourTransform(torch.full((1, 3, 32, 32), gain),
                                torch.full((1, 3, 32, 32), offset))
    HARMONIZER.strength = strength
    out = HARMONIZER._apply(frame, mask, transform)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    assert np.array_equal(out[mask == 0], frame[mask == 0])
    if strength == 0:
        assert np.array_equal(out, frame)


@SETTINGS
@given(frames_and_masks())
def test_harmonize_never_breaks_on_any_size_or_mask(data):
    frame, mask = data
    HARMONIZER.strength = 1.0
    out = HARMONIZER.harmonize(frame, mask)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(out[mask == 0], frame[mask == 0])


@SETTINGS
@given(frames_and_masks(), frames_and_masks(), st.floats(0, 0.99))
def test_mask_smoothing_stays_in_range(a, b, smoothing):
    previous = a[1]
    current = np.resize(b[1], previous.shape).astype(np.float32)
    out = smooth_mask(previous, current, smoothing)
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1
    lo, hi = np.minimum(previous, current), np.maximum(previous, current)
    assert np.all(out >= lo - 1e-6) and np.all(out <= hi + 1e-6)
