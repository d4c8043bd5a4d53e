"""Where the bundled default weights live."""

from __future__ import annotations

from pathlib import Path

from vcam_harmonize.models.errors import InputError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = "phnet_lite.safetensors"


def default_weights_path(name: str = DEFAULT_WEIGHTS) -> Path:
    """Path of a weight file shipped inside the package."""
    path = WEIGHTS_DIR / name
    if not path.is_file():
        shipped = sorted(p.name for p in WEIGHTS_DIR.glob("*.safetensors"))
        raise InputError(f"bundled weights {name!r} are missing from the installation "
                         f"(shipped: {shipped or 'none'}); reinstall vcam-harmonize")
    return path
