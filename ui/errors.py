"""What a user can do about an error: the fixes ``vcam-harmonize doctor`` prints."""

from __future__ import annotations

import sys

from vcam_harmonize.models.errors import (
    BackgroundError,
    CameraError,
    GpuError,
    VirtualCameraError,
)
from vcam_harmonize.sinks import setup_commands

DOCTOR = "For a full check run: vcam-harmonize doctor"
BACKGROUND_FIX = ("Pick another background: an image (JPEG, PNG, WebP) or a video OpenCV "
                  "can read. The previous background stays on.")
CAMERA_FIX = ("Plug the camera in or pick another one in the Camera menu, and close other "
              "apps that use it. " + DOCTOR)
GPU_FIX = 'Set gpu = "auto" or "off" in the settings file. ' + DOCTOR

#: the part that failed, by the error's type (its message may name a path, which can
#: say anything); the setting being changed when the type says nothing more
_PARTS = ((VirtualCameraError, "virtual camera"), (CameraError, "device"),
          (BackgroundError, "background"), (GpuError, "gpu"))


def virtual_camera_fix(platform: str = sys.platform) -> str:
    steps = [line for line in setup_commands(platform=platform) if not line.startswith("#")][:2]
    return "Set up the virtual camera: " + "  then  ".join(steps) + ". " + DOCTOR


def fix_for(kind: type[BaseException] | None, setting: str | None = None,
            platform: str = sys.platform) -> str:
    """A short, actionable fix for an error of type ``kind``: an InputError subclass
    names the part that failed; for any other type (or None), the fix for the
    ``setting`` being changed when it happened (None when starting the camera)."""
    part = next((name for error, name in _PARTS
                 if kind is not None and issubclass(kind, error)), setting)
    if part == "virtual camera":
        return virtual_camera_fix(platform)
    return {"background": BACKGROUND_FIX, "device": CAMERA_FIX, "gpu": GPU_FIX}.get(part, DOCTOR)
