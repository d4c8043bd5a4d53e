"""Evaluation metrics of the paper (Sec. 5.2, Appendix A) and the released code.

All scores are per image, on the *blended* output ``mask * pred + (1 - mask) * comp``
scaled to 0..255 floats (no uint8 rounding), with the mask binarized at 0.5 first
(Appendix A). Conventions, the authors' by default:

- MSE = mean of (pred - real)^2 over C, H, W.
- fMSE, ``"eq16"`` (Eq. 16, the authors' code): sum(M * (pred - real)^2) / (3 * sum(M)).
  ``"iharmony"`` (the iHarmony4 repository): MSE(pred * M, real * M) * H * W / sum(M)
  = sum((pred * M - real * M)^2) / (3 * sum(M)). The two agree on binary masks and
  differ on soft ones (M versus M^2). Both add 1e-6 to the denominator, as the authors.
- PSNR = 10 * log10(MAX^2 / (MSE + 1e-6)); MAX is max(real) of the image
  (``"real_max"``, the authors') or a fixed number such as 255. fPSNR uses fMSE.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

import torch
from torch import Tensor

from vcam_harmonize.training.recipe import binarize

_EPS = 1e-6
BUCKETS = ("<5%", "5-15%", ">=15%")


def mse(pred: Tensor, real: Tensor) -> Tensor:
    """Per-image MSE of ``(B, C, H, W)`` images, shape ``(B,)``."""
    return ((pred - real) ** 2).flatten(1).mean(1)


def fmse(
    pred: Tensor,
    real: Tensor,
    mask: Tensor,
    formula: Literal["eq16", "iharmony"] = "eq16",
    binary: bool = True,
) -> Tensor:
    """Per-image foreground MSE, shape ``(B,)``.

    Args:
        pred, real: ``(B, 3, H, W)``.
        mask: ``(B, 1, H, W)``; binarized at 0.5 unless ``binary=False``.
        formula: ``"eq16"`` or ``"iharmony"`` (see the module docstring).
    """
    m = binarize(mask) if binary else mask
    if formula == "eq16":
        error = m * (pred - real) ** 2
    else:
        error = (pred * m - real * m) ** 2
    return error.flatten(1).sum(1) / (pred.shape[1] * m.flatten(1).sum(1) + _EPS)


def psnr(
    error: Tensor, real: Tensor, max_value: float | Literal["real_max"] = "real_max"
) -> Tensor:
    """Per-image PSNR in dB from a per-image ``(B,)`` MSE or fMSE; ``real`` is ``(B, C, H, W)``."""
    peak = real.flatten(1).amax(1) if max_value == "real_max" else torch.full_like(error, max_value)
    return 10.0 * torch.log10(peak**2 / (error + _EPS))


def blend(pred: Tensor, comp: Tensor, mask: Tensor) -> Tensor:
    """``mask * pred + (1 - mask) * comp`` with the mask binarized at 0.5; ``(B, 3, H, W)``."""
    m = binarize(mask)
    return m * pred + (1 - m) * comp


def image_metrics(
    pred: Tensor,
    real: Tensor,
    comp: Tensor,
    mask: Tensor,
    psnr_max: float | Literal["real_max"] = "real_max",
    fmse_formula: Literal["eq16", "iharmony"] = "eq16",
) -> dict[str, Tensor]:
    """Scores of each image of a batch.

    Args:
        pred: ``(B, 3, H, W)`` network output in [0, 1], blended here over ``comp``.
        real, comp: ``(B, 3, H, W)`` in [0, 1].
        mask: ``(B, 1, H, W)``.
        psnr_max: MAX of PSNR and fPSNR on the 0..255 scale, or ``"real_max"``.
        fmse_formula: which fMSE (see :func:`fmse`).

    Returns:
        ``"mse"``, ``"fmse"``, ``"psnr"``, ``"fpsnr"`` and ``"fg_ratio"`` (foreground
        fraction of the image), each ``(B,)``.
    """
    out, target = blend(pred, comp, mask) * 255.0, real * 255.0
    image_mse, image_fmse = mse(out, target), fmse(out, target, mask, fmse_formula)
    return {
        "mse": image_mse,
        "fmse": image_fmse,
        "psnr": psnr(image_mse, target, psnr_max),
        "fpsnr": psnr(image_fmse, target, psnr_max),
        "fg_ratio": binarize(mask).flatten(1).mean(1),
    }


def bucket_of(fg_ratio: float) -> str:
    """The foreground-ratio group of Table 5: ``"<5%"``, ``"5-15%"`` or ``">=15%"``."""
    if fg_ratio < 0.05:
        return BUCKETS[0]
    return BUCKETS[1] if fg_ratio < 0.15 else BUCKETS[2]


def _means(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {"count": 0}
    keys = [key for key in rows[0] if key != "fg_ratio"]
    return {"count": len(rows)} | {key: sum(row[key] for row in rows) / len(rows) for key in keys}


class MetricAccumulator:
    """Collects per-image scores and reports means per dataset and per foreground bucket.

    Means are over images (batch size 1 in the authors' evaluation), each with a
    ``"count"``. Feed it the dicts of :func:`image_metrics`.
    """

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, float]]] = defaultdict(list)

    def add(self, dataset: str, metrics: dict[str, Tensor]) -> None:
        """Record a batch of per-image scores (each value ``(B,)``) under ``dataset``."""
        columns = {key: value.detach().cpu().double().tolist() for key, value in metrics.items()}
        for values in zip(*columns.values(), strict=True):
            self.rows[dataset].append(dict(zip(columns, values, strict=True)))

    def _rows(self, dataset: str | None) -> list[dict[str, float]]:
        if dataset is None:
            return [row for rows in self.rows.values() for row in rows]
        return self.rows.get(dataset, [])

    def dataset_means(self) -> dict[str, dict[str, float]]:
        """``{dataset: {"count", "mse", "fmse", "psnr", "fpsnr"}}`` in order of arrival."""
        return {name: _means(rows) for name, rows in self.rows.items()}

    def overall_means(self) -> dict[str, float]:
        """Means over every image of every dataset (iHarmony4's "All" column)."""
        return _means(self._rows(None))

    def bucket_means(self, dataset: str | None = None) -> dict[str, dict[str, float]]:
        """Means per foreground bucket (Table 5), over one dataset or all of them.

        Buckets without images are left out.
        """
        groups: dict[str, list[dict[str, float]]] = {bucket: [] for bucket in BUCKETS}
        for row in self._rows(dataset):
            groups[bucket_of(row["fg_ratio"])].append(row)
        return {bucket: _means(rows) for bucket, rows in groups.items() if rows}
