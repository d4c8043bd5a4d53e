"""The exception types that carry a message meant for the user.

Every layer (models, training, the camera, the tray app) raises :class:`InputError`
for bad input it can name: a wrong path, a corrupt file, an invalid setting. Front
ends print ``str(err)`` as one line and exit with code 2; anything else is a bug.
Its subclasses say which part failed, so a front end picks its advice by the type
(the tray's ``fix_for``), never by reading the message.
"""


import sys
from collections.abc import Callable


class InputError(ValueError):
    """Bad input from the user, with a one-line message that says what to do."""


class CameraError(InputError):
    """The webcam or the input video file does not open."""


class VirtualCameraError(InputError):
    """The virtual camera is missing, refuses the format, or stopped taking frames."""


class BackgroundError(InputError):
    """A background (file, folder, colour or blur strength) cannot be used."""


class GpuError(InputError):
    """A GPU was asked for and cannot be used."""


def run_front_end(action: Callable[[], int | None], interrupted: str) -> int:
    """Run a command-line action the way every front end does: an InputError becomes one
    ``error:`` line and exit code 2, Ctrl-C the ``interrupted`` line and 130."""
    try:
        return int(action() or 0)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
