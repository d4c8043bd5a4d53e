"""The demo clip shows a real person in a room, with nothing of the photo's studio left,
and `--compare` puts the composite beside the harmonized frame."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from vcam_harmonize.cli import main
from vcam_harmonize.compare import side_by_side
from vcam_harmonize.demo import (
    DEMO_SECONDS,
    LIGHT_CHANGE,
    cut_out_alpha,
    demo_frame_and_alpha,
    load_demo_photo,
    room,
)

SIZE = (640, 360)
TIMES = [0.0, 0.9, 2.1, 3.0, 4.4, 5.9]


@pytest.fixture(scope="module")
def person():
    return load_demo_photo()


def test_the_demo_person_is_the_credited_studio_photo(person):
    from vcam_harmonize.demo import ASSETS

    credits = (ASSETS / "CREDITS.md").read_text()
    assert "London face set, DeBruine & Jones (2017), CC BY 4.0" in credits
    assert person.image.shape[:2] == person.mask.shape == (512, 512)
    assert 0.2 < person.mask.mean() < 0.5


def test_the_cut_out_lies_inside_the_photos_mask(person):
    assert person.alpha.max() == 1.0
    assert not person.alpha[~person.mask].any()  # no studio pixel has any weight
    # and the edge is soft, not a jagged binary cut
    edge = (person.alpha > 0) & (person.alpha < 1)
    assert edge.sum() > 500


def test_cut_out_alpha_keeps_away_from_the_edge_and_solid_at_the_bottom():
    mask = np.zeros((60, 40), bool)
    mask[10:, 8:32] = True  # a body cut off by the photo's bottom edge
    alpha = cut_out_alpha(mask, inset=4)
    assert not alpha[~mask].any()
    assert (alpha[:, 8:12] < 1).all() and (alpha[10:14] < 1).all()
    assert (alpha[-1, 14:26] == 1).all()  # the bottom cut is no outline


@pytest.mark.parametrize("t", TIMES)
def test_nothing_of_the_photos_own_background_reaches_the_frame(person, t):
    rng = np.random.default_rng(0)
    junk = person.image.copy()
    junk[~person.mask] = rng.integers(0, 256, (int((~person.mask).sum()), 3))
    other = dataclasses.replace(person, image=junk)
    frame, alpha = demo_frame_and_alpha(person, t, SIZE)
    frame_junk, _ = demo_frame_and_alpha(other, t, SIZE)
    assert np.array_equal(frame, frame_junk)
    # where the person is not, the frame is the room under the lamp (and the noise)
    outside = alpha == 0
    assert outside.mean() > 0.5
    lit_room = room(SIZE).astype(np.float32)
    ratio = frame[outside].astype(np.float32).mean(0) / lit_room[outside].mean(0)
    assert ratio.std() > 0.05  # a coloured light, the same for the whole room


def test_the_light_changes_partway_from_a_warm_lamp_to_daylight(person):
    def blue_over_red(t):
        frame, alpha = demo_frame_and_alpha(person, t, SIZE)
        mean = frame[alpha > 0.99].astype(np.float32).mean(0)  # on the person
        return mean[2] / mean[0]

    before, after = blue_over_red(LIGHT_CHANGE[0] - 0.5), blue_over_red(LIGHT_CHANGE[1] + 0.5)
    assert after > 1.6 * before
    assert 0 < LIGHT_CHANGE[0] < LIGHT_CHANGE[1] < DEMO_SECONDS


def test_the_person_moves_as_in_a_call(person):
    centres = []
    for t in TIMES:
        _, alpha = demo_frame_and_alpha(person, t, SIZE)
        ys, xs = np.nonzero(alpha > 0.5)
        centres.append((xs.mean(), ys.mean(), alpha.mean()))
        # the photo's bottom edge never shows: the body reaches the frame's bottom row
        assert alpha[-1].max() == 1.0
        # nor its side edges: the person never touches the frame's sides
        assert not alpha[:, 0].any() and not alpha[:, -1].any()
    xs, _, areas = np.array(centres).T
    assert xs.max() - xs.min() > 0.03 * SIZE[0]  # sways
    assert areas.max() / areas.min() > 1.05  # leans in and out


def test_the_segmenter_mask_covers_the_person_and_nothing_of_the_room(person):
    from vcam_harmonize.segmentation import PersonSegmenter

    segmenter = PersonSegmenter(smoothing=0.0)
    try:
        for t in TIMES:
            frame, alpha = demo_frame_and_alpha(person, t, SIZE)
            mask = segmenter.segment(frame) > 0.5
            core = alpha > 0.9
            assert mask[core].mean() > 0.97, t
            # the room, away from the person's edge, is left alone
            near = cv2.dilate((alpha > 0).astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
            assert mask[~near].mean() < 0.01, t
    finally:
        segmenter.close()


def test_side_by_side_is_twice_as_wide_with_labels():
    left = np.full((90, 120, 3), 40, np.uint8)
    right = np.full((90, 120, 3), 200, np.uint8)
    pair = side_by_side(left, right)
    assert pair.shape == (90, 240, 3)
    assert (pair[60:, :120] == 40).all() and (pair[60:, 120:] == 200).all()
    assert (pair[:20, :60] != 40).any() and (pair[:20, 120:180] != 200).any()  # labels
    assert (left == 40).all() and (right == 200).all()  # inputs untouched
    with pytest.raises(ValueError, match="one size"):
        side_by_side(left, right[:, :100])


def _frames(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame.astype(np.float32))


def test_compare_writes_frames_twice_as_wide_with_the_composite_on_the_left(tmp_path, capsys):
    common = ["--demo", "--width", "320", "--height", "180", "--frames", "12", "--res", "64"]
    assert main([*common, "--compare", "--output", str(tmp_path / "pair.avi")]) == 0
    assert main([*common, "--no-harmonize", "--output", str(tmp_path / "plain.avi")]) == 0
    pairs, plains = _frames(tmp_path / "pair.avi"), _frames(tmp_path / "plain.avi")
    assert len(pairs) == len(plains) == 12
    assert pairs[0].shape == (180, 640, 3)
    below_labels = slice(40, None)
    for pair, plain in zip(pairs, plains, strict=True):
        left = pair[below_labels, :320]
        assert np.abs(left - plain[below_labels]).mean() < 2.5  # the composite
    assert np.mean([np.abs(p[below_labels, 320:] - p[below_labels, :320]).mean()
                    for p in pairs]) > 1.0  # harmonized differs from it


def test_compare_on_the_virtual_camera_is_refused_with_one_line(capsys):
    assert main(["--demo", "--compare"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "compare needs output 'window' or a video file" in lines[0]
