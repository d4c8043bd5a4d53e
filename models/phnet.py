"""PHNet: the encoder-decoder with patch-based normalization.

The network follows the released code's layout (see ``PHNetConfig`` and the named
configurations in :mod:`vcam_harmonize.models.config`): six encoder convs
(Conv -> InstanceNorm -> ReLU), an SE bottleneck gated by the patch-based feature
extractor (PFE), and six decoder steps (concat skip -> 3x3 conv -> ConvTranspose).
Where the PN blocks sit depends on ``norm``: on the encoder skips ("authors") or after
the last three decoder convs ("paper").
"""

from __future__ import annotations

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
from vcam_harmonize.models.checkpoint import load_strict, read_weights
from vcam_harmonize.models.config import CONFIGS, PAPER_PN_STEPS, PHNetConfig
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
            self.pfe = PatchFeatureExtractor(config.pfe_grid,
                                             head_input=config.pfe_head_input)
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
        """Load the authors' released ``.pth`` files or our safetensors weight files.

        The file gives the configuration (inferred from the tensor shapes of the authors'
        files, read from the metadata of ours); any mismatch is an :class:`InputError`.
        """
        weights = read_weights(path, map_location)
        model = cls(weights.config)
        load_strict(model, weights.state_dict, weights.source)
        model.use_pfe = weights.use_pfe
        return model.eval()

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
        mask = mask.to(image.dtype)
        image_p, mask_p = _pad_to_8(image, mask)
        out = self._forward_padded(image_p, mask_p, stats_hook)[..., :height, :width]
        flat = mask.flatten(1)
        trivial = (flat.amax(dim=1) <= 0) | (flat.amin(dim=1) >= 1)
        if bool(trivial.any()):
            out = torch.where(trivial[:, None, None, None], image, out)
        return out

    def read_statistics(self, image: Tensor, mask: Tensor, stats_hook: StatsHook) -> None:
        """Hand ``stats_hook`` the statistics that :meth:`forward` would read on these
        inputs, exactly, and stop there: with PN on the encoder skips ("authors") they
        depend on the first encoder layers and the PFE only, so the rest of the network
        (most of its cost) is skipped; with PN in the decoder ("paper") the whole
        network runs. What the hook hands back is not used."""
        if self.decoder_norms or not self.skip_norms:
            self.forward(image, mask, stats_hook)
            return
        image, mask = _pad_to_8(image, mask.to(image.dtype))
        steps = range(self.first_pn_step, 6)  # decoder steps whose skip a PN block reads
        features, masks = self._encode(image, mask, layers=6 - steps[0])
        if self.use_pfe:
            self.pfe(image, mask, stats_hook)
        for i in steps:
            norm = self.skip_norms[i - self.first_pn_step]
            stats_hook(norm.name, norm.precise_statistics(features[5 - i], masks[6 - i]))

    def _encode(self, image: Tensor, mask: Tensor, layers: int = 6
                ) -> tuple[list[Tensor], list[Tensor]]:
        """The first ``layers`` encoder outputs, and the mask at the input's size and
        after each of them (``masks[k + 1]`` matches ``features[k]``)."""
        masks, features, x = [mask], [], image
        for k, block in enumerate(self.encoder[:layers]):
            x = block(x)
            features.append(x)
            if k % 2 == 0:
                masks.append(F.interpolate(masks[-1], scale_factor=0.5, mode="nearest"))
            else:
                masks.append(masks[-1])
        return features, masks

    def _forward_padded(self, image: Tensor, mask: Tensor, hook: StatsHook | None) -> Tensor:
        features, masks = self._encode(image, mask)
        x = features[-1]
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


def _pad_to_8(image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``image`` and ``mask`` with their edges repeated up to multiples of 8 in height
    and width (as they are when they are already)."""
    pad_h, pad_w = (-image.shape[-2]) % 8, (-image.shape[-1]) % 8
    if not (pad_h or pad_w):
        return image, mask
    return (F.pad(image, (0, pad_w, 0, pad_h), mode="replicate"),
            F.pad(mask, (0, pad_w, 0, pad_h), mode="replicate"))


def load_model(path, map_location: str | torch.device = "cpu") -> PHNet:
    """Build and load a PHNet from an authors' ``.pth`` or our safetensors file
    (:meth:`PHNet.from_checkpoint`), in eval mode."""
    return PHNet.from_checkpoint(path, map_location)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())

