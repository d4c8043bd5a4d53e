"""The training losses against values worked out by hand on tiny tensors."""

import math

import pytest
import torch

from vcam_harmonize.training.losses import (
    HarmonizationLoss,
    fn_mse,
    forward_differences,
    gradient_loss,
    psnr_loss,
)


def test_psnr_loss_is_100_over_psnr_of_the_batch_mse():
    real = torch.full((1, 3, 4, 4), 0.6)
    pred = torch.full((1, 3, 4, 4), 0.5)
    # MSE 0.01 -> PSNR 20 dB with MAX 1.
    assert psnr_loss(pred, real).item() == pytest.approx(5.0, rel=1e-5)
    # MAX = max(real) = 0.6 -> 10 log10(0.36 / 0.01) = 15.563 dB.
    assert psnr_loss(pred, real, "real_max").item() == pytest.approx(100 / 15.56303, rel=1e-5)


def test_psnr_loss_pools_the_mse_over_the_batch_like_the_authors():
    real = torch.zeros(2, 3, 2, 2)
    pred = torch.cat([torch.full((1, 3, 2, 2), 0.1), torch.full((1, 3, 2, 2), 0.2)])
    # (0.01 + 0.04) / 2 = 0.025 -> 16.0206 dB.
    assert psnr_loss(pred, real).item() == pytest.approx(100 / 16.0206, rel=1e-4)


def _two_samples():
    real = torch.zeros(2, 3, 4, 4)
    pred = torch.cat([torch.full((1, 3, 4, 4), 0.5), torch.full((1, 3, 4, 4), 0.1)])
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, :2, :3] = 1.0  # 6 pixels
    mask[1, 0, 0, :2] = 1.0  # 2 pixels, below min_area 4
    return pred, real, mask


def test_fn_mse_authors_counts_the_whole_image_over_the_mask_area():
    pred, real, mask = _two_samples()
    # sample 0: 3*16*0.25 / (3*6) = 0.6667; sample 1: 3*16*0.01 / (3*max(2, 4)) = 0.04
    expected = (12 / 18 + 0.48 / 12) / 2
    assert fn_mse(pred, real, mask, min_area=4).item() == pytest.approx(expected, rel=1e-6)


def test_fn_mse_blended_counts_the_foreground_only():
    pred, real, mask = _two_samples()
    comp = torch.rand(2, 3, 4, 4)
    # sample 0: 3*6*0.25 / (3*6) = 0.25; sample 1: 3*2*0.01 / (3*4) = 0.005
    value = fn_mse(pred, real, mask, min_area=4, variant="blended", comp=comp)
    assert value.item() == pytest.approx((0.25 + 0.005) / 2, rel=1e-6)


def test_fn_mse_blended_blends_with_the_soft_mask():
    real = torch.zeros(1, 3, 1, 2)
    pred = torch.ones(1, 3, 1, 2)
    comp = torch.full((1, 3, 1, 2), 0.5)
    mask = torch.tensor([[[[0.8, 0.2]]]])
    # foreground: the first pixel only; blended = 0.8 * 1 + 0.2 * 0.5 = 0.9 -> 0.81 per channel
    value = fn_mse(pred, real, mask, min_area=1, variant="blended", comp=comp)
    assert value.item() == pytest.approx(3 * 0.81 / 3, rel=1e-6)


def test_fn_mse_blended_needs_the_composite():
    pred, real, mask = _two_samples()
    with pytest.raises(ValueError):
        fn_mse(pred, real, mask, variant="blended")


def test_forward_differences_are_zero_in_the_last_column_and_row():
    x = torch.tensor([[[[0.0, 1.0, 4.0], [2.0, 2.0, 2.0]]]])
    dx, dy = forward_differences(x)
    assert dx.tolist() == [[[[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]]]]
    assert dy.tolist() == [[[[2.0, 1.0, -2.0], [0.0, 0.0, 0.0]]]]


def test_gradient_loss_by_hand():
    pred = torch.tensor([[[[0.0, 1.0, 4.0], [2.0, 2.0, 2.0]]]])
    real = torch.zeros_like(pred)
    ones = torch.ones_like(pred)
    # L1: dx |1|+|3| = 4/6, dy |2|+|1|+|-2| = 5/6 -> 0.75
    assert gradient_loss(pred, real, ones).item() == pytest.approx(0.75)
    # MSE: dx 1+9 = 10/6, dy 4+1+4 = 9/6 -> 19/12
    assert gradient_loss(pred, real, ones, norm="l2").item() == pytest.approx(19 / 12)
    # masking the last column: pred*mask = [[0,1,0],[2,2,0]] -> dx 4/6, dy 3/6 -> 7/12
    mask = torch.tensor([[[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]]])
    assert gradient_loss(pred, real, mask).item() == pytest.approx(7 / 12)


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    real = torch.rand(2, 3, 16, 16, generator=gen)
    pred = torch.rand(2, 3, 16, 16, generator=gen)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:12, 2:10] = 1.0
    comp = torch.where(mask > 0.5, torch.rand(2, 3, 16, 16, generator=gen), real)
    return pred, real, comp, mask


def test_authors_loss_is_the_weighted_sum_of_its_parts():
    pred, real, comp, mask = _batch()
    total, parts = HarmonizationLoss("authors")(pred, real, comp, mask)
    assert parts["psnr"].item() == pytest.approx(psnr_loss(pred, real).item())
    assert parts["fn_mse"].item() == pytest.approx(fn_mse(pred, real, mask).item())
    assert parts["gradient"].item() == pytest.approx(gradient_loss(pred, real, mask).item())
    expected = 0.2 * parts["psnr"] + 0.01 * parts["fn_mse"] + 0.01 * parts["gradient"]
    assert total.item() == pytest.approx(expected.item())


def test_paper_loss_uses_the_target_maximum_and_squared_gradients():
    pred, real, comp, mask = _batch()
    _, parts = HarmonizationLoss("paper")(pred, real, comp, mask)
    assert parts["psnr"].item() == pytest.approx(psnr_loss(pred, real, "real_max").item())
    assert parts["gradient"].item() == pytest.approx(gradient_loss(pred, real, mask, "l2").item())
    assert parts["fn_mse"].item() == pytest.approx(fn_mse(pred, real, mask).item())


def test_blended_loss_ignores_the_predicted_background_and_trains():
    pred, real, comp, mask = _batch()
    other = torch.where(mask > 0.5, pred, torch.rand_like(pred))
    loss = HarmonizationLoss("blended")
    total, parts = loss(pred, real, comp, mask)
    assert total.item() == pytest.approx(loss(other, real, comp, mask)[0].item())
    # the authors' loss, by contrast, does see the background
    authors = HarmonizationLoss("authors")
    assert authors(pred, real, comp, mask)[0].item() != pytest.approx(
        authors(other, real, comp, mask)[0].item()
    )
    pred = pred.clone().requires_grad_(True)
    loss(pred, real, comp, mask)[0].backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[:, :, 0, 0].abs().sum() == 0
    assert math.isfinite(parts["psnr"].item())


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError):
        HarmonizationLoss("mine")
