"""PHNet's configurations as data: the :class:`PHNetConfig` schema and the named ones.

Kept apart from the network (:mod:`vcam_harmonize.models.phnet`) so that weight files
(:mod:`vcam_harmonize.models.checkpoint`) can describe a network without importing it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vcam_harmonize.models.errors import InputError

#: decoder steps whose output the "paper" configuration normalizes (layers 4, 5, 6).
PAPER_PN_STEPS = (3, 4, 5)
#: what the released PFE's conv head sees next to the foreground: "composite" is the
#: authors' network (the transferred foreground inside the mask, the background / 255
#: outside it); "transferred" is the transferred image alone, the head the bundled
#: "lite" weights were trained with.
PFE_HEAD_INPUTS = ("composite", "transferred")


@dataclass(frozen=True)
class PHNetConfig:
    """What makes one PHNet.

    Attributes:
        widths: output channels of the six encoder convs (e0..e5).
        grids: PN patch grids G. "authors": one per encoder skip, counted from the
            end (the last one is built but never runs, as in the released network);
            "paper": one per decoder layer 4, 5, 6.
        norm: "authors" or "paper" PN arithmetic and placement.
        pfe_grid: patch grid of the PFE.
        output: "sigmoid" (the released head) or "residual" (a correction added to
            the composite in logit space; starts as the identity).
        pfe_head_input: one of :data:`PFE_HEAD_INPUTS`; only the "authors" PFE reads it.
    """

    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    grids: tuple[int, ...] = (10, 5, 1)
    norm: str = "authors"
    pfe_grid: int = 5
    output: str = "sigmoid"
    pfe_head_input: str = "composite"

    def __post_init__(self) -> None:
        if len(self.widths) != 6 or any(w < 1 for w in self.widths):
            raise InputError(f"PHNet needs six positive encoder widths, got {self.widths}")
        if self.norm not in ("authors", "paper"):
            raise InputError(f"unknown PN style {self.norm!r}: use 'authors' or 'paper'")
        if self.output not in ("sigmoid", "residual"):
            raise InputError(f"unknown output head {self.output!r}: use 'sigmoid' or 'residual'")
        if self.pfe_head_input not in PFE_HEAD_INPUTS:
            raise InputError(f"unknown PFE head input {self.pfe_head_input!r}: use one of "
                             f"{', '.join(repr(v) for v in PFE_HEAD_INPUTS)}")
        if self.norm == "authors" and not 1 <= len(self.grids) <= 7:
            raise InputError(f"'authors' PN needs 1 to 7 grids, got {self.grids}")
        if self.norm == "paper" and len(self.grids) != len(PAPER_PN_STEPS):
            raise InputError(f"'paper' PN needs {len(PAPER_PN_STEPS)} grids, got {self.grids}")

    def to_dict(self) -> dict:
        """The configuration as plain JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PHNetConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an :class:`InputError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown PHNet config keys {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


CONFIGS: dict[str, PHNetConfig] = {
    # The released iHarmony4 network (best_iharmony.pth): 9,994,295 parameters.
    "iharmony4": PHNetConfig(widths=(16, 32, 64, 128, 256, 512), grids=(10, 5, 1), pfe_grid=5),
    # The released FFHQH networks (best_ffhqh256/512/1024.pth): 39,921,641 parameters.
    "ffhqh": PHNetConfig(widths=(16, 64, 128, 256, 512, 1024), grids=(4, 3, 2, 1), pfe_grid=3),
    # Sec. 4 as written: PN in decoder layers 4-6 with 9, 16, 25 patches, PFE of 25.
    "paper": PHNetConfig(widths=(16, 32, 64, 128, 256, 512), grids=(3, 4, 5), norm="paper",
                         pfe_grid=5),
    # Real time on a laptop CPU: same family, narrow, residual output; its PFE head
    # keeps the input the bundled weights were trained with.
    "lite": PHNetConfig(widths=(16, 24, 32, 48, 96, 128), grids=(4, 3, 2, 1), pfe_grid=3,
                        output="residual", pfe_head_input="transferred"),
}
