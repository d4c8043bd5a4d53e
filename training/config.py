"""Training configuration: TOML files checked against typed dataclasses.

A config names the model, the datasets, the loss and the staged schedule of Sec. 5.1
(encoder-decoder without PFE; PFE added with the encoder frozen; all at a low rate).
Unknown keys, wrong types and values out of range are :class:`InputError` with the
offending key named; every bound is written once, on its field
(:mod:`vcam_harmonize.models.settings`, the schema the camera's settings use too).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.settings import check, from_table, setting
from vcam_harmonize.training.splits import SPLIT_KINDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: how a folder set cuts its photos (see datasets.FolderDataset)
FRAMINGS = ("square", "upper_body")


@dataclass
class ModelSection:
    name: str = "lite"  # a named configuration of PHNet.from_config
    init: str = ""  # optional weights to start from (ours or the authors')


@dataclass
class DataSet:
    kind: str = setting("folder", choices=("folder", "iharmony4", "ffhqh"))
    root: str = setting("", nonempty=True)
    name: str = ""  # label in logs and reports; defaults to the folder name
    # folder sets: "random", "scenes", "person" (by index.tsv's person column) or
    # "portraits" (by person, read from the name)
    split: str = setting("random", choices=SPLIT_KINDS)
    val_count: int = 200  # held-out photos of a "scenes"/"random" split
    val_fraction: float = 0.2  # held-out share of a "person" or "portraits" split
    # how often the training part is repeated per epoch
    repeat: int = setting(1, within="[1, inf)")
    transfer_prob: float = 0.0  # folder sets: colour transfer toward another photo
    # folder sets, training part: random square crops of this much area or more (1 = the
    # centred square only)
    crop_scale: float = setting(1.0, within="(0, 1]")
    # folder sets, training part: strength of a random change of the whole photo's light
    # before the composite is made
    global_colour: float = setting(0.0, within="[0, 1]")
    # folder sets, training part: share of photos whose backdrop (the background only)
    # gets another colour first, as a studio's painted backdrop
    backdrop_colour: float = setting(0.0, within="[0, 1]")
    # folder sets, training part: share of unchanged composites
    identity_prob: float = setting(0.0, within="[0, 1)")
    # folder sets: "square" (centre) or "upper_body" (webcam-like head and shoulders from
    # the mask; held-out part too)
    framing: str = setting("square", choices=FRAMINGS)
    # training items drawn anew each epoch (0 = all, times repeat)
    samples: int = setting(0, within="[0, inf)", zero="all")
    # folder sets with samples: 0 = photos equally likely, 1 = each index.tsv source the
    # same share
    source_balance: float = setting(0.0, within="[0, 1]")
    real_root: str = ""  # ffhqh: folder of the real images
    subsets: list[str] = field(
        default_factory=lambda: ["HCOCO", "HFlickr", "Hday2night", "HAdobe5k"]
    )


@dataclass
class DataSection:
    size: int = setting(256, multiple_of=8)
    hflip: float = setting(0.3, within="[0, 1]")
    workers: int = setting(2, within="[0, inf)")
    seed: int = 0
    # bad samples: "stop" (one error naming the file) or "skip" (logged)
    on_error: str = setting("stop", choices=("stop", "skip"))
    sets: list[DataSet] = setting(factory=list, nonempty=True)


@dataclass
class LossSection:
    variant: str = setting("paper", choices=("paper", "authors", "blended"))
    weights: list[float] = setting(factory=lambda: [0.2, 0.01, 0.01], length=3)
    min_area: float = 100.0


@dataclass
class Stage:
    name: str = "main"
    epochs: int = setting(1, within="(0, inf)")
    lr: float = setting(1e-4, within="(0, inf)")
    pfe: bool = True  # whether the PFE gates the SE block
    freeze_encoder: bool = False


@dataclass
class TrainSection:
    batch_size: int = setting(16, within="(0, inf)")
    seed: int = 42
    amp: bool = True  # mixed precision on CUDA (bf16 where supported)
    betas: list[float] = setting(factory=lambda: [0.9, 0.99], length=2, within="[0, 1)")
    weight_decay: float = 0.0
    # stop (with a checkpoint) after this long; 0 = no limit
    max_minutes: float = setting(0.0, within="[0, inf)", zero="no limit")
    # steps between checkpoints inside an epoch (0 = at its end only): a killed run
    # resumes after the last one
    checkpoint_every: int = setting(1, within="[0, inf)", zero="epoch ends")
    log_every: int = setting(50, within="(0, inf)")
    val_every: int = setting(1, within="(0, inf)")  # epochs between validations
    val_limit: int = 0  # validate on at most this many samples per set; 0 = all
    # what picks best.safetensors: "" = mean PSNR over all held-out images, or one
    # logged metric such as "portraits/fmse" (MSE-like ones: lower is better)
    best_metric: str = ""


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    train: TrainSection = field(default_factory=TrainSection)
    stages: list[Stage] = setting(factory=lambda: [Stage()], nonempty=True)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: the summaries over all held-out sets that train.best_metric may name.
SUMMARY_METRICS = ("val_psnr", "val_worst_fmse_ratio", "val_min_psnr_gain")
#: the per-set metrics that train.best_metric may name as "<set name>/<metric>".
SET_METRICS = ("mse", "fmse", "psnr", "fpsnr")


def set_name(ds: DataSet) -> str:
    """The set's label in logs and metric names: its name, else its folder's name."""
    return ds.name or Path(ds.root).name


def _check_best_metric(config: TrainConfig) -> None:
    """train.best_metric must name a metric that validation will log."""
    metric = config.train.best_metric
    names = [set_name(ds) for ds in config.data.sets]
    choices = {"", *SUMMARY_METRICS} | {f"{n}/{m}" for n in names for m in SET_METRICS}
    if metric not in choices:
        raise InputError(
            f"config: train.best_metric {metric!r} is not a logged metric (choose "
            f"{', '.join(SUMMARY_METRICS)} or <set>/<{'|'.join(SET_METRICS)}> "
            f"with <set> one of {', '.join(names)})"
        )


def validate(config: TrainConfig) -> TrainConfig:
    """Every field's rule (:func:`~vcam_harmonize.models.settings.check`), then the
    checks across fields."""
    check(config, "config")
    _check_best_metric(config)
    return config


def _set_dotted(data: dict, dotted: str, raw: str) -> None:
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    node: Any = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a TOML config (a path or the name of a shipped config) with ``key=value``
    overrides in dotted form (``train.batch_size=8``, ``data.sets.0.root=/data``)."""
    path = Path(path)
    if not path.is_file() and (CONFIG_DIR / f"{path.name}.toml").is_file():
        path = CONFIG_DIR / f"{path.name}.toml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
        raise InputError(f"{path}: config not found (shipped configs: {shipped})")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a valid TOML file: {err}") from None
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InputError(f"override {item!r} must look like key=value")
        try:
            _set_dotted(data, key.strip(), raw.strip())
        except (IndexError, ValueError, AttributeError, TypeError):
            raise InputError(f"override {item!r}: no such place in the config") from None
    return validate(from_table(TrainConfig, data, "config"))
