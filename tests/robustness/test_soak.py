"""Hours of running in minutes: 20,000 frames through the whole pipeline."""

from __future__ import annotations

import threading

import pytest

from vcam_harmonize.bench_pipeline import rss_mb
from vcam_harmonize.config import CameraConfig
from vcam_harmonize.demo import write_demo_clip
from vcam_harmonize.pipeline import Pipeline

FRAMES = 20_000
SWITCH_EVERY = 500
WARMUP = 500


@pytest.mark.slow
def test_soak_20000_frames_with_background_switches(tmp_path):
    clip = write_demo_clip(tmp_path / "soak.avi", (192, 108), 30, 4.0)
    config = CameraConfig(device=str(clip), width=192, height=108, res=64,
                          background="default")
    pipeline = Pipeline(config, [], max_frames=FRAMES, lossless=True, paced=False)
    specs = ["#335577", "blur:8", "default", "#aa6633", "none"]
    marks: dict = {}

    def on_frame(_image):
        count = pipeline.frames_out
        if count == WARMUP:
            marks["rss"], marks["threads"] = rss_mb(), threading.active_count()
        if count % SWITCH_EVERY == 0:
            # a live switch, as the tray app does it (from another thread)
            spec = specs[(count // SWITCH_EVERY) % len(specs)]
            threading.Thread(target=pipeline.set_background, args=(spec,)).start()
        if count > WARMUP:
            marks["max_threads"] = max(marks.get("max_threads", 0), threading.active_count())

    pipeline.on_frame = on_frame
    pipeline.start()
    assert pipeline.wait(1800), "the soak did not finish"
    growth = rss_mb() - marks["rss"]
    stats = pipeline.stats()
    print(f"soak: {pipeline.frames_out} frames, RSS growth {growth:.1f} MB, "
          f"threads {marks['threads']} -> max {marks['max_threads']}")
    assert pipeline.frames_out == FRAMES
    assert stats["errors"] == {}
    assert growth < 50
    # the switcher threads come and go; the pipeline itself starts none
    assert marks["max_threads"] <= marks["threads"] + 2
