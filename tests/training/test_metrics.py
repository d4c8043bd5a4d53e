"""Evaluation metrics against values worked out by hand."""

import math

import pytest
import torch

from vcam_harmonize.training.metrics import (
    MetricAccumulator,
    blend,
    bucket_of,
    fmse,
    image_metrics,
    mse,
    psnr,
)

# one image, 3 channels, 1 x 2 pixels: errors 2 and 1 in every channel
PRED = torch.tensor([[[[2.0, 1.0]]]]).expand(1, 3, 1, 2)
REAL = torch.zeros(1, 3, 1, 2)


def test_fmse_formulas_differ_on_soft_masks():
    soft = torch.tensor([[[[0.6, 1.0]]]])
    # Eq. 16: 3 * (0.6*4 + 1*1) / (3 * 1.6) = 2.125
    assert fmse(PRED, REAL, soft, "eq16", binary=False).item() == pytest.approx(2.125)
    # iHarmony4: 3 * (0.36*4 + 1*1) / (3 * 1.6) = 1.525
    assert fmse(PRED, REAL, soft, "iharmony", binary=False).item() == pytest.approx(1.525)


def test_fmse_formulas_agree_once_the_mask_is_binarized():
    soft = torch.tensor([[[[0.6, 1.0]]]])  # binarized: [1, 1] -> 3 * (4 + 1) / 6 = 2.5
    assert fmse(PRED, REAL, soft, "eq16").item() == pytest.approx(2.5)
    assert fmse(PRED, REAL, soft, "iharmony").item() == pytest.approx(2.5)
    low = torch.tensor([[[[0.4, 1.0]]]])  # binarized: [0, 1] -> 3 * 1 / 3 = 1
    assert fmse(PRED, REAL, low, "eq16").item() == pytest.approx(1.0)
    assert fmse(PRED, REAL, low, "iharmony").item() == pytest.approx(1.0)
    binary = torch.tensor([[[[0.0, 1.0]]]])
    assert fmse(PRED, REAL, binary, "eq16", binary=False).item() == pytest.approx(1.0)
    assert fmse(PRED, REAL, binary, "iharmony", binary=False).item() == pytest.approx(1.0)


def test_mse_and_psnr_by_hand():
    assert mse(PRED, REAL).item() == pytest.approx(2.5)
    real = torch.zeros(1, 3, 2, 2)
    real[0, 0, 0, 0] = 200.0
    error = torch.tensor([1.0])
    assert psnr(error, real).item() == pytest.approx(10 * math.log10(200**2), abs=1e-4)
    assert psnr(error, real, 255.0).item() == pytest.approx(10 * math.log10(255**2), abs=1e-4)


def test_image_metrics_score_the_blended_output_on_the_255_scale():
    real = torch.full((1, 3, 2, 2), 0.5)
    comp = torch.full((1, 3, 2, 2), 0.3)
    pred = torch.full((1, 3, 2, 2), 0.6)
    mask = torch.tensor([[[[0.9, 0.2], [0.0, 0.0]]]])  # binarized: one foreground pixel
    assert blend(pred, comp, mask)[0, :, 0].flatten().tolist() == pytest.approx([0.6, 0.3] * 3)
    scores = image_metrics(pred, real, comp, mask)
    # errors: foreground 0.1*255 = 25.5, background -0.2*255 = -51
    expected_mse = (25.5**2 + 3 * 51**2) / 4
    assert scores["mse"].item() == pytest.approx(expected_mse, rel=1e-5)
    assert scores["fmse"].item() == pytest.approx(25.5**2, rel=1e-5)
    peak = 127.5**2  # MAX = max(real) = 0.5 * 255
    assert scores["psnr"].item() == pytest.approx(10 * math.log10(peak / expected_mse), rel=1e-5)
    assert scores["fpsnr"].item() == pytest.approx(10 * math.log10(25.0), rel=1e-5)
    assert scores["fg_ratio"].item() == pytest.approx(0.25)
    fixed = image_metrics(pred, real, comp, mask, psnr_max=255.0)
    assert fixed["psnr"].item() == pytest.approx(10 * math.log10(255**2 / expected_mse), rel=1e-5)


def test_buckets_follow_table_5():
    assert [bucket_of(r) for r in (0.0, 0.049, 0.05, 0.149, 0.15, 0.9)] == [
        "<5%",
        "<5%",
        "5-15%",
        "5-15%",
        ">=15%",
        ">=15%",
    ]


def test_accumulator_means_per_dataset_overall_and_per_bucket():
    acc = MetricAccumulator()
    acc.add("HCOCO", {"mse": torch.tensor([10.0, 20.0]), "fg_ratio": torch.tensor([0.01, 0.5])})
    acc.add("HFlickr", {"mse": torch.tensor([60.0]), "fg_ratio": torch.tensor([0.1])})
    assert acc.dataset_means() == {
        "HCOCO": {"count": 2, "mse": 15.0},
        "HFlickr": {"count": 1, "mse": 60.0},
    }
    assert acc.overall_means() == {"count": 3, "mse": 30.0}
    assert acc.bucket_means() == {
        "<5%": {"count": 1, "mse": 10.0},
        "5-15%": {"count": 1, "mse": 60.0},
        ">=15%": {"count": 1, "mse": 20.0},
    }
    assert acc.bucket_means("HCOCO") == {
        "<5%": {"count": 1, "mse": 10.0},
        ">=15%": {"count": 1, "mse": 20.0},
    }
    assert MetricAccumulator().overall_means() == {"count": 0}


def test_accumulator_takes_image_metrics_batches():
    gen = torch.Generator().manual_seed(1)
    real, pred = torch.rand(3, 3, 8, 8, generator=gen), torch.rand(3, 3, 8, 8, generator=gen)
    mask = torch.zeros(3, 1, 8, 8)
    mask[:, :, :4] = 1.0
    scores = image_metrics(pred, real, real, mask)
    acc = MetricAccumulator()
    acc.add("set", scores)
    means = acc.dataset_means()["set"]
    assert means["count"] == 3
    assert means["fpsnr"] == pytest.approx(scores["fpsnr"].mean().item(), rel=1e-6)
    assert set(means) == {"count", "mse", "fmse", "psnr", "fpsnr"}
