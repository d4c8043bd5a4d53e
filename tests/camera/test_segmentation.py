"""PersonSegmenter on real photos with the real MediaPipe model, and mask smoothing."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from vcam_harmonize import segmentation
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.segmentation import PersonSegmenter, smooth_mask


@pytest.fixture(scope="module")
def segmenter():
    with PersonSegmenter() as seg:
        yield seg


def top_corners(mask: np.ndarray) -> list[float]:
    h, w = mask.shape
    return [float(mask[: h // 8, : w // 8].mean()), float(mask[: h // 8, -w // 8 :].mean())]


@pytest.mark.parametrize("model", ["landscape", "general"])
def test_mask_covers_person_not_background(model, astronaut, grace_hopper):
    with PersonSegmenter(model) as seg:
        for image, (rows, cols) in (
            (astronaut, (slice(90, 180), slice(170, 270))),
            (grace_hopper, (slice(130, 300), slice(180, 330))),
        ):
            seg.reset()
            mask = seg.segment(image)
            assert mask.shape == image.shape[:2] and mask.dtype == np.float32
            assert 0.0 <= mask.min() and mask.max() <= 1.0
            assert mask[rows, cols].mean() > 0.8
            assert max(top_corners(mask)) < 0.2


def test_hd_frame_is_processed_small_and_returned_full_size(segmenter, astronaut):
    segmenter.reset()
    frame = cv2.resize(astronaut, (1280, 720))
    mask = segmenter.segment(frame)
    assert mask.shape == (720, 1280) and mask.dtype == np.float32
    assert 0.3 < (mask > 0.5).mean() < 0.8
    assert max(top_corners(mask)) < 0.2


def test_threshold_gives_binary_mask_and_feather_softens_it(astronaut):
    with PersonSegmenter(smoothing=0, threshold=0.5) as hard:
        binary = hard.segment(astronaut)
    assert set(np.unique(binary)) <= {0.0, 1.0}
    with PersonSegmenter(smoothing=0, threshold=0.5, feather=6) as soft:
        feathered = soft.segment(astronaut)
    between = ((feathered > 0.05) & (feathered < 0.95)).mean()
    assert between > 2 * ((binary > 0.05) & (binary < 0.95)).mean()
    assert abs(feathered.mean() - binary.mean()) < 0.05


def test_bad_settings_and_missing_model_are_input_errors(monkeypatch):
    with pytest.raises(InputError, match="unknown segmentation model"):
        PersonSegmenter("portrait")
    with pytest.raises(InputError, match="smoothing"):
        PersonSegmenter(smoothing=1.5)
    monkeypatch.setitem(segmentation.MODEL_FILES, "landscape", "no_such_model.tflite")
    with pytest.raises(InputError, match="bundled segmentation model .* is missing; reinstall"):
        PersonSegmenter()


def test_without_mediapipe_the_segmenter_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # `import mediapipe` fails
    with pytest.raises(InputError, match="pip install mediapipe"):
        PersonSegmenter()


BUNDLED = {  # name: (bytes, sha256), as the mediapipe 0.10.21 wheel ships them
    "selfie_segmentation.tflite": (
        249505, "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
    "selfie_segmentation_landscape.tflite": (
        250145, "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd"),
}


@pytest.mark.parametrize("model", ["landscape", "general"])
def test_the_bundled_model_is_found_without_mediapipes_own_package(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # its package is not looked at
    path = segmentation.model_path(model)
    package = Path(segmentation.__file__).parent
    assert path.parent == package / "assets" / "segmentation"
    size, digest = BUNDLED[path.name]
    assert path.stat().st_size == size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    notice = (path.parent / "NOTICE.md").read_text()
    assert "Apache License" in notice and digest in notice
    assert "Apache License" in (path.parent / "LICENSE").read_text()


def test_the_segmenter_runs_the_bundled_file(segmenter):
    import mediapipe

    assert segmenter.model_file == segmentation.model_path("landscape")
    assert Path(mediapipe.__file__).parent not in segmenter.model_file.parents


def test_confidence_masks_of_both_mediapipe_lines_become_h_by_w():
    flat = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)  # mediapipe 0.10.21
    for confidence in (flat, flat[..., None]):  # (H, W, 1): mediapipe 0.10.30+ and 1.x
        mask = segmentation.confidence_to_mask(confidence)
        assert mask.shape == (3, 4) and mask.dtype == np.float32
        assert np.array_equal(mask, flat) and not np.shares_memory(mask, confidence)


def test_mediapipe_opencv_threads_default_to_one_and_a_user_setting_is_kept(monkeypatch):
    monkeypatch.delenv("OPENCV_FOR_THREADS_NUM", raising=False)
    segmentation._import_mediapipe()
    assert segmentation.os.environ["OPENCV_FOR_THREADS_NUM"] == "1"
    monkeypatch.setenv("OPENCV_FOR_THREADS_NUM", "3")
    segmentation._import_mediapipe()
    assert segmentation.os.environ["OPENCV_FOR_THREADS_NUM"] == "3"


def flicker(masks: list[np.ndarray]) -> float:
    return float(
        np.mean([np.abs(a - b).mean() for a, b in zip(masks[:-1], masks[1:], strict=True)])
    )


def test_smooth_mask_steadies_noise_but_follows_motion():
    rng = np.random.default_rng(0)
    still = np.zeros((40, 80), np.float32)
    still[:, :40] = 1.0
    noisy = [
        np.clip(still + rng.normal(0, 0.1, still.shape), 0, 1).astype(np.float32) for _ in range(20)
    ]
    smoothed, state = [], noisy[0]
    for mask in noisy[1:]:
        state = smooth_mask(state, mask, 0.8)
        smoothed.append(state)
    assert flicker(smoothed) < 0.5 * flicker(noisy[1:])

    moved = np.roll(still, 20, axis=1)  # the edge jumps 20 px right
    state = smooth_mask(state, moved, 0.8)
    assert np.abs(state - moved).max() < 0.15  # followed at once: no ghost
    assert np.array_equal(smooth_mask(still, moved, 0.0), moved)


def test_segmenter_flickers_less_with_smoothing_and_follows_a_move(astronaut):
    rng = np.random.default_rng(1)
    frames = [
        np.clip(astronaut + rng.normal(0, 12, astronaut.shape), 0, 255).astype(np.uint8)
        for _ in range(8)
    ]
    results = {}
    for smoothing in (0.0, 0.8):
        with PersonSegmenter(smoothing=smoothing) as seg:
            results[smoothing] = [seg.segment(f) for f in frames]
            shifted = np.ascontiguousarray(np.roll(astronaut, -120, axis=1))
            followed = [seg.segment(shifted) for _ in range(3)]
        results[smoothing, "moved"] = followed
    assert flicker(results[0.8]) < 0.7 * flicker(results[0.0])
    target = results[0.0, "moved"][-1]
    close = [np.abs(mask - target).mean() < 0.01 for mask in results[0.8, "moved"]]
    assert any(close)  # followed within 3 frames
    # where the face was (background after the shift) no ghost remains, from the first frame
    assert results[0.8][-1][90:180, 200:270].mean() > 0.8
    assert results[0.8, "moved"][0][90:180, 200:270].mean() < 0.1


def test_reset_and_close(astronaut):
    seg = PersonSegmenter()
    seg.segment(astronaut)
    seg.reset()
    assert seg.segment(astronaut[:200]).shape == (200, 512)
    seg.close()
    seg.close()


def test_refine_mask_snaps_a_blurry_mask_to_the_image_edge():
    import cv2

    from vcam_harmonize.segmentation import refine_mask

    guide = np.zeros((90, 160), np.float32)
    guide[:, 70:] = 1.0  # a sharp vertical edge at column 70
    blurry = cv2.GaussianBlur(guide, (0, 0), 2)  # the mask the network gave, too soft
    refined = refine_mask(blurry, guide * 0.8 + 0.1)
    assert refined.shape == guide.shape and refined.dtype == np.float32
    assert refined.min() >= 0 and refined.max() <= 1
    steps_before = np.diff(blurry[45])
    steps_after = np.diff(refined[45])
    assert int(np.argmax(steps_after)) == 69  # the steepest rise is at the image's edge
    assert steps_after.max() > 2.5 * steps_before.max()
