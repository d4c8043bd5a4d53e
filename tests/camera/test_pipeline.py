"""The whole camera on a real video file, through the real pyvirtualcam API."""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import pytest
import pyvirtualcam

from tests.fakecam import recording_backend
from vcam_harmonize.config import CameraConfig
from vcam_harmonize.demo import write_demo_clip
from vcam_harmonize.pipeline import Pipeline
from vcam_harmonize.sinks import PAUSED_TEXT, VirtualCameraSink, draw_card


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_demo_clip(tmp_path_factory.mktemp("clip") / "demo.avi", (320, 180), 30, 2.0)


@pytest.fixture
def backend():
    with recording_backend("recording") as recorder:
        yield recorder


def _config(clip, **kw):
    values = dict(device=str(clip), width=320, height=180, fps=30.0, res=64,
                  background="#2040c0", refresh_every=1)
    values.update(kw)
    return CameraConfig(**values)


def _camera_sink(config):
    return VirtualCameraSink(config.width, config.height, config.fps, backend="recording")


def _wait_frames(pipeline, count, timeout=20.0):
    deadline = time.monotonic() + timeout
    while pipeline.frames_out < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pipeline.frames_out >= count


def test_virtual_camera_receives_rgb_frames_of_the_right_size_and_rate(clip, backend):
    config = _config(clip)
    with Pipeline(config, [_camera_sink(config)]) as pipeline:
        _wait_frames(pipeline, 20)
        time.sleep(0.5)
        stats = pipeline.stats()
    cam = backend.instances[-1]
    assert (cam.width, cam.height) == (320, 180)
    assert cam.fourcc == pyvirtualcam.util.encode_fourcc(pyvirtualcam.PixelFormat.RGB.value)
    assert cam.closed
    frames = cam.frames
    assert frames[0].shape == (180, 320, 3) and frames[0].dtype == np.uint8
    # a steady stream at the camera's rate, whatever the pipeline does
    rate = (len(cam.times) - 1) / (cam.times[-1] - cam.times[0])
    assert 24 <= rate <= 36
    # the background is the blue colour where the person is not
    last = frames[-1].astype(int)
    corner = last[:20, :20].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(corner, [0x20, 0x40, 0xC0], atol=6)
    assert stats["frames"] >= 20 and stats["stage_ms"]["segment"] > 0
    assert stats["stage_ms"]["harmonize"] > 0 and stats["errors"] == {}


def test_started_pipeline_runs_opencv_on_its_own_threads_only(clip, backend):
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        with Pipeline(_config(clip), []) as pipeline:
            _wait_frames(pipeline, 2)
            assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


def test_frames_limit_and_exact_count_in_lossless_mode(clip, backend):
    received = []
    config = _config(clip)
    pipeline = Pipeline(config, [], max_frames=25, lossless=True, paced=False)
    pipeline.on_frame = received.append
    pipeline.start()
    assert pipeline.wait(30)
    assert pipeline.frames_out == 25 and len(received) == 25
    assert not any(t.name in ("segment", "harmonize", "phnet-refresh") and t.is_alive()
                   for t in __import__("threading").enumerate())


def test_background_switch_pause_and_resume_while_running(clip, backend):
    config = _config(clip)
    sink = _camera_sink(config)
    received = []
    with Pipeline(config, [sink]) as pipeline:
        pipeline.on_frame = received.append
        _wait_frames(pipeline, 5)
        pipeline.set_background("#c02020")
        count = pipeline.frames_out
        _wait_frames(pipeline, count + 5)
        corner = received[-1][:20, :20].reshape(-1, 3).mean(0)
        np.testing.assert_allclose(corner, [0xC0, 0x20, 0x20], atol=6)
        pipeline.set_paused(True)
        time.sleep(0.3)
        paused_at = pipeline.frames_out
        time.sleep(0.4)
        assert pipeline.frames_out <= paused_at + 1
        cam = backend.instances[-1]
        assert np.array_equal(cam.frames[-1], draw_card(PAUSED_TEXT, 320, 180))
        pipeline.set_paused(False)
        _wait_frames(pipeline, paused_at + 5)


def test_bad_background_keeps_the_old_one(clip, backend):
    from vcam_harmonize.models import InputError

    config = _config(clip)
    with Pipeline(config, []) as pipeline:
        with pytest.raises(InputError):
            pipeline.set_background("/no/such/file.png")
        assert pipeline.background.spec == "#2040c0"
        _wait_frames(pipeline, 3)


class _Exploding:
    def __init__(self):
        self.calls = 0

    def segment(self, frame):
        self.calls += 1
        raise RuntimeError("segmenter broke")

    def harmonize(self, composite, mask, in_place=False):
        self.calls += 1
        raise RuntimeError("model broke")

    def reset(self):
        pass


@pytest.mark.parametrize("stage", ["segmenter", "harmonizer"])
def test_a_failing_stage_does_not_stop_the_stream(clip, backend, caplog, stage):
    config = _config(clip)
    broken = _Exploding()
    kwargs = {stage: broken}
    with caplog.at_level(logging.ERROR, logger="vcam_harmonize.pipeline"):
        with Pipeline(config, [], **kwargs) as pipeline:
            _wait_frames(pipeline, 10)
            errors = pipeline.stats()["errors"]
    assert broken.calls >= 10
    name = "segment" if stage == "segmenter" else "harmonize"
    assert errors[name] >= 10
    logged = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(logged) == 1  # logged once, counted after
