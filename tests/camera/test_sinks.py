"""Output sinks: the virtual camera through a fake pyvirtualcam backend, files, window."""

from __future__ import annotations

import sys
import threading
import time

import cv2
import numpy as np
import pytest
import pyvirtualcam

from vcam_harmonize.models.errors import InputError
from vcam_harmonize.sinks import (
    VideoFileSink,
    VirtualCameraSink,
    WindowSink,
    draw_card,
    find_loopback_device,
)


class FakeBackend:
    """A pyvirtualcam backend that records the frames it is sent."""

    frames: list[np.ndarray] = []
    fail_open = False
    lock = threading.Lock()

    def __init__(self, width, height, fps, fourcc, device, **kw):
        if FakeBackend.fail_open:
            raise RuntimeError("no such device")
        self.shape = (height, width, 3)
        self._device = device or "fake0"
        FakeBackend.frames = []

    def send(self, frame):
        with FakeBackend.lock:
            FakeBackend.frames.append(frame.reshape(self.shape).copy())

    def close(self):
        pass

    def device(self):
        return self._device

    def native_fourcc(self):
        return None


@pytest.fixture(autouse=True, scope="module")
def fake_backend():
    """Register the fake backend for this module only (the registry is global)."""
    pyvirtualcam.register_backend("vcamtest", FakeBackend)
    yield
    pyvirtualcam.camera.BACKENDS.pop("vcamtest", None)


def recorded() -> list[np.ndarray]:
    with FakeBackend.lock:
        return list(FakeBackend.frames)


def wait_for(condition, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@pytest.fixture
def frame():
    return np.random.default_rng(0).integers(0, 256, (48, 65, 3), dtype=np.uint8)


def test_odd_width_is_cropped_and_frames_repeat_at_a_steady_rate(frame):
    with VirtualCameraSink(65, 48, 50, backend="vcamtest") as sink:
        assert sink.width == 64 and sink.device == "fake0"
        sink.send(frame)
        start = len(recorded())
        time.sleep(0.4)  # starved: no new frame for 20 ticks
        sent = recorded()[start:]
    assert 12 <= len(sent) <= 24
    assert all(f.shape == (48, 64, 3) for f in sent)
    assert all(np.array_equal(f, frame[:, :64]) for f in sent)


def test_paused_card_and_camera_lost_card(frame):
    with VirtualCameraSink(64, 48, 50, backend="vcamtest") as sink:
        live = frame[:, :64]
        sink.send(live)
        assert wait_for(lambda: np.array_equal(recorded()[-1], live))
        sink.paused = True
        assert wait_for(lambda: not np.array_equal(recorded()[-1], live))
        paused = recorded()[-1]
        assert np.array_equal(paused, draw_card("Camera paused", 64, 48))
        assert np.median(paused) < 40 and paused.max() > 150  # dark, with light text
        sink.paused = False
        assert wait_for(lambda: np.array_equal(recorded()[-1], live))
        sink.show_card("camera lost")
        assert wait_for(lambda: np.array_equal(recorded()[-1], draw_card("camera lost", 64, 48)))
        assert not np.array_equal(draw_card("camera lost", 64, 48), paused)
        sink.send(live)  # frames flowing again end the card
        assert wait_for(lambda: np.array_equal(recorded()[-1], live))


def test_mirror_and_resize(frame):
    with VirtualCameraSink(64, 48, 50, backend="vcamtest", mirror=True) as sink:
        sink.send(frame[:, :64])
        assert wait_for(lambda: np.array_equal(recorded()[-1], frame[:, 63::-1]))
        sink.send(np.zeros((96, 128, 3), np.uint8))
        assert wait_for(lambda: recorded()[-1].shape == (48, 64, 3) and recorded()[-1].max() == 0)


def test_close_stops_the_sender():
    sink = VirtualCameraSink(64, 48, 100, backend="vcamtest")
    sink.close()
    count = len(recorded())
    time.sleep(0.05)
    assert len(recorded()) == count


def test_missing_device_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(FakeBackend, "fail_open", True)
    with pytest.raises(InputError) as err:
        VirtualCameraSink(64, 48, 30, backend="vcamtest")
    message = str(err.value)
    assert "\n" not in message and "no such device" in message
    command = 'sudo modprobe v4l2loopback devices=1 video_nr=10 card_label="PHNet Cam" '
    assert command + "exclusive_caps=1" in message


def test_unknown_backend_is_named():
    with pytest.raises(InputError, match="no 'obs9' virtual camera backend here; available: "):
        VirtualCameraSink(64, 48, 30, backend="obs9")


def test_loopback_found_by_card_label(tmp_path):
    for node, label in (("video0", "Integrated Camera"), ("video10", "PHNet Cam")):
        (tmp_path / node).mkdir()
        (tmp_path / node / "name").write_text(label + "\n")
    assert find_loopback_device("PHNet Cam", sysfs=tmp_path) == "/dev/video10"
    assert find_loopback_device("Other", sysfs=tmp_path) is None


def test_video_file_appears_only_when_closed(tmp_path, frame):
    path = tmp_path / "out.mp4"
    with VideoFileSink(path, fps=25) as sink:
        for i in range(10):
            sink.send(np.full((48, 64, 3), 20 * i, np.uint8))
        assert not path.exists()
        assert len(list(tmp_path.iterdir())) == 1  # the hidden temporary file
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    cap = cv2.VideoCapture(str(path))
    frames = []
    while (result := cap.read())[0]:
        frames.append(result[1])
    assert len(frames) == 10 and frames[0].shape == (48, 64, 3)
    assert abs(float(frames[9].mean()) - 180) < 6


def test_video_file_errors_and_empty_output(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        VideoFileSink(tmp_path / "missing" / "out.mp4", fps=25)
    VideoFileSink(tmp_path / "never.mp4", fps=25).close()
    assert list(tmp_path.iterdir()) == []


def test_window_without_display_is_an_input_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    with pytest.raises(InputError, match="no display"):
        WindowSink()


@pytest.mark.skipif(
    sys.platform != "linux" or bool(find_loopback_device("PHNet Cam")),
    reason="a PHNet Cam loopback device exists here",
)
def test_real_backend_without_loopback_device_is_an_input_error():
    with pytest.raises(InputError, match="sudo modprobe v4l2loopback"):
        VirtualCameraSink(64, 48, 30, device="/dev/video63", backend="v4l2loopback")


def test_windows_prefers_a_unity_capture_device_with_the_product_name(monkeypatch):
    from tests.fakecam import RecordingBackend

    monkeypatch.setattr(sys, "platform", "win32")
    pyvirtualcam.register_backend("unitycapture", RecordingBackend)
    try:
        sink = VirtualCameraSink(64, 48, 30)
        try:
            assert sink.device == "PHNet Cam"
        finally:
            sink.close()
    finally:
        pyvirtualcam.camera.BACKENDS.pop("unitycapture", None)


def test_video_file_gets_the_usual_permissions(tmp_path):
    import os

    sink = VideoFileSink(tmp_path / "out.mp4", 30, size=(64, 48))
    sink.send(np.zeros((48, 64, 3), np.uint8))
    sink.close()
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out.mp4").stat().st_mode & 0o777 == 0o666 & ~umask
