"""The backgrounds on offer: the bundled images, the user's backgrounds folder, blur,
a solid colour and none, each with a thumbnail for the menu and the window."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
from platformdirs import user_data_dir
from PyQt6.QtCore import QRectF, QSize, Qt
from PyQt6.QtGui import QBrush, QColor, QIcon, QImage, QImageReader, QPainter, QPixmap

from vcam_harmonize.backgrounds import (
    DEFAULT_BLUR,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    blur_strength,
    default_backgrounds,
    is_blur,
)
from vcam_harmonize.config import APP_NAME, InputError

THUMB_SIZE = QSize(96, 54)
FILE_FILTER = "Images and videos ({})".format(
    " ".join(f"*{s}" for s in sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES)))
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


def user_backgrounds_dir() -> Path:
    """Where "Add image or video..." keeps the user's own backgrounds."""
    return Path(user_data_dir(APP_NAME)) / "backgrounds"


@dataclass(frozen=True)
class Choice:
    """One background on offer: what the user reads and the spec the pipeline takes."""

    label: str
    spec: str
    path: Path | None = None


def blur_sigma(spec: str) -> int:
    """The blur strength (px) of a ``blur[:N]`` spec; the default for anything else."""
    if is_blur(spec):
        try:
            return max(1, round(blur_strength(spec)))
        except InputError:
            pass
    return round(DEFAULT_BLUR)


def background_files(user_folder: Path) -> list[Path]:
    """The bundled backgrounds, then the images and videos in ``user_folder``."""
    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    own = sorted(p for p in user_folder.iterdir() if p.suffix.lower() in suffixes
                 and p.is_file()) if user_folder.is_dir() else []
    return default_backgrounds() + own


def _label(path: Path) -> str:
    return path.stem.replace("_", " ").replace("-", " ").capitalize()


def choices(current: str, user_folder: Path) -> list[Choice]:
    """Everything the background menu lists: the files, then blur, a colour, none.

    ``current`` is listed even if it is none of the usual ones (a file or folder set
    in the settings file, a colour picked earlier)."""
    files = [Choice(_label(p), str(p), p) for p in background_files(user_folder)]
    effects = [Choice("Blur", f"blur:{blur_sigma(current)}")]
    if _COLOUR.fullmatch(current):
        effects.append(Choice(f"Colour {current.lower()}", current))
    effects.append(Choice("None (camera as is)", "none"))
    if not any(matches(c.spec, current) for c in files + effects):
        path = Path(current).expanduser()
        files.append(Choice("Bundled backgrounds (cycled)", current) if current == "default"
                     else Choice(_label(path) if path.name else current, current,
                                 path if path.is_file() else None))
    return files + effects


def matches(spec: str, current: str) -> bool:
    """True when ``spec`` is the background ``current`` names (any blur is "Blur")."""
    if is_blur(spec) or is_blur(current):
        return is_blur(spec) and is_blur(current)
    return spec == current


def add_to_folder(source: Path, folder: Path) -> Path:
    """Copy ``source`` into ``folder`` under a name not yet taken; the copy's path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    number = 1
    while target.exists():
        target = folder / f"{source.stem}-{number}{source.suffix}"
        number += 1
    shutil.copyfile(source, target)
    return target


_thumbs: dict[tuple, QIcon] = {}


def thumbnail(choice: Choice) -> QIcon:
    """A cover-cropped thumbnail (cached while the file is unchanged)."""
    stamp = choice.path.stat().st_mtime_ns if choice.path and choice.path.is_file() else 0
    key = (choice.spec, stamp)
    if key not in _thumbs:
        _thumbs[key] = QIcon(_draw(choice))
    return _thumbs[key]


def _draw(choice: Choice) -> QPixmap:
    pixmap = QPixmap(THUMB_SIZE)
    pixmap.fill(QColor("#3a3d42"))
    image = _read_image(choice.path) if choice.path is not None else None
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    rect = QRectF(0, 0, THUMB_SIZE.width(), THUMB_SIZE.height())
    if image is not None and not image.isNull():
        scaled = image.scaled(THUMB_SIZE, Qt.AspectRatioMode.KeepAspectRatioByExpanding,
                              Qt.TransformationMode.SmoothTransformation)
        painter.drawImage(
            (THUMB_SIZE.width() - scaled.width()) // 2,
            (THUMB_SIZE.height() - scaled.height()) // 2, scaled)
    elif _COLOUR.fullmatch(choice.spec):
        painter.fillRect(rect, QColor(choice.spec))
    elif is_blur(choice.spec):
        for i, colour in enumerate(("#6b7a8f", "#8c96a6", "#a7adb8")):
            painter.setBrush(QColor(colour))
            painter.setPen(Qt.PenStyle.NoPen)
            painter.drawEllipse(QRectF(8 + 28 * i, 6 + 8 * (i % 2), 34, 34))
    else:  # none / unknown: the camera as is, drawn as a hatch
        painter.fillRect(rect, QBrush(QColor("#8a8f98"), Qt.BrushStyle.BDiagPattern))
    painter.end()
    return pixmap


def _read_image(path: Path) -> QImage | None:
    """The image (scaled on decode where the format allows) or a video's first frame."""
    if not path.is_file():
        return None
    if path.suffix.lower() in IMAGE_SUFFIXES:
        reader = QImageReader(str(path))
        reader.setAutoTransform(True)
        size = reader.size()
        if size.isValid() and size.width() > 4 * THUMB_SIZE.width():
            reader.setScaledSize(size.scaled(THUMB_SIZE * 2,
                                              Qt.AspectRatioMode.KeepAspectRatioByExpanding))
        return reader.read()
    cap = cv2.VideoCapture(str(path))
    try:
        ok, bgr = cap.read()
    finally:
        cap.release()
    if not ok:
        return None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return QImage(rgb.data, rgb.shape[1], rgb.shape[0], 3 * rgb.shape[1],
                  QImage.Format.Format_RGB888).copy()
