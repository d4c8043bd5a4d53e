"""Native libraries' own log lines kept off the terminal: OpenCV, FFmpeg, MediaPipe and
TensorFlow Lite print through C++ loggers, not Python's. The front ends (the CLI, the tray
app) call these, unless ``--verbose``; a library call never does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import TextIO


def quiet_native_logs() -> None:
    """Keep OpenCV's, FFmpeg's and MediaPipe's own log lines off the terminal (set before
    they load; a user's own settings of these variables win): every failure reaches the
    user as our one ``error:`` line instead. What MediaPipe and TensorFlow Lite print
    while a segmenter starts obeys none of these: :func:`native_stderr_silenced`."""
    for name, value in (("OPENCV_LOG_LEVEL", "OFF"), ("OPENCV_FFMPEG_LOGLEVEL", "-8"),
                        ("GLOG_minloglevel", "2"), ("TF_CPP_MIN_LOG_LEVEL", "2")):
        os.environ.setdefault(name, value)
    if os.environ["OPENCV_LOG_LEVEL"] == "OFF":  # cv2 is loaded by now: tell it directly
        import cv2

        opencv_logging = getattr(cv2.utils, "logging", None)  # OpenCV 5
        if opencv_logging is not None:
            opencv_logging.setLogLevel(opencv_logging.LOG_LEVEL_SILENT)
        elif hasattr(cv2, "setLogLevel"):  # OpenCV 4
            cv2.setLogLevel(0)  # LOG_LEVEL_SILENT
    warnings.filterwarnings("ignore", message="MessageFactory class is deprecated")


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Meanwhile, send what native code writes to file descriptor 2 to the null device:
    MediaPipe's absl lines and TensorFlow Lite's, printed while a segmenter starts, obey
    no log level. Python's own ``sys.stderr`` (our messages, logging, warnings) goes on
    to the terminal. ``enabled=False`` (``--verbose``) changes nothing."""
    if not enabled:
        yield
        return
    original = sys.stderr
    try:
        python_on_fd2 = original.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced, e.g. by a test's capture
        python_on_fd2 = False
    original.flush()
    saved = os.dup(2)
    if python_on_fd2:  # Python's writes go to a copy of the real descriptor meanwhile
        sys.stderr = open(os.dup(saved), "w", buffering=1, encoding=original.encoding,
                          errors=original.errors)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        if python_on_fd2:
            sys.stderr.close()
            sys.stderr = original
        os.dup2(saved, 2)
        os.close(saved)


class StderrHandler(logging.StreamHandler):
    """A log handler that writes to whatever ``sys.stderr`` is at the time (it is
    swapped while :func:`native_stderr_silenced` holds file descriptor 2)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass
