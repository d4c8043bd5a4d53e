"""Capture from small video files (the webcam stand-in), from a failing fake camera, and
from a stand-in camera that records what it was asked (the MJPG negotiation)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from vcam_harmonize import capture
from vcam_harmonize.capture import CameraFormat, Capture
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

    def get(self, prop):
        return 0.0

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


MJPG = cv2.VideoWriter_fourcc(*"MJPG")
YUYV = cv2.VideoWriter_fourcc(*"YUYV")
NAMES = {cv2.CAP_PROP_FOURCC: "fourcc", cv2.CAP_PROP_FRAME_WIDTH: "width",
         cv2.CAP_PROP_FRAME_HEIGHT: "height", cv2.CAP_PROP_FPS: "fps",
         cv2.CAP_PROP_BUFFERSIZE: "buffersize"}


class RecordingCamera:
    """Stands in for cv2.VideoCapture(index) of a UVC webcam: records every property set
    on it, in order, and answers get() as such a camera would. Its default format is YUYV
    (5 fps at 1280x720); MJPG gives 30 fps, unless the camera lacks MJPG
    (``offers_mjpg``) or takes it but then delivers nothing (``mjpg_works``)."""

    offers_mjpg = True
    mjpg_works = True
    delay = 0.005  # seconds per frame
    instances: list[RecordingCamera] = []

    def __init__(self, index):
        self.index, self.sets = index, []
        self.state = {"fourcc": YUYV, "width": 640, "height": 480, "fps": 30.0}
        RecordingCamera.instances.append(self)

    def isOpened(self):
        return True

    def set(self, prop, value):
        name = NAMES[prop]
        self.sets.append((name, value))
        if name == "fourcc":
            if value == MJPG and not self.offers_mjpg:
                return False  # OpenCV's V4L2 backend keeps the old format
            self.state["fourcc"] = value
        elif name in ("width", "height"):
            self.state[name] = int(value)
        elif name == "fps":  # YUYV at 720p: USB 2.0 bandwidth allows 5-10 fps
            slow = self.state["fourcc"] == YUYV and self.state["width"] >= 1280
            self.state["fps"] = min(float(value), 5.0 if slow else 30.0)
        return True

    def get(self, prop):
        return float(self.state.get(NAMES[prop], 0))

    def grab(self):
        return self.state["fourcc"] != MJPG or self.mjpg_works

    def read(self):
        if not self.grab():
            return False, None
        time.sleep(self.delay)
        return True, np.zeros((self.state["height"], self.state["width"], 3), np.uint8)

    def release(self):
        pass


@pytest.fixture
def webcam(monkeypatch):
    RecordingCamera.instances = []
    monkeypatch.setattr(RecordingCamera, "offers_mjpg", True)
    monkeypatch.setattr(RecordingCamera, "mjpg_works", True)
    monkeypatch.setattr(capture.cv2, "VideoCapture", RecordingCamera)
    return RecordingCamera


def test_camera_is_asked_for_mjpg_first_then_size_and_rate(webcam):
    with Capture(0, 1280, 720, 30) as cap:
        assert cap.read(timeout=2).image.shape == (720, 1280, 3)
        assert cap.negotiated == CameraFormat("MJPG", 1280, 720, 30.0)
    camera = webcam.instances[0]
    asked = [name for name, _ in camera.sets]
    assert asked[0] == "fourcc" and camera.sets[0][1] == MJPG  # before size and rate
    assert dict(camera.sets) == {"fourcc": MJPG, "width": 1280, "height": 720, "fps": 30,
                                 "buffersize": 1}
    assert str(cap.negotiated) == "MJPG 1280x720 @ 30 fps"


def test_camera_without_mjpg_keeps_its_default_format_and_says_so(webcam):
    webcam.offers_mjpg = False
    with Capture("/dev/video0", 1280, 720, 30) as cap:
        assert cap.read(timeout=2) is not None
        assert cap.negotiated == CameraFormat("YUYV", 1280, 720, 5.0)
    assert len(webcam.instances) == 1
    assert ("width", 1280) in webcam.instances[0].sets  # the size is still asked


def test_camera_that_takes_mjpg_but_delivers_nothing_reopens_in_its_default(webcam):
    webcam.mjpg_works = False
    with Capture(0, 1280, 720, 30) as cap:
        assert cap.read(timeout=2) is not None
        assert cap.negotiated.fourcc == "YUYV"
    first, second = webcam.instances
    assert ("fourcc", MJPG) in first.sets
    assert "fourcc" not in dict(second.sets)  # the second open leaves the format alone


def test_video_files_report_their_codec_size_and_rate(video):
    with Capture(video) as cap:
        assert (cap.negotiated.width, cap.negotiated.height, cap.negotiated.fps) == (64, 48, 50)
        assert cap.negotiated.fourcc != "?"


def test_fourcc_codes_decode_to_their_letters():
    assert capture.decode_fourcc(float(MJPG)) == "MJPG"
    assert capture.decode_fourcc(0.0) == "?"


def test_probe_lists_real_cameras_with_their_format_and_never_a_loopback(
        webcam, monkeypatch, tmp_path):
    monkeypatch.setattr(capture.sys, "platform", "linux")
    monkeypatch.setattr(capture, "DEV", tmp_path)
    for index in (0, 2, 10):
        (tmp_path / f"video{index}").touch()
    drivers = {"video0": "uvcvideo", "video2": "uvcvideo", "video10": "v4l2 loopback"}
    monkeypatch.setattr(capture, "v4l2_driver", lambda path: drivers[path.name])
    found = capture.probe_cameras(width=1280, height=720, fps=30)
    assert found == [(0, CameraFormat("MJPG", 1280, 720, 30.0)),
                     (2, CameraFormat("MJPG", 1280, 720, 30.0))]
    assert [camera.index for camera in webcam.instances] == [0, 2]  # video10 never opened
    assert capture.list_cameras() == [0, 2]


def test_v4l2_driver_of_something_that_is_no_device_is_none(tmp_path):
    (tmp_path / "video0").write_text("not a device")
    assert capture.v4l2_driver(tmp_path / "video0") is None
    assert capture.v4l2_driver(tmp_path / "video9") is None
