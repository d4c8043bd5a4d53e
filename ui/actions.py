"""The commands of the tray menu and the window, as QActions shared by both.

Each action calls the controller and is kept in step with it (checked, enabled, text)
from the controller's signals. ``triggered`` only fires for the user (or ``trigger()``),
never for ``setChecked``, so syncing does not loop back into the controller.
"""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QObject, Qt
from PyQt6.QtGui import QAction, QColor, QKeySequence
from PyQt6.QtWidgets import QColorDialog, QFileDialog, QWidget

from vcam_harmonize.config import CameraConfig

from .autostart import Autostart, supported
from .controller import CameraController
from .gallery import FILE_FILTER

#: hotkeys; active while any PHNet Cam window has focus (Qt has no system-wide ones).
PAUSE_KEYS = "Ctrl+Shift+P"
NEXT_BACKGROUND_KEYS = "Ctrl+Shift+B"


def ask_background_file(parent: QWidget | None) -> str | None:
    """Ask for an image or video; None when cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, "Add a background", str(Path.home()),
                                          f"{FILE_FILTER};;All files (*)")
    return path or None


def ask_colour(parent: QWidget | None, current: str) -> str | None:
    """Ask for a colour; "#rrggbb", or None when cancelled."""
    colour = QColorDialog.getColor(_initial_colour(current), parent, "Background colour")
    return colour.name() if colour.isValid() else None


def _initial_colour(current: str) -> QColor:
    return QColor(current) if current.startswith("#") else QColor("#2e7d32")


class AppActions(QObject):
    """Start/stop, pause, next background, add background, solid colour, harmonize,
    mirror, show preview, run at login, quit."""

    def __init__(self, controller: CameraController, autostart: Autostart,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.controller = controller
        self.autostart = autostart
        self.dialog_parent: QWidget | None = None
        self.start_stop = self._action("Start camera", controller.toggle_running)
        self.pause = self._action("Pause (send the paused card)", controller.toggle_paused,
                                  checkable=True, keys=PAUSE_KEYS)
        self.pause.setIconText("Pause")
        self.next_background = self._action("Next background", controller.next_background,
                                            keys=NEXT_BACKGROUND_KEYS)
        self.add_background = self._action("Add image or video...", self._add_background)
        self.solid_colour = self._action("Solid colour...", self._choose_colour)
        self.harmonize = self._action(
            "Harmonize colours (PHNet)",
            lambda: controller.change(harmonize=self.harmonize.isChecked()), checkable=True)
        self.mirror = self._action(
            "Mirror", lambda: controller.change(mirror=self.mirror.isChecked()),
            checkable=True)
        self.show_window = self._action("Show preview", None, checkable=True)
        self.run_at_login = self._action("Run at login", self._set_run_at_login,
                                         checkable=True)
        self.quit = self._action("Quit", None)
        self.run_at_login.setEnabled(supported())
        if not supported():
            self.run_at_login.setToolTip("Use your system's startup-apps settings here")
        self.run_at_login.setChecked(autostart.enabled())
        controller.stateChanged.connect(self._sync_state)
        controller.settingsChanged.connect(self._sync_settings)
        self._sync_state(controller.state)
        self._sync_settings(controller.config)

    def _action(self, text: str, handler, checkable: bool = False,
                keys: str | None = None) -> QAction:
        action = QAction(text, self)
        action.setCheckable(checkable)
        if keys:
            action.setShortcut(QKeySequence(keys))
            action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        if handler is not None:
            action.triggered.connect(lambda _checked=False: handler())
        return action

    def _add_background(self) -> None:
        path = ask_background_file(self.dialog_parent)
        if path:
            self.controller.add_background(path)

    def _choose_colour(self) -> None:
        colour = ask_colour(self.dialog_parent, self.controller.config.background)
        if colour:
            self.controller.change(background=colour)

    def _set_run_at_login(self) -> None:
        wanted = self.run_at_login.isChecked()
        try:
            self.autostart.set_enabled(wanted)
        except OSError as err:
            self.controller.report_error(f"cannot change {self.autostart.path}: {err.strerror}",
                                         "Check that the folder is writable.")
        self.run_at_login.setChecked(self.autostart.enabled())

    def _sync_state(self, state: str) -> None:
        running = state in ("starting", "running", "paused")
        self.start_stop.setText("Stop camera" if running else "Start camera")
        self.start_stop.setEnabled(state != "stopping")
        self.pause.setEnabled(state in ("running", "paused"))
        self.pause.setChecked(state == "paused")

    def _sync_settings(self, config: CameraConfig) -> None:
        self.harmonize.setChecked(config.harmonize)
        self.mirror.setChecked(config.mirror)
