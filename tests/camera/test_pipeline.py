"""The whole camera on a real video file, through the real pyvirtualcam API."""

from __future__ import annotations

import logging
import math
import os
import threading
import time

import cv2
import numpy as np
import pytest
import pyvirtualcam

from tests.fakecam import recording_backend
from vcam_harmonize.capture import Capture
from vcam_harmonize.config import CameraConfig
from vcam_harmonize.cpu_meter import CpuMeter
from vcam_harmonize.demo import write_demo_clip
from vcam_harmonize.models.errors import BackgroundError, VirtualCameraError
from vcam_harmonize.pipeline import Pipeline
from vcam_harmonize.segmentation import PersonSegmenter
from vcam_harmonize.sinks import PAUSED_TEXT, Sink, VirtualCameraSink, draw_card


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


def test_a_running_pipeline_lends_opencv_one_thread_and_gives_the_count_back(clip, backend):
    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        first = Pipeline(_config(clip), []).start()
        second = Pipeline(_config(clip), []).start()
        _wait_frames(second, 2)
        assert cv2.getNumThreads() == 1
        first.stop()
        assert cv2.getNumThreads() == 1  # the other one still runs
        second.stop()
        second.stop()  # a second stop gives nothing back twice
        assert cv2.getNumThreads() == 3
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
    """A segmenter or a harmonizer whose every call fails."""

    smoothing = 0.0
    refresh_errors = 0

    def __init__(self):
        self.calls = 0

    def segment(self, frame):
        self.calls += 1
        raise RuntimeError("segmenter broke")

    def harmonize(self, composite, mask, in_place=False, timestamp=None):
        self.calls += 1
        raise RuntimeError("model broke")

    def composite_harmonized(self, fg, bg, mask, timestamp=None):
        self.calls += 1
        raise RuntimeError("model broke")

    def reset(self):
        pass

    def close(self):
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


class _ClosingSink(Sink):
    """A sink that counts frames and closes (slowly, to widen a race)."""

    def __init__(self, delay: float = 0.0):
        super().__init__()
        self.delay, self.frames, self.closes = delay, 0, 0

    def send(self, frame):
        self.frames += 1

    def close(self):
        time.sleep(self.delay)
        self.closes += 1


class _CountingSegmenter:
    """A whole-frame person; counts its closes (a Segmenter)."""

    smoothing = 0.0

    def __init__(self):
        self.closes = 0

    def segment(self, frame):
        return np.ones(frame.shape[:2], np.float32)

    def reset(self):
        pass

    def close(self):
        self.closes += 1


def test_a_pipeline_that_fails_to_open_leaks_no_segmenter_camera_or_thread(clip, monkeypatch):
    import vcam_harmonize.pipeline as pipeline_module

    closed = []
    real_close = PersonSegmenter.close

    def close(self):
        closed.append(self)
        real_close(self)

    def no_virtual_camera(config):  # the sinks open last: everything else is open by then
        raise VirtualCameraError("virtual camera not available (test)")

    monkeypatch.setattr(PersonSegmenter, "close", close)
    monkeypatch.setattr(pipeline_module, "make_sinks", no_virtual_camera)
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(VirtualCameraError):
        Pipeline(_config(clip, output="virtualcam"))
    assert len(closed) == 1 and closed[0]._segmenter is None  # MediaPipe's graph released
    time.sleep(0.2)
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == []  # the camera's reader and the harmonizer's worker are gone too


def test_parts_handed_to_a_pipeline_that_fails_to_open_are_closed(clip):
    sink, segmenter = _ClosingSink(), _CountingSegmenter()
    harmonizer, source = _Exploding(), Capture(str(clip))
    harmonizer.close = lambda: setattr(harmonizer, "closed", True)
    with pytest.raises(BackgroundError):
        Pipeline(_config(clip, background="/no/such/picture.png"), [sink],
                 segmenter=segmenter, harmonizer=harmonizer, source=source)
    assert sink.closes == 1 and segmenter.closes == 1 and harmonizer.closed
    assert source.state == "stopped"


def test_two_stops_at_once_close_every_part_once(clip, backend):
    sink, segmenter = _ClosingSink(delay=0.2), _CountingSegmenter()
    pipeline = Pipeline(_config(clip), [sink], segmenter=segmenter).start()
    _wait_frames(pipeline, 3)
    barrier = threading.Barrier(2)
    seen = []

    def stop():
        barrier.wait()
        pipeline.stop()
        seen.append(sink.closes)  # the second caller returns once the first is done

    stoppers = [threading.Thread(target=stop) for _ in range(2)]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join(10)
    assert seen == [1, 1] and segmenter.closes == 1 and pipeline.finished.is_set()
    pipeline.stop()
    assert sink.closes == 1 and segmenter.closes == 1


def test_a_pipeline_that_stops_itself_and_is_stopped_closes_once(clip, backend):
    sink = _ClosingSink(delay=0.1)
    pipeline = Pipeline(_config(clip), [sink], segmenter=_CountingSegmenter(), max_frames=3,
                        lossless=True, paced=False).start()
    assert pipeline.wait(20)
    pipeline.stop()  # after the pipeline's own stop, at max_frames
    assert sink.frames == 3 and sink.closes == 1


class _Clocks:
    """A wall clock and a CPU clock that tests move by hand."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def run(self, wall: float, cores: float) -> None:
        """``wall`` seconds pass with ``cores`` cores busy."""
        self.wall += wall
        self.cpu += wall * cores


def test_cpu_meter_gives_cpu_seconds_per_wall_second_over_its_window():
    clocks = _Clocks()
    meter = CpuMeter(window=3.0, clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu,
                     machine=4)
    assert meter.cores() is None  # no span yet
    clocks.run(0.05, 1.0)
    assert meter.cores() is None  # too short to say
    clocks.wall, clocks.cpu = 1.0, 0.5  # CPU 0.5 s over wall 1 s
    assert meter.cores() == pytest.approx(0.5)
    assert meter.share(0.5) == pytest.approx(0.125) and meter.share(None) is None
    # a busy stretch, then an idle one: after the window the figure is the idle price
    for _ in range(10):
        clocks.run(0.5, 1.5)
        meter.cores()
    assert meter.cores() == pytest.approx(1.5)
    for _ in range(8):
        clocks.run(0.5, 0.1)
        meter.cores()
    assert meter.cores() == pytest.approx(0.1)
    assert len(meter._samples) <= 3.0 / 0.5 + 2  # the history stays short
    # frequent reads keep no more samples than one per 0.1 s
    for _ in range(100):
        clocks.run(0.001, 0.1)
        meter.cores()
    assert len(meter._samples) <= 3.0 / 0.1 + 2
    meter.reset()
    assert meter.cores() is None
    clocks.run(0.2, 2.0)
    assert meter.cores() == pytest.approx(2.0)


def test_cpu_meter_without_a_window_averages_since_its_start():
    clocks = _Clocks()
    meter = CpuMeter(window=math.inf, clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu,
                     machine=2)
    clocks.run(10.0, 1.0)
    meter.cores()
    clocks.run(10.0, 0.0)
    assert meter.cores() == pytest.approx(0.5) and meter.share(0.5) == pytest.approx(0.25)


def test_stats_report_the_cpu_the_camera_takes(clip, backend):
    config = _config(clip)
    with Pipeline(config, [], segmenter=_CountingSegmenter(), paced=False) as pipeline:
        _wait_frames(pipeline, 3)
        asked = time.monotonic()
        pipeline.reset_stats()
        stats = pipeline.stats()
        if time.monotonic() - asked < 0.1:
            assert stats["cpu_cores"] is None and stats["cpu_share"] is None
        time.sleep(0.6)  # frames as fast as the file reads: real work
        stats = pipeline.stats()
    assert stats["cpu_cores"] > 0.05
    assert stats["cpu_share"] == pytest.approx(stats["cpu_cores"] / os.cpu_count())
    assert 0 < stats["cpu_share"] <= 1


def test_the_network_runs_less_often_on_a_cpu_with_the_colour_matrix():
    from vcam_harmonize.harmonizer import CPU_REFRESH_EVERY, CPU_REFRESH_EVERY_GLOBAL
    from vcam_harmonize.pipeline import refresh_every

    # a colour matrix needs no run when the person moves: half as many on a CPU
    assert refresh_every("cpu", 0, "global") == CPU_REFRESH_EVERY_GLOBAL == 24
    assert refresh_every("cpu", 0, "local") == CPU_REFRESH_EVERY == 12
    assert refresh_every("cpu") == CPU_REFRESH_EVERY_GLOBAL  # the camera's default
    assert refresh_every("cuda:0", 0, "global") == refresh_every("cuda", 0, "local") == 1
    assert refresh_every("cpu", 5, "global") == 5  # as configured
