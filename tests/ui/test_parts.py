"""The tray app's parts on their own: run at login, the background gallery, error fixes,
icons, and the entry point."""

from __future__ import annotations

import configparser
import os
import signal
import sys

import cv2
import numpy as np
import pytest
from PyQt6.QtWidgets import QApplication

from vcam_harmonize.backgrounds import default_backgrounds
from vcam_harmonize.config import CameraConfig, load_toml, save_toml
from vcam_harmonize.models.errors import (
    BackgroundError,
    CameraError,
    GpuError,
    InputError,
    VirtualCameraError,
)
from vcam_harmonize.ui import app as app_module
from vcam_harmonize.ui.autostart import ENTRY_NAME, Autostart, autostart_dir, entry_text
from vcam_harmonize.ui.controller import default_pipeline
from vcam_harmonize.ui.errors import DOCTOR, fix_for
from vcam_harmonize.ui.gallery import add_to_folder, blur_sigma, choices, matches, thumbnail
from vcam_harmonize.ui.icons import STATE_COLOURS, state_pixmap


def test_autostart_folder_follows_xdg_config_home(tmp_path, monkeypatch):
    assert autostart_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "autostart"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert autostart_dir({"XDG_CONFIG_HOME": ""}) == tmp_path / "home" / ".config" / "autostart"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert Autostart().path == tmp_path / "xdg" / "autostart" / ENTRY_NAME


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG autostart is Linux's")
def test_run_at_login_writes_and_removes_the_desktop_entry(qtbot, make_app, settings, tmp_path):
    app = make_app(settings)
    entry = tmp_path / "autostart" / ENTRY_NAME
    assert app.actions.run_at_login.isEnabled() and not app.actions.run_at_login.isChecked()
    app.actions.run_at_login.trigger()
    assert entry.is_file() and app.actions.run_at_login.isChecked()
    desktop = configparser.ConfigParser(interpolation=None)
    desktop.read_string(entry.read_text())
    fields = desktop["Desktop Entry"]
    assert fields["Type"] == "Application" and fields["Name"] == "PHNet Cam"
    assert "vcam-harmonize-tray" in fields["Exec"] or "vcam_harmonize.ui.app" in fields["Exec"]
    app.actions.run_at_login.trigger()
    assert not entry.exists() and not app.actions.run_at_login.isChecked()


def test_the_shipped_desktop_entry_gets_the_launch_command():
    text = entry_text("/opt/venv/bin/vcam-harmonize-tray")
    assert "Exec=/opt/venv/bin/vcam-harmonize-tray\n" in text
    assert text.count("Exec=") == 1 and text.startswith("[Desktop Entry]\n")


def test_gallery_lists_bundled_own_and_effects(tmp_path):
    own = tmp_path / "own"
    picture = tmp_path / "my_garden.jpg"
    cv2.imwrite(str(picture), np.full((40, 60, 3), 90, np.uint8))
    copy = add_to_folder(picture, own)
    again = add_to_folder(picture, own)
    assert copy.name == "my_garden.jpg" and again.name == "my_garden-1.jpg"
    (own / "notes.txt").write_text("not a background")
    offered = choices("blur:22", own)
    specs = [c.spec for c in offered]
    assert specs[:3] == [str(p) for p in default_backgrounds()]
    assert specs[3:] == sorted([str(copy), str(again)]) + ["blur:22", "none"]
    assert offered[4].label == "My garden"
    # a colour and a file from the settings file are listed too
    assert [c.label for c in choices("#0a0b0c", own)][-2] == "Colour #0a0b0c"
    assert choices("/elsewhere/office.png", own)[5].spec == "/elsewhere/office.png"
    assert matches("blur:15", "blur") and not matches("none", "blur")
    assert blur_sigma("blur:7.6") == 8 and blur_sigma("#ffffff") == 15
    assert not thumbnail(offered[3]).isNull() and not thumbnail(offered[-1]).isNull()


def test_fixes_are_picked_by_the_type_of_the_error():
    vcam = fix_for(VirtualCameraError, platform="linux")
    assert "sudo modprobe v4l2loopback" in vcam and "vcam-harmonize doctor" in vcam
    assert "OBS" in fix_for(VirtualCameraError, platform="darwin")
    camera = fix_for(CameraError)
    assert "Camera menu" in camera and "vcam-harmonize doctor" in camera
    assert "Pick another background" in fix_for(BackgroundError)
    assert 'gpu = "auto"' in fix_for(GpuError)
    # the type decides, whatever setting was being changed
    assert "Camera menu" in fix_for(CameraError, setting="background")
    # an error that names no part: the setting being changed decides, else the doctor
    assert "Pick another background" in fix_for(InputError, setting="background")
    assert fix_for(InputError) == fix_for(RuntimeError) == fix_for(None) == DOCTOR


def test_the_parts_raise_the_error_types_the_fixes_go_by(tmp_path):
    from vcam_harmonize.backgrounds import load_background
    from vcam_harmonize.capture import Capture
    from vcam_harmonize.sinks import VirtualCameraSink

    (tmp_path / "notes.png").write_text("not an image")
    for spec in ("/no/such/picture.png", str(tmp_path / "notes.png"), "#12345", "blur:x"):
        with pytest.raises(BackgroundError):
            load_background(spec, (64, 48))
    with pytest.raises(CameraError):  # the path says "backgrounds": the type still decides
        Capture("/home/me/backgrounds/x.mp4").start()
    with pytest.raises(VirtualCameraError):
        VirtualCameraSink(64, 48, 30, backend="not-installed")


def test_each_state_has_its_own_icon(qapp):
    centres = {state: state_pixmap(state, 64).toImage().pixelColor(32, 4).name()
               for state in ("running", "paused", "stopped", "error")}
    assert centres == {s: STATE_COLOURS[s] for s in centres}
    images = [state_pixmap(state, 64).toImage() for state in centres]
    assert len({bytes(image.constBits().asstring(image.sizeInBytes())) for image in images}) == 4


def test_main_restores_settings_and_shuts_the_camera_down(qapp, tmp_path, monkeypatch):
    settings = save_toml(CameraConfig(strength=0.4, background="blur:9"),
                         tmp_path / "settings.toml")
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's Ctrl-C
    seen = {}

    def run_briefly() -> int:
        """Stands in for QApplication.exec (which would end the test session's Qt)."""
        qapp.processEvents()
        window = next(w for w in QApplication.topLevelWidgets()
                      if w.windowTitle() == "PHNet Cam" and w.isVisible())
        seen["strength"] = window.strength.slider.value()
        seen["notice"] = window.notice.text()
        seen["quit on close"] = qapp.quitOnLastWindowClosed()
        window.controller.shutdown()
        window.hide()
        return 0

    monkeypatch.setattr(qapp, "exec", run_briefly)
    quit_on_close = qapp.quitOnLastWindowClosed()
    try:
        assert app_module.main(["--settings", str(settings)]) == 0
    finally:
        qapp.setQuitOnLastWindowClosed(quit_on_close)
    assert seen["strength"] == 40
    assert "no system tray" in seen["notice"]  # offscreen Qt has none
    assert seen["quit on close"]  # without a tray, closing the window quits
    assert load_toml(settings).strength == 0.4


def test_the_real_demo_pipeline_runs(tmp_path):
    """The app's own factory: demo clip, MediaPipe, PHNet, here into a video file."""
    out = tmp_path / "demo.mp4"
    config = CameraConfig(width=320, height=180, res=64, gpu="off", output=str(out),
                          background=str(default_backgrounds()[0]))
    pipeline = default_pipeline(config, demo=True)
    with pipeline:
        assert pipeline.wait(0) is False
        deadline = 20.0
        while pipeline.frames_out < 5 and deadline > 0:
            pipeline.wait(0.1)
            deadline -= 0.1
    assert pipeline.frames_out >= 5 and out.is_file()


def test_the_window_shows_the_cameras_cpu_price(qtbot, make_app, settings, monkeypatch):
    from vcam_harmonize.ui.window import cpu_text

    app = make_app(settings)
    window = app.window
    cores = os.cpu_count() or 1
    stats = {"fps": 30.0, "capture_fps": 30.0, "p50_ms": 40.0, "p95_ms": 55.0,
             "stage_ms": {}, "errors": {}, "camera": "open", "paused": False,
             "cpu_cores": 0.5, "cpu_share": 0.5 / cores}
    monkeypatch.setattr(app.controller, "stats", lambda: stats)
    window.update_stats()
    assert window.cpu.text() == f"0.50 cores ({0.5 / cores:.0%} of {cores} cores)"
    stats.update(cpu_cores=None, cpu_share=None)  # not measured yet
    window.update_stats()
    assert window.cpu.text() == "-"
    monkeypatch.setattr(app.controller, "stats", lambda: None)  # stopped
    stats.update(cpu_cores=1.234, cpu_share=1.234 / cores)
    window.update_stats()
    assert window.cpu.text() == "-"
    assert cpu_text(1.0, 0.5).startswith("1.00 cores (50% of ")
