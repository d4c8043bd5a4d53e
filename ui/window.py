"""The settings and preview window: what the call receives, the sliders, the timings.

The preview and the numbers are pulled by timers on the GUI thread from the
controller's latest frame and statistics, so a fast camera never floods the event loop
and a slow one never blocks it.
"""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QSize, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QCloseEvent, QImage, QPixmap
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from vcam_harmonize.config import CameraConfig
from vcam_harmonize.cpu_meter import machine_cores
from vcam_harmonize.pipeline import STAGES
from vcam_harmonize.sinks import PAUSED_TEXT, draw_card

from .actions import NEXT_BACKGROUND_KEYS, PAUSE_KEYS, AppActions
from .controller import STATE_TEXT, CameraController
from .gallery import THUMB_SIZE, blur_sigma, choices, is_blur, matches, thumbnail
from .icons import state_pixmap

PREVIEW_SIZE = QSize(480, 270)
_DEBOUNCE_MS = 200


class LabeledSlider(QWidget):
    """A horizontal slider with its value printed next to it; ``committed(value)`` fires
    once the user has stopped moving it for a moment."""

    committed = pyqtSignal(int)

    def __init__(self, low: int, high: int, fmt, parent: QWidget | None = None):
        super().__init__(parent)
        self.fmt = fmt
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(low, high)
        self.value_label = QLabel()
        self.value_label.setMinimumWidth(48)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.value_label)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(_DEBOUNCE_MS)
        self._debounce.timeout.connect(lambda: self.committed.emit(self.slider.value()))
        self.slider.valueChanged.connect(self._moved)
        self._show(self.slider.value())

    def set_value(self, value: int) -> None:
        """Show ``value`` (from the settings) unless the user is moving the slider."""
        if not self.slider.isSliderDown() and not self._debounce.isActive():
            self.slider.blockSignals(True)
            self.slider.setValue(value)
            self.slider.blockSignals(False)
            self._show(value)

    def _moved(self, value: int) -> None:
        self._show(value)
        self._debounce.start()

    def _show(self, value: int) -> None:
        self.value_label.setText(self.fmt(value))


class SettingsWindow(QWidget):
    """Preview, start/pause buttons, background, sliders, timings, virtual camera state.

    ``hide_on_close``: closing only hides the window (the tray keeps the app running).
    """

    visibilityChanged = pyqtSignal(bool)

    def __init__(self, controller: CameraController, actions: AppActions, menu: QMenu,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self.actions = actions
        self.hide_on_close = True
        self.setWindowTitle("PHNet Cam")
        # shortcuts (application-wide while a window of ours has focus)
        self.addActions([actions.pause, actions.next_background])
        actions.dialog_parent = self

        self.notice = self._banner("#fff4ce", "#5c4400")
        self.message = self._banner("#fde7e7", "#7a1c1c")
        self.preview = QLabel()
        self.preview.setFixedSize(PREVIEW_SIZE)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setStyleSheet("background: #111; color: #ccc;")
        self.state_icon = QLabel()

        buttons = QHBoxLayout()
        for action in (actions.start_stop, actions.pause, actions.next_background):
            buttons.addWidget(self._button(action))
        menu_button = QToolButton()
        menu_button.setText("Menu")
        menu_button.setMenu(menu)
        menu_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        buttons.addWidget(menu_button)
        buttons.addStretch(1)
        buttons.addWidget(self.state_icon)

        hint = QLabel(f"Hotkeys while a PHNet Cam window has focus: {PAUSE_KEYS} pause, "
                      f"{NEXT_BACKGROUND_KEYS} next background.")
        hint.setWordWrap(True)
        hint.setMaximumWidth(PREVIEW_SIZE.width())
        hint.setStyleSheet("color: palette(mid);")
        left = QVBoxLayout()
        left.addWidget(self.preview)
        left.addLayout(buttons)
        left.addWidget(hint)
        left.addStretch(1)

        right = QVBoxLayout()
        right.addWidget(self._settings_box())
        right.addWidget(self._status_box())
        right.addStretch(1)

        columns = QHBoxLayout()
        columns.addLayout(left)
        columns.addLayout(right, 1)
        outer = QVBoxLayout(self)
        outer.addWidget(self.notice)
        outer.addWidget(self.message)
        outer.addLayout(columns)

        controller.stateChanged.connect(self._state_changed)
        controller.settingsChanged.connect(self._settings_changed)
        self._preview_timer = QTimer(self)
        self._preview_timer.timeout.connect(self.update_preview)
        self._preview_timer.start(100)
        self._stats_timer = QTimer(self)
        self._stats_timer.timeout.connect(self.update_stats)
        self._stats_timer.start(500)
        self._settings_changed(controller.config)
        self._state_changed(controller.state)

    # ------------------------------------------------------------ building
    @staticmethod
    def _banner(background: str, colour: str) -> QLabel:
        label = QLabel()
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        label.setStyleSheet(f"background: {background}; color: {colour}; padding: 6px;"
                            "border-radius: 4px;")
        label.hide()
        return label

    @staticmethod
    def _button(action) -> QToolButton:
        button = QToolButton()
        button.setDefaultAction(action)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        return button

    def _settings_box(self) -> QGroupBox:
        box = QGroupBox("Settings")
        form = QFormLayout(box)
        self.background = QComboBox()
        self.background.setIconSize(THUMB_SIZE / 2)
        self.background.setMinimumWidth(220)
        self.background.activated.connect(self._background_picked)
        row = QHBoxLayout()
        row.addWidget(self.background, 1)
        row.addWidget(self._button(self.actions.add_background))
        row.addWidget(self._button(self.actions.solid_colour))
        form.addRow("Background", row)
        self.harmonize = QCheckBox("Match my colours to the background (PHNet)")
        self.harmonize.clicked.connect(lambda on: self.controller.change(harmonize=on))
        form.addRow("Harmonize", self.harmonize)
        self.strength = LabeledSlider(0, 100, lambda v: f"{v} %")
        self.strength.committed.connect(lambda v: self.controller.change(strength=v / 100))
        form.addRow("Strength", self.strength)
        self.mask_smoothing = LabeledSlider(0, 95, lambda v: f"{v / 100:.2f}")
        self.mask_smoothing.committed.connect(
            lambda v: self.controller.change(mask_smoothing=v / 100))
        form.addRow("Mask smoothing", self.mask_smoothing)
        self.blur = LabeledSlider(1, 60, lambda v: f"{v} px")
        self.blur.committed.connect(lambda v: self.controller.change(background=f"blur:{v}"))
        form.addRow("Blur", self.blur)
        self.mirror = QCheckBox("Mirror the picture the call receives")
        self.mirror.clicked.connect(lambda on: self.controller.change(mirror=on))
        form.addRow("Mirror", self.mirror)
        self.compare = QCheckBox("Preview without and with harmonization, side by side")
        self.compare.setToolTip("The call still receives the harmonized picture only")
        self.compare.clicked.connect(self._compare_toggled)
        form.addRow("Compare", self.compare)
        return box

    def _status_box(self) -> QGroupBox:
        box = QGroupBox("Status")
        grid = QGridLayout(box)
        self.camera_state = QLabel()
        self.camera_state.setWordWrap(True)
        self.fps = QLabel("-")
        self.latency = QLabel("-")
        self.cpu = QLabel("-")
        self.cpu.setToolTip("The processor time the camera takes, all its threads together")
        grid.addWidget(QLabel("Virtual camera"), 0, 0)
        grid.addWidget(self.camera_state, 0, 1, 1, 3)
        grid.addWidget(QLabel("Frame rate"), 1, 0)
        grid.addWidget(self.fps, 1, 1)
        grid.addWidget(QLabel("Latency"), 1, 2)
        grid.addWidget(self.latency, 1, 3)
        grid.addWidget(QLabel("CPU"), 2, 0)
        grid.addWidget(self.cpu, 2, 1, 1, 3)
        self.stage_labels: dict[str, QLabel] = {}
        for i, stage in enumerate(STAGES):
            label = QLabel("-")
            self.stage_labels[stage] = label
            grid.addWidget(QLabel(stage.capitalize()), 3 + i // 2, 2 * (i % 2))
            grid.addWidget(label, 3 + i // 2, 2 * (i % 2) + 1)
        self.errors = QLabel()
        self.errors.setWordWrap(True)
        self.errors.setStyleSheet("color: #b02a2a;")
        self.errors.hide()
        grid.addWidget(self.errors, 3 + (len(STAGES) + 1) // 2, 0, 1, 4)
        return box

    # ------------------------------------------------------------ messages
    def show_notice(self, text: str) -> None:
        """A standing note, e.g. why there is no tray icon."""
        self.notice.setText(text)
        self.notice.show()

    def show_message(self, message: str, fix: str) -> None:
        """The last error and its fix, shown until the next one."""
        self.message.setText(f"<b>{_escape(message)}</b><br>{_escape(fix)}")
        self.message.show()

    # ------------------------------------------------------------ updates
    def update_preview(self) -> None:
        """Show the frame the call receives now (the paused card while paused)."""
        if not self.isVisible():
            return
        state = self.controller.state
        frame = self.controller.latest_frame()
        if state == "paused":
            frame = draw_card(PAUSED_TEXT, PREVIEW_SIZE.width(), PREVIEW_SIZE.height())
        elif state not in ("running", "stopping") or frame is None:
            self.preview.setText({"starting": "Starting the camera...",
                                  "error": "The camera did not start (see above)."}
                                 .get(state, "Camera stopped. Start it to see the preview."))
            return
        elif self.controller.config.mirror and not self.controller.comparing:
            frame = frame[:, ::-1]  # (a side-by-side pair keeps its sides and labels)
        self.preview.setPixmap(_to_pixmap(frame, self._preview_size()))

    def update_stats(self) -> None:
        stats = self.controller.stats()
        if stats is None:
            for label in (self.fps, self.latency, self.cpu, *self.stage_labels.values()):
                label.setText("-")
            self.errors.hide()
            return
        capture = f" (camera {stats['capture_fps']:.1f})" if stats.get("capture_fps") else ""
        self.fps.setText(f"{stats['fps']:.1f} fps{capture}")
        self.latency.setText(f"{stats['p50_ms']:.0f} ms (p95 {stats['p95_ms']:.0f})")
        self.cpu.setText(cpu_text(stats.get("cpu_cores"), stats.get("cpu_share")))
        for stage, label in self.stage_labels.items():
            label.setText(f"{stats['stage_ms'].get(stage, 0.0):.1f} ms")
        problems = [f"{stage}: {count} errors" for stage, count in stats["errors"].items()]
        if stats.get("camera") == "reconnecting":
            problems.insert(0, "camera lost, reconnecting")
        self.errors.setText("; ".join(problems))
        self.errors.setVisible(bool(problems))

    def _state_changed(self, state: str) -> None:
        self.state_icon.setPixmap(state_pixmap(state, 24))
        self.state_icon.setToolTip(STATE_TEXT.get(state, state))
        name = self.controller.config.camera_name
        device = self.controller.device_name
        where = f"{name} on {device}" if device and device != name else name
        self.camera_state.setText({
            "running": f"{where}: sending",
            "paused": f"{where}: paused (sends the paused card)",
            "starting": f"{name}: starting...",
            "stopping": f"{name}: stopping...",
            "error": f"{name}: error",
        }.get(state, f"{name}: stopped"))
        self.update_preview()

    def _settings_changed(self, config: CameraConfig) -> None:
        self.background.clear()
        for choice in choices(config.background, self.controller.user_folder):
            self.background.addItem(thumbnail(choice), choice.label, choice.spec)
            if matches(choice.spec, config.background):
                self.background.setCurrentIndex(self.background.count() - 1)
        self.harmonize.setChecked(config.harmonize)
        self.mirror.setChecked(config.mirror)
        self.strength.set_value(round(config.strength * 100))
        self.mask_smoothing.set_value(round(config.mask_smoothing * 100))
        self.blur.set_value(blur_sigma(config.background))
        self.blur.setEnabled(is_blur(config.background))
        self.blur.setToolTip("" if is_blur(config.background) else
                             "Pick Blur as the background to use this")

    def _compare_toggled(self, on: bool) -> None:
        """The preview doubles its width for the pair (composite | harmonized)."""
        self.controller.set_compare(on)
        self.preview.setFixedSize(self._preview_size())
        self.update_preview()

    def _preview_size(self) -> QSize:
        wide = 2 if self.controller.comparing else 1
        return QSize(wide * PREVIEW_SIZE.width(), PREVIEW_SIZE.height())

    def _background_picked(self, index: int) -> None:
        spec = self.background.itemData(index)
        if spec is not None and not matches(spec, self.controller.config.background):
            self.controller.change(background=spec)

    # ------------------------------------------------------------ window events
    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        self.visibilityChanged.emit(True)
        self.update_preview()

    def hideEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().hideEvent(event)
        self.visibilityChanged.emit(False)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt's name)
        if self.hide_on_close:
            event.ignore()
            self.hide()
        else:
            super().closeEvent(event)


def cpu_text(cores: float | None, share: float | None) -> str:
    """"0.45 cores (23% of 2 cores)"; "-" before the pipeline has measured it."""
    if cores is None:
        return "-"
    machine = machine_cores()
    of = f" ({share:.0%} of {machine} cores)" if share is not None else ""
    return f"{cores:.2f} cores{of}"


def _to_pixmap(frame: np.ndarray, size: QSize) -> QPixmap:
    """uint8 RGB (H, W, 3) -> a pixmap that fits ``size``, aspect kept."""
    frame = np.ascontiguousarray(frame)
    height, width = frame.shape[:2]
    image = QImage(frame.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(image).scaled(size, Qt.AspectRatioMode.KeepAspectRatio,
                                           Qt.TransformationMode.SmoothTransformation)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
