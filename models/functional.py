"""Tensor functions behind PHNet's normalization: masked statistics and patch grids.

All functions are pure and work per sample and per channel. Shapes follow kornia's
convention: ``(B, C, H, W)`` feature maps and ``(B, 1, H, W)`` masks (1 = the region
whose statistics are taken).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: epsilon of the PN block's masked statistics (the authors' value, also the paper's).
PN_EPS = 1e-7
#: epsilon of the PFE's colour transfer.
PFE_EPS = 1e-8
#: the released PFE divides the background by 255 before blending it under the
#: transferred foreground (the authors' value: with images in [0, 1] its conv head
#: sees a nearly black background).
PFE_BACKGROUND_DIVISOR = 255.0


def masked_mean_std(x: Tensor, mask: Tensor, eps: float = PN_EPS) -> tuple[Tensor, Tensor]:
    """Population mean and std of ``x`` over the region ``mask``.

    mean = sum(x*M) / (sum(M) + eps);  std = sqrt(sum(((x - mean)*M)^2) / (sum(M) + eps) + eps)

    Args:
        x: ``(B, C, H, W)``.
        mask: ``(B, 1, H, W)`` weights in [0, 1].
        eps: guards empty regions; an empty region gives mean 0 and std sqrt(eps).

    Returns:
        ``(mean, std)``, each ``(B, C, 1, 1)``.
    """
    area = mask.sum(dim=(2, 3), keepdim=True) + eps
    mean = (x * mask).sum(dim=(2, 3), keepdim=True) / area
    var = (((x - mean) * mask) ** 2).sum(dim=(2, 3), keepdim=True) / area
    return mean, torch.sqrt(var + eps)


def patch_edges(size: int, grid: int) -> list[int]:
    """Edges of ``grid`` bands along an axis of ``size`` pixels.

    Every band is ``size // grid`` long except the last, which takes the remainder
    (the authors' rule). Returns ``grid + 1`` edges from 0 to ``size``.
    """
    step = size // grid
    return [i * step for i in range(grid)] + [size]


def _band_matrix(size: int, grid: int, like: Tensor) -> Tensor:
    """``(grid, size)`` one-hot matrix: row ``g`` marks the pixels of band ``g``."""
    edges = patch_edges(size, grid)
    band = torch.zeros(grid, size, dtype=like.dtype, device=like.device)
    for g in range(grid):
        band[g, edges[g] : edges[g + 1]] = 1
    return band


def patch_sum(x: Tensor, grid: int) -> Tensor:
    """Sum of ``x`` inside each cell of a ``grid x grid`` patch grid.

    Args:
        x: ``(B, C, H, W)``.

    Returns:
        ``(B, C, G, G)`` where ``[..., i, j]`` sums row band ``i`` and column band ``j``.
    """
    rows = _band_matrix(x.shape[-2], grid, x)
    cols = _band_matrix(x.shape[-1], grid, x)
    return rows @ x @ cols.transpose(0, 1)


def patch_expand(values: Tensor, height: int, width: int) -> Tensor:
    """Paint per-patch values back onto the pixels of their patches.

    Args:
        values: ``(B, C, G, G)``.

    Returns:
        ``(B, C, height, width)``.
    """
    grid = values.shape[-1]
    rows = _band_matrix(height, grid, values)
    cols = _band_matrix(width, grid, values)
    return rows.transpose(0, 1) @ values @ cols


def patch_masked_mean(x: Tensor, mask: Tensor, grid: int, eps: float = PN_EPS) -> Tensor:
    """The mean of :func:`patch_masked_mean_std` alone (half the work), ``(B, C, G, G)``."""
    return patch_sum(x * mask, grid) / (patch_sum(mask, grid) + eps)


def patch_masked_mean_std(
    x: Tensor, mask: Tensor, grid: int, eps: float = PN_EPS
) -> tuple[Tensor, Tensor]:
    """:func:`masked_mean_std` inside each patch of a ``grid x grid`` grid.

    A patch holding none of the region gets mean 0 and std sqrt(eps).

    Args:
        x: ``(B, C, H, W)``.
        mask: ``(B, 1, H, W)``.

    Returns:
        ``(mean, std)``, each ``(B, C, G, G)``.
    """
    height, width = x.shape[-2:]
    area = patch_sum(mask, grid) + eps
    mean = patch_sum(x * mask, grid) / area
    centred = (x - patch_expand(mean, height, width)) * mask
    var = patch_sum(centred**2, grid) / area
    return mean, torch.sqrt(var + eps)


def mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    """Plain per-channel mean and unbiased std over all pixels (no mask, no eps).

    Args:
        x: ``(B, C, H, W)``.

    Returns:
        ``(mean, std)``, each ``(B, C, 1, 1)``; std is 0 for a single pixel.
    """
    count = x.shape[-2] * x.shape[-1]
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = ((x - mean) ** 2).sum(dim=(2, 3), keepdim=True) / max(count - 1, 1)
    return mean, var.sqrt()


def patch_mean_std(x: Tensor, grid: int) -> tuple[Tensor, Tensor]:
    """:func:`mean_std` inside each patch of a ``grid x grid`` grid.

    Args:
        x: ``(B, C, H, W)``.

    Returns:
        ``(mean, std)``, each ``(B, C, G, G)``.
    """
    height, width = x.shape[-2:]
    ones = torch.ones(1, 1, height, width, dtype=x.dtype, device=x.device)
    count = patch_sum(ones, grid)
    mean = patch_sum(x, grid) / count
    centred = x - patch_expand(mean, height, width)
    var = patch_sum(centred**2, grid) / (count - 1).clamp(min=1)
    return mean, var.sqrt()


def reinhard_transfer(
    values: Tensor, src_mean: Tensor, src_std: Tensor, dst_mean: Tensor, dst_std: Tensor,
    eps: float = PFE_EPS,
) -> Tensor:
    """Move ``values`` from the (src_mean, src_std) distribution to (dst_mean, dst_std).

    (values - src_mean) * dst_std / (src_std + eps) + dst_mean, with all statistics
    broadcastable to ``values`` (``(B, C, 1, 1)`` or painted per patch).
    """
    return (values - src_mean) * dst_std / (src_std + eps) + dst_mean


def blend(foreground: Tensor, background: Tensor, mask: Tensor) -> Tensor:
    """``foreground * mask + background * (1 - mask)``, soft masks included.

    Args:
        foreground: ``(B, C, H, W)``.
        background: ``(B, C, H, W)``.
        mask: ``(B, 1, H, W)`` weights of ``foreground`` in [0, 1].

    Returns:
        ``(B, C, H, W)``.
    """
    return foreground * mask + background * (1 - mask)
