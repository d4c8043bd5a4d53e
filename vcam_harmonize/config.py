"""Camera settings: one dataclass shared by the CLI (``--config`` TOML), the tray app
(its settings file) and the pipeline.

Unknown keys, wrong types and out-of-range values are :class:`InputError` naming the key.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from platformdirs import user_config_dir

from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.files import atomic_write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["APP_NAME", "CameraConfig", "InputError", "load_toml", "save_toml",
           "settings_path"]

APP_NAME = "vcam-harmonize"
#: the largest frame side and frame (8K UHD, either way round): cameras and the virtual
#: camera stay far below; beyond it the frame buffers alone would take gigabytes.
MAX_SIDE = 7680
MAX_PIXELS = 7680 * 4320


@dataclass
class CameraConfig:
    """Everything the live camera can be told."""

    device: str = "0"                 # camera index, /dev/videoN or a video file
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    background: str = "default"       # image/video file, folder, "blur[:N]", "#rrggbb", "none"
    harmonize: bool = True
    strength: float = 1.0             # 0 = composite as is, 1 = full correction
    smoothing: float = 0.8            # temporal smoothing of the colour transform, [0, 1)
    res: int = 256                    # PHNet working resolution, a multiple of 8
    refresh_every: int = 0            # run PHNet every n-th frame; 0 = auto (1 on GPU, 12 on CPU)
    weights: str = ""                 # "" = the bundled default weights
    gpu: str = "auto"                 # "auto", "on" or "off"
    segmentation_model: str = "landscape"  # "landscape" (faster) or "general"
    mask_smoothing: float = 0.5
    mask_threshold: float = 0.0       # 0 = soft mask; else a hard cut at this value
    feather: float = 0.0              # Gaussian feather of the mask edge, pixels
    refine: bool = True               # snap the mask to image edges (guided filter)
    mirror: bool = False
    output: str = "virtualcam"        # "virtualcam", "window" or a video file path
    camera_device: str = ""           # loopback device for the virtual camera ("" = find it)
    camera_name: str = "PHNet Cam"
    compare: bool = False             # composite and harmonized side by side (twice as wide)

    def validate(self) -> CameraConfig:
        """Range checks; returns self."""
        checks = [
            (16 <= self.width <= MAX_SIDE and 16 <= self.height <= MAX_SIDE
             and self.width * self.height <= MAX_PIXELS,
             f"width and height must be 16 to {MAX_SIDE} px and at most 7680x4320 in all "
             f"(got {self.width}x{self.height})"),
            (0 < self.fps <= 240, "fps must be in (0, 240]"),
            (0.0 <= self.strength <= 1.0, "strength must be in [0, 1]"),
            (0.0 <= self.smoothing < 1.0, "smoothing must be in [0, 1)"),
            (self.res > 0 and self.res % 8 == 0, "res must be a positive multiple of 8"),
            (self.refresh_every >= 0, "refresh_every must be 0 (auto) or more"),
            (self.gpu in ("auto", "on", "off"), "gpu must be 'auto', 'on' or 'off'"),
            (self.segmentation_model in ("landscape", "general"),
             "segmentation_model must be 'landscape' or 'general'"),
            (0.0 <= self.mask_smoothing < 1.0, "mask_smoothing must be in [0, 1)"),
            (0.0 <= self.mask_threshold < 1.0, "mask_threshold must be in [0, 1)"),
            (0.0 <= self.feather <= 100.0, "feather must be in [0, 100]"),
            (not (self.compare and self.output == "virtualcam"),
             "compare needs output 'window' or a video file (a call shows one picture)"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"config: {message}")
        return self

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of what goes out: the width made even (Chrome and I420 need it)."""
        return self.width - self.width % 2, self.height

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> CameraConfig:
        """Build from a dict (TOML table), checking keys and types."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in data.items():
            if key not in fields:
                raise InputError(f"{source}: unknown key {key!r} (known: "
                                 f"{', '.join(sorted(fields))})")
            values[key] = _coerce(key, fields[key].type, value, source)
        return cls(**values).validate()


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _coerce(key: str, type_name, value, source: str):
    wanted = _TYPES[type_name if isinstance(type_name, str) else type_name.__name__]
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if wanted is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # device = 0 means camera 0
    if not isinstance(value, wanted) or (wanted is not bool and isinstance(value, bool)):
        raise InputError(f"{source}: {key} must be {wanted.__name__}, got {value!r}")
    return value


def load_toml(path: str | Path) -> CameraConfig:
    """Read a camera config TOML file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a valid TOML file ({err})") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read config ({err.strerror})") from None
    return CameraConfig.from_dict(data, str(path))


def save_toml(config: CameraConfig, path: str | Path) -> Path:
    """Write ``config`` atomically (temp file + rename)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        tomli_w.dump(config.to_dict(), handle)
    return path


def settings_path() -> Path:
    """The tray app's settings file in the user's config folder."""
    return Path(user_config_dir(APP_NAME)) / "settings.toml"
