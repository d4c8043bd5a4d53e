"""Masked statistics, patch grids and the paper's PN equations against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.models.numpy_reference import bands, col
from vcam_harmonize.models import functional as fn
from vcam_harmonize.models.blocks import PaperPatchNorm, PatchNorm


def _data(c=3, h=13, w=17, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c, h, w, generator=gen, dtype=torch.float64)
    m = (torch.rand(2, 1, h, w, generator=gen) > 0.6).double()
    return x, m


def test_patch_edges_give_the_remainder_to_the_last_band():
    assert fn.patch_edges(10, 3) == [0, 3, 6, 10]
    assert fn.patch_edges(8, 8) == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert fn.patch_edges(5, 1) == [0, 5]


def test_masked_mean_std_is_the_population_formula_with_eps():
    x, m = _data()
    mean, std = fn.masked_mean_std(x, m)
    xn, mn = x.numpy(), m.numpy()
    for b in range(2):
        sel = mn[b, 0] > 0
        for c in range(3):
            vals = xn[b, c][sel]
            area = sel.sum() + fn.PN_EPS
            mu = vals.sum() / area
            var = ((vals - mu) ** 2).sum() / area
            assert mean[b, c, 0, 0].item() == pytest.approx(mu, abs=1e-12)
            assert std[b, c, 0, 0].item() == pytest.approx(np.sqrt(var + fn.PN_EPS), abs=1e-12)


def test_empty_region_gives_zero_mean_and_sqrt_eps_std():
    x, _ = _data()
    mean, std = fn.masked_mean_std(x, torch.zeros(2, 1, 13, 17, dtype=torch.float64))
    assert torch.all(mean == 0)
    torch.testing.assert_close(std, torch.full_like(std, np.sqrt(fn.PN_EPS)))


def test_patch_statistics_match_a_loop_over_patches():
    x, m = _data(h=23, w=19)
    grid = 4
    mean, std = fn.patch_masked_mean_std(x, m, grid)
    pmean, pstd = fn.patch_mean_std(x, grid)
    assert mean.shape == (2, 3, grid, grid)
    for i, (r0, r1) in enumerate(bands(23, grid)):
        for j, (c0, c1) in enumerate(bands(19, grid)):
            mu, sd = fn.masked_mean_std(x[..., r0:r1, c0:c1], m[..., r0:r1, c0:c1])
            torch.testing.assert_close(mean[..., i, j], mu[..., 0, 0])
            torch.testing.assert_close(std[..., i, j], sd[..., 0, 0])
            cell = x[..., r0:r1, c0:c1].flatten(2)
            torch.testing.assert_close(pmean[..., i, j], cell.mean(-1))
            torch.testing.assert_close(pstd[..., i, j], cell.std(-1, unbiased=True))


def test_patch_expand_paints_each_patch():
    values = torch.arange(9.0).reshape(1, 1, 3, 3)
    painted = fn.patch_expand(values, 7, 5)
    assert painted[0, 0, 0, 0] == 0 and painted[0, 0, 6, 4] == 8
    # rows 0-1, 2-3, 4-6 and columns 0, 1, 2-4 form the bands
    assert painted[0, 0, 1, 1] == 1 and painted[0, 0, 2, 1] == 4 and painted[0, 0, 5, 0] == 6


def test_released_pn_block_keeps_its_arithmetic():
    x, m = _data(c=4, h=12, w=12)
    block = PatchNorm(4, grid=3).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.05 * torch.randn_like(p))
        out = block(x, m)
    s = block.statistics(x, m)
    bg = (x - s["bg_mean"]) / s["bg_std"] * block.bg_scale + block.bg_shift
    z = (x - s["fg_mean"]) / s["fg_std"]
    g = (z * s["bg_std"] + s["bg_mean"]) * block.fg_scale + block.fg_shift
    local = (block.patch_weights * s["patch_mean"]).sum((2, 3), keepdim=True)
    q = (z * s["bg_std"] + local) * block.patch_scale + block.patch_shift
    expected = (block.mix[0] * g + block.mix[1] * q) * m + bg * (1 - m)
    torch.testing.assert_close(out, expected.detach())
    # grid weights start at 1/(G*G*C): each channel's weights sum to 1/C
    fresh = PatchNorm(4, grid=3)
    torch.testing.assert_close(fresh.patch_weights.sum((2, 3)), torch.full((1, 4), 0.25))


def _np_masked(x, m):
    """Eq. 2-3 on the region m of x (C,H,W) -> (C,) mean and std, eps as in the code."""
    area = m.sum() + fn.PN_EPS
    mu = (x * m).sum((1, 2)) / area
    var = (((x - mu[:, None, None]) * m) ** 2).sum((1, 2)) / area
    return mu, np.sqrt(var + fn.PN_EPS)


def test_paper_pn_block_follows_equations_5_to_12():
    x, m = _data(c=3, h=15, w=14, seed=3)
    grid = 3
    block = PaperPatchNorm(grid).double()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        block.alpha.copy_(torch.rand(1, 1, grid, grid, generator=gen, dtype=torch.float64))
        block.beta.copy_(torch.rand(1, 1, grid, grid, generator=gen, dtype=torch.float64))
        block.w.copy_(torch.tensor([0.3, 0.6], dtype=torch.float64))
        block.w_bias.fill_(0.05)
        block.gamma.copy_(torch.tensor([0.2, 0.7, -0.1], dtype=torch.float64))
        out = block(x, m).numpy()
    alpha, beta = block.alpha.detach().numpy()[0, 0], block.beta.detach().numpy()[0, 0]
    for b in range(2):
        xb, mb = x[b].numpy(), m[b, 0].numpy()
        bgm = 1 - mb
        mu_f, sd_f = _np_masked(xb, mb)            # Eq. 2-3 on F
        mu_b, sd_b = _np_masked(xb, bgm)           # Eq. 2-3 on B
        mu_loc = np.zeros(3)
        var_loc = np.zeros(3)
        for i, (r0, r1) in enumerate(bands(15, grid)):
            for j, (c0, c1) in enumerate(bands(14, grid)):
                mu_i, sd_i = _np_masked(xb[:, r0:r1, c0:c1], bgm[r0:r1, c0:c1])  # Eq. 2, 4
                mu_loc += alpha[i, j] * mu_i                                      # Eq. 6
                var_loc += beta[i, j] * sd_i**2
        sd_loc = np.sqrt(var_loc / grid**2)                                        # Eq. 7
        f_glob = (xb - col(mu_f)) * col(sd_b) / col(sd_f) + col(mu_b)                      # Eq. 5
        f_loc = (xb - col(mu_f)) * col(sd_loc) / col(sd_f) + col(mu_loc)                   # Eq. 8
        b_loc = (xb - col(mu_b)) * col(sd_loc) / col(sd_b) + col(mu_loc)                   # Eq. 9
        f_t = 0.3 * f_loc + 0.6 * f_glob + 0.05                                    # Eq. 10
        b_t = 0.2 * b_loc + 0.7 * xb - 0.1                                         # Eq. 11
        np.testing.assert_allclose(out[b], f_t * mb + b_t * bgm, atol=1e-10)       # Eq. 12


def test_paper_pn_block_starts_with_an_unchanged_background():
    x, m = _data(seed=7)
    with torch.no_grad():
        out = PaperPatchNorm(3).double()(x, m)
    torch.testing.assert_close(out * (1 - m), x * (1 - m))


def test_pfe_of_the_paper_trains_only_w0_w1():
    from vcam_harmonize.models.blocks import PaperFeatureExtractor

    pfe = PaperFeatureExtractor(channels=8, grid=5)
    trainable = {n for n, p in pfe.norm.named_parameters() if p.requires_grad}
    assert trainable == {"w"}
    assert pfe.norm.grid == 5


def test_patch_masked_mean_is_the_mean_of_patch_masked_mean_std():
    from vcam_harmonize.models.functional import patch_masked_mean, patch_masked_mean_std

    x = torch.rand(2, 5, 23, 17)
    mask = (torch.rand(2, 1, 23, 17) > 0.4).float()
    mask[1, :, :12] = 0  # patches with no region at all
    torch.testing.assert_close(patch_masked_mean(x, mask, 3), patch_masked_mean_std(x, mask, 3)[0])
