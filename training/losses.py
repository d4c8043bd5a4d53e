"""The training objective of PHNet (paper Sec. 4.4, Eq. 13-15) in three variants.

``HarmonizationLoss(variant=...)`` = w0 * PSNR loss + w1 * FN-MSE + w2 * gradient loss,
weights 0.2 / 0.01 / 0.01:

- ``"authors"`` -- what the released training code computes, on the *unblended*
  prediction: 100 / PSNR with MAX 1 and the MSE of the whole batch; FN-MSE whose
  numerator covers the whole image (background too), divided by C * max(100, sum(mask));
  the L1 of forward differences of ``pred * mask`` and ``real * mask``.
- ``"paper"`` -- the paper's text where it differs from the code: Eq. 13 takes MAX as
  the maximum of the target image (per image); its printed form (a log of a norm) is read
  as 100 / PSNR in dB, the only reading on the code's scale. L_G is "the MSE of
  gradients". FN-MSE is Eq. 14 as the authors implement it (same as ``"authors"``).
- ``"blended"`` -- scores the image a user sees: the prediction pasted over the
  composite, ``pred * mask + comp * (1 - mask)``. PSNR covers the whole blended image,
  per image with MAX = the real image's maximum, as the evaluation metric does;
  FN-MSE only the foreground (mask > 0.5), divided by C * max(sum(mask), 100); the
  gradient term is the authors' (it only sees the foreground anyway).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from kornia.metrics import psnr
from torch import Tensor, nn

from vcam_harmonize.training.recipe import binarize

_EPS = 1e-7


def psnr_loss(pred: Tensor, real: Tensor, max_val: float | Literal["real_max"] = 1.0) -> Tensor:
    """100 / PSNR (dB), a scalar.

    Args:
        pred, real: ``(B, C, H, W)`` in [0, 1].
        max_val: a number: one PSNR from the MSE of the whole batch (the authors', via
            kornia). ``"real_max"``: per-image PSNR with MAX = max(real) of that image,
            averaged over the batch.
    """
    if max_val == "real_max":
        mse = ((pred - real) ** 2).flatten(1).mean(1)
        peak = real.flatten(1).amax(1)
        value = (10.0 * torch.log10(peak**2 / mse.clamp_min(1e-12))).mean()
    else:
        value = psnr(pred, real, max_val)
    return 100.0 / (value + _EPS)


def fn_mse(
    pred: Tensor,
    real: Tensor,
    mask: Tensor,
    min_area: float = 100.0,
    variant: Literal["authors", "blended"] = "authors",
    comp: Tensor | None = None,
) -> Tensor:
    """Foreground-normalised MSE (Eq. 14), averaged over the batch; a scalar.

    Args:
        pred, real: ``(B, C, H, W)``; ``pred`` is the unblended network output.
        mask: ``(B, 1, H, W)``; pixels with ``mask > 0.5`` count as foreground area.
        min_area: A_min, in pixels at the training resolution.
        variant: ``"authors"``: sum over C, H, W of (pred - real)^2 over the whole image,
            divided by C * max(A_min, foreground area). ``"blended"``: the same sum over
            the foreground only, of the prediction blended over ``comp`` with ``mask``.
        comp: ``(B, C, H, W)``, the composite; needed by ``"blended"``.
    """
    area = binarize(mask).sum(dim=(1, 2, 3)).clamp_min(min_area)
    if variant == "authors":
        error = (pred - real) ** 2
    elif variant == "blended" and comp is not None:
        blended = pred * mask + comp * (1 - mask)
        error = binarize(mask) * (blended - real) ** 2
    else:
        raise ValueError(f"fn_mse variant {variant!r} (comp given: {comp is not None})")
    return (error.sum(dim=(1, 2, 3)) / (pred.shape[1] * area)).mean()


def forward_differences(x: Tensor) -> tuple[Tensor, Tensor]:
    """Horizontal and vertical forward differences of ``(B, C, H, W)``, each the same shape.

    ``dx[..., j] = x[..., j + 1] - x[..., j]``, zero in the last column; ``dy`` likewise
    along rows, zero in the last row.
    """
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def gradient_loss(
    pred: Tensor, real: Tensor, mask: Tensor, norm: Literal["l1", "l2"] = "l1"
) -> Tensor:
    """Gradient loss of the masked images, (L_x + L_y) / 2; a scalar.

    Args:
        pred, real: ``(B, C, H, W)``.
        mask: ``(B, 1, H, W)``; used as given (the datasets binarize it).
        norm: ``"l1"`` (the authors' code) or ``"l2"`` (the paper's "MSE of gradients");
            the mean over all elements, the zero last column/row included.
    """
    distance = F.l1_loss if norm == "l1" else F.mse_loss
    pred_dx, pred_dy = forward_differences(pred * mask)
    real_dx, real_dy = forward_differences(real * mask)
    return (distance(pred_dx, real_dx) + distance(pred_dy, real_dy)) / 2


class HarmonizationLoss(nn.Module):
    """The weighted PHNet objective (Eq. 15); see the module docstring for the variants.

    ``forward(pred, real, comp, mask)`` takes ``(B, 3, H, W)`` images in [0, 1] and a
    ``(B, 1, H, W)`` mask and returns ``(total, parts)``: the scalar to minimise and the
    unweighted, detached ``"psnr"``, ``"fn_mse"`` and ``"gradient"`` terms.
    """

    def __init__(
        self,
        variant: Literal["authors", "paper", "blended"] = "authors",
        weights: tuple[float, float, float] = (0.2, 0.01, 0.01),
        min_area: float = 100.0,
    ) -> None:
        super().__init__()
        if variant not in ("authors", "paper", "blended"):
            raise ValueError(f"unknown loss variant {variant!r}")
        self.variant, self.weights, self.min_area = variant, weights, min_area

    def forward(
        self, pred: Tensor, real: Tensor, comp: Tensor, mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.variant == "blended":
            # per image, MAX = the real image's maximum: the PSNR that evaluation reports
            psnr_term = psnr_loss(pred * mask + comp * (1 - mask), real, "real_max")
            fn_term = fn_mse(pred, real, mask, self.min_area, "blended", comp)
        else:
            psnr_term = psnr_loss(pred, real, "real_max" if self.variant == "paper" else 1.0)
            fn_term = fn_mse(pred, real, mask, self.min_area)
        norm = "l2" if self.variant == "paper" else "l1"
        parts = {
            "psnr": psnr_term,
            "fn_mse": fn_term,
            "gradient": gradient_loss(pred, real, mask, norm),
        }
        total = sum(w * part for w, part in zip(self.weights, parts.values(), strict=True))
        return total, {name: part.detach() for name, part in parts.items()}
