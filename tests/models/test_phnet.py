"""PHNet against an independent NumPy rendering, and its named configurations."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.models import numpy_reference as ref
from vcam_harmonize.models import CONFIGS, EMAStatistics, InputError, PHNet
from vcam_harmonize.models.blocks import PatchFeatureExtractor
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


def _inputs(height: int, width: int, seed: int = 1, soft: bool = False):
    """A random image and a rectangle mask; ``soft`` adds noise and clips it to [0, 1],
    which leaves exact 0s and 1s and many values between them."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, height, width, generator=gen)
    mask = torch.zeros(1, 1, height, width)
    mask[..., height // 4 : height - 3, width // 5 : (3 * width) // 4] = 1
    if soft:
        mask = (mask + 0.6 * torch.rand(mask.shape, generator=gen) - 0.3).clamp(0, 1)
    return image, mask


#: a square and a non-square input per released layout (multiples of 8, as the
#: authors' network needs).
RELEASED_SIZES = {"iharmony4": {"square": (48, 48), "non-square": (40, 64)},
                  "ffhqh": {"square": (32, 32), "non-square": (32, 56)}}


def _amplify_decoder(model: PHNet, gain: float = 1.5) -> PHNet:
    """Scale the skip and decoder convs so the bottleneck reaches the output.

    At the default init each decoder layer shrinks the signal, so the bottleneck (and
    the PFE gate on it) hardly reaches the output: dropping the gate moves it by ~3e-6.
    With a gain of 1.5 that is ~4e-4 while the output stays in about [0.2, 0.8], far
    from sigmoid saturation, like a trained network.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("skips.", "decoder.")) and name.endswith("conv.weight"):
                p.mul_(gain)
    return model


@pytest.fixture(scope="module", params=sorted(RELEASED_SIZES))
def released(request, tmp_path_factory):
    """(name, the network loaded from a released-format file in float32 and in float64,
    that file's tensors as float64 arrays), parameters moved off their initial values."""
    name = request.param
    path = tmp_path_factory.mktemp(name) / "released.pth"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _amplify_decoder(_randomize(PHNet.from_config(name)))
    torch.save(to_authors_state_dict(model), path)
    loaded = PHNet.from_checkpoint(path)
    params = {k: v.double().numpy() for k, v in torch.load(path, weights_only=True).items()}
    path.unlink()
    yield name, loaded, copy.deepcopy(loaded).double(), params


def _compare(released, shape: str, soft: bool, dtype: torch.dtype,
             head_input: str = "composite") -> float:
    """Max |ours - the NumPy rendering| on one input."""
    name, model32, model64, params = released
    image, mask = _inputs(*RELEASED_SIZES[name][shape], soft=soft)
    model = model64 if dtype == torch.float64 else model32
    with torch.no_grad():
        ours = model(image.to(dtype), mask.to(dtype))[0].double().numpy()
    config = CONFIGS[name]
    expected = ref.phnet_forward(image[0].double().numpy(), mask[0, 0].double().numpy(), params,
                                 config.grids, config.pfe_grid, head_input)
    assert ours.shape == expected.shape
    assert np.abs(ours - image[0].double().numpy()).max() > 1e-3  # the network did change it
    return float(np.abs(ours - expected).max())


@pytest.mark.parametrize("name,count", [("iharmony4", 9_994_295), ("ffhqh", 39_921_641)])
def test_released_configurations_have_the_released_parameter_counts(name, count):
    assert count_parameters(PHNet.from_config(name)) == count


def test_lite_is_small():
    assert count_parameters(PHNet.from_config("lite")) <= 2_500_000


@pytest.mark.parametrize("shape", ["square", "non-square"])
@pytest.mark.parametrize("soft", [False, True], ids=["binary", "soft"])
def test_released_networks_match_the_numpy_rendering_in_float64(released, shape, soft):
    assert _compare(released, shape, soft, torch.float64) <= 1e-9


@pytest.mark.parametrize("shape", ["square", "non-square"])
@pytest.mark.parametrize("soft", [False, True], ids=["binary", "soft"])
def test_released_networks_match_the_numpy_rendering_in_float32(released, shape, soft):
    assert _compare(released, shape, soft, torch.float32) <= 1e-5


@pytest.mark.parametrize("shape", ["square", "non-square"])
def test_the_float64_check_tells_the_pfe_head_inputs_apart(released, shape):
    # the head that sees the transferred image alone (the old reading) is a different
    # network: 1e-6 to 2e-5 away here, far outside the float64 tolerance
    assert _compare(released, shape, True, torch.float64, head_input="transferred") > 1e-7
    _, _, model64, _ = released
    image, mask = (t.double() for t in _inputs(*RELEASED_SIZES[released[0]][shape], soft=True))
    with torch.no_grad():
        gated = model64(image, mask)
        model64.use_pfe = False
        try:
            ungated = model64(image, mask)
        finally:
            model64.use_pfe = True
    assert (gated - ungated).abs().max() > 1e-4  # the PFE gate reaches the output


@pytest.mark.parametrize("head_input", ["composite", "transferred"])
@pytest.mark.parametrize("soft", [False, True], ids=["binary", "soft"])
def test_pfe_gate_matches_the_numpy_rendering_for_each_head_input(head_input, soft):
    pfe = PatchFeatureExtractor(3, head_input=head_input).double()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in pfe.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    image, mask = _inputs(30, 44, soft=soft)
    image, mask = image.double(), mask.double()
    with torch.no_grad():
        ours = pfe(image, mask).item()
    params = {"feature_extractor.patch_harmonizer.grid_weights": pfe.mix.detach().numpy(),
              "feature_extractor.head.0.weight": pfe.head[0].weight.detach().numpy(),
              "feature_extractor.head.0.bias": pfe.head[0].bias.detach().numpy()}
    args = (image[0].numpy(), mask[0, 0].numpy(), params, 3)
    assert abs(ours - ref.pfe_gate(*args, head_input)) <= 1e-12
    other = "transferred" if head_input == "composite" else "composite"
    assert abs(ours - ref.pfe_gate(*args, other)) > 1e-6


def test_released_layouts_use_the_authors_pfe_head_and_lite_keeps_its_own():
    assert CONFIGS["iharmony4"].pfe_head_input == CONFIGS["ffhqh"].pfe_head_input == "composite"
    assert PHNetConfig().pfe_head_input == "composite"
    assert PHNet.from_config("ffhqh").pfe.head_input == "composite"
    assert PHNet.from_config("lite").pfe.head_input == "transferred"
    with pytest.raises(InputError, match="unknown PFE head input"):
        PHNetConfig(pfe_head_input="image")


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


def _readings(run) -> list[tuple[str, dict[str, torch.Tensor]]]:
    seen = []

    def hook(name, stats):
        seen.append((name, {k: v.clone() for k, v in stats.items()}))
        return stats

    with torch.no_grad():
        run(hook)
    return seen


@pytest.mark.parametrize("name", ["lite", "ffhqh", "paper"])
@pytest.mark.parametrize("use_pfe", [True, False])
def test_read_statistics_hands_the_hook_what_forward_reads(name, use_pfe):
    model = _randomize(PHNet.from_config(name))
    model.use_pfe = use_pfe
    image, mask = _inputs(36, 52, soft=True)  # not multiples of 8: padded as forward pads
    full = _readings(lambda hook: model(image, mask, stats_hook=hook))
    alone = _readings(lambda hook: model.read_statistics(image, mask, hook))
    assert [n for n, _ in alone] == [n for n, _ in full]
    assert ("pfe" in [n for n, _ in alone]) == use_pfe
    for (_, got), (_, want) in zip(alone, full, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key])


def test_read_statistics_skips_the_network_past_the_statistics():
    model = _randomize(PHNet.from_config("lite"))
    image, mask = _inputs(32, 48)
    ran = []
    for part in (*model.encoder, model.se, *model.skips, *model.decoder):
        part.register_forward_hook(lambda module, args, out: ran.append(module))
    with torch.no_grad():
        model.read_statistics(image, mask, lambda name, stats: stats)
    # the first three encoder layers make every skip a PN block reads; nothing later runs
    assert ran == list(model.encoder[:3])
