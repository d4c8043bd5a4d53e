"""PHNet against an independent NumPy rendering, and its named configurations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.models import numpy_reference as ref
from vcam_harmonize.models import CONFIGS, EMAStatistics, InputError, PHNet
from vcam_harmonize.models.checkpoint import to_authors_state_dict
from vcam_harmonize.models.phnet import PHNetConfig, count_parameters


def _randomize(model: PHNet, seed: int = 0) -> PHNet:
    """Move every parameter and BN buffer off its initial value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "skip_norms" in name or name.startswith("pfe."):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
    return model.eval()


def _inputs(height: int, width: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, height, width, generator=gen)
    mask = torch.zeros(1, 1, height, width)
    mask[..., height // 4 : height - 3, width // 5 : (3 * width) // 4] = 1
    return image, mask


@pytest.mark.parametrize("name,count", [("iharmony4", 9_994_295), ("ffhqh", 39_921_641)])
def test_released_configurations_have_the_released_parameter_counts(name, count):
    assert count_parameters(PHNet.from_config(name)) == count


def test_lite_is_small():
    assert count_parameters(PHNet.from_config("lite")) <= 2_500_000


@pytest.mark.parametrize("name,size", [("iharmony4", (48, 48)), ("iharmony4", (40, 64)),
                                       ("ffhqh", (32, 56))])
def test_released_networks_match_the_numpy_rendering(name, size, tmp_path):
    model = _randomize(PHNet.from_config(name))
    path = tmp_path / "released.pth"
    torch.save(to_authors_state_dict(model), path)
    loaded = PHNet.from_checkpoint(path)
    image, mask = _inputs(*size)
    with torch.no_grad():
        ours = loaded(image, mask)[0].numpy()
    params = {k: v.double().numpy() for k, v in torch.load(path, weights_only=True).items()}
    config = CONFIGS[name]
    expected = ref.phnet_forward(image[0].double().numpy(), mask[0, 0].double().numpy(), params,
                                 config.grids, config.pfe_grid)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    assert np.abs(ours - image[0].numpy()).max() > 1e-3  # the network did change the image


@pytest.mark.parametrize("name", ["iharmony4", "ffhqh", "paper", "lite"])
def test_any_size_is_padded_and_cropped_back(name):
    model = PHNet.from_config(name).eval()
    image, mask = _inputs(37, 50)
    with torch.no_grad():
        out = model(image, mask)
    assert out.shape == image.shape
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", ["iharmony4", "paper", "lite"])
@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_empty_and_full_masks_give_the_input_back(name, fill):
    model = _randomize(PHNet.from_config(name))
    image = torch.rand(2, 3, 32, 32)
    mask = torch.full((2, 1, 32, 32), fill)
    mask[1, :, 8:20, 8:20] = 1 - fill  # the second sample has a real mask
    with torch.no_grad():
        out = model(image, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], image[0])
    assert not torch.allclose(out[1], image[1])


def test_forward_is_deterministic_on_cpu():
    model = _randomize(PHNet.from_config("iharmony4"))
    image, mask = _inputs(48, 40)
    with torch.no_grad():
        assert torch.equal(model(image, mask), model(image, mask))


def test_lite_starts_as_the_identity():
    model = PHNet.from_config("lite").eval()
    image, mask = _inputs(64, 64)
    with torch.no_grad():
        out = model(image, mask)
    assert (out - image).abs().max() < 2e-3


def test_unknown_configuration_and_bad_shapes_are_refused():
    with pytest.raises(InputError, match="unknown PHNet configuration"):
        PHNet.from_config("huge")
    with pytest.raises(InputError, match="expects image"):
        PHNet.from_config("lite")(torch.rand(1, 4, 16, 16), torch.rand(1, 1, 16, 16))
    with pytest.raises(InputError, match="six positive"):
        PHNetConfig(widths=(1, 2))


def test_stats_hook_without_smoothing_changes_nothing():
    model = _randomize(PHNet.from_config("ffhqh"))
    image, mask = _inputs(32, 32)
    seen = []

    def hook(name, stats):
        seen.append((name, sorted(stats)))
        return stats

    with torch.no_grad():
        plain = model(image, mask)
        hooked = model(image, mask, stats_hook=hook)
        ema = EMAStatistics(0.0)
        smoothed = [model(image, mask, stats_hook=ema) for _ in range(2)]
    assert torch.equal(plain, hooked) and torch.equal(plain, smoothed[1])
    names = [n for n, _ in seen]
    assert names == ["pfe", "skip_norms.0", "skip_norms.1", "skip_norms.2"]
    assert seen[1][1] == ["bg_mean", "bg_std", "fg_mean", "fg_std", "patch_mean"]


def test_ema_statistics_carry_earlier_frames():
    model = _randomize(PHNet.from_config("lite"))
    dark, mask = _inputs(64, 64)
    bright = (dark + 0.4).clamp(0, 1)
    ema = EMAStatistics(0.9)
    with torch.no_grad():
        model(dark, mask, stats_hook=ema)
        first = ema.state["skip_norms.0"]["bg_mean"].clone()
        model(bright, mask, stats_hook=ema)
        after = ema.state["skip_norms.0"]["bg_mean"]
        fresh = EMAStatistics(0.9)
        model(bright, mask, stats_hook=fresh)
        target = fresh.state["skip_norms.0"]["bg_mean"]
    torch.testing.assert_close(after, 0.9 * first + 0.1 * target)
    ema.reset()
    assert ema.state == {}
    with pytest.raises(ValueError):
        EMAStatistics(1.0)
