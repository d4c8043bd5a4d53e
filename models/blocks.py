"""PHNet's building blocks: PN blocks, the patch-based feature extractor, SE.

Two flavours of the PN block exist because the paper and the released networks differ:

- :class:`PatchNorm` is the block the released checkpoints were trained with
  (background patch means mixed by learned per-channel weights, global std, two
  mixing weights, affine pairs for the global, patch and background branches).
- :class:`PaperPatchNorm` is Sec. 4.1 of the paper as written (Eq. 5-12): learned
  patch scores alpha and beta for the local mean and variance, a three-term
  foreground mix w0..w2 and a background mix gamma0..gamma2.

Every statistics-reading block takes an optional ``stats_hook(name, stats) -> stats``
so a caller can read the statistics of a frame and hand smoothed ones back
(see :mod:`vcam_harmonize.models.streaming`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from vcam_harmonize.models.config import PFE_HEAD_INPUTS
from vcam_harmonize.models.functional import (
    PFE_BACKGROUND_DIVISOR,
    PN_EPS,
    blend,
    masked_mean_std,
    mean_std,
    patch_expand,
    patch_masked_mean,
    patch_masked_mean_std,
    patch_mean_std,
    reinhard_transfer,
)

StatsHook = Callable[[str, dict[str, Tensor]], dict[str, Tensor]]


def full_precision(forward):
    """Run a block's forward in float32 with autocast off: masked statistics with
    eps = 1e-7 are meaningless in float16 (and coarse in bfloat16)."""

    def wrapped(self, x: Tensor, mask: Tensor, stats_hook: StatsHook | None = None) -> Tensor:
        dtype = x.dtype if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            return forward(self, x.to(dtype), mask.to(dtype), stats_hook)

    wrapped.__doc__ = forward.__doc__
    return wrapped


def _exchange(hook: StatsHook | None, name: str, stats: dict[str, Tensor]) -> dict[str, Tensor]:
    return stats if hook is None else hook(name, stats)


class PatchNorm(nn.Module):
    """The released networks' PN block, applied to one feature map (fg = bg = x).

    Args:
        channels: C of the feature map.
        grid: G; background patch means are taken on a G x G grid.
        init_mix: initial weights of the global and the patch branch.
        init_scale: initial value of the three scale vectors.
    """

    def __init__(self, channels: int, grid: int, init_mix=(0.5, 0.5), init_scale: float = 0.8):
        super().__init__()
        self.grid = grid
        self.name = "pn"
        shape = (1, channels, 1, 1)
        self.mix = nn.Parameter(torch.tensor(init_mix, dtype=torch.float32))
        self.fg_scale = nn.Parameter(torch.full(shape, init_scale))
        self.fg_shift = nn.Parameter(torch.zeros(shape))
        self.patch_scale = nn.Parameter(torch.full(shape, init_scale))
        self.patch_shift = nn.Parameter(torch.zeros(shape))
        self.bg_scale = nn.Parameter(torch.full(shape, init_scale))
        self.bg_shift = nn.Parameter(torch.zeros(shape))
        self.patch_weights = nn.Parameter(
            torch.full((1, channels, grid, grid), 1.0 / (grid * grid * channels))
        )

    def statistics(self, x: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Masked statistics the block reads: each ``(B, C, 1, 1)`` or ``(B, C, G, G)``."""
        bg = 1 - mask
        patch_mean = patch_masked_mean(x, bg, self.grid)
        bg_mean, bg_std = masked_mean_std(x, bg)
        fg_mean, fg_std = masked_mean_std(x, mask)
        return {"bg_mean": bg_mean, "bg_std": bg_std, "fg_mean": fg_mean, "fg_std": fg_std,
                "patch_mean": patch_mean}

    @full_precision
    def precise_statistics(self, x: Tensor, mask: Tensor,
                           stats_hook: StatsHook | None = None) -> dict[str, Tensor]:
        """:meth:`statistics` in the precision :meth:`forward` reads them (float32 with
        autocast off); ``stats_hook`` is not called."""
        return self.statistics(x, mask)

    @full_precision
    def forward(self, x: Tensor, mask: Tensor, stats_hook: StatsHook | None = None) -> Tensor:
        """x: ``(B, C, H, W)``, mask: ``(B, 1, H, W)`` -> ``(B, C, H, W)``."""
        s = _exchange(stats_hook, self.name, self.statistics(x, mask))
        # bg_out = (x - bg_mean) / bg_std * bg_scale + bg_shift
        # fg_out = mix0 * ((z * bg_std + bg_mean) * fg_scale + fg_shift)
        #        + mix1 * ((z * bg_std + local_mean) * patch_scale + patch_shift),
        #   z = (x - fg_mean) / fg_std
        # are per-channel affine maps of x, so the block is x * gain + offset with
        # gain and offset mixed by the mask: three full-size operations instead of a dozen.
        local_mean = (self.patch_weights * s["patch_mean"]).sum(dim=(2, 3), keepdim=True)
        bg_gain = self.bg_scale / s["bg_std"]
        bg_offset = self.bg_shift - s["bg_mean"] * bg_gain
        z_gain = s["bg_std"] * (self.mix[0] * self.fg_scale + self.mix[1] * self.patch_scale)
        z_offset = (self.mix[0] * (s["bg_mean"] * self.fg_scale + self.fg_shift)
                    + self.mix[1] * (local_mean * self.patch_scale + self.patch_shift))
        fg_gain = z_gain / s["fg_std"]
        fg_offset = z_offset - s["fg_mean"] * fg_gain
        gain = torch.addcmul(bg_gain, mask, fg_gain - bg_gain)
        offset = torch.addcmul(bg_offset, mask, fg_offset - bg_offset)
        return torch.addcmul(offset, x, gain)


class PaperPatchNorm(nn.Module):
    """Sec. 4.1 of the paper (Eq. 5-12) on one feature map.

    mu_loc = sum_i alpha_i mu_i(B);  sigma_loc = sqrt(sum_i beta_i sigma_i(B)^2 / P)
    F_glob = (F - mu(F)) sigma(B)/sigma(F) + mu(B)
    F_loc  = (F - mu(F)) sigma_loc/sigma(F) + mu_loc
    B_loc  = (B - mu(B)) sigma_loc/sigma(B) + mu_loc
    out = (w0 F_loc + w1 F_glob + w2) M + (g0 B_loc + g1 B + g2)(1 - M)

    alpha and beta are one score per patch; they start at 1/P and 1 (plain averages).
    w starts at (0.5, 0.5, 0) and gamma at (0, 1, 0), so the background starts unchanged.
    ``trainable=False`` fixes everything but w0 and w1 (the PFE's use of the block).
    """

    def __init__(self, grid: int, trainable: bool = True):
        super().__init__()
        self.grid = grid
        self.name = "pn"
        patches = grid * grid
        self.alpha = nn.Parameter(torch.full((1, 1, grid, grid), 1.0 / patches),
                                  requires_grad=trainable)
        self.beta = nn.Parameter(torch.ones(1, 1, grid, grid), requires_grad=trainable)
        self.w = nn.Parameter(torch.tensor([0.5, 0.5]))
        self.w_bias = nn.Parameter(torch.zeros(1), requires_grad=trainable)
        self.gamma = nn.Parameter(torch.tensor([0.0, 1.0, 0.0]), requires_grad=trainable)

    def statistics(self, x: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Global and local statistics of Eq. 2-7, each ``(B, C, 1, 1)``."""
        bg = 1 - mask
        patch_mean, patch_std = patch_masked_mean_std(x, bg, self.grid)
        bg_mean, bg_std = masked_mean_std(x, bg)
        fg_mean, fg_std = masked_mean_std(x, mask)
        local_mean = (self.alpha * patch_mean).sum(dim=(2, 3), keepdim=True)
        local_var = (self.beta * patch_std**2).sum(dim=(2, 3), keepdim=True) / self.grid**2
        local_std = torch.sqrt(local_var.clamp(min=PN_EPS))
        return {"bg_mean": bg_mean, "bg_std": bg_std, "fg_mean": fg_mean, "fg_std": fg_std,
                "local_mean": local_mean, "local_std": local_std}

    @full_precision
    def forward(self, x: Tensor, mask: Tensor, stats_hook: StatsHook | None = None) -> Tensor:
        """x: ``(B, C, H, W)``, mask: ``(B, 1, H, W)`` -> ``(B, C, H, W)``."""
        s = _exchange(stats_hook, self.name, self.statistics(x, mask))
        z_fg = (x - s["fg_mean"]) / s["fg_std"]
        fg_global = z_fg * s["bg_std"] + s["bg_mean"]
        fg_local = z_fg * s["local_std"] + s["local_mean"]
        bg_local = (x - s["bg_mean"]) / s["bg_std"] * s["local_std"] + s["local_mean"]
        fg_out = self.w[0] * fg_local + self.w[1] * fg_global + self.w_bias
        bg_out = self.gamma[0] * bg_local + self.gamma[1] * x + self.gamma[2]
        return fg_out * mask + bg_out * (1 - mask)


class PatchFeatureExtractor(nn.Module):
    """The released networks' PFE: local + global Reinhard transfer, then conv + ReLU.

    The foreground image (zeros outside the mask) is moved toward the background's
    colour statistics, per patch on a G x G grid and globally (plain mean and unbiased
    std of the zero-filled images), mixed by two learned weights. A 3x3 conv over the
    foreground and a second image gives a 3-channel map; ``head_input`` says which:

    - "composite" (the authors' network): the transferred foreground inside the mask
      and the zero-filled background / 255 outside it,
      ``blend(transferred, image * (1 - mask) / 255, mask)``;
    - "transferred": the transferred image alone (what the bundled "lite" weights
      were trained with).

    PHNet reads the map only as one gate per image: sigmoid(channel mean of its
    global max), ``(B, 1, 1, 1)``.
    """

    def __init__(self, grid: int, init_mix=(0.9, 0.1), head_input: str = "composite"):
        super().__init__()
        if head_input not in PFE_HEAD_INPUTS:
            raise ValueError(f"head_input must be one of {PFE_HEAD_INPUTS}, not {head_input!r}")
        self.grid = grid
        self.name = "pfe"
        self.head_input = head_input
        self.mix = nn.Parameter(torch.tensor(init_mix, dtype=torch.float32))
        self.head = nn.Sequential(nn.Conv2d(6, 3, 3, padding=1), nn.ReLU())

    def transfer(self, image: Tensor, mask: Tensor) -> Tensor:
        """image ``(B, 3, H, W)``, mask ``(B, 1, H, W)`` -> transferred fg ``(B, 3, H, W)``."""
        height, width = image.shape[-2:]
        fg, bg = image * mask, image * (1 - mask)
        fg_mean, fg_std = mean_std(fg)
        bg_mean, bg_std = mean_std(bg)
        fg_pmean, fg_pstd = patch_mean_std(fg, self.grid)
        bg_pmean, bg_pstd = patch_mean_std(bg, self.grid)
        local = reinhard_transfer(
            fg, *(patch_expand(t, height, width) for t in (fg_pmean, fg_pstd, bg_pmean, bg_pstd))
        )
        global_ = reinhard_transfer(fg, fg_mean, fg_std, bg_mean, bg_std)
        return self.mix[0] * local + self.mix[1] * global_

    def head_image(self, image: Tensor, mask: Tensor) -> Tensor:
        """What the head sees beside the foreground (see the class), ``(B, 3, H, W)``."""
        transferred = self.transfer(image, mask)
        if self.head_input == "transferred":
            return transferred
        return blend(transferred, image * (1 - mask) / PFE_BACKGROUND_DIVISOR, mask)

    @full_precision
    def forward(self, image: Tensor, mask: Tensor, stats_hook: StatsHook | None = None) -> Tensor:
        """-> the gate ``(B, 1, 1, 1)`` in [0.5, 1)."""
        features = self.head(torch.cat([image * mask, self.head_image(image, mask)], dim=1))
        gate = torch.sigmoid(features.amax(dim=(2, 3), keepdim=True).mean(dim=1, keepdim=True))
        return _exchange(stats_hook, self.name, {"gate": gate})["gate"]


class PaperFeatureExtractor(nn.Module):
    """Sec. 4.2: a fixed PN over the image (25 patches; only w0, w1 learn), then an
    adaptive average pool and a linear map to one weight per bottleneck channel, which
    is summed with the SE weights. Returns ``(B, C, 1, 1)``.
    """

    def __init__(self, channels: int, grid: int = 5):
        super().__init__()
        self.name = "pfe"
        self.norm = PaperPatchNorm(grid, trainable=False)
        self.proj = nn.Linear(3, channels)

    @full_precision
    def forward(self, image: Tensor, mask: Tensor, stats_hook: StatsHook | None = None) -> Tensor:
        pooled = self.norm(image, mask).mean(dim=(2, 3))
        gate = self.proj(pooled)[:, :, None, None]
        return _exchange(stats_hook, self.name, {"gate": gate})["gate"]


class SqueezeExcitation(nn.Module):
    """SE block with an auxiliary gate: ``x * (se_weights(x) + aux)``.

    x: ``(B, C, H, W)``; aux: ``(B, 1, 1, 1)``, ``(B, C, 1, 1)`` or None.
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = channels // reduction
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: Tensor, aux: Tensor | None = None) -> Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))[:, :, None, None]
        return x * weights if aux is None else x * (weights + aux)
