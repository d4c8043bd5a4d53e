"""How harmonization composites are made from real photos.

A composite is a real photo whose foreground has been recoloured while the background
stays exactly as it was; the photo itself is the ground truth. Two recipes:

- :func:`recolour_foreground` -- the FFHQH recipe of the paper (Sec. 3.2): kornia's
  ColorJitter(brightness 0.5, contrast 0.4, saturation 0.06, hue 0.05), RandomPosterize
  (bits 6, p 0.5), RandomSharpness (4, p 0.5) and RandomAutoContrast (p 0.5).
- :func:`colour_transfer` -- Reinhard-style statistics transfer in Lab toward another
  photo, the way iHarmony4 made most of its composites.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from kornia.color import lab_to_rgb, rgb_to_lab
from torch import Tensor, nn

from vcam_harmonize.models.functional import masked_mean_std, reinhard_transfer

#: guards the division by the foreground's std in :func:`colour_transfer`.
_EPS = 1e-6


def ffhqh_augmentation() -> nn.Sequential:
    """The paper's FFHQH colour augmentation, in the paper's order.

    Kornia samples ``bits`` of RandomPosterize from (6, 8) and the sharpness factor from
    (0, 4): the paper's "range of 6" and "range of 4".
    """
    return nn.Sequential(
        K.ColorJitter(brightness=0.5, contrast=0.4, saturation=0.06, hue=0.05, p=1.0),
        K.RandomPosterize(bits=6, p=0.5),
        K.RandomSharpness(sharpness=4.0, p=0.5),
        K.RandomAutoContrast(p=0.5),
    )


def binarize(mask: Tensor, threshold: float = 0.5) -> Tensor:
    """Binary float mask: 1 where ``mask > threshold``, else 0 (any shape)."""
    return (mask > threshold).to(mask.dtype if mask.is_floating_point() else torch.float32)


def recolour_foreground(
    real: Tensor,
    mask: Tensor,
    seed: int | None = None,
    augmentation: nn.Module | None = None,
) -> Tensor:
    """Composite whose foreground is recoloured by the FFHQH recipe.

    Args:
        real: ``(B, 3, H, W)`` RGB in [0, 1].
        mask: ``(B, 1, H, W)``; foreground where ``mask > 0.5``.
        seed: makes the result reproducible without touching the caller's global RNG
            (kornia draws from torch's global generator, so it is forked here).
        augmentation: the colour augmentation, :func:`ffhqh_augmentation` by default.

    Returns:
        ``(B, 3, H, W)`` in [0, 1]; background pixels are bit-identical to ``real``.
    """
    augmentation = augmentation or ffhqh_augmentation()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        recoloured = augmentation(real).clamp(0.0, 1.0)
    return torch.where(mask > 0.5, recoloured, real)


def colour_transfer(
    real: Tensor,
    mask: Tensor,
    reference: Tensor,
    reference_mask: Tensor | None = None,
) -> Tensor:
    """Composite whose foreground takes the Lab colour statistics of a reference photo.

    Each Lab channel of the foreground is standardised and re-scaled to the mean and std
    of the reference (its masked region when ``reference_mask`` is given, else the whole
    reference), as in Reinhard et al. 2001 and iHarmony4's HCOCO composites.

    Args:
        real: ``(B, 3, H, W)`` RGB in [0, 1].
        mask: ``(B, 1, H, W)``; foreground where ``mask > 0.5``.
        reference: ``(B, 3, h, w)`` RGB in [0, 1], any size.
        reference_mask: ``(B, 1, h, w)``, region where ``> 0.5``; or None.

    Returns:
        ``(B, 3, H, W)`` in [0, 1]; background pixels are bit-identical to ``real``.
    """
    if reference_mask is None:
        reference_mask = torch.ones_like(reference[:, :1])
    lab = rgb_to_lab(real)
    # binary regions: the statistics of exactly the pixels that are recoloured
    src_mean, src_std = masked_mean_std(lab, binarize(mask))
    ref_mean, ref_std = masked_mean_std(rgb_to_lab(reference), binarize(reference_mask))
    moved = reinhard_transfer(lab, src_mean, src_std, ref_mean, ref_std, eps=_EPS)
    recoloured = lab_to_rgb(moved, clip=True)
    return torch.where(mask > 0.5, recoloured, real)
