"""``vcam-harmonize-tray``: PHNet Cam in the system tray.

Starts the Qt application, restores the settings, shows the tray icon (or, where the
desktop has no system tray, the window with a note saying why) and turns every error
into a notification with its fix.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from pathlib import Path

from PyQt6.QtCore import QObject, QTimer
from PyQt6.QtWidgets import QApplication, QSystemTrayIcon

from vcam_harmonize.config import settings_path
from vcam_harmonize.native_logs import StderrHandler, quiet_native_logs

from .actions import AppActions
from .autostart import Autostart
from .controller import CameraController, default_pipeline
from .icons import state_icon
from .tray import Tray
from .window import SettingsWindow

TITLE = "PHNet Cam"
NO_TRAY = ("This desktop has no system tray (on GNOME, install the AppIndicator "
           "extension), so PHNet Cam runs in this window. Closing it quits the camera.")


class TrayApp(QObject):
    """The controller, the shared actions, the tray and the window, wired together.

    Args:
        controller: the camera.
        tray_available: whether to use a tray icon (default: ask Qt).
        autostart: the run-at-login entry (default: the user's XDG autostart folder).
    """

    def __init__(self, controller: CameraController, tray_available: bool | None = None,
                 autostart: Autostart | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.controller = controller
        self.actions = AppActions(controller, autostart or Autostart(), self)
        self.tray = Tray(controller, self.actions, self)
        self.window = SettingsWindow(controller, self.actions, self.tray.menu)
        self.window.setWindowIcon(state_icon("running"))
        self.actions.show_window.triggered.connect(self._show_window_toggled)
        self.window.visibilityChanged.connect(self.actions.show_window.setChecked)
        self.actions.quit.triggered.connect(QApplication.quit)
        controller.errorOccurred.connect(self.notify)
        if tray_available is None:
            tray_available = QSystemTrayIcon.isSystemTrayAvailable()
        self.has_tray = tray_available
        self.window.hide_on_close = tray_available
        if tray_available:
            self.tray.show()
        else:
            self.window.show_notice(NO_TRAY)
            self.window.show()
        if controller.load_error:
            QTimer.singleShot(0, lambda: controller.report_error(
                controller.load_error, f"Fix or delete {controller.settings_file}; the next "
                                       "change you make overwrites it."))

    def notify(self, message: str, fix: str) -> None:
        """Show an error and its fix: a tray notification and the window's message line."""
        self.window.show_message(message, fix)
        if not (self.has_tray and self.tray.notify(TITLE, f"{message}\n{fix}")):
            self.window.show()
            self.window.raise_()

    def _show_window_toggled(self, checked: bool) -> None:
        if checked:
            self.window.show()
            self.window.raise_()
            self.window.activateWindow()
        else:
            self.window.hide()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vcam-harmonize-tray",
        description="PHNet Cam in the system tray: start/stop and pause the virtual camera, "
                    "pick backgrounds, set harmonization, see the preview.")
    parser.add_argument("--settings", type=Path, default=None,
                        help=f"settings file (default: {settings_path()}); the same TOML "
                             "format as vcam-harmonize --config")
    parser.add_argument("--start", action="store_true", help="start the camera right away")
    parser.add_argument("--show", action="store_true", help="open the window at start")
    parser.add_argument("--demo", action="store_true",
                        help="use the bundled demo clip instead of a webcam")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not args.verbose:
        quiet_native_logs()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s",
                        handlers=[StderrHandler()])
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("vcam-harmonize")
    app.setApplicationDisplayName(TITLE)
    app.setDesktopFileName("vcam-harmonize-tray")
    factory = functools.partial(default_pipeline, demo=args.demo, quiet=not args.verbose)
    controller = CameraController(args.settings, factory)
    tray_app = TrayApp(controller)
    app.setQuitOnLastWindowClosed(not tray_app.has_tray)
    app.aboutToQuit.connect(controller.shutdown)
    if args.show:
        tray_app.window.show()
    if args.start:
        controller.start()
    # Ctrl-C in a terminal quits; the timer lets Python run its signal handler
    signal.signal(signal.SIGINT, lambda *_: app.quit())
    wakeup = QTimer()
    wakeup.timeout.connect(lambda: None)
    wakeup.start(250)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
