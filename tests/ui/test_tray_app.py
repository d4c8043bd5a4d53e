"""The tray app steering a running camera: a video-file webcam, the real Harmonizer, a
recording virtual-camera backend; what the call receives is checked frame by frame."""

from __future__ import annotations

import time

import cv2
import numpy as np
from PyQt6.QtCore import QTimer

from tests.ui.conftest import HEIGHT, PERSON, TEAL, WIDTH, make_factory, received
from vcam_harmonize.backgrounds import default_backgrounds, load_background
from vcam_harmonize.cli import build_parser, config_from_args
from vcam_harmonize.config import load_toml
from vcam_harmonize.sinks import PAUSED_TEXT, draw_card
from vcam_harmonize.ui import actions as actions_module
from vcam_harmonize.ui.icons import STATE_COLOURS
from vcam_harmonize.ui.window import PREVIEW_SIZE

RED = np.array([255, 0, 0], np.uint8)
START_TIMEOUT_MS = 15_000


def border(frame: np.ndarray) -> np.ndarray:
    """The pixels left of the person box: background only."""
    return frame[:, : PERSON[1].start - 2]


def person(frame: np.ndarray) -> np.ndarray:
    return frame[PERSON[0].start + 4 : PERSON[0].stop - 4, PERSON[1].start + 4 : PERSON[1].stop - 4]


def wait_for_frame(qtbot, backend, condition, timeout=5000):
    """Wait until the newest received frame satisfies ``condition``."""
    def check():
        frame = received(backend)
        assert frame is not None and condition(frame)

    qtbot.waitUntil(check, timeout=timeout)
    return received(backend)


def menu_action(menu, data):
    return next(a for a in menu.actions() if a.data() == data)


def icon_colour(app) -> str:
    """The colour of the tray icon's disc, which says the state."""
    return app.tray.icon.icon().pixmap(32, 32).toImage().pixelColor(16, 2).name()


def start(qtbot, app):
    app.actions.start_stop.trigger()
    qtbot.waitUntil(lambda: app.controller.state == "running", timeout=START_TIMEOUT_MS)


def test_menu_actions_change_what_the_call_receives(qtbot, make_app, settings, backend,
                                                    videos):
    app = make_app(settings)
    tray, actions, controller = app.tray, app.actions, app.controller
    assert actions.start_stop.text() == "Start camera" and not actions.pause.isEnabled()
    assert icon_colour(app) == STATE_COLOURS["stopped"]
    start(qtbot, app)
    assert actions.start_stop.text() == "Stop camera" and actions.pause.isEnabled()
    assert icon_colour(app) == STATE_COLOURS["running"]
    frame = wait_for_frame(qtbot, backend, lambda f: (border(f) == RED).all())
    # PHNet at full strength moves the teal person towards the red background
    assert np.abs(person(frame).astype(int) - TEAL).mean() > 20
    qtbot.waitUntil(lambda: "fps" in tray.icon.toolTip(), timeout=3000)
    assert tray.icon.toolTip().startswith("PHNet Cam: running, ")

    # strength 0 % from the menu: the person arrives exactly as the camera saw them
    menu_action(tray.strength_menu, 0.0).trigger()
    wait_for_frame(qtbot, backend,
                   lambda f: np.abs(person(f).astype(int) - TEAL).max() <= 6)
    assert controller.config.strength == 0.0

    # a bundled background picked from the menu replaces the red one
    tray.background_menu.aboutToShow.emit()
    bundled = default_backgrounds()
    menu_action(tray.background_menu, str(bundled[0])).trigger()
    expected = load_background(bundled[0], (WIDTH, HEIGHT)).frame(None, None)
    wait_for_frame(qtbot, backend, lambda f: np.array_equal(border(f), border(expected)))
    # the next-background hotkey's action steps to the second bundled image
    actions.next_background.trigger()
    second = load_background(bundled[1], (WIDTH, HEIGHT)).frame(None, None)
    wait_for_frame(qtbot, backend, lambda f: np.array_equal(border(f), border(second)))

    # another camera, switched live: the orange video's person shows up
    controller.change(device=str(videos["orange"]))
    wait_for_frame(qtbot, backend, lambda f: np.abs(person(f).astype(int)
                                                    - (230, 140, 40)).max() <= 6)
    assert controller.state == "running" and len(backend.instances) == 1  # never restarted

    # mirror: the picture arrives flipped left-right
    actions.mirror.trigger()
    wait_for_frame(qtbot, backend,
                   lambda f: np.array_equal(f[:, -(PERSON[1].start - 2):][:, ::-1],
                                            border(second)))

    # pause sends the paused card; resume brings the picture back
    actions.pause.trigger()
    card = draw_card(PAUSED_TEXT, WIDTH, HEIGHT)
    wait_for_frame(qtbot, backend, lambda f: np.array_equal(f, card))
    qtbot.waitUntil(lambda: controller.state == "paused")
    assert actions.pause.isChecked() and "paused" in tray.icon.toolTip()
    assert icon_colour(app) == STATE_COLOURS["paused"]
    actions.pause.trigger()
    wait_for_frame(qtbot, backend, lambda f: not np.array_equal(f, card))
    qtbot.waitUntil(lambda: controller.state == "running")

    # stop closes the virtual camera and nothing more is sent
    actions.start_stop.trigger()
    qtbot.waitUntil(lambda: controller.state == "stopped", timeout=5000)
    camera = backend.instances[-1]
    assert camera.closed
    count = len(camera.frames)
    qtbot.wait(200)
    assert len(camera.frames) == count
    assert actions.start_stop.text() == "Start camera"
    assert icon_colour(app) == STATE_COLOURS["stopped"]


def test_window_shows_the_preview_timings_and_device(qtbot, make_app, settings, backend):
    app = make_app(settings)
    window = app.window
    app.actions.show_window.trigger()
    assert window.isVisible() and app.actions.show_window.isChecked()
    assert "stopped" in window.preview.text().lower()
    start(qtbot, app)
    wait_for_frame(qtbot, backend, lambda f: (border(f) == RED).all())
    qtbot.waitUntil(lambda: window.preview.pixmap() is not None
                    and not window.preview.pixmap().isNull(), timeout=3000)

    def preview_is_red_at_the_edge():
        image = window.preview.pixmap().toImage()
        colour = image.pixelColor(5, image.height() // 2)
        assert (colour.red(), colour.green(), colour.blue()) == (255, 0, 0)

    qtbot.waitUntil(preview_is_red_at_the_edge, timeout=3000)
    qtbot.waitUntil(lambda: window.fps.text().endswith(")") and "fps" in window.fps.text(),
                    timeout=3000)
    assert window.stage_labels["harmonize"].text().endswith(" ms")
    qtbot.waitUntil(lambda: " cores (" in window.cpu.text(), timeout=3000)
    assert "/dev/video-test" in window.camera_state.text()
    assert "sending" in window.camera_state.text()

    # the strength slider applies live once it settles
    window.strength.slider.setValue(0)
    qtbot.waitUntil(lambda: app.controller.config.strength == 0.0, timeout=3000)
    wait_for_frame(qtbot, backend, lambda f: np.abs(person(f).astype(int) - TEAL).max() <= 6)

    # closing the window only hides it while the tray icon is there
    window.close()
    assert not window.isVisible() and app.controller.state == "running"
    assert not app.actions.show_window.isChecked()


def test_settings_survive_a_restart(qtbot, make_app, settings):
    first = make_app(settings)
    tray, actions, window = first.tray, first.actions, first.window
    menu_action(tray.strength_menu, 0.5).trigger()
    menu_action(tray.res_menu, 128).trigger()
    actions.harmonize.trigger()
    actions.mirror.trigger()
    tray.background_menu.aboutToShow.emit()
    menu_action(tray.background_menu, "blur:15").trigger()
    window.mask_smoothing.slider.setValue(20)
    qtbot.waitUntil(lambda: first.controller.config.mask_smoothing == 0.2, timeout=3000)
    window.blur.slider.setValue(30)
    qtbot.waitUntil(lambda: first.controller.config.background == "blur:30", timeout=3000)
    saved = first.controller.config
    assert (saved.strength, saved.res, saved.harmonize, saved.mirror) == (0.5, 128, False, True)
    first.controller.shutdown()

    # the file is the CLI's --config format
    assert load_toml(settings) == saved
    assert config_from_args(build_parser().parse_args(["--config", str(settings)])) == saved

    second = make_app(settings)
    assert second.controller.config == saved
    assert menu_action(second.tray.strength_menu, 0.5).isChecked()
    assert menu_action(second.tray.res_menu, 128).isChecked()
    assert not second.actions.harmonize.isChecked() and second.actions.mirror.isChecked()
    assert second.window.mask_smoothing.slider.value() == 20
    assert second.window.blur.slider.value() == 30 and second.window.blur.isEnabled()
    assert second.window.background.currentText() == "Blur"
    assert second.window.strength.slider.value() == 50


def test_a_bad_background_file_is_shown_and_the_old_one_stays(qtbot, make_app, settings,
                                                              backend, tmp_path, monkeypatch):
    broken = tmp_path / "holiday.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    monkeypatch.setattr(actions_module, "ask_background_file", lambda parent: str(broken))
    app = make_app(settings)
    shown = []
    monkeypatch.setattr(app.tray.icon, "showMessage", lambda *args: shown.append(args))
    start(qtbot, app)
    wait_for_frame(qtbot, backend, lambda f: (border(f) == RED).all())

    app.actions.add_background.trigger()
    qtbot.waitUntil(lambda: bool(shown), timeout=5000)
    title, text = shown[0][:2]
    assert title == "PHNet Cam" and "holiday.png" in text and "Pick another background" in text
    assert "holiday.png" in app.window.message.text() and not app.window.message.isHidden()
    assert app.controller.state == "running" and app.controller.config.background == "#ff0000"
    assert load_toml(settings).background == "#ff0000"
    assert not (tmp_path / "my-backgrounds" / "holiday.png").exists()
    qtbot.wait(300)
    assert (border(received(backend)) == RED).all()

    # a camera that does not open: reported, the current one keeps running
    app.controller.change(device=str(tmp_path / "no-such-camera.avi"))
    qtbot.waitUntil(lambda: len(shown) == 2, timeout=5000)
    assert "no-such-camera.avi" in shown[1][1] and "vcam-harmonize doctor" in shown[1][1]
    count = len(backend.instances[-1].frames)
    qtbot.wait(300)
    assert len(backend.instances[-1].frames) > count and app.controller.state == "running"


def test_no_virtual_camera_is_an_error_state_with_the_setup_fix(qtbot, make_app, settings,
                                                                monkeypatch):
    app = make_app(settings, factory=make_factory(backend="not-installed"))
    shown = []
    monkeypatch.setattr(app.tray.icon, "showMessage", lambda *args: shown.append(args))
    app.actions.start_stop.trigger()
    qtbot.waitUntil(lambda: app.controller.state == "error", timeout=START_TIMEOUT_MS)
    qtbot.waitUntil(lambda: bool(shown))
    text = shown[0][1]
    assert "virtual camera" in text and "Set up the virtual camera" in text
    assert "vcam-harmonize doctor" in text
    assert "error" in app.tray.icon.toolTip()
    assert icon_colour(app) == STATE_COLOURS["error"]
    assert app.actions.start_stop.text() == "Start camera"  # it can be tried again


def test_a_broken_settings_file_falls_back_to_defaults_and_says_so(qtbot, make_app, settings):
    settings.write_text("strength = 7\n")
    app = make_app(settings, tray=False)
    qtbot.waitUntil(lambda: app.window.message.isVisible())
    assert "strength" in app.window.message.text()
    assert app.controller.config.strength == 1.0


def test_without_a_tray_the_window_opens_and_says_why(qtbot, make_app, settings):
    app = make_app(settings, tray=False)
    assert app.window.isVisible() and not app.tray.icon.isVisible()
    assert "no system tray" in app.window.notice.text() and app.window.notice.isVisible()
    assert not app.window.hide_on_close  # closing the window quits


def test_add_background_copies_it_into_the_user_folder(qtbot, make_app, settings, tmp_path,
                                                        monkeypatch):
    picture = tmp_path / "beach.png"
    cv2.imwrite(str(picture), np.full((60, 80, 3), (200, 120, 30), np.uint8))
    monkeypatch.setattr(actions_module, "ask_background_file", lambda parent: str(picture))
    app = make_app(settings)
    app.actions.add_background.trigger()
    copy = tmp_path / "my-backgrounds" / "beach.png"
    qtbot.waitUntil(lambda: app.controller.config.background == str(copy), timeout=5000)
    assert copy.read_bytes() == picture.read_bytes()
    app.tray.background_menu.aboutToShow.emit()
    entry = menu_action(app.tray.background_menu, str(copy))
    assert entry.isChecked() and entry.text() == "Beach" and not entry.icon().isNull()
    assert app.window.background.currentText() == "Beach"

    monkeypatch.setattr(actions_module, "ask_colour", lambda parent, current: "#336699")
    app.actions.solid_colour.trigger()
    qtbot.waitUntil(lambda: app.controller.config.background == "#336699", timeout=5000)


def test_the_gui_stays_responsive_while_the_pipeline_is_slow(qtbot, make_app, settings,
                                                             backend):
    app = make_app(settings, factory=make_factory(build_delay=1.5, segment_delay=0.3))
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)

    began = time.monotonic()
    app.actions.start_stop.trigger()  # builds the (slow) pipeline off the GUI thread
    menu_action(app.tray.strength_menu, 0.25).trigger()
    assert time.monotonic() - began < 0.2
    qtbot.wait(1000)
    assert app.controller.state == "starting"
    assert len(ticks) >= 25  # of 50: the event loop kept turning

    qtbot.waitUntil(lambda: app.controller.state == "running", timeout=START_TIMEOUT_MS)
    wait_for_frame(qtbot, backend, lambda f: (border(f) == RED).all())
    ticks.clear()
    began = time.monotonic()
    menu_action(app.tray.background_menu, "none").trigger()
    app.actions.pause.trigger()
    assert time.monotonic() - began < 0.2
    qtbot.wait(1000)
    assert len(ticks) >= 25
    assert app.controller.config.strength == 0.25
    qtbot.waitUntil(lambda: app.controller.state == "paused", timeout=3000)
    timer.stop()


def test_camera_menu_lists_the_cameras_that_open(qtbot, make_app, settings, backend,
                                                 monkeypatch, videos):
    monkeypatch.setattr("vcam_harmonize.capture.list_cameras", lambda max_index=10: [0, 2])
    app = make_app(settings)
    menu = app.tray.camera_menu
    menu.aboutToShow.emit()  # the first look for cameras happens when the menu opens
    qtbot.waitUntil(lambda: [a.data() for a in menu.actions() if a.data()]
                    == [str(videos["teal"]), "0", "2"], timeout=3000)
    labels = [a.text() for a in menu.actions() if a.data()]
    assert labels == ["Video file teal.avi", "Camera 0", "Camera 2"]
    assert menu_action(menu, str(videos["teal"])).isChecked()
    shown = []
    monkeypatch.setattr(app.tray.icon, "showMessage", lambda *args: shown.append(args))
    start(qtbot, app)
    menu_action(menu, "2").trigger()  # there is no camera 2 here
    qtbot.waitUntil(lambda: bool(shown), timeout=5000)
    assert "camera 2 does not open" in shown[0][1] and "Camera menu" in shown[0][1]
    assert app.controller.config.device == str(videos["teal"])
    assert menu_action(menu, str(videos["teal"])).isChecked()
    assert app.controller.state == "running"


def test_hotkeys_pause_and_change_the_background(qtbot, make_app, settings, backend):
    from PyQt6.QtCore import Qt

    app = make_app(settings)
    app.actions.show_window.trigger()
    qtbot.waitExposed(app.window)
    app.window.activateWindow()
    start(qtbot, app)
    app.controller.change(background=str(default_backgrounds()[0]))
    qtbot.waitUntil(lambda: app.controller.config.background == str(default_backgrounds()[0]))
    keys = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    qtbot.keyClick(app.window, Qt.Key.Key_B, keys)
    qtbot.waitUntil(lambda: app.controller.config.background == str(default_backgrounds()[1]))
    qtbot.keyClick(app.window, Qt.Key.Key_P, keys)
    qtbot.waitUntil(lambda: app.controller.state == "paused")
    wait_for_frame(qtbot, backend,
                   lambda f: np.array_equal(f, draw_card(PAUSED_TEXT, WIDTH, HEIGHT)))


def test_a_camera_that_ends_by_itself_is_reported(qtbot, make_app, settings, backend,
                                                  monkeypatch):
    app = make_app(settings, factory=make_factory(max_frames=5))
    shown = []
    monkeypatch.setattr(app.tray.icon, "showMessage", lambda *args: shown.append(args))
    app.actions.start_stop.trigger()
    qtbot.waitUntil(lambda: app.controller.state == "error", timeout=START_TIMEOUT_MS)
    qtbot.waitUntil(lambda: bool(shown))
    assert "stopped" in shown[0][1] and icon_colour(app) == STATE_COLOURS["error"]
    qtbot.waitUntil(lambda: backend.instances[-1].closed, timeout=3000)
    assert app.actions.start_stop.text() == "Start camera"


def test_compare_shows_the_pair_in_the_preview_while_the_call_gets_one_picture(
        qtbot, make_app, settings, backend):
    app = make_app(settings)
    window = app.window
    app.actions.show_window.trigger()
    start(qtbot, app)
    wait_for_frame(qtbot, backend, lambda f: (border(f) == RED).all())
    window.compare.click()
    assert app.controller.comparing
    assert window.preview.width() == 2 * PREVIEW_SIZE.width()

    def preview_is_a_pair():
        frame = app.controller.latest_frame()
        assert frame is not None and frame.shape == (HEIGHT, 2 * WIDTH, 3)
        # composite on the left, harmonized on the right: the same red background
        assert (frame[HEIGHT // 2, : PERSON[1].start - 2] == RED).all()
        assert (frame[HEIGHT // 2, WIDTH : WIDTH + PERSON[1].start - 2] == RED).all()

    qtbot.waitUntil(preview_is_a_pair, timeout=5000)
    assert received(backend).shape == (HEIGHT, WIDTH, 3)  # the call: one picture
    window.compare.click()
    qtbot.waitUntil(lambda: app.controller.latest_frame() is not None
                    and app.controller.latest_frame().shape == (HEIGHT, WIDTH, 3), timeout=5000)
    assert window.preview.size() == PREVIEW_SIZE
