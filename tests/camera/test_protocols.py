"""Every sink and segmenter is a :class:`Sink` / :class:`Segmenter` (at run time and to
mypy), and the pipeline and the CLI's run loop talk to those protocols only."""

from __future__ import annotations

import ast
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.camera.test_pipeline import _Exploding
from tests.fakecam import recording_backend
from tests.robustness.test_faults import FastSegmenter
from tests.ui.conftest import BoxSegmenter
from vcam_harmonize.bench_pipeline import CountingSink
from vcam_harmonize.segmentation import PersonSegmenter, Segmenter
from vcam_harmonize.sinks import Sink, VideoFileSink, VirtualCameraSink, WindowSink

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def every_sink(tmp_path, monkeypatch):
    """One of each sink, open (the window on a stand-in for the display)."""
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(cv2, "namedWindow", lambda *args: None)
    monkeypatch.setattr(cv2, "destroyWindow", lambda *args: None)
    monkeypatch.setattr(cv2, "waitKey", lambda *args: -1)
    monkeypatch.setattr(cv2, "getWindowProperty", lambda *args: 1.0)
    with recording_backend("protocols"):
        sinks = [VirtualCameraSink(64, 48, 30, backend="protocols"),
                 VideoFileSink(tmp_path / "out.mp4", 30), WindowSink(), CountingSink()]
        yield sinks
        for sink in sinks:
            sink.close()


def test_every_sink_is_a_sink_with_the_defaults_it_lacks(every_sink):
    for sink in every_sink:
        assert isinstance(sink, Sink), type(sink).__name__
        assert sink.failure is None and not sink.quit_requested and not sink.paused
        assert isinstance(sink.device, str)
        sink.show_card("Camera lost - reconnecting")  # a no-op where there is no card
        sink.pump()
    devices = [sink.device for sink in every_sink]
    assert devices[0] == "/dev/video-test"  # the backend's own name
    assert devices[1].endswith("out.mp4") and devices[2] == "window"


def test_closing_a_sink_twice_is_harmless(every_sink):
    frame = np.zeros((48, 64, 3), np.uint8)
    for sink in every_sink:
        sink.send(frame)
        sink.close()
        sink.close()


def test_every_segmenter_is_a_segmenter():
    with PersonSegmenter() as real:
        doubles = [FastSegmenter(), BoxSegmenter(), _Exploding()]
        for segmenter in [real, *doubles]:
            assert isinstance(segmenter, Segmenter), type(segmenter).__name__
        mask = real.segment(np.zeros((96, 160, 3), np.uint8))
        assert mask.shape == (96, 160) and mask.dtype == np.float32
    real.close()  # again: nothing happens


def test_what_is_not_a_sink_or_a_segmenter_is_refused():
    class SendOnly:
        def send(self, frame):
            pass

    assert not isinstance(SendOnly(), Sink) and not isinstance(SendOnly(), Segmenter)


PROBE = """
from tests.camera.test_pipeline import _Exploding
from tests.robustness.test_faults import FastSegmenter
from tests.ui.conftest import BoxSegmenter
from vcam_harmonize.bench_pipeline import CountingSink
from vcam_harmonize.segmentation import PersonSegmenter, Segmenter
from vcam_harmonize.sinks import Sink, VideoFileSink, VirtualCameraSink, WindowSink


def sinks(a: VirtualCameraSink, b: VideoFileSink, c: WindowSink, d: CountingSink) -> list[Sink]:
    return [a, b, c, d]


def segmenters(a: PersonSegmenter, b: FastSegmenter, c: BoxSegmenter,
               d: _Exploding) -> list[Segmenter]:
    return [a, b, c, d]


class NotASink:
    def send(self) -> None: ...


wrong: Sink = NotASink()
"""

MYPY_CONFIG = """
[mypy]
follow_imports = silent
ignore_missing_imports = True
[mypy-torch.*,cv2.*,mediapipe.*,kornia.*,PyQt6.*,numpy.*,pyvirtualcam.*,safetensors.*,skimage.*,matplotlib.*,pytest.*,hypothesis.*,tqdm.*,PIL.*]
follow_imports = skip
"""


def test_mypy_sees_every_sink_and_segmenter_satisfy_their_protocol(tmp_path):
    mypy = pytest.importorskip("mypy.api", reason="the static check needs mypy (dev extra)")
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    (tmp_path / "mypy.ini").write_text(MYPY_CONFIG)
    out, err, status = mypy.run([str(probe), "--config-file", str(tmp_path / "mypy.ini"),
                                 "--cache-dir", str(tmp_path / "cache"), "--no-error-summary"])
    errors = [line for line in out.splitlines() if "error:" in line]
    # the one deliberate mistake is the only error: the checker works and all else fits
    line = PROBE.splitlines().index("wrong: Sink = NotASink()") + 1
    assert len(errors) == 1 and f"probe.py:{line}:" in errors[0], out + err


def _calls(tree: ast.AST, names: set[str]) -> list[str]:
    return [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name) and node.func.id in names]


def test_the_pipeline_probes_no_part_for_its_type_or_attributes():
    tree = ast.parse((ROOT / "vcam_harmonize" / "pipeline.py").read_text())
    assert _calls(tree, {"isinstance", "hasattr", "getattr"}) == []
    assert "VirtualCameraSink" not in ast.unparse(tree)


def test_the_cli_run_loop_talks_to_the_sink_protocol_only():
    tree = ast.parse((ROOT / "vcam_harmonize" / "cli.py").read_text())
    run = next(node for node in ast.walk(tree)
               if isinstance(node, ast.FunctionDef) and node.name == "run")
    assert _calls(run, {"hasattr", "getattr"}) == []
    checks = _calls(run, {"isinstance"})
    assert not [call for call in checks if "Sink" in call], checks
