"""Take the README's screenshot of the tray app's window.

    xvfb-run -a -s "-screen 0 1280x800x24" sh -c \
        "trayer & sleep 1; python tools/tray_screenshot.py docs/tray-window.png"

It runs the real app (the demo clip, MediaPipe, PHNet on the CPU) for a few seconds and
saves ``QWidget.grab()`` of the settings window. A machine without v4l2loopback gets a
stand-in pyvirtualcam backend, which the window names as such.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pyvirtualcam
from PyQt6.QtWidgets import QApplication

from vcam_harmonize.backgrounds import default_backgrounds
from vcam_harmonize.config import CameraConfig, save_toml
from vcam_harmonize.ui.app import TrayApp
from vcam_harmonize.ui.controller import CameraController, default_pipeline


class StandInCamera:
    """A pyvirtualcam backend that drops the frames (no loopback device here)."""

    def __init__(self, width, height, fps, fourcc, device, **kw):
        pass

    def send(self, frame):
        pass

    def close(self):
        pass

    def device(self):
        return "a stand-in backend"

    def native_fourcc(self):
        return None


def main(out: str, seconds: float = 8.0) -> None:
    pyvirtualcam.register_backend("stand-in", StandInCamera)  # tried after the real ones
    app = QApplication(sys.argv[:1])
    folder = Path(tempfile.mkdtemp())
    config = CameraConfig(width=640, height=360, fps=15, res=256, gpu="off",
                          background=str(default_backgrounds()[-1]))
    controller = CameraController(save_toml(config, folder / "settings.toml"),
                                  lambda c: default_pipeline(c, demo=True), folder / "own")
    tray_app = TrayApp(controller)
    tray_app.window.show()
    controller.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)
    tray_app.window.grab().save(out)
    print(f"tray icon: {tray_app.has_tray}; state: {controller.state}; saved {out}")
    controller.shutdown()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/tray-window.png")
