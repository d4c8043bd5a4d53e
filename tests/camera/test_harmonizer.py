"""The Harmonizer: PHNet as a full-resolution colour transform, and its temporal smoothing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vcam_harmonize.harmonizer import Harmonizer, every_8th, fit_affine
from vcam_harmonize.models import InputError, PHNet
from vcam_harmonize.models.checkpoint import to_authors_state_dict

SCENES = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "scenes"


def _scene(h=180, w=320, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    frame = np.stack([80 + 0.3 * x, 100 + 0.2 * y, 140 + 0 * x], -1)
    frame = (frame + rng.normal(0, 4, frame.shape)).clip(0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.float32)
    mask[h // 4 :, w // 3 : 2 * w // 3] = 1
    return frame, mask


@pytest.fixture(scope="module")
def harmonizer():
    return Harmonizer()


@pytest.mark.parametrize("backend", ["opencv", "torch"])
def test_fit_affine_recovers_an_exact_affine_map(backend):
    guide = torch.rand(1, 3, 32, 32)
    a, b = fit_affine(guide, 1.5 * guide + 0.1, radius=3, eps=1e-8, backend=backend)
    torch.testing.assert_close(a, torch.full_like(a, 1.5), atol=1e-3, rtol=0)
    torch.testing.assert_close(b, torch.full_like(b, 0.1), atol=1e-3, rtol=0)


def test_fit_matrix_recovers_a_colour_matrix_and_keeps_the_identity_without_a_person():
    from vcam_harmonize.harmonizer import fit_matrix

    rng = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 40, 48, generator=rng)
    matrix = torch.tensor([[1.2, 0.1, -0.05, 0.03], [0.0, 0.9, 0.1, -0.02],
                           [-0.1, 0.05, 1.1, 0.01]], dtype=torch.float64)
    pixels = image[0].reshape(3, -1).double()
    target = (matrix[:, :3] @ pixels + matrix[:, 3:]).reshape(1, 3, 40, 48).float()
    mask = torch.zeros(1, 1, 40, 48)
    mask[..., 10:30, 8:40] = 1
    # the pixels outside the mask do not count: they are made to disagree
    target = torch.where(mask > 0, target, 1 - target)
    fitted = fit_matrix(image, target, mask, ridge=0.0)
    assert fitted.shape == (3, 4) and fitted.dtype == torch.float64
    assert torch.allclose(fitted, matrix, atol=1e-5)
    # the ridge pulls toward the identity, the more the stronger
    pulled = [fit_matrix(image, target, mask, ridge=r) for r in (1e-2, 1.0)]
    identity = torch.eye(3, 4, dtype=torch.float64)
    distances = [float((m - identity)[:, :3].abs().sum()) for m in [fitted] + pulled]
    assert distances[0] > distances[1] > distances[2]
    assert torch.equal(fit_matrix(image, target, torch.zeros_like(mask)), identity)


def test_local_maps_explain_the_colour_matrixs_correction_not_the_raw_prediction():
    """The local transform is the guided filter's fit of the composite corrected by the
    person's colour matrix, so a prediction's blotches that no colour matrix explains do
    not reach the maps, while a colour change does."""
    import torch.nn.functional as F

    from vcam_harmonize.harmonizer import fit_affine, fit_matrix

    rng = torch.Generator().manual_seed(7)
    image = F.avg_pool2d(torch.rand(1, 3, 128, 128, generator=rng), 2)  # (1, 3, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:, 16:48] = 1
    blotches = F.interpolate(torch.rand(1, 3, 4, 4, generator=rng) - 0.5, (64, 64),
                             mode="bilinear") * 0.2
    target = (image * torch.tensor([1.2, 0.9, 0.8]).view(1, 3, 1, 1) + blotches) * mask + \
        image * (1 - mask)
    harmonizer = Harmonizer(res=64, transform="local")
    made = harmonizer._fit(image, target, mask)
    matrix = fit_matrix(image, target, mask).float()
    corrected = torch.einsum("ij,bjhw->bihw", matrix[:, :3], image) + \
        matrix[:, 3].view(1, 3, 1, 1)
    a, b = fit_affine(image, corrected * mask + image * (1 - mask), radius=2)
    a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    assert torch.allclose(made.a, a, atol=1e-5) and torch.allclose(made.b, b, atol=1e-5)
    # the person's colour change is there (the maps' output has its mean), the blotches
    # are not (the raw prediction's maps vary several times more across the person)
    inside = (slice(None), slice(None), slice(12, 28), slice(10, 22))
    low = F.avg_pool2d(image, 2)
    shown = (made.a * low + made.b)[inside].mean(dim=(-2, -1))[0]
    wanted = F.avg_pool2d(corrected, 2)[inside].mean(dim=(-2, -1))[0]
    assert torch.allclose(shown, wanted, atol=0.01)
    assert torch.allclose(matrix[:, :3].diagonal(), torch.tensor([1.2, 0.9, 0.8]), atol=0.1)
    _, raw_b = fit_affine(image, target, radius=2)  # the blotches are offsets
    spread = [float(maps[inside].std(dim=(-2, -1)).mean())
              for maps in (F.avg_pool2d(raw_b, 2), made.b)]
    assert spread[0] > 3 * spread[1], spread


def test_colour_matrix_difference_is_the_largest_change_over_the_colour_cube():
    from vcam_harmonize.harmonizer import ColourMatrix

    rng = torch.Generator().manual_seed(4)
    one = ColourMatrix(torch.rand(3, 4, generator=rng, dtype=torch.float64))
    other = ColourMatrix(torch.rand(3, 4, generator=rng, dtype=torch.float64))
    axis = torch.linspace(0, 1, 11, dtype=torch.float64)
    colours = torch.cartesian_prod(axis, axis, axis)
    delta = one.matrix - other.matrix
    brute = 255 * float((colours @ delta[:, :3].T + delta[:, 3]).abs().max())
    assert one.difference(other) == pytest.approx(brute)
    assert one.difference(one) == 0
    half = one.blend(other, 0.5)
    assert torch.allclose(half.matrix, (one.matrix + other.matrix) / 2)
    assert half.difference(other) == pytest.approx(one.difference(other) / 2)
    grey = one.grey_matrix()
    assert grey.dtype == np.float32 and grey.shape == (3, 4)
    np.testing.assert_allclose(grey[:, 3], 255 * one.matrix[:, 3].numpy(), rtol=1e-6)


def test_a_colour_matrix_corrects_a_person_who_moved_as_where_they_were():
    """A colour matrix does not depend on where the person is: a frame where they moved
    gets the moved correction. Local maps belong to where the person was."""
    from vcam_harmonize.harmonizer import ColourMatrix, ColourTransform

    frame, mask = _scene(90, 160)
    shift = 40
    moved, moved_mask = np.roll(frame, shift, axis=1), np.roll(mask, shift, axis=1)
    harmonizer = Harmonizer(res=32)
    matrix = ColourMatrix(torch.tensor([[1.2, 0.1, 0.0, -0.05], [0.0, 0.8, 0.1, 0.02],
                                        [0.05, 0.0, 1.1, 0.0]], dtype=torch.float64))
    here = harmonizer._apply(frame, mask, matrix)
    assert not np.array_equal(here, frame)
    assert np.array_equal(harmonizer._apply(moved, moved_mask, matrix),
                          np.roll(here, shift, axis=1))
    ramp = torch.linspace(0.6, 1.4, 16).repeat(1, 3, 16, 1)  # gain rising left to right
    local = ColourTransform(ramp, torch.zeros(1, 3, 16, 16))
    here = harmonizer._apply(frame, mask, local)
    assert not np.array_equal(harmonizer._apply(moved, moved_mask, local),
                              np.roll(here, shift, axis=1))


def test_fit_affine_backends_agree_on_any_batch_channels_and_size():
    """The OpenCV path (CPU) and the torch path (CUDA) compute the same guided filter."""
    guide = torch.rand(2, 3, 40, 24)
    target = (guide * torch.rand(2, 3, 1, 1) + 0.3 * torch.rand(2, 3, 40, 24)).clamp(0, 1)
    for radius in (1, 4, 8):
        fast = fit_affine(guide, target, radius, backend="opencv")
        slow = fit_affine(guide, target, radius, backend="torch")
        for got, want in zip(fast, slow, strict=True):
            assert got.shape == want.shape == (2, 3, 40, 24)
            torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    one = fit_affine(guide[:, :1], target[:, :1], 2, backend="opencv")
    assert one[0].shape == (2, 1, 40, 24)
    with pytest.raises(ValueError, match="backend"):
        fit_affine(guide, target, 2, backend="numpy")


@pytest.mark.parametrize("size", [(180, 320), (97, 131), (720, 1280)])
def test_output_keeps_full_size_and_exact_background(harmonizer, size):
    frame, mask = _scene(*size)
    out = harmonizer.harmonize(frame, mask)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(out[mask == 0], frame[mask == 0])


def test_strength_zero_and_empty_mask_return_the_composite(harmonizer):
    frame, mask = _scene()
    assert np.array_equal(harmonizer.harmonize(frame, np.zeros_like(mask)), frame)
    weak = Harmonizer(strength=0.0)
    assert np.array_equal(weak.harmonize(frame, mask), frame)


def test_half_strength_lies_between(harmonizer):
    frame, mask = _scene()
    full = harmonizer.harmonize(frame, mask).astype(int)
    half = Harmonizer(strength=0.5).harmonize(frame, mask).astype(int)
    fg = mask > 0
    assert np.abs(full - frame)[fg].mean() > 1
    np.testing.assert_allclose(np.abs(half - frame)[fg].mean(),
                               np.abs(full - frame)[fg].mean() / 2, rtol=0.15)


def test_bad_settings_are_input_errors():
    with pytest.raises(InputError, match="multiple of 8"):
        Harmonizer(res=250)
    with pytest.raises(InputError, match="strength"):
        Harmonizer(strength=-0.1)
    with pytest.raises(InputError, match="smoothing"):
        Harmonizer(smoothing=1.0)
    with pytest.raises(InputError, match="not found"):
        Harmonizer(weights="/no/such/weights.pth")
    with pytest.raises(InputError, match="transform must be one of global, local"):
        Harmonizer(transform="spatial")


def test_authors_checkpoints_work_as_weights(tmp_path):
    path = tmp_path / "best_ffhqh256.pth"
    torch.save(to_authors_state_dict(PHNet.from_config("iharmony4")), path)
    frame, mask = _scene(64, 96)
    out = Harmonizer(weights=path, res=64).harmonize(frame, mask)
    assert out.shape == frame.shape


@pytest.mark.skipif(not SCENES.is_dir(), reason="needs ../shared/datasets/scenes")
def test_harmonization_moves_a_recoloured_foreground_toward_the_truth(harmonizer):
    from vcam_harmonize.training.datasets import FolderDataset
    from vcam_harmonize.training.splits import scene_splits

    _, held_out = scene_splits(SCENES, 200, 0)
    dataset = FolderDataset(SCENES, held_out[:24], size=None, seed=3)
    before = after = 0.0
    for sample in dataset:
        comp = (sample["comp"].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        real = sample["real"].permute(1, 2, 0).numpy() * 255
        mask = sample["mask"][0].numpy()
        out = harmonizer.harmonize(comp, mask).astype(np.float32)
        fg = mask > 0.5
        before += ((comp - real) ** 2)[fg].mean()
        after += ((out - real) ** 2)[fg].mean()
    assert after < 0.8 * before


def _noisy_clip(frame, frames, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        yield (frame + rng.normal(0, 6, frame.shape)).clip(0, 255).astype(np.uint8)


def _fg_change(harmonizer, clip, mask):
    """Mean frame-to-frame change of the harmonized foreground's colour (flicker)."""
    fg = mask > 0
    means = np.array([harmonizer.harmonize(f, mask)[fg].mean(axis=0) for f in clip])
    return np.abs(np.diff(means, axis=0)).mean()


def test_smoothing_steadies_the_correction_on_a_noisy_static_clip():
    frame, mask = _scene(seed=1)
    clip = list(_noisy_clip(frame, 12))
    plain = _fg_change(Harmonizer(smoothing=0.0), clip, mask)
    smooth = _fg_change(Harmonizer(smoothing=0.8), clip, mask)
    assert smooth < 0.7 * plain


def test_smoothing_settles_within_a_second_after_a_lighting_step():
    frame, mask = _scene(seed=2)
    bright = (frame.astype(np.float32) * 1.15).clip(0, 255).astype(np.uint8)
    smooth = Harmonizer(smoothing=0.8)
    for _ in range(5):
        smooth.harmonize(frame, mask)
    outs = [smooth.harmonize(bright, mask).astype(np.float32) for _ in range(30)]
    target = Harmonizer(smoothing=0.0).harmonize(bright, mask).astype(np.float32)
    fg = mask > 0
    first, last = np.abs(outs[0] - target)[fg].mean(), np.abs(outs[-1] - target)[fg].mean()
    assert last < 1.0 and last < first


def test_reset_and_scene_cuts_forget_the_past():
    frame, mask = _scene(seed=3)

    def after_history(history, current, reset=False):
        smooth = Harmonizer(smoothing=0.9)
        for _ in range(3):
            smooth.harmonize(history, mask)
        if reset:
            smooth.reset()
        return smooth.harmonize(current, mask).astype(int)

    # another picture is a scene cut: no trace of the earlier frames (a darker or
    # brighter one is a change of light, followed without a reset: see test_temporal)
    stripes = ((np.arange(frame.shape[1]) // 40) % 2 * 180 + 40).astype(np.uint8)
    cut = np.broadcast_to(stripes[None, :, None], frame.shape).copy()
    fresh = Harmonizer(smoothing=0.0).harmonize(cut, mask).astype(int)
    np.testing.assert_allclose(after_history(frame, cut), fresh, atol=1)
    # a small change is no cut: the past stays in the average until reset()
    near = (frame.astype(np.float32) * 1.2).clip(0, 255).astype(np.uint8)
    fresh = Harmonizer(smoothing=0.0).harmonize(near, mask).astype(int)
    assert np.abs(after_history(frame, near) - fresh)[mask > 0].max() > 1
    np.testing.assert_allclose(after_history(frame, near, reset=True), fresh, atol=1)


def test_refresh_every_reuses_the_transform_between_runs():
    frame, mask = _scene(seed=4)
    harmonizer = Harmonizer(refresh_every=4)
    calls = []
    original = harmonizer.model.forward
    harmonizer.model.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    for _ in range(8):
        harmonizer.harmonize(frame, mask)
    assert len(calls) == 2


def test_background_refresh_keeps_frames_flowing_and_updates_the_transform():
    import time

    frame, mask = _scene(seed=5)
    harmonizer = Harmonizer(refresh_every=2, background_refresh=True)
    calls = []
    original = harmonizer.model.forward
    harmonizer.model.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    first = harmonizer.harmonize(frame, mask)  # the first transform is computed at once
    assert len(calls) == 1
    brighter = (frame.astype(np.float32) * 1.15).clip(0, 255).astype(np.uint8)  # no cut
    stale = harmonizer.harmonize(brighter, mask)  # served at once with the old transform
    for _ in range(6):
        out = harmonizer.harmonize(brighter, mask)
        time.sleep(0.1)
    assert len(calls) >= 3
    fg = mask > 0
    # the worker's new transforms reached the frames: the output moved off the stale one
    assert np.abs(out.astype(int) - stale.astype(int))[fg].mean() > 0.5
    assert out.shape == first.shape
    harmonizer.close()
    assert harmonizer._worker is None


@pytest.mark.parametrize("size", [(720, 1280), (97, 131), (5, 300)])
@pytest.mark.parametrize("strength", [1.0, 0.4])
def test_applied_transform_matches_a_float64_rendering_within_one_level(size, strength):
    """out = I + alpha * (T - I), T = a * I + b saturated to [0, 255], with a and b
    upsampled bilinearly (pixel centres aligned) and alpha = strength * mask, rounded:
    the fast path's buffers, bands of rows and OpenCV calls may not move any pixel by
    more than one level."""
    from vcam_harmonize.harmonizer import ColourTransform

    height, width = size
    rng = np.random.default_rng(height)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.clip(rng.random((height, width)).astype(np.float32) * 1.6 - 0.3, 0, 1)
    mask[: height // 5] = 0
    a = torch.rand(1, 3, 32, 32, dtype=torch.float64) * 2
    b = torch.rand(1, 3, 32, 32, dtype=torch.float64) - 0.5
    harmonizer = Harmonizer(res=64, strength=strength)
    for _ in range(2):  # the second call reuses the buffers of the first
        out = harmonizer._apply(frame, mask, ColourTransform(a.float(), b.float()))

    def up(maps):
        return torch.nn.functional.interpolate(maps, size, mode="bilinear")[0].permute(1, 2, 0)

    image = frame.astype(np.float64)
    alpha = strength * np.where(mask >= 1 / 512, mask, 0)[..., None]
    corrected = np.clip(np.rint(up(a).numpy() * image + 255 * up(b).numpy()), 0, 255)
    expected = image + alpha * (corrected - image)
    expected = np.clip(np.rint(expected), 0, 255)
    assert np.abs(out - expected).max() <= 1
    assert (out != expected).mean() < 0.005
    assert np.array_equal(out[mask == 0], frame[mask == 0])


@pytest.mark.parametrize("shape", [(720, 1280, 3), (1080, 1920), (300, 301, 3), (64, 64, 3)])
def test_shrink_is_an_area_average_to_the_working_size(shape):
    from vcam_harmonize.harmonizer import shrink

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, shape).astype(np.float32)
    small = shrink(image, 64)
    assert small.shape == (64, 64) + shape[2:]
    # a constant image stays constant, and the mean is kept (no aliasing bias)
    assert np.allclose(shrink(np.full(shape, 7.0, np.float32), 64), 7.0)
    assert abs(small.mean() - image.mean()) < 0.5
    # smooth content is reproduced like a direct area resize
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    ramp = (x / shape[1] * 200 + y / shape[0] * 50).astype(np.float32)
    direct = cv2.resize(ramp, (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(shrink(ramp, 64) - direct).max() < 1.0


def test_any_memory_layout_of_the_composite_gives_the_same_output(harmonizer):
    """Frames that come out of torch (permuted) or Fortran-ordered arrays work too."""
    frame, mask = _scene(72, 128)
    expected = harmonizer.harmonize(frame, mask)
    permuted = np.ascontiguousarray(frame.transpose(2, 0, 1)).transpose(1, 2, 0)
    for layout in (np.asfortranarray(frame), permuted, frame[:, ::-1][:, ::-1]):
        harmonizer.reset()
        out = harmonizer.harmonize(layout, np.asfortranarray(mask))
        assert out.flags.c_contiguous
        np.testing.assert_array_equal(out, expected)


def test_mask_values_outside_zero_to_one_count_as_clipped(harmonizer):
    frame, mask = _scene(90, 160)
    wild = mask * 3.0 - 1.0  # -1 where the background is, 2 on the person
    harmonizer.reset()
    expected = harmonizer.harmonize(frame, mask)
    harmonizer.reset()
    np.testing.assert_array_equal(harmonizer.harmonize(frame, wild), expected)


def test_full_size_maps_are_reused_for_the_same_transform_only():
    """The upsampled maps are kept for the transform they came from: applying another
    transform of the same size, and then the first again, gives what a fresh
    Harmonizer gives for each."""
    from vcam_harmonize.harmonizer import ColourTransform

    frame, mask = _scene(90, 160)
    rng = torch.Generator().manual_seed(0)
    transforms = [ColourTransform(torch.rand(1, 3, 16, 16, generator=rng) * 2,
                                  torch.rand(1, 3, 16, 16, generator=rng) - 0.5)
                  for _ in range(2)]
    fresh = [Harmonizer(res=16)._apply(frame, mask, t) for t in transforms]
    assert not np.array_equal(fresh[0], fresh[1])
    reusing = Harmonizer(res=16)
    for t, expected in zip(transforms + transforms[:1], fresh + fresh[:1], strict=True):
        np.testing.assert_array_equal(reusing._apply(frame, mask, t), expected)
        np.testing.assert_array_equal(reusing._apply(frame, mask, t), expected)


def test_in_place_writes_the_result_into_the_composite(harmonizer):
    frame, mask = _scene(90, 160)
    harmonizer.reset()
    expected = harmonizer.harmonize(frame, mask)
    assert not np.array_equal(expected, frame)
    harmonizer.reset()
    target = frame.copy()
    out = harmonizer.harmonize(target, mask, in_place=True)
    assert out is target
    np.testing.assert_array_equal(target, expected)
    with pytest.raises(InputError, match="C-ordered, writable"):
        harmonizer.harmonize(np.asfortranarray(frame), mask, in_place=True)
    frozen = frame.copy()
    frozen.flags.writeable = False
    with pytest.raises(InputError, match="C-ordered, writable"):
        harmonizer.harmonize(frozen, mask, in_place=True)


def _counting(harmonizer):
    """Count the harmonizer's network runs (refreshes)."""
    runs = []
    run = harmonizer._refresh

    def counted(job):
        runs.append(job.timestamp)
        return run(job)

    harmonizer._refresh = counted
    return runs


def test_the_refresh_scheduler_runs_rarely_on_a_still_clip_and_at_once_on_a_change():
    """The camera's schedule: once a still person (camera noise only) has been calm for
    IDLE_AFTER seconds, the network runs once every IDLE_REFRESH seconds instead of on
    every refresh_every-th frame; a change of light and a scene cut each get a run on
    that very frame."""
    from vcam_harmonize.temporal import IDLE_AFTER, IDLE_REFRESH

    frame, mask = _scene(seed=4)
    harmonizer = Harmonizer(res=64, smoothing=0.9, refresh_every=3,
                            idle_refresh=IDLE_REFRESH)
    runs = _counting(harmonizer)
    seconds = IDLE_AFTER + 3
    for index, image in enumerate(_noisy_clip(frame, int(30 * seconds), seed=4)):
        harmonizer.harmonize(image, mask, timestamp=index / 30)
    calm = [t for t in runs if t >= IDLE_AFTER]
    # a fixed schedule would have run 30 times in those 3 s
    assert 1 <= len(calm) <= 1 + int(3 // IDLE_REFRESH)
    assert len(runs) - len(calm) >= 30 * IDLE_AFTER / 3 - 1  # before: every 3rd frame
    # the light on the person changes: a run on the first frame of it
    darker = frame.copy()
    darker[mask > 0] = (darker[mask > 0] * 0.6).astype(np.uint8)
    before = len(runs)
    harmonizer.harmonize(darker, mask, timestamp=seconds)
    assert len(runs) > before and runs[-1] == seconds
    # a cut to another scene: at once too
    other = np.ascontiguousarray(frame[:, ::-1, ::-1])
    before = len(runs)
    harmonizer.harmonize(other, mask, timestamp=seconds + 0.5)
    assert len(runs) == before + 1 and runs[-1] == seconds + 0.5


def test_the_refresh_scheduler_follows_a_person_who_moves():
    """A person who moves gets the network every refresh_every-th frame, as before."""
    from vcam_harmonize.temporal import IDLE_REFRESH

    frame, _ = _scene(seed=5)
    harmonizer = Harmonizer(res=64, smoothing=0.9, refresh_every=3,
                            idle_refresh=IDLE_REFRESH)
    runs = _counting(harmonizer)
    for index in range(30):  # one second, the person 4 px further right on each frame
        mask = np.zeros(frame.shape[:2], np.float32)
        left = 40 + 4 * index
        mask[45:, left:left + 90] = 1
        harmonizer.harmonize(frame, mask, timestamp=index / 30)
    assert len(runs) == 10  # frames 0, 3, 6, ... 27


def test_with_a_colour_matrix_a_person_who_moves_in_a_calm_scene_needs_few_runs():
    """Once the light has been calm for IDLE_AFTER seconds, local maps follow a moving
    person every refresh_every-th frame; a colour matrix fits them wherever they are, so
    it runs every IDLE_REFRESH seconds only."""
    from vcam_harmonize.temporal import IDLE_AFTER, IDLE_REFRESH

    frame, _ = _scene(seed=5)
    late = {}
    for transform in ("local", "global"):
        harmonizer = Harmonizer(res=32, smoothing=0.9, refresh_every=3,
                                idle_refresh=IDLE_REFRESH, transform=transform)
        runs = _counting(harmonizer)
        for index in range(int(30 * (IDLE_AFTER + 3))):  # the person sways 16 px
            mask = np.zeros(frame.shape[:2], np.float32)
            left = 80 + int(round(16 * np.sin(index / 5)))
            mask[45:, left:left + 90] = 1
            harmonizer.harmonize(frame, mask, timestamp=index / 30)
        late[transform] = [t for t in runs if t > IDLE_AFTER + 0.1]
    assert len(late["local"]) >= 8  # each time the mask has moved far enough
    assert 1 <= len(late["global"]) <= 2


def test_a_fixed_schedule_runs_every_nth_frame_whatever_the_scene():
    frame, mask = _scene(seed=6)
    harmonizer = Harmonizer(res=64, smoothing=0.9, refresh_every=4)  # idle_refresh None
    runs = _counting(harmonizer)
    for index, image in enumerate(_noisy_clip(frame, 20, seed=6)):
        harmonizer.harmonize(image, mask, timestamp=index / 30)
    assert len(runs) == 5


def test_refresh_scheduler_rules():
    from vcam_harmonize.temporal import MOVED, RefreshScheduler

    still = np.zeros((18, 32), np.float32)
    moved = still + MOVED
    schedule = RefreshScheduler(min_frames=3, idle=1.0, calm_after=2.0)
    assert schedule.due(still, 0.0)  # nothing ran yet
    schedule.ran(still, 0.0)
    assert not schedule.due(still, 0.03) and not schedule.due(still, 0.07)  # too soon
    assert schedule.due(still, 0.1)  # not calm yet: every third frame
    schedule.ran(still, 1.9)
    for t in (2.0, 2.03, 2.07, 2.5):  # calm for 2 s since the start: idle
        assert not schedule.due(still, t)
    assert schedule.due(still, 2.9)  # a second since the last run
    schedule.ran(still, 3.1)
    # the person moved: due again at the third frame, and not while it holds still
    assert [schedule.due(moved, t) for t in (3.13, 3.16, 3.2)] == [False, False, True]
    schedule.ran(moved, 3.2)
    assert not any(schedule.due(moved, t) for t in (3.23, 3.26, 3.3, 3.5))
    schedule.changed(5.2)  # a change of light: every third frame again for 2 s
    assert schedule.due(moved, 5.23)  # four frames since the last run
    schedule.ran(moved, 5.23)
    assert [schedule.due(moved, t) for t in (5.26, 5.3, 5.33)] == [False, False, True]
    schedule.ran(moved, 5.33)
    assert [schedule.due(moved, t) for t in (7.13, 7.16, 7.2)] == [False, False, True]
    schedule.ran(moved, 7.2)
    assert not any(schedule.due(moved, t) for t in (7.23, 7.26, 7.3, 7.5))  # calm again
    schedule.reset()
    assert schedule.due(still, 6.0)  # after a reset at once
    fixed = RefreshScheduler(min_frames=2, idle=None)
    fixed.ran(still, 0.0)
    assert [fixed.due(still, t) for t in (10.0, 10.03)] == [False, True]


@pytest.mark.parametrize("shape", [(720, 1280, 3), (720, 1280), (60, 84, 3), (37, 53)])
def test_every_8th_is_numpys_decimation(shape):
    image = np.random.default_rng(4).integers(0, 256, shape).astype(np.uint8)
    for array in (image, image.astype(np.float32) / 255):
        out = every_8th(array)
        assert out.flags.c_contiguous and out.dtype == array.dtype
        np.testing.assert_array_equal(out, array[::8, ::8])


def test_noise_mix_takes_the_noise_to_the_target_through_any_gain():
    from vcam_harmonize.harmonizer import NOISE_MIX_MAX, NOISE_TARGET, noise_mix

    assert noise_mix(0.8) == 0.0 and noise_mix(NOISE_TARGET) == 0.0
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (400, 400)).astype(np.float32)
    for gain in (1.0, 1.1, 1.3):
        w = noise_mix(gain)
        mixed = (1 - w) * noise + w * cv2.blur(noise, (3, 3))
        assert gain * mixed[2:-2, 2:-2].std() == pytest.approx(NOISE_TARGET, rel=0.02)
    assert noise_mix(5.0) == NOISE_MIX_MAX  # never more than that much of the blur
    assert noise_mix(1.3, target=1.3) == 0.0


def test_a_colour_matrix_blurs_by_its_largest_gain():
    from vcam_harmonize.harmonizer import ColourMatrix, noise_mix

    matrix = torch.tensor([[0.8, 0.0, 0.0, 0.1], [0.0, 1.25, 0.0, 0.0],
                           [0.0, 0.0, 0.9, 0.0]], dtype=torch.float64)
    assert ColourMatrix(matrix).smoothing() == pytest.approx(noise_mix(1.25))
    # no correction: just enough to bring the noise to NOISE_TARGET, a light touch
    identity = ColourMatrix(torch.eye(3, 4, dtype=torch.float64)).smoothing()
    assert identity == pytest.approx(noise_mix(1.0)) and 0 < identity < 0.1
    assert ColourMatrix(0.9 * torch.eye(3, 4, dtype=torch.float64)).smoothing() == 0.0


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
    return str(path)


def test_bfloat16_is_taken_only_where_the_cpu_computes_it(tmp_path):
    from vcam_harmonize.harmonizer import cpu_computes_bfloat16

    detect = cpu_computes_bfloat16.__wrapped__  # the cache holds this machine's answer
    native = torch.backends.mkldnn.is_available()
    assert detect(_cpuinfo(tmp_path, "fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni")) is native
    assert detect(_cpuinfo(tmp_path, "fpu sse2 avx2 amx_tile amx_bf16")) is native
    # AVX-512 alone emulates bfloat16: slower than float32
    assert detect(_cpuinfo(tmp_path, "fpu sse2 avx2 avx512f avx512bw avx512_vnni")) is False
    assert detect(str(tmp_path / "missing")) is False


def test_precision_picks_the_network_dtype_per_device(monkeypatch):
    from vcam_harmonize import harmonizer as module

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert module.autocast_dtype(cuda) is torch.float16
    assert module.autocast_dtype(cuda, "float32") is None
    monkeypatch.setattr(module, "cpu_computes_bfloat16", lambda: True)
    assert module.autocast_dtype(cpu) is torch.bfloat16
    assert module.autocast_dtype(cpu, "float32") is None
    monkeypatch.setattr(module, "cpu_computes_bfloat16", lambda: False)
    assert module.autocast_dtype(cpu) is None
    with pytest.raises(InputError, match="precision must be one of auto, float32"):
        module.autocast_dtype(cpu, "half")
    with pytest.raises(InputError, match="precision"):
        Harmonizer(precision="fp16")


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_the_bfloat16_network_runs_in_bfloat16_and_shows_what_float32_shows(monkeypatch):
    from vcam_harmonize import harmonizer as module

    monkeypatch.setattr(module, "cpu_computes_bfloat16", lambda: True)
    frame, mask = _scene()
    low, full = Harmonizer(res=128), Harmonizer(res=128, precision="float32")
    assert (low.network_precision, full.network_precision) == ("bfloat16", "float32")
    seen = []
    conv = next(m for m in low.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    out_low, out_full = low.harmonize(frame, mask), full.harmonize(frame, mask)
    assert seen == [torch.bfloat16]
    assert out_low.dtype == np.uint8 and out_low.shape == frame.shape
    diff = np.abs(out_low.astype(int) - out_full.astype(int))
    changed = np.abs(out_full.astype(int) - frame.astype(int)).max()
    assert changed > 5  # the correction is visible...
    assert diff.max() <= 2 and diff.mean() < 0.3  # ...and bfloat16 leaves it as it is


def _record_network_inputs(harmonizer):
    seen = []
    forward = harmonizer.model.forward

    def recorder(image, mask, *args, **kwargs):
        seen.append((image.clone(), mask.clone()))
        return forward(image, mask, *args, **kwargs)

    harmonizer.model.forward = recorder
    return seen


@pytest.mark.parametrize("transform", ["global", "local"])
def test_a_run_that_follows_a_change_reads_the_last_regular_frame_relit(transform):
    """With the colour matrix, the run that follows a lamp reads the frame of the last
    regular run (where the person stood then) with its colours scaled to this frame's
    light; the local maps belong to where the person is, so theirs reads this frame."""
    from vcam_harmonize.temporal import mean_colours

    frame, mask = _scene(seed=5)
    moved_mask = np.roll(mask, 12, axis=1)  # the person has moved by 12 px
    lamp = frame.astype(np.float32)
    lamp[moved_mask > 0] *= np.float32([1.25, 1.15, 1.0])
    lamp = lamp.clip(0, 255).astype(np.uint8)
    harmonizer = Harmonizer(smoothing=0.95, refresh_every=24, transform=transform)
    seen = _record_network_inputs(harmonizer)
    for index in range(20):  # past the change detector's half second of warm-up
        harmonizer.harmonize(frame, mask, timestamp=index / 30)
    assert len(seen) == 1  # the first, regular run
    harmonizer.harmonize(lamp, moved_mask, timestamp=20 / 30)
    assert len(seen) == 2  # the change is followed at once
    (first_image, first_mask), (image, small_mask) = seen
    now_image, now_mask = harmonizer._small(lamp, moved_mask)
    if transform == "local":
        assert torch.equal(image, now_image) and torch.equal(small_mask, now_mask)
        return
    assert torch.equal(small_mask, first_mask) and not torch.equal(small_mask, now_mask)
    # the old frame, re-lit: its person's and background's mean colours are this frame's
    np.testing.assert_allclose(mean_colours(image, small_mask), mean_colours(now_image, now_mask),
                               atol=2 / 255)
    assert np.abs(mean_colours(image, small_mask)
                  - mean_colours(first_image, first_mask))[0].max() > 0.05
