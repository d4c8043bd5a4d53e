"""Run at login (Linux): the XDG autostart entry ``vcam-harmonize-tray.desktop``.

The entry is the desktop file shipped with the package, with ``Exec`` pointing at the
installed ``vcam-harmonize-tray`` script (or this Python running the module) so it also
works from a virtual environment that is not on the login ``PATH``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

ENTRY_NAME = "vcam-harmonize-tray.desktop"
SCRIPT = "vcam-harmonize-tray"


def supported(platform: str = sys.platform) -> bool:
    """True where XDG autostart entries are how programs start at login."""
    return platform.startswith(("linux", "freebsd", "openbsd", "netbsd"))


def autostart_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/autostart`` (``~/.config/autostart`` when unset or empty)."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "autostart"


def launch_command() -> str:
    """The command line that starts the tray app from a login session."""
    script = shutil.which(SCRIPT) or _sibling_script()
    if script:
        return shlex.quote(script)
    return f"{shlex.quote(sys.executable)} -m vcam_harmonize.ui.app"


def _sibling_script() -> str | None:
    candidate = Path(sys.executable).with_name(SCRIPT)
    return str(candidate) if candidate.is_file() else None


def entry_text(command: str | None = None) -> str:
    """The shipped desktop entry with ``Exec`` set to ``command``."""
    shipped = resources.files("vcam_harmonize.ui").joinpath(ENTRY_NAME).read_text("utf-8")
    command = command or launch_command()
    lines = [f"Exec={command}" if line.startswith("Exec=") else line
             for line in shipped.splitlines()]
    return "\n".join(lines) + "\n"


class Autostart:
    """Turns the autostart entry in ``folder`` (default :func:`autostart_dir`) on and off."""

    def __init__(self, folder: Path | None = None):
        self.path = (folder or autostart_dir()) / ENTRY_NAME

    def enabled(self) -> bool:
        return self.path.is_file()

    def set_enabled(self, enabled: bool) -> None:
        """Write or remove the entry; OSError if the folder is not writable."""
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(entry_text(), encoding="utf-8")
        else:
            self.path.unlink(missing_ok=True)
