"""The composite recipes change the foreground only, reproducibly."""

from pathlib import Path

import pytest
import torch
from kornia.color import rgb_to_lab

from vcam_harmonize.models.functional import masked_mean_std
from vcam_harmonize.training.datasets import image_to_tensor, mask_to_tensor, read_image, read_mask
from vcam_harmonize.training.recipe import colour_transfer, recolour_foreground

SCENES = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "scenes"


def _scene(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not SCENES.is_dir():
        pytest.skip(f"shared scenes not found at {SCENES}")
    real = image_to_tensor(read_image(SCENES / "images" / f"{name}.jpg"))[None]
    return real, mask_to_tensor(read_mask(SCENES / "masks" / f"{name}.png"))[None]


def test_recolour_changes_only_foreground_pixels_of_a_real_photo():
    real, mask = _scene("image_100022")
    comp = recolour_foreground(real, mask, seed=5)
    background = mask[0, 0] < 0.5
    assert torch.equal(comp[0][:, background], real[0][:, background])
    changed = (comp[0] != real[0]).any(0)
    assert changed[~background].float().mean() > 0.5  # most foreground pixels move
    assert comp.min() >= 0 and comp.max() <= 1


def test_recolour_keeps_pixels_of_a_soft_mask_at_or_below_one_half():
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(2, 3, 16, 16, generator=gen)
    mask = torch.rand(2, 1, 16, 16, generator=gen)
    comp = recolour_foreground(real, mask, seed=1)
    keep = (mask <= 0.5).expand_as(real)
    assert torch.equal(comp[keep], real[keep])
    assert not torch.equal(comp[~keep], real[~keep])


def test_recolour_is_reproducible_and_leaves_the_global_rng_alone():
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(2, 3, 16, 16, generator=gen)
    mask = torch.ones(2, 1, 16, 16)
    torch.manual_seed(123)
    first = recolour_foreground(real, mask, seed=7)
    after = torch.rand(3)
    torch.manual_seed(123)
    expected_after = torch.rand(3)
    assert torch.equal(after, expected_after)
    assert torch.equal(first, recolour_foreground(real, mask, seed=7))
    assert not torch.equal(first, recolour_foreground(real, mask, seed=8))


def test_colour_transfer_moves_the_foreground_lab_statistics_to_the_reference():
    gen = torch.Generator().manual_seed(0)
    real = 0.3 + 0.4 * torch.rand(1, 3, 32, 32, generator=gen)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1.0
    reference = 0.4 + 0.2 * torch.rand(1, 3, 8, 8, generator=gen)
    reference[:, 0] += 0.15  # a warmer photo
    comp = colour_transfer(real, mask, reference)
    assert torch.equal(comp * (1 - mask), real * (1 - mask))
    got_mean, got_std = masked_mean_std(rgb_to_lab(comp), mask)
    ref_mean, ref_std = masked_mean_std(rgb_to_lab(reference), torch.ones(1, 1, 8, 8))
    assert torch.allclose(got_mean, ref_mean, atol=0.5)
    assert torch.allclose(got_std, ref_std, atol=0.5)


def test_colour_transfer_uses_the_reference_mask_region():
    real = torch.full((1, 3, 4, 4), 0.5)
    real[..., :2] = 0.4
    mask = torch.ones(1, 1, 4, 4)
    reference = torch.zeros(1, 3, 4, 4)
    reference[:, 1, :2] = 0.8  # green top half: the reference's object
    ref_mask = torch.zeros(1, 1, 4, 4)
    ref_mask[..., :2, :] = 1.0
    comp = colour_transfer(real, mask, reference, ref_mask)
    # the object is flat green, so the whole foreground becomes that green
    assert torch.allclose(comp, reference[..., :1, :1].expand_as(comp), atol=2e-3)


def test_colour_transfer_takes_statistics_of_the_mask_above_one_half_only():
    gen = torch.Generator().manual_seed(1)
    real = 0.2 + 0.6 * torch.rand(1, 3, 8, 8, generator=gen)
    reference = torch.rand(1, 3, 8, 8, generator=gen)
    hard = torch.zeros(1, 1, 8, 8)
    hard[..., :4, :] = 1.0
    soft = 0.9 * hard + 0.4 * (1 - hard)  # the same region once binarized at 0.5
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 0.8
    expected = colour_transfer(real, (mask > 0.5).float(), reference, hard)
    assert torch.equal(colour_transfer(real, mask, reference, soft), expected)
    assert not torch.equal(colour_transfer(real, mask, reference), expected)
