"""The system-tray icon and its menu.

The icon's colour says the state (running, paused, stopped, error), its tooltip the
frame rate. The menu holds every command; the background, strength, resolution and
camera submenus are radio lists rebuilt from the controller's settings.
"""

from __future__ import annotations

from PyQt6.QtCore import QObject, QTimer
from PyQt6.QtGui import QAction, QActionGroup
from PyQt6.QtWidgets import QMenu, QSystemTrayIcon

from vcam_harmonize.config import CameraConfig

from .actions import AppActions
from .controller import STATE_TEXT, CameraController
from .gallery import choices, matches, thumbnail
from .icons import state_icon

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
RESOLUTIONS = (128, 192, 256, 320, 384, 512)
def status_line(controller: CameraController) -> str:
    """"PHNet Cam: running, 29.8 fps" and the like, for the tooltip and the menu."""
    name = controller.config.camera_name
    state = controller.state
    text = f"{name}: {STATE_TEXT.get(state, state)}"
    stats = controller.stats()
    if state == "running" and stats is not None:
        text += f", {stats['fps']:.1f} fps"
        if stats.get("camera") == "reconnecting":
            text += " (camera lost, reconnecting)"
    elif state == "error" and controller.last_error:
        text += f": {controller.last_error}"
    return text


def camera_label(device: str) -> str:
    text = str(device)
    if text.isdigit():
        return f"Camera {text}"
    if text.startswith("/dev/video"):
        return f"Camera {text[len('/dev/video'):]} ({text})"
    return f"Video file {text.rsplit('/', 1)[-1]}"


class Tray(QObject):
    """The tray icon (:attr:`icon`) and its menu (:attr:`menu`, also the window's)."""

    def __init__(self, controller: CameraController, actions: AppActions,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.controller = controller
        self.actions = actions
        self.cameras: list[int] | None = None  # None: not looked for yet
        self.menu = QMenu()
        self.status_action = QAction("", self.menu)
        self.status_action.setEnabled(False)
        self.background_menu = QMenu("Background", self.menu)
        self.strength_menu = QMenu("Strength", self.menu)
        self.res_menu = QMenu("Working resolution", self.menu)
        self.camera_menu = QMenu("Camera", self.menu)
        self._groups: dict[QMenu, QActionGroup] = {}
        self._build_menu()
        self.icon = QSystemTrayIcon(state_icon(controller.state))
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)
        self.icon.messageClicked.connect(self._show_window)
        controller.stateChanged.connect(self._state_changed)
        controller.settingsChanged.connect(self._settings_changed)
        controller.camerasFound.connect(self._cameras_found)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.update_status)
        self._timer.start(1000)
        self._settings_changed(controller.config)
        self.update_status()

    def show(self) -> None:
        self.icon.show()

    def notify(self, title: str, text: str) -> bool:
        """A desktop notification from the tray; False where none can be shown."""
        if not (self.icon.isVisible() and QSystemTrayIcon.supportsMessages()):
            return False
        self.icon.showMessage(title, text, QSystemTrayIcon.MessageIcon.Warning, 15000)
        return True

    def update_status(self) -> None:
        text = status_line(self.controller)
        self.icon.setToolTip(text)
        self.status_action.setText(text)

    # ------------------------------------------------------------ building
    def _build_menu(self) -> None:
        a = self.actions
        menu = self.menu
        menu.addAction(self.status_action)
        menu.addSeparator()
        menu.addActions([a.start_stop, a.pause])
        menu.addSeparator()
        menu.addMenu(self.background_menu)
        menu.addAction(a.next_background)
        menu.addAction(a.harmonize)
        menu.addMenu(self.strength_menu)
        menu.addMenu(self.res_menu)
        menu.addSeparator()
        menu.addMenu(self.camera_menu)
        menu.addAction(a.mirror)
        menu.addSeparator()
        menu.addActions([a.show_window, a.run_at_login])
        menu.addSeparator()
        menu.addAction(a.quit)
        self.background_menu.aboutToShow.connect(
            lambda: self._fill_backgrounds(self.controller.config))
        self.camera_menu.aboutToShow.connect(self._camera_menu_shown)
        for value in STRENGTHS:
            self._radio(self.strength_menu, f"{value:.0%}", value,
                        lambda v: self.controller.change(strength=v))
        for value in RESOLUTIONS:
            label = f"{value} px" + (" (default)" if value == 256 else "")
            self._radio(self.res_menu, label, value, lambda v: self.controller.change(res=v))

    def _radio(self, menu: QMenu, text: str, value, handler, icon=None) -> QAction:
        """A checkable entry of ``menu``'s radio group calling ``handler(value)``."""
        if menu not in self._groups:
            self._groups[menu] = QActionGroup(menu)
            self._groups[menu].setExclusionPolicy(
                QActionGroup.ExclusionPolicy.ExclusiveOptional)
        action = QAction(text, menu)
        if icon is not None:
            action.setIcon(icon)
        action.setCheckable(True)
        action.setData(value)
        action.setActionGroup(self._groups[menu])
        action.triggered.connect(lambda _checked=False: handler(value))
        menu.addAction(action)
        return action

    def _clear(self, menu: QMenu) -> None:
        menu.clear()
        group = self._groups.pop(menu, None)
        if group is not None:
            group.deleteLater()

    def _fill_backgrounds(self, config: CameraConfig) -> None:
        menu = self.background_menu
        self._clear(menu)
        offered = choices(config.background, self.controller.user_folder)
        for choice in offered:
            if choice.spec == "none":
                menu.addAction(self.actions.solid_colour)
            action = self._radio(menu, choice.label, choice.spec,
                                 lambda spec: self.controller.change(background=spec),
                                 thumbnail(choice))
            action.setChecked(matches(choice.spec, config.background))
        menu.addSeparator()
        menu.addAction(self.actions.add_background)

    def _fill_cameras(self, config: CameraConfig) -> None:
        menu = self.camera_menu
        self._clear(menu)
        devices = [str(index) for index in self.cameras or []]
        if config.device not in devices:
            devices.insert(0, config.device)
        for device in devices:
            action = self._radio(menu, camera_label(device), device,
                                 lambda d: self.controller.change(device=d))
            action.setChecked(device == config.device)
        menu.addSeparator()
        text = "Looking for cameras..." if self.cameras is None else "Look for cameras again"
        refresh = menu.addAction(text)
        refresh.triggered.connect(self.controller.refresh_cameras)

    # ------------------------------------------------------------ syncing
    def _camera_menu_shown(self) -> None:
        if self.cameras is None:
            self.controller.refresh_cameras()

    def _cameras_found(self, cameras: list) -> None:
        self.cameras = cameras
        self._fill_cameras(self.controller.config)

    def _state_changed(self, state: str) -> None:
        self.icon.setIcon(state_icon(state))
        self.update_status()

    def _settings_changed(self, config: CameraConfig) -> None:
        for menu, value in ((self.strength_menu, config.strength), (self.res_menu, config.res)):
            for action in menu.actions():
                action.setChecked(abs(action.data() - value) < 1e-6)
        self._fill_backgrounds(config)
        self._fill_cameras(config)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.actions.show_window.trigger()

    def _show_window(self) -> None:
        if not self.actions.show_window.isChecked():
            self.actions.show_window.trigger()
