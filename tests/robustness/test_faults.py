"""Faults the running camera survives: a lost camera, broken stages, CUDA running out of
memory, a virtual camera that goes away, signals, and no network at run time."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import torch

from tests.fakecam import RecordingBackend, recording_backend
from vcam_harmonize.capture import Frame
from vcam_harmonize.config import CameraConfig
from vcam_harmonize.demo import write_demo_clip
from vcam_harmonize.harmonizer import CPU_REFRESH_EVERY, Harmonizer
from vcam_harmonize.models.errors import VirtualCameraError
from vcam_harmonize.pipeline import Pipeline
from vcam_harmonize.sinks import VirtualCameraSink, draw_card


class FlakySource:
    """A camera that delivers, goes silent (unplugged), then delivers again."""

    def __init__(self, frame: np.ndarray, silent_from: int, silent_for: float):
        self.frame, self.silent_from, self.silent_for = frame, silent_from, silent_for
        self.index, self.state, self.fps = 0, "stopped", 30.0
        self._silent_since: float | None = None

    def start(self):
        self.state = "running"
        return self

    def stop(self):
        self.state = "stopped"

    def read(self, timeout=1.0):
        if self.index == self.silent_from:
            if self._silent_since is None:
                self._silent_since = time.monotonic()
                self.state = "reconnecting"
            if time.monotonic() - self._silent_since < self.silent_for:
                time.sleep(timeout)
                return None
            self.state = "running"
        time.sleep(1 / 30)
        self.index += 1
        return Frame(self.frame, self.index, time.monotonic())


class FastSegmenter:
    """A fixed person box, no MediaPipe (a Segmenter)."""

    smoothing = 0.0

    def segment(self, frame):
        mask = np.zeros(frame.shape[:2], np.float32)
        mask[frame.shape[0] // 4 :, frame.shape[1] // 3 : 2 * frame.shape[1] // 3] = 1
        return mask

    def reset(self):
        pass

    def close(self):
        pass


def _config(**kw):
    values = dict(width=160, height=96, fps=30.0, res=64, background="#206020")
    values.update(kw)
    return CameraConfig(**values)


def test_lost_camera_shows_a_card_then_recovers_without_restart():
    frame = np.full((96, 160, 3), 200, np.uint8)
    config = _config()
    with recording_backend("recording") as backend:
        sink = VirtualCameraSink(160, 96, 30, backend="recording")
        source = FlakySource(frame, silent_from=10, silent_for=2.0)
        with Pipeline(config, [sink], segmenter=FastSegmenter(), source=source) as pipeline:
            deadline = time.monotonic() + 15
            while pipeline.frames_out < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
        cam = backend.instances[-1]
    card = draw_card("Camera lost - reconnecting", 160, 96)
    cards = [i for i, f in enumerate(cam.frames) if np.array_equal(f, card)]
    assert cards, "the virtual camera never showed the camera-lost card"
    # before the card: the last good frame repeated; after it: live frames again
    assert not np.array_equal(cam.frames[cards[0] - 1], card)
    assert any(not np.array_equal(f, card) for f in cam.frames[cards[-1] + 1 :])
    assert pipeline.frames_out >= 20


class _OutOfMemoryOnce(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.raised = model, False
        self.config = model.config

    def forward(self, *args, **kwargs):
        if not self.raised:
            self.raised = True
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return self.model(*args, **kwargs)


def test_cuda_out_of_memory_falls_back_to_the_cpu(caplog):
    harmonizer = Harmonizer(res=64)
    harmonizer.model = _OutOfMemoryOnce(harmonizer.model)
    frame = np.full((96, 160, 3), 120, np.uint8)
    mask = FastSegmenter().segment(frame)
    out = harmonizer.harmonize(frame, mask)
    assert out.shape == frame.shape and harmonizer.model.raised
    assert harmonizer.device.type == "cpu" and harmonizer.refresh_every >= CPU_REFRESH_EVERY
    assert "CUDA out of memory" in caplog.text


def test_cuda_out_of_memory_in_the_refresh_thread_falls_back_to_the_cpu(caplog):
    """With the network on its own thread (as the camera runs it), an OOM there moves
    PHNet to the CPU too, and frames keep coming with a fresh transform afterwards."""
    harmonizer = Harmonizer(res=64, refresh_every=1, background_refresh=True)
    frame = np.full((96, 160, 3), 120, np.uint8)
    mask = FastSegmenter().segment(frame)
    harmonizer.harmonize(frame, mask)  # the first transform is computed in the caller
    harmonizer.model = _OutOfMemoryOnce(harmonizer.model)
    try:
        deadline = time.monotonic() + 10
        while not harmonizer.model.raised or harmonizer.refresh_every < CPU_REFRESH_EVERY:
            assert time.monotonic() < deadline, "the worker never ran or never fell back"
            out = harmonizer.harmonize(frame, mask)
            assert out.shape == frame.shape
            time.sleep(0.01)
        assert harmonizer.device.type == "cpu" and harmonizer.refresh_errors == 0
        assert "CUDA out of memory" in caplog.text
        for _ in range(3):  # after the fall-back a new transform is computed again
            assert harmonizer.harmonize(frame, mask).shape == frame.shape
        assert harmonizer._transform is not None
    finally:
        harmonizer.close()


class RefusingBackend(RecordingBackend):
    """A virtual camera that disappears after a few frames."""

    def send(self, frame):
        if len(self.frames) >= 5:
            raise OSError("No such device")
        super().send(frame)


def test_virtual_camera_that_goes_away_stops_the_pipeline_cleanly():
    import pyvirtualcam

    pyvirtualcam.register_backend("refusing", RefusingBackend)
    try:
        frame = np.full((96, 160, 3), 90, np.uint8)
        source = FlakySource(frame, silent_from=10**9, silent_for=0)
        sink = VirtualCameraSink(160, 96, 30, backend="refusing")
        pipeline = Pipeline(_config(), [sink], segmenter=FastSegmenter(), source=source)
        pipeline.start()
        assert pipeline.wait(10), "the pipeline did not stop"
    finally:
        pyvirtualcam.camera.BACKENDS.pop("refusing", None)
    assert isinstance(pipeline.failure, VirtualCameraError)
    assert "stopped accepting frames" in str(pipeline.failure)
    assert source.state == "stopped"  # the webcam is released


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_demo_clip(tmp_path_factory.mktemp("clip") / "talk.avi", (160, 96), 30, 2.0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_cleanly_within_two_seconds(clip, tmp_path, sig):
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vcam_harmonize.cli", "--device", str(clip), "--output",
         str(out), "--width", "160", "--height", "96", "--res", "64"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".*")) and time.monotonic() < deadline:
            time.sleep(0.2)  # the temporary output appears once frames flow
        time.sleep(1.0)
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=10)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr
    assert took < 2.0, f"stopping took {took:.2f} s"
    cap = cv2.VideoCapture(str(out))
    assert cap.read()[0], "the output file is not a readable video"
    assert not [p for p in tmp_path.iterdir() if p.name != "out.mp4"]


def test_no_network_connection_during_a_pipeline_run(clip, monkeypatch):
    attempts = []
    real_connect = socket.socket.connect

    def refuse(self, address):
        attempts.append(address)
        raise OSError("network access during a pipeline run")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    received = []
    pipeline = Pipeline(_config(device=str(clip)), [], max_frames=15, lossless=True,
                        paced=False)
    pipeline.on_frame = received.append
    pipeline.start()
    assert pipeline.wait(60)
    monkeypatch.setattr(socket.socket, "connect", real_connect)
    assert len(received) == 15 and attempts == []
    assert pipeline.stats()["errors"] == {}


def test_no_threads_left_behind(clip):
    before = {t.ident for t in threading.enumerate()}
    pipeline = Pipeline(_config(device=str(clip)), [], segmenter=FastSegmenter(),
                        max_frames=10, lossless=True, paced=False)
    pipeline.start()
    assert pipeline.wait(30)
    time.sleep(0.3)
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == [], [t.name for t in left]
