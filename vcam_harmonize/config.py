"""Camera settings: one dataclass shared by the CLI (``--config`` TOML), the tray app
(its settings file) and the pipeline.

Unknown keys, wrong types and out-of-range values are :class:`InputError` naming the key.
Each bound is written once, on its field, and checked by the settings schema the training
config uses too (:mod:`vcam_harmonize.models.settings`).
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
from vcam_harmonize.models.settings import check, from_table, setting

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

    device: str = setting("0", number_as_text=True)  # camera index, /dev/videoN or a video file
    width: int = 1280
    height: int = 720
    fps: float = setting(30.0, within="(0, 240]")
    background: str = "default"       # image/video file, folder, "blur[:N]", "#rrggbb", "none"
    harmonize: bool = True
    strength: float = setting(1.0, within="[0, 1]")  # 0 = composite as is, 1 = full correction
    # temporal smoothing of the harmonization: the weight of the past per 1/30 s, a time
    # constant of -1 / (30 ln smoothing) s (0.95: 0.65 s) at any frame rate and refresh
    # interval; a change of light is still followed within a few frames
    smoothing: float = setting(0.95, within="[0, 1)")
    res: int = setting(256, multiple_of=8)  # PHNet working resolution
    # the colour transform made of PHNet's answer: one colour matrix for the person
    # ("global") or guided-filter maps across them ("local"); see vcam_harmonize.harmonizer
    transform: str = setting("global", choices=("global", "local"))
    # run PHNet every n-th frame; 0 = auto (1 on GPU; on CPU 24, or 12 with "local")
    refresh_every: int = setting(0, within="[0, inf)", zero="auto")
    weights: str = ""                 # "" = the bundled default weights
    # the network's arithmetic: "auto" = float16 on a GPU, bfloat16 on a CPU that has it
    # (AVX-512 BF16, AMX), else float32; "float32" everywhere (vcam_harmonize.harmonizer)
    precision: str = setting("auto", choices=("auto", "float32"))
    gpu: str = setting("auto", choices=("auto", "on", "off"))
    segmentation_model: str = setting("landscape", choices=("landscape", "general"))  # faster first
    mask_smoothing: float = setting(0.5, within="[0, 1)")
    mask_threshold: float = setting(0.0, within="[0, 1)")  # 0 = soft mask; else a hard cut
    feather: float = setting(0.0, within="[0, 100]")  # Gaussian feather of the mask edge, px
    refine: bool = True               # snap the mask to image edges (guided filter)
    mirror: bool = False
    output: str = "virtualcam"        # "virtualcam", "window" or a video file path
    camera_device: str = ""           # loopback device for the virtual camera ("" = find it)
    camera_name: str = "PHNet Cam"
    compare: bool = False             # composite and harmonized side by side (twice as wide)

    def validate(self, source: str = "config") -> CameraConfig:
        """Every field's rule (:func:`~vcam_harmonize.models.settings.check`), then the
        checks across fields; returns self."""
        check(self, source)
        checks = [
            (16 <= self.width <= MAX_SIDE and 16 <= self.height <= MAX_SIDE
             and self.width * self.height <= MAX_PIXELS,
             f"width and height must be 16 to {MAX_SIDE} px and at most 7680x4320 in all "
             f"(got {self.width}x{self.height})"),
            (not (self.compare and self.output == "virtualcam"),
             "compare needs output 'window' or a video file (a call shows one picture)"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"{source}: {message}")
        return self

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of what goes out: the width made even (Chrome and I420 need it)."""
        return self.width - self.width % 2, self.height

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> CameraConfig:
        """Build from a dict (TOML table): unknown keys, types and ranges checked, each
        error an InputError that begins with ``source`` and names the key."""
        return from_table(cls, data, source).validate(source)


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
