"""Training configuration: TOML files checked against typed dataclasses.

A config names the model, the datasets, the loss and the staged schedule of Sec. 5.1
(encoder-decoder without PFE; PFE added with the encoder frozen; all at a low rate).
Unknown keys and wrong types are :class:`InputError` with the offending key named.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from vcam_harmonize.models.errors import InputError
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
    kind: str = "folder"  # "folder", "iharmony4" or "ffhqh"
    root: str = ""
    name: str = ""  # label in logs and reports; defaults to the folder name
    split: str = "random"  # folder sets: "random", "scenes", "person" (by index.tsv's
    #                        person column) or "portraits" (by person, read from the name)
    val_count: int = 200  # held-out photos of a "scenes"/"random" split
    val_fraction: float = 0.2  # held-out share of a "person" or "portraits" split
    repeat: int = 1  # how often the training part is repeated per epoch
    transfer_prob: float = 0.0  # folder sets: colour transfer toward another photo
    crop_scale: float = 1.0  # folder sets, training part: random square crops of this
    #                          much area or more (1 = the centred square only)
    global_colour: float = 0.0  # folder sets, training part: strength of a random change
    #                             of the whole photo's light before the composite is made
    identity_prob: float = 0.0  # folder sets, training part: share of unchanged composites
    framing: str = "square"  # folder sets: "square" (centre) or "upper_body" (webcam-like
    #                          head and shoulders from the mask; held-out part too)
    samples: int = 0  # training items drawn anew each epoch (0 = all, times repeat)
    source_balance: float = 0.0  # folder sets with samples: 0 = photos equally likely,
    #                              1 = each index.tsv source the same share
    real_root: str = ""  # ffhqh: folder of the real images
    subsets: list[str] = field(
        default_factory=lambda: ["HCOCO", "HFlickr", "Hday2night", "HAdobe5k"]
    )


@dataclass
class DataSection:
    size: int = 256
    hflip: float = 0.3
    workers: int = 2
    seed: int = 0
    on_error: str = "stop"  # bad samples: "stop" (one error naming the file) or "skip" (logged)
    sets: list[DataSet] = field(default_factory=list)


@dataclass
class LossSection:
    variant: str = "paper"  # "paper", "authors" or "blended"
    weights: list[float] = field(default_factory=lambda: [0.2, 0.01, 0.01])
    min_area: float = 100.0


@dataclass
class Stage:
    name: str = "main"
    epochs: int = 1
    lr: float = 1e-4
    pfe: bool = True  # whether the PFE gates the SE block
    freeze_encoder: bool = False


@dataclass
class TrainSection:
    batch_size: int = 16
    seed: int = 42
    amp: bool = True  # mixed precision on CUDA (bf16 where supported)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    max_minutes: float = 0.0  # stop (with a checkpoint) after this long; 0 = no limit
    checkpoint_every: int = 1  # steps between checkpoints inside an epoch (0 = at its end
    #                            only): a killed run resumes after the last one
    log_every: int = 50
    val_every: int = 1  # epochs between validations
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
    stages: list[Stage] = field(default_factory=lambda: [Stage()])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise InputError(f"config: {where or 'top level'} must be a table, got {data!r}")
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(
            f"config: unknown key {where + '.' if where else ''}{unknown[0]} "
            f"(known: {', '.join(sorted(known))})"
        )
    values = {}
    for key, value in data.items():
        values[key] = _convert(hints[key], value, f"{where}.{key}" if where else key)
    return cls(**values)


def _convert(hint, value: Any, where: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if get_origin(hint) is list:
        (item,) = get_args(hint)
        if not isinstance(value, list):
            raise InputError(f"config: {where} must be a list, got {value!r}")
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is not bool and isinstance(value, bool)):
        raise InputError(f"config: {where} must be {hint.__name__}, got {value!r}")
    return value


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
    """Range checks that types cannot express."""
    train = config.train
    checks = [
        (
            config.data.size > 0 and config.data.size % 8 == 0,
            "data.size must be a positive multiple of 8",
        ),
        (0.0 <= config.data.hflip <= 1.0, "data.hflip must be in [0, 1]"),
        (config.data.on_error in ("skip", "stop"), "data.on_error must be 'skip' or 'stop'"),
        (
            config.loss.variant in ("paper", "authors", "blended"),
            "loss.variant must be 'paper', 'authors' or 'blended'",
        ),
        (len(config.loss.weights) == 3, "loss.weights needs three numbers"),
        (config.data.workers >= 0, "data.workers must be 0 or more"),
        (config.train.batch_size > 0, "train.batch_size must be positive"),
        (train.log_every > 0, "train.log_every must be positive"),
        (train.val_every > 0, "train.val_every must be positive"),
        (train.checkpoint_every >= 0, "train.checkpoint_every must be 0 (epoch ends) or more"),
        (train.max_minutes >= 0, "train.max_minutes must be 0 (no limit) or more"),
        (
            len(train.betas) == 2 and all(0.0 <= b < 1.0 for b in train.betas),
            "train.betas needs two numbers in [0, 1)",
        ),
        (len(config.stages) > 0, "at least one [[stages]] entry is needed"),
        (
            all(s.epochs > 0 and s.lr > 0 for s in config.stages),
            "every stage needs epochs > 0 and lr > 0",
        ),
        (len(config.data.sets) > 0, "at least one [[data.sets]] entry is needed"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(f"config: {message}")
    for i, ds in enumerate(config.data.sets):
        if ds.kind not in ("folder", "iharmony4", "ffhqh"):
            raise InputError(f"config: data.sets[{i}].kind must be folder, iharmony4 or ffhqh")
        if ds.split not in SPLIT_KINDS:
            raise InputError(f"config: data.sets[{i}].split must be one of "
                             f"{', '.join(SPLIT_KINDS)}")
        if ds.framing not in FRAMINGS:
            raise InputError(f"config: data.sets[{i}].framing must be one of {', '.join(FRAMINGS)}")
        if ds.samples < 0:
            raise InputError(f"config: data.sets[{i}].samples must be 0 (all) or more")
        if not 0 <= ds.source_balance <= 1:
            raise InputError(f"config: data.sets[{i}].source_balance must be in [0, 1]")
        if not ds.root:
            raise InputError(f"config: data.sets[{i}].root is empty")
        if ds.repeat < 1:
            raise InputError(f"config: data.sets[{i}].repeat must be 1 or more")
        if not 0 < ds.crop_scale <= 1:
            raise InputError(f"config: data.sets[{i}].crop_scale must be in (0, 1]")
        if not 0 <= ds.global_colour <= 1:
            raise InputError(f"config: data.sets[{i}].global_colour must be in [0, 1]")
        if not 0 <= ds.identity_prob < 1:
            raise InputError(f"config: data.sets[{i}].identity_prob must be in [0, 1)")
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
    return validate(_build(TrainConfig, data, ""))
