"""What a user can do about an error: the fixes ``vcam-harmonize doctor`` prints."""

from __future__ import annotations

import re
import sys

from vcam_harmonize.sinks import setup_commands

DOCTOR = "For a full check run: vcam-harmonize doctor"
BACKGROUND_FIX = ("Pick another background: an image (JPEG, PNG, WebP) or a video OpenCV "
                  "can read. The previous background stays on.")
CAMERA_FIX = ("Plug the camera in or pick another one in the Camera menu, and close other "
              "apps that use it. " + DOCTOR)
GPU_FIX = 'Set gpu = "auto" or "off" in the settings file. ' + DOCTOR

# how the pipeline's messages begin (they may end in a path, which can say anything)
_KINDS = (
    ("virtual camera", r"(the )?virtual camera|no '.*' virtual camera backend"),
    ("device", r"camera \S+ does not open|video file not found|cannot read video file"),
    ("background", r"background|cannot decode image|image |colour |blur strength|"
                   r"cannot read .*: not an image|no (readable )?image"),
    ("gpu", r"gpu|device 'cuda'"),
)


def virtual_camera_fix(platform: str = sys.platform) -> str:
    steps = [line for line in setup_commands(platform=platform) if not line.startswith("#")][:2]
    return "Set up the virtual camera: " + "  then  ".join(steps) + ". " + DOCTOR


def fix_for(message: str, setting: str | None = None, platform: str = sys.platform) -> str:
    """A short, actionable fix for the error ``message``; ``setting`` is the setting
    being changed when it happened (None when starting the camera)."""
    kind = setting
    if kind is None:
        kind = next((name for name, pattern in _KINDS
                     if re.match(pattern, message, re.IGNORECASE)), None)
    if kind == "virtual camera":
        return virtual_camera_fix(platform)
    return {"background": BACKGROUND_FIX, "device": CAMERA_FIX, "gpu": GPU_FIX}.get(kind, DOCTOR)
