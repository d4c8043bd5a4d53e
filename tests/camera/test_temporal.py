"""The Harmonizer in time: smoothing defined in seconds, changes of light followed fast,
no flicker added (vcam_harmonize.temporal and the ``--temporal`` clips)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from vcam_harmonize import bench_temporal
from vcam_harmonize.harmonizer import CPU_REFRESH_EVERY, Harmonizer
from vcam_harmonize.temporal import ChangeDetector, frame_statistics, keep_after, time_constant

needs_people = pytest.mark.skipif(bench_temporal.people_folder() is None,
                                  reason="needs ../shared/datasets/people")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The network on one thread, as the camera's refresh thread runs it (two threads
    beside other work on a 2-core machine spend most of their time waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _scene(h=96, w=160, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    frame = np.stack([80 + 0.3 * x, 100 + 0.2 * y, 140 + 0 * x], -1).astype(np.float32)
    frame += rng.normal(0, 4, frame.shape)
    mask = np.zeros((h, w), np.float32)
    mask[h // 4 :, w // 3 : 2 * w // 3] = 1
    return frame, mask


def _with_background(frame, mask, gain):
    out = frame * mask[..., None] + frame * gain * (1 - mask[..., None])
    return out.clip(0, 255).astype(np.uint8)


def test_smoothing_is_a_time_constant_in_seconds():
    assert time_constant(0.0) == 0.0
    assert time_constant(0.95) == pytest.approx(-1 / (30 * math.log(0.95)))
    assert time_constant(0.95) == pytest.approx(0.65, abs=0.01)
    # the weight of the past after one frame at 30 fps is the setting itself
    assert keep_after(1 / 30, time_constant(0.8)) == pytest.approx(0.8)
    # ... and two frames at 15 fps weigh it the same as one second at any rate
    assert keep_after(1.0, time_constant(0.9)) == pytest.approx(0.9 ** 30)
    assert keep_after(0.5, 0.0) == 0.0 and keep_after(-1.0, 0.5) == 1.0


def _settle_seconds(refresh_every: int, fps: float, smoothing: float = 0.9) -> float:
    """Seconds after a background step until the person's mean is within 10 % of the
    move it makes, the change-following switched off (the steady smoothing alone)."""
    frame, mask = _scene(seed=7)
    before, after = _with_background(frame, mask, 1.0), _with_background(frame, mask, 1.2)
    harmonizer = Harmonizer(res=64, smoothing=smoothing, refresh_every=refresh_every)
    harmonizer._changes.update = lambda stats, elapsed: False
    fg = mask > 0
    step = int(round(2 * fps))  # two seconds of the old light, a refresh frame
    steps = int(round(4 * fps))
    means = np.array([harmonizer.harmonize(before if i < step else after, mask,
                                           timestamp=i / fps)[fg].mean()
                      for i in range(step + steps)])
    final, start = means[-1], means[step - 1]
    assert abs(final - start) > 2, "the step must move the harmonized person"
    off = np.flatnonzero(np.abs(means[step:] - final) > 0.1 * abs(final - start))
    return (off[-1] + 1) / fps if off.size else 0.0


def test_settle_time_in_seconds_is_the_same_at_refresh_intervals_1_and_12():
    """Before, the average moved once per network run: 12 times slower at every 12th
    frame. Now it moves in time; the refresh interval only samples it."""
    every_frame = _settle_seconds(1, 30.0)
    every_12th = _settle_seconds(CPU_REFRESH_EVERY, 30.0)
    assert 0.3 < every_frame < 2.5
    assert every_12th == pytest.approx(every_frame, abs=CPU_REFRESH_EVERY / 30)


def test_settle_time_in_seconds_does_not_depend_on_the_frame_rate():
    assert _settle_seconds(1, 15.0) == pytest.approx(_settle_seconds(1, 30.0), abs=0.15)


def test_frames_without_timestamps_come_at_the_configured_frame_rate():
    frame, mask = _scene(seed=3)
    clip = [_with_background(frame, mask, 1.0 + 0.02 * i) for i in range(8)]
    plain = Harmonizer(res=64, smoothing=0.9, refresh_every=3, fps=15.0)
    stamped = Harmonizer(res=64, smoothing=0.9, refresh_every=3)
    for i, image in enumerate(clip):
        np.testing.assert_array_equal(plain.harmonize(image, mask),
                                      stamped.harmonize(image, mask, timestamp=i / 15))


def test_the_transform_glides_between_network_runs_instead_of_stepping():
    """After a change the network ran once, but the frames' transform keeps moving on
    the frames that follow, in small steps."""
    frame, mask = _scene(seed=4)
    harmonizer = Harmonizer(res=64, smoothing=0.95, refresh_every=CPU_REFRESH_EVERY)
    harmonizer._changes.update = lambda stats, elapsed: False
    for i in range(24):
        harmonizer.harmonize(_with_background(frame, mask, 1.0), mask, timestamp=i / 30)
    fg = mask > 0
    bright = _with_background(frame, mask, 1.2)
    means = [harmonizer.harmonize(bright, mask, timestamp=(24 + i) / 30)[fg].mean()
             for i in range(CPU_REFRESH_EVERY)]  # the first of these is a network run
    moves = np.abs(np.diff(means))
    assert (moves > 0).sum() >= 3  # it moved on several frames without a network run
    assert moves.max() < 0.8 * abs(means[-1] - means[0]) + 1e-6


def test_change_detector_ignores_noise_and_tells_a_step():
    rng = np.random.default_rng(0)
    detector = ChangeDetector()
    base = np.full(12, 100.0)
    told = [detector.update(base + rng.normal(0, 1.0, 12), 1 / 30) for _ in range(60)]
    assert not any(told)
    stepped = base.copy()
    stepped[6:9] *= 1.25  # the background's mean colour, 25 % brighter
    assert detector.update(stepped + rng.normal(0, 1.0, 12), 1 / 30)
    np.testing.assert_allclose(detector.before[6:9], 100.0, atol=1.0)
    # the new light is the new normal: no second change on the next frames
    assert not any(detector.update(stepped + rng.normal(0, 1.0, 12), 1 / 30)
                   for _ in range(10))


def test_frame_statistics_are_the_person_and_background_colours():
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, :10] = (200, 100, 50)
    image[:, 10:] = (10, 20, 30)
    mask = np.zeros((10, 20), np.float32)
    mask[:, :10] = 1
    stats = frame_statistics(image, mask)
    np.testing.assert_allclose(stats[0:3], (200, 100, 50))
    np.testing.assert_allclose(stats[3:6], 0, atol=1e-6)
    np.testing.assert_allclose(stats[6:9], (10, 20, 30))
    assert frame_statistics(image, np.zeros_like(mask)) is None


def _make(smoothing: float, every: int) -> Harmonizer:
    return Harmonizer(smoothing=smoothing, refresh_every=every)


@pytest.fixture(scope="module")
def synthetic():
    """The ``--temporal`` synthetic clip, at 320x180 and cut one second after the step."""
    spec = bench_temporal.CLIPS[0]
    clip = bench_temporal.load_clip(replace(spec, frames=spec.step + 30), (320, 180),
                                    bench_temporal.people_folder())
    return bench_temporal.run_clip(clip, _make, 0.95, CPU_REFRESH_EVERY)


@needs_people
@pytest.mark.parametrize("every", [CPU_REFRESH_EVERY, 1])
def test_a_light_step_is_followed_within_half_a_second(synthetic, every):
    figures = synthetic[f"refresh_every_{every}"]
    assert synthetic["unsmoothed_move"] > 2  # the step moves the network's answer
    assert figures["settle_s"] <= bench_temporal.SETTLE_TARGET_S


@needs_people
def test_a_static_clip_flickers_no_more_than_its_input():
    """The synthetic portrait without its step: the harmonized person's frame-to-frame
    change stays below the camera noise's, at both refresh settings (unsmoothed, the
    network's own shimmer adds to it)."""
    spec = replace(bench_temporal.CLIPS[0], step=10**6, frames=40)
    clip = bench_temporal.load_clip(spec, (320, 180), bench_temporal.people_folder())
    source = bench_temporal.trace(clip, None).changes[1:].mean()
    for every in (CPU_REFRESH_EVERY, 1):
        harmonizer = _make(0.95, every)
        out = bench_temporal.trace(
            clip, lambda f, m, t, h=harmonizer: h.harmonize(f, m, timestamp=t))
        assert out.changes[1:].mean() <= source


def test_following_a_change_reads_the_undone_frame_with_the_statistics_pass_only():
    """Each run that follows a change reads the frame twice, as it is and with the
    change undone; the second reading needs only the statistics, so it is a
    ``read_statistics`` pass, never a whole forward."""
    frame, mask = _scene(seed=5)
    before, after = _with_background(frame, mask, 1.0), _with_background(frame, mask, 1.3)
    harmonizer = Harmonizer(res=64, smoothing=0.95, refresh_every=CPU_REFRESH_EVERY)
    calls = {"forward": 0, "statistics": 0}
    model = harmonizer.model
    forward, read = model.forward, model.read_statistics

    def counted_forward(*args, **kwargs):
        calls["forward"] += 1
        return forward(*args, **kwargs)

    def counted_read(*args, **kwargs):
        calls["statistics"] += 1
        return read(*args, **kwargs)

    model.forward, model.read_statistics = counted_forward, counted_read
    for i in range(30):  # past the change detector's warm-up
        harmonizer.harmonize(before, mask, timestamp=i / 30)
    runs_before = calls["forward"]
    assert calls["statistics"] == 0
    for i in range(30, 45):
        harmonizer.harmonize(after, mask, timestamp=i / 30)
    follows = calls["statistics"]
    assert follows >= 2  # the change was followed, each time with one statistics pass
    # ... and one whole forward each (a regular run may come on top)
    assert follows <= calls["forward"] - runs_before <= follows + 2


class _Identity:
    """Stands in for a Harmonizer: shows the composite as it is."""

    def harmonize(self, frame, mask, timestamp=None):
        return frame


@needs_people
def test_the_temporal_bench_moves_both_steps_to_the_frame_asked_for():
    result = bench_temporal.temporal_bench(lambda smoothing, every: _Identity(), 0.95, 24,
                                           size=(160, 90), step=90)
    assert [clip["step_frame"] for clip in result["clips"].values()] == [90, 90]
    # the input itself: the person's mean never comes within a level of the lit clip's
    # before the step, and is that clip's at once after it
    assert all(run["settle_s"] == 0 for clip in result["clips"].values()
               for key, run in clip.items() if key.startswith("refresh_every_"))


@pytest.mark.parametrize("step", [0, 29, 121, 400])
def test_a_step_frame_without_a_second_around_it_is_refused(step, capsys):
    from vcam_harmonize import bench

    with pytest.raises(bench_temporal.InputError, match="step frame must be 30 to 120"):
        bench_temporal.check_step(step)
    threads = torch.get_num_threads()  # the bench takes one, as the refresh thread does
    try:
        assert bench.main(["--temporal", "--step-frame", str(step)]) == 2
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert err.startswith("error: the step frame must be") and len(err.splitlines()) == 1
    assert bench.main(["--step-frame", "80", "--frames", "1"]) == 2  # without --temporal
    assert capsys.readouterr().err.splitlines() == [
        "error: --step-frame is a setting of --temporal; add --temporal"]


def test_mean_colours_are_the_person_and_the_background_means():
    from vcam_harmonize.temporal import mean_colours

    image = torch.zeros(1, 3, 4, 6)
    image[..., :3] = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)
    image[..., 3:] = torch.tensor([0.9, 0.5, 0.1]).view(1, 3, 1, 1)
    mask = torch.zeros(1, 1, 4, 6)
    mask[..., :3] = 1.0
    np.testing.assert_allclose(mean_colours(image, mask), [[0.2, 0.4, 0.6], [0.9, 0.5, 0.1]],
                               atol=1e-6)
    half = mask * 0.5  # a soft mask weighs each pixel by it
    np.testing.assert_allclose(mean_colours(image, half)[0], [0.2, 0.4, 0.6], atol=1e-6)
    assert mean_colours(image, torch.zeros_like(mask))[0].tolist() == [0.0, 0.0, 0.0]


@needs_people
@pytest.mark.parametrize("step", [80, 110])
def test_a_moving_person_settles_wherever_the_step_falls_between_regular_runs(step):
    """The steps of ``bench --temporal --step-frame 80`` and ``110``, which settled in 0.6
    and 0.73 s while the runs that follow a change read the current frame: the swaying
    person under the colour matrix's schedule, against the clip lit so from its start."""
    from vcam_harmonize.harmonizer import CPU_REFRESH_EVERY_GLOBAL
    from vcam_harmonize.temporal import IDLE_REFRESH

    spec = replace(bench_temporal.CLIPS[1], step=step, frames=step + 30)
    clip = bench_temporal.load_clip(spec, (320, 180), bench_temporal.people_folder())
    lit = replace(clip, spec=replace(spec, step=0))

    def run(on):
        harmonizer = Harmonizer(smoothing=0.95, refresh_every=CPU_REFRESH_EVERY_GLOBAL,
                                idle_refresh=IDLE_REFRESH)
        return bench_temporal.trace(on, lambda f, m, t: harmonizer.harmonize(f, m, timestamp=t))

    result, reference = run(clip), run(lit)
    assert np.abs(result.means[step - 1] - reference.means[step - 1]).mean() > 10  # a lamp
    settle = bench_temporal.settle_frames(result, reference, step) / bench_temporal.FPS
    assert settle <= bench_temporal.SETTLE_TARGET_S
