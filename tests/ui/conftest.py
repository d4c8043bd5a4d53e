"""The tray app on a video-file camera, a fast fake segmenter, the real Harmonizer and a
recording pyvirtualcam backend, with Qt offscreen."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.camera.helpers import write_video  # noqa: E402
from tests.fakecam import RecordingBackend, recording_backend  # noqa: E402
from vcam_harmonize.config import CameraConfig, save_toml  # noqa: E402
from vcam_harmonize.harmonizer import Harmonizer  # noqa: E402
from vcam_harmonize.pipeline import Pipeline  # noqa: E402
from vcam_harmonize.sinks import VirtualCameraSink  # noqa: E402

BACKEND = "uitest"
WIDTH, HEIGHT = 128, 96
PERSON = (slice(24, 72), slice(40, 88))  # where the fake segmenter sees the person
TEAL, ORANGE = (40, 150, 160), (230, 140, 40)


class BoxSegmenter:
    """A person in a fixed box: exact masks, no MediaPipe, no time (a Segmenter)."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.smoothing = 0.5
        self.closed = False

    def segment(self, frame: np.ndarray) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay)
        mask = np.zeros(frame.shape[:2], np.float32)
        mask[PERSON] = 1.0
        return mask

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def make_factory(backend: str = BACKEND, build_delay: float = 0.0, segment_delay: float = 0.0,
                 max_frames: int = 0):
    """A pipeline factory like the app's own, on the test doubles."""

    def factory(config: CameraConfig) -> Pipeline:
        time.sleep(build_delay)  # a slow model load
        sink = VirtualCameraSink(config.width, config.height, config.fps, backend=backend,
                                 mirror=config.mirror)
        harmonizer = Harmonizer(None, "cpu", config.res, 0.0, config.strength, 1)
        return Pipeline(config, [sink], segmenter=BoxSegmenter(segment_delay),
                        harmonizer=harmonizer, max_frames=max_frames)

    return factory


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Two webcams: a teal and an orange picture (2 s MJPG .avi files)."""
    folder = tmp_path_factory.mktemp("videos")
    return {name: write_video(folder / f"{name}.avi",
                              [np.full((HEIGHT, WIDTH, 3), colour, np.uint8)] * 20, fps=10)
            for name, colour in (("teal", TEAL), ("orange", ORANGE))}


@pytest.fixture
def backend():
    with recording_backend(BACKEND) as recorder:
        yield recorder


@pytest.fixture
def settings(tmp_path, videos) -> Path:
    """A settings file: the teal video as camera, a red background, small and fast."""
    config = CameraConfig(device=str(videos["teal"]), width=WIDTH, height=HEIGHT, fps=30,
                          background="#ff0000", res=64, gpu="off")
    return save_toml(config, tmp_path / "config" / "settings.toml")


@pytest.fixture
def make_app(qtbot, tmp_path):
    """``make_app(settings, factory=..., tray=True)`` -> a TrayApp, shut down afterwards."""
    from vcam_harmonize.ui.app import TrayApp
    from vcam_harmonize.ui.autostart import Autostart
    from vcam_harmonize.ui.controller import CameraController

    made = []

    def make(settings_file: Path, factory=None, tray: bool = True) -> TrayApp:
        controller = CameraController(settings_file, factory or make_factory(),
                                      user_folder=tmp_path / "my-backgrounds")
        app = TrayApp(controller, tray_available=tray,
                      autostart=Autostart(tmp_path / "autostart"))
        qtbot.addWidget(app.window)
        made.append(app)
        return app

    yield make
    for app in made:
        app.controller.shutdown()
        app.tray.icon.hide()


def received(recorder=RecordingBackend) -> np.ndarray | None:
    """The newest frame the virtual camera got (None before any)."""
    if not recorder.instances:
        return None
    camera = recorder.instances[-1]
    with camera.lock:
        return camera.frames[-1].copy() if camera.frames else None
