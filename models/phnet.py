"""PHNet: the encoder-decoder with patch-based normalization, and its named configurations.

The network follows the released code's layout (see ``PHNetConfig``): six encoder convs
(Conv -> InstanceNorm -> ReLU), an SE bottleneck gated by the patch-based feature
extractor (PFE), and six decoder steps (concat skip -> 3x3 conv -> ConvTranspose).
Where the PN blocks sit depends on ``norm``: on the encoder skips ("authors") or after
the last three decoder convs ("paper").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcam_harmonize.models.blocks import (
    PaperFeatureExtractor,
    PaperPatchNorm,
    PatchFeatureExtractor,
    PatchNorm,
    SqueezeExcitation,
    StatsHook,
)
from vcam_harmonize.models.errors import InputError

#: decoder step -> (kernel, stride, batch norm, leaky ReLU), as in the released network.
DECODER_STEPS = (
    (3, 1, True, True),
    (4, 2, True, True),
    (3, 1, True, True),
    (4, 2, False, True),
    (3, 1, False, True),
    (4, 2, False, False),
)
#: decoder steps whose output the "paper" configuration normalizes (layers 4, 5, 6).
PAPER_PN_STEPS = (3, 4, 5)


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
    """

    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    grids: tuple[int, ...] = (10, 5, 1)
    norm: str = "authors"
    pfe_grid: int = 5
    output: str = "sigmoid"

    def __post_init__(self):
        if len(self.widths) != 6 or any(w < 1 for w in self.widths):
            raise InputError(f"PHNet needs six positive encoder widths, got {self.widths}")
        if self.norm not in ("authors", "paper"):
            raise InputError(f"unknown PN style {self.norm!r}: use 'authors' or 'paper'")
        if self.output not in ("sigmoid", "residual"):
            raise InputError(f"unknown output head {self.output!r}: use 'sigmoid' or 'residual'")
        if self.norm == "authors" and not 1 <= len(self.grids) <= 7:
            raise InputError(f"'authors' PN needs 1 to 7 grids, got {self.grids}")
        if self.norm == "paper" and len(self.grids) != len(PAPER_PN_STEPS):
            raise InputError(f"'paper' PN needs {len(PAPER_PN_STEPS)} grids, got {self.grids}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PHNetConfig:
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
    # Real time on a laptop CPU: same family, narrow, residual output.
    "lite": PHNetConfig(widths=(16, 24, 32, 48, 96, 128), grids=(4, 3, 2, 1), pfe_grid=3,
                        output="residual"),
}


class ConvBlock(nn.Module):
    """Conv -> optional norm -> optional activation, with readable key names."""

    def __init__(self, conv: nn.Module, norm: nn.Module | None, act: nn.Module | None):
        super().__init__()
        self.conv = conv
        self.norm = norm if norm is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class PHNet(nn.Module):
    """Portrait harmonization network.

    ``model(image, mask)`` takes RGB in [0, 1] ``(N, 3, H, W)`` and a mask ``(N, 1, H, W)``
    (1 = the pasted person) and returns the unblended prediction in [0, 1]. Any H, W:
    sizes that are not multiples of 8 are padded inside and cropped back. A sample with
    an empty or a full mask comes back unchanged.
    """

    def __init__(self, config: PHNetConfig | None = None):
        super().__init__()
        self.config = config = config or PHNetConfig()
        channels = (3, *config.widths)
        dec = channels[::-1]
        self.use_pfe = True

        self.encoder = nn.ModuleList(
            ConvBlock(nn.Conv2d(channels[k], channels[k + 1], 4 if k % 2 == 0 else 3,
                                stride=2 if k % 2 == 0 else 1, padding=1),
                      nn.InstanceNorm2d(channels[k + 1]), nn.ReLU())
            for k in range(6)
        )
        self.se = SqueezeExcitation(channels[6])
        if config.norm == "authors":
            self.pfe = PatchFeatureExtractor(config.pfe_grid)
        else:
            self.pfe = PaperFeatureExtractor(channels[6], config.pfe_grid)
        # Seven skip convs as released; the seventh (raw image) never runs.
        self.skips = nn.ModuleList(
            ConvBlock(nn.Conv2d(2 * dec[k], dec[k], 3, padding=1, bias=False), None, nn.ReLU())
            for k in range(7)
        )
        self.decoder = nn.ModuleList(
            ConvBlock(nn.ConvTranspose2d(dec[k], dec[k + 1], kernel, stride, padding=1),
                      nn.BatchNorm2d(dec[k + 1]) if bn else None,
                      nn.LeakyReLU(0.01) if lrelu else None)
            for k, (kernel, stride, bn, lrelu) in enumerate(DECODER_STEPS)
        )
        if config.norm == "authors":
            self.first_pn_step = 7 - len(config.grids)
            self.skip_norms = nn.ModuleList(
                PatchNorm(channels[6 - self.first_pn_step - j], grid)
                for j, grid in enumerate(config.grids)
            )
            self.decoder_norms = nn.ModuleList()
        else:
            self.first_pn_step = PAPER_PN_STEPS[0]
            self.skip_norms = nn.ModuleList()
            self.decoder_norms = nn.ModuleList(PaperPatchNorm(g) for g in config.grids)
        for prefix, blocks in (("skip_norms", self.skip_norms),
                               ("decoder_norms", self.decoder_norms)):
            for j, block in enumerate(blocks):
                block.name = f"{prefix}.{j}"
        if config.output == "residual":
            nn.init.zeros_(self.decoder[-1].conv.weight)
            nn.init.zeros_(self.decoder[-1].conv.bias)

    @classmethod
    def from_config(cls, name: str) -> PHNet:
        """Build a named configuration: "iharmony4", "ffhqh", "paper" or "lite"."""
        if name not in CONFIGS:
            raise InputError(f"unknown PHNet configuration {name!r}: choose from {sorted(CONFIGS)}")
        return cls(CONFIGS[name])

    @classmethod
    def from_checkpoint(cls, path, map_location: str | torch.device = "cpu") -> PHNet:
        """Load the authors' released ``.pth`` files or our safetensors weight files."""
        from vcam_harmonize.models.checkpoint import load_model

        return load_model(path, map_location)

    def forward(self, image: Tensor, mask: Tensor, stats_hook: StatsHook | None = None) -> Tensor:
        """image ``(N, 3, H, W)`` in [0, 1], mask ``(N, 1, H, W)`` -> ``(N, 3, H, W)`` in [0, 1].

        ``stats_hook(name, stats) -> stats`` sees the statistics each PN block and the
        PFE read and may hand back replacements (temporal smoothing).
        """
        if image.ndim != 4 or image.shape[1] != 3 or mask.shape != (image.shape[0], 1,
                                                                   *image.shape[2:]):
            raise InputError(f"PHNet expects image (N,3,H,W) and mask (N,1,H,W), "
                             f"got {tuple(image.shape)} and {tuple(mask.shape)}")
        height, width = image.shape[-2:]
        pad_h, pad_w = (-height) % 8, (-width) % 8
        mask = mask.to(image.dtype)
        if pad_h or pad_w:
            image_p = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
            mask_p = F.pad(mask, (0, pad_w, 0, pad_h), mode="replicate")
        else:
            image_p, mask_p = image, mask
        out = self._forward_padded(image_p, mask_p, stats_hook)[..., :height, :width]
        flat = mask.flatten(1)
        trivial = (flat.amax(dim=1) <= 0) | (flat.amin(dim=1) >= 1)
        if bool(trivial.any()):
            out = torch.where(trivial[:, None, None, None], image, out)
        return out

    def _forward_padded(self, image: Tensor, mask: Tensor, hook: StatsHook | None) -> Tensor:
        masks, features, x = [mask], [], image
        for k, block in enumerate(self.encoder):
            x = block(x)
            features.append(x)
            if k % 2 == 0:
                masks.append(F.interpolate(masks[-1], scale_factor=0.5, mode="nearest"))
            else:
                masks.append(masks[-1])
        gate = self.pfe(image, mask, hook) if self.use_pfe else None
        x = self.se(x, gate)
        masks = masks[::-1]
        for i in range(6):
            skip = features[5 - i]
            if self.skip_norms and i >= self.first_pn_step:
                skip = self.skip_norms[i - self.first_pn_step](skip, masks[i], hook)
            x = self.skips[i](torch.cat([x, skip], dim=1))
            step = self.decoder[i]
            x = step.norm(step.conv(x))
            if self.decoder_norms and i >= self.first_pn_step:
                x = self.decoder_norms[i - self.first_pn_step](x, masks[i + 1], hook)
            x = step.act(x)
        if self.config.output == "residual":
            return torch.sigmoid(torch.logit(image, eps=1e-3) + x)
        return torch.sigmoid(x)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())

