"""Capture from small video files (the webcam stand-in) and from a failing fake camera."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vcam_harmonize import capture
from vcam_harmonize.capture import Capture
from vcam_harmonize.models.errors import InputError

from .helpers import frame_number, grey_frames, write_video

COUNT = 12


@pytest.fixture
def video(tmp_path):
    return write_video(tmp_path / "clip.avi", grey_frames(COUNT), fps=50)


def test_file_frames_are_rgb_in_order_and_loop(video):
    with Capture(video) as cap:
        frames = [cap.read(timeout=2) for _ in range(2 * COUNT + 3)]
        assert cap.state == "running"
    assert all(f is not None for f in frames)
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))  # strictly increasing, never stale
    assert indices[-1] >= COUNT  # went past the end: looped
    for f in frames:
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
        assert frame_number(f.image) == f.index % COUNT


def test_paced_file_runs_at_its_frame_rate(video):
    with Capture(video) as cap:
        start = time.monotonic()
        while time.monotonic() - start < 0.6:
            cap.read(timeout=1)
        assert 30 < cap.fps < 60  # the file says 50 fps
        assert cap.read(timeout=1).index < 45


def test_slow_reader_gets_newest_frame(video):
    with Capture(video) as cap:
        first = cap.read(timeout=2)
        time.sleep(0.3)  # ~15 frames arrive meanwhile
        newest = cap.read(timeout=2)
        assert newest.index - first.index >= 8
        assert newest.timestamp > first.timestamp
        assert time.monotonic() - newest.timestamp < 0.1


def test_unpaced_file_is_read_as_fast_as_possible(video):
    with Capture(video, paced=False) as cap:
        time.sleep(0.3)
        assert cap.read(timeout=2).index > 50


def test_size_is_cover_cropped_and_stop_ends_reads(video):
    cap = Capture(video, width=32, height=32).start()
    assert cap.read(timeout=2).image.shape == (32, 32, 3)
    cap.stop()
    assert cap.state == "stopped"
    assert cap.read(timeout=0.2) is None
    with cap:  # restartable
        assert cap.read(timeout=2).index < 5


def test_missing_or_bad_files_and_cameras_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="video file not found"):
        Capture(tmp_path / "nope.mp4").start()
    text = tmp_path / "notes.avi"
    text.write_text("not a video")
    with pytest.raises(InputError, match="cannot read video file"):
        Capture(text).start()
    with pytest.raises(InputError, match="camera 99 does not open; cameras that do: "):
        Capture(99).start()


def test_device_paths_and_digit_strings_are_camera_indices():
    assert Capture("/dev/video3").index == 3
    assert Capture("2").index == 2
    assert Capture("clip.mp4").index is None


class FlakyCamera:
    """Stands in for cv2.VideoCapture(index): a camera that drops out and comes back."""

    opens: list[float] = []
    instances: list[FlakyCamera] = []
    script: list[int] = []  # per open: frames it delivers (-1 = fails to open)

    def __init__(self, index):
        FlakyCamera.opens.append(time.monotonic())
        FlakyCamera.instances.append(self)
        self.left = FlakyCamera.script.pop(0) if FlakyCamera.script else 10**6
        self.released = False

    def isOpened(self):
        return self.left >= 0

    def set(self, prop, value):
        return True

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        time.sleep(0.005)
        return True, np.zeros((24, 32, 3), np.uint8)

    def release(self):
        self.released = True


def test_camera_that_stops_is_reopened_with_backoff(monkeypatch):
    monkeypatch.setattr(capture, "_BACKOFF_START_S", 0.05)
    monkeypatch.setattr(capture.cv2, "VideoCapture", FlakyCamera)
    FlakyCamera.opens, FlakyCamera.instances = [], []
    FlakyCamera.script = [3, -1, -1, -1]
    with Capture(0) as cap:
        assert cap.read(timeout=1).index == 0
        deadline = time.monotonic() + 2
        while cap.state == "running" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cap.state == "reconnecting"
        indices = []
        while (frame := cap.read(timeout=3)) is not None and frame.index < 3:
            indices.append(frame.index)  # at most the last frame before the drop-out
        assert indices in ([], [2])
        assert frame is not None and frame.index == 3  # after 0.05 + 0.1 + 0.2 + 0.4 s
        assert cap.state == "running"
    assert cap.state == "stopped"
    assert all(camera.released for camera in FlakyCamera.instances)
    gaps = np.diff(FlakyCamera.opens[1:5])
    assert np.all(gaps[1:] > 1.4 * gaps[:-1])  # the wait doubles
