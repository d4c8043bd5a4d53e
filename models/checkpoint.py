"""Loading and saving PHNet weights.

Two formats load:

- the authors' released ``.pth`` files (plain state_dicts with the keys
  ``feature_extractor.*, encoder.*, normalizers.*, decoder.*, skip.*, SE_block.*``),
  read with ``torch.load(weights_only=True)``; the configuration is inferred from the
  tensor shapes and the keys are renamed by :func:`checkpoint_filter_fn`;
- our own safetensors files, the configuration stored in the metadata.

Nothing beyond tensors is ever unpickled. Every failure is an :class:`InputError`
naming the file and what is wrong with it. This module reads and writes files and
state dicts only; :meth:`PHNet.from_checkpoint <vcam_harmonize.models.phnet.PHNet>`
builds the network from what :func:`read_weights` returns (imports run one way:
phnet -> checkpoint -> config).
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from vcam_harmonize.models.config import PHNetConfig
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.files import atomic_write

FORMAT_NAME = "vcam-harmonize/phnet"
AUTHOR_PREFIXES = ("feature_extractor.", "encoder.", "normalizers.", "decoder.", "skip.",
                   "SE_block.")
#: the PFE head input of our files written before the config recorded it: the PFE
#: head then saw the transferred image alone (the bundled "lite" weights are such a file).
LEGACY_PFE_HEAD_INPUT = "transferred"


class SavableModel(Protocol):
    """What :func:`save_weights` needs of a network (``PHNet`` has it)."""

    config: PHNetConfig
    use_pfe: bool

    def state_dict(self) -> dict[str, Tensor]:
        """The tensors to write, in this library's key names."""
        ...


@dataclass(frozen=True)
class Weights:
    """A weight file's contents: enough to build the network and fill it.

    Attributes:
        config: the network's configuration.
        state_dict: tensors in this library's key names.
        use_pfe: whether the network runs its PFE gate.
        source: the file, for error messages.
    """

    config: PHNetConfig
    state_dict: dict[str, Tensor]
    use_pfe: bool
    source: str

#: the authors' key names <-> our module names; "#" stands for a layer index and a
#: template ending in "." renames a prefix, any other one a whole key.
_KEY_PAIRS = [
    ("feature_extractor.patch_harmonizer.grid_weights", "pfe.mix"),
    ("feature_extractor.head.0.", "pfe.head.0."),
    ("encoder.#.0.", "encoder.#.conv."),
    ("decoder.#.0.", "decoder.#.conv."),
    ("decoder.#.1.", "decoder.#.norm."),
    ("skip.#.rconv.", "skips.#.conv."),
    ("SE_block.fc.", "se.fc."),
    ("normalizers.#.weights", "skip_norms.#.mix"),
    ("normalizers.#.fg_var", "skip_norms.#.fg_scale"),
    ("normalizers.#.fg_bias", "skip_norms.#.fg_shift"),
    ("normalizers.#.patched_fg_var", "skip_norms.#.patch_scale"),
    ("normalizers.#.patched_fg_bias", "skip_norms.#.patch_shift"),
    ("normalizers.#.bg_var", "skip_norms.#.bg_scale"),
    ("normalizers.#.bg_bias", "skip_norms.#.bg_shift"),
    ("normalizers.#.grid_weights", "skip_norms.#.patch_weights"),
]


def _rule(source: str, target: str) -> tuple[re.Pattern, str]:
    pattern = "^" + re.escape(source).replace(re.escape("#"), r"(\d+)")
    pattern = pattern if source.endswith(".") else pattern + "$"
    return re.compile(pattern), target.replace("#", r"\1")


_TO_OURS = [_rule(a, b) for a, b in _KEY_PAIRS]
_TO_AUTHORS = [_rule(b, a) for a, b in _KEY_PAIRS]


def _rename(state_dict: dict[str, Tensor], rules) -> dict[str, Tensor]:
    renamed = {}
    for key, value in state_dict.items():
        new_key = key
        for pattern, replacement in rules:
            new_key, hits = pattern.subn(replacement, key)
            if hits:
                break
        renamed[new_key] = value
    return renamed


def checkpoint_filter_fn(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename the authors' state-dict keys onto this library's module names.

    Keys that match no rule are kept as they are, so the strict load reports them.
    """
    return _rename(state_dict, _TO_OURS)


def to_authors_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict of an "authors"-style network in the released key names."""
    return _rename({k: v.detach().cpu() for k, v in model.state_dict().items()}, _TO_AUTHORS)


def infer_authors_config(state_dict: dict[str, Tensor], source: str = "checkpoint") -> PHNetConfig:
    """The configuration of an authors'-format state dict, from its tensor shapes.

    Encoder widths come from ``encoder.k.0.weight``; PN grids from
    ``normalizers.j.grid_weights``; the PFE grid follows the released rule (the
    second PN grid, or the first when there is only one).
    """
    try:
        widths = tuple(int(state_dict[f"encoder.{k}.0.weight"].shape[0]) for k in range(6))
        grids, j = [], 0
        while f"normalizers.{j}.grid_weights" in state_dict:
            grids.append(int(state_dict[f"normalizers.{j}.grid_weights"].shape[-1]))
            j += 1
    except (KeyError, IndexError) as err:
        raise InputError(f"{source}: not a PHNet checkpoint (missing tensor {err})") from None
    if not grids:
        raise InputError(f"{source}: not a PHNet checkpoint (no normalizers.*.grid_weights)")
    pfe_grid = grids[1] if len(grids) > 1 else grids[0]
    return PHNetConfig(widths=widths, grids=tuple(grids), pfe_grid=pfe_grid)


def load_strict(model: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    """Fill ``model`` with ``state_dict``: every key present, none unknown, every shape
    equal, else an :class:`InputError` naming ``source`` and the first mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        what = []
        if missing:
            what.append(f"missing {len(missing)} tensors (first: {missing[0]})")
        if unexpected:
            what.append(f"{len(unexpected)} unknown tensors (first: {unexpected[0]})")
        raise InputError(f"{source}: does not match PHNet: {', '.join(what)}")
    for key, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise InputError(f"{source}: tensor {key} has shape {tuple(tensor.shape)}, "
                             f"expected {tuple(expected[key].shape)}")
    model.load_state_dict(state_dict, strict=True)


def _read_torch(path: Path, map_location) -> dict[str, Tensor]:
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: refused to load: the file holds objects other than tensors "
                         f"({first[:120]})") from None
    except Exception as err:  # an unreadable file fails in many ways inside torch.load
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: not a readable weights file (truncated or corrupt?): "
                         f"{first[:160]}") from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise InputError(f"{path}: not a PHNet state_dict (expected a dict of tensors)")
    return {k.removeprefix("module."): v for k, v in data.items()}


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_weights(path, map_location: str | torch.device = "cpu") -> Weights:
    """Read an authors' ``.pth`` or our safetensors file (checked, not yet loaded)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a weights file")
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    try:
        empty = path.stat().st_size == 0
        safetensors = not empty and _is_safetensors(path)
    except OSError as err:
        raise InputError(f"{path}: cannot read the weights file ({err.strerror or err}); "
                         f"check its permissions") from None
    if empty:
        raise InputError(f"{path}: weights file is empty")
    if safetensors:
        return _read_safetensors(path, map_location)
    state = _read_torch(path, map_location)
    if not any(k.startswith(AUTHOR_PREFIXES) for k in state):
        raise InputError(f"{path}: not a PHNet checkpoint (none of the expected keys "
                         f"{', '.join(p.rstrip('.') for p in AUTHOR_PREFIXES)})")
    config = infer_authors_config(state, str(path))
    return Weights(config, checkpoint_filter_fn(state), use_pfe=True, source=str(path))


def _read_safetensors(path: Path, map_location) -> Weights:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable safetensors file (truncated or corrupt?): "
                         f"{str(err)[:160]}") from None
    if metadata.get("format") != FORMAT_NAME or "config" not in metadata:
        raise InputError(f"{path}: a safetensors file, but not vcam-harmonize PHNet weights "
                         f"(no '{FORMAT_NAME}' metadata)")
    try:
        data = json.loads(metadata["config"])
        config = PHNetConfig.from_dict({"pfe_head_input": LEGACY_PFE_HEAD_INPUT, **data})
    except (json.JSONDecodeError, TypeError) as err:
        raise InputError(f"{path}: corrupt PHNet config in the metadata: {err}") from None
    use_pfe = metadata.get("use_pfe", "true")
    if use_pfe not in ("true", "false"):
        raise InputError(f"{path}: metadata use_pfe must be 'true' or 'false', not {use_pfe!r}")
    return Weights(config, state, use_pfe=use_pfe == "true", source=str(path))


def save_weights(model: SavableModel, path, extra: dict[str, str] | None = None) -> Path:
    """Write the model's weights to a safetensors file (atomically: temp file + rename).

    ``extra`` adds string metadata (training recipe, metrics...). Whether the PFE gate is
    switched on (``model.use_pfe``, which training switches per stage) is saved too, so the
    file reproduces the network that was validated.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    metadata = {"format": FORMAT_NAME, "config": json.dumps(model.config.to_dict()),
                "use_pfe": "true" if model.use_pfe else "false"}
    metadata.update(extra or {})
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path
