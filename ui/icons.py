"""Tray icons drawn with QPainter: a camera on a disc whose colour says the state."""

from __future__ import annotations

from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QColor, QIcon, QPainter, QPixmap, QPolygonF

#: disc colour of each controller state.
STATE_COLOURS = {
    "stopped": "#7b7f87",
    "starting": "#3b7ddd",
    "stopping": "#3b7ddd",
    "running": "#1f9d55",
    "paused": "#e09b00",
    "error": "#d23c3c",
}
_SIZES = (16, 22, 24, 32, 48, 64)


def state_pixmap(state: str, size: int = 64) -> QPixmap:
    """The icon of ``state`` as a ``size`` x ``size`` pixmap with a transparent corner."""
    colour = QColor(STATE_COLOURS.get(state, STATE_COLOURS["error"]))
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    s = size / 64.0
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(colour)
    painter.drawEllipse(QRectF(1 * s, 1 * s, 62 * s, 62 * s))
    # the camera: body, lens and the side "viewfinder" of a video camera
    painter.setBrush(QColor("white"))
    painter.drawRoundedRect(QRectF(12 * s, 21 * s, 28 * s, 22 * s), 4 * s, 4 * s)
    painter.drawPolygon(QPolygonF([QPointF(42 * s, 32 * s), QPointF(53 * s, 23 * s),
                                   QPointF(53 * s, 41 * s)]))
    painter.setBrush(colour)
    if state == "paused":  # two bars instead of the lens
        painter.drawRect(QRectF(20 * s, 26 * s, 4 * s, 12 * s))
        painter.drawRect(QRectF(28 * s, 26 * s, 4 * s, 12 * s))
    elif state == "error":  # an exclamation mark
        painter.drawRect(QRectF(24 * s, 25 * s, 4 * s, 9 * s))
        painter.drawRect(QRectF(24 * s, 36 * s, 4 * s, 4 * s))
    elif state == "stopped":  # a gap struck through the camera
        painter.drawEllipse(QRectF(21 * s, 27 * s, 10 * s, 10 * s))
        painter.translate(32 * s, 32 * s)
        painter.rotate(-45)
        painter.drawRect(QRectF(-26 * s, -2.5 * s, 52 * s, 5 * s))
    else:
        painter.drawEllipse(QRectF(21 * s, 27 * s, 10 * s, 10 * s))
    painter.end()
    return pixmap


def state_icon(state: str) -> QIcon:
    """The tray icon of ``state``, drawn at the usual tray and menu sizes."""
    icon = QIcon()
    for size in _SIZES:
        icon.addPixmap(state_pixmap(state, size))
    return icon
