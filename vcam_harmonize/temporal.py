"""Temporal building blocks of the Harmonizer: smoothing in time, telling a change of
light from noise, and following it without losing the average.

- :func:`time_constant` / :func:`keep_after`: ``smoothing`` (the weight of the past per
  1/30 s) as seconds, and the weight of the past after any elapsed time.
- :func:`frame_statistics` and :class:`ChangeDetector`: the colour statistics of a frame
  (person and background, mean and spread) and when they move beyond their own noise.
- :func:`undo_gains` / :func:`undo_change`: per-channel gains that take a frame back to
  the light before a change.
- :class:`RefreshScheduler`: when the network runs again on a still, a moving or a
  changed scene.
- ``stats_hook`` objects for PHNet's forward pass (see
  :mod:`vcam_harmonize.models.streaming`): :class:`AverageReader`,
  :class:`CorrectedAverage` and the :class:`ChangeCorrection` they share.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from vcam_harmonize.models import EMAStatistics

#: ``smoothing`` is the weight of the past per this many seconds (a frame at 30 fps)
SMOOTHING_PERIOD = 1 / 30
#: a change is undone with gains in this range (a darker or brighter light)
UNDO_GAINS = (0.25, 4.0)
#: a frame statistic has changed when it lies more than CHANGE_SIGMAS times its mean
#: frame-to-frame deviation plus CHANGE_FLOOR grey levels off its running mean
CHANGE_SIGMAS = 5.0
CHANGE_FLOOR = 3.0
#: time constants of that running mean and of the deviation (s)
CHANGE_MEAN_TIME = 0.2
CHANGE_NOISE_TIME = 1.0
#: no change is told in the first this many seconds (while the deviation is learnt)
CHANGE_WARMUP = 0.5
#: a calm scene gets a network run this often (s)...
IDLE_REFRESH = 2.0
#: ...once its light has been calm this long (s; about nine time constants of the
#: default smoothing, so the averaged statistics have settled)
IDLE_AFTER = 6.0
#: the person has moved when the mask's thumbnail differs from the one of the last run by
#: this many grey levels on average (a still person under camera noise: under 0.5; the
#: demo's swaying person: about 7 in 0.4 s)
MOVED = 12.0


def time_constant(smoothing: float) -> float:
    """Seconds of the moving average that ``smoothing`` (the weight of the past per
    :data:`SMOOTHING_PERIOD`) stands for; 0 for no smoothing."""
    return -SMOOTHING_PERIOD / math.log(smoothing) if smoothing > 0 else 0.0


def keep_after(elapsed: float, tau: float) -> float:
    """Weight of the past after ``elapsed`` seconds of a moving average with time
    constant ``tau`` (0: no memory)."""
    if tau <= 0:
        return 0.0
    return math.exp(-max(elapsed, 0.0) / tau)


def frame_statistics(image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """Mean and standard deviation per channel of the person (``mask >= 0.5``) and of
    the background, in grey levels: ``(12,)``; None when either is empty.

    Args:
        image: uint8 RGB ``(h, w, 3)``, typically a decimated frame.
        mask: float ``(h, w)``.
    """
    person = np.ascontiguousarray(mask >= 0.5, dtype=np.uint8)
    count = cv2.countNonZero(person)
    if count == 0 or count == person.size:
        return None
    image = np.ascontiguousarray(image)
    fg_mean, fg_std = cv2.meanStdDev(image, mask=person)
    bg_mean, bg_std = cv2.meanStdDev(image, mask=1 - person)
    return np.concatenate([fg_mean, fg_std, bg_mean, bg_std]).ravel()


class ChangeDetector:
    """Tells when a frame's statistics move beyond their own noise.

    It keeps a running mean of the statistics (time constant :data:`CHANGE_MEAN_TIME`)
    and of their absolute deviation from it (:data:`CHANGE_NOISE_TIME`, each frame's
    deviation counted up to the threshold): camera noise, a jittering mask edge, a
    person who moves. After :data:`CHANGE_WARMUP` seconds, a frame with any statistic
    more than :data:`CHANGE_SIGMAS` deviations plus :data:`CHANGE_FLOOR` grey levels off
    the mean is a change; the mean then jumps to it, so a new steady light is no change
    on the next frame.
    """

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.noise: np.ndarray | None = None
        self.before: np.ndarray | None = None  # the mean before the last change
        self.seen = 0.0                        # seconds of frames taken

    def reset(self) -> None:
        """Forget the statistics seen so far."""
        self.mean = self.noise = self.before = None
        self.seen = 0.0

    def update(self, stats: np.ndarray | None, elapsed: float) -> bool:
        """Take a frame's statistics, ``elapsed`` seconds after the last; True on a change."""
        if stats is None:
            return False
        if self.mean is None or self.noise is None or self.mean.shape != stats.shape:
            self.mean, self.noise = stats.copy(), np.zeros_like(stats)
            return False
        deviation = np.abs(stats - self.mean)
        threshold = CHANGE_SIGMAS * self.noise + CHANGE_FLOOR
        self.seen += elapsed
        self.noise += (1 - keep_after(elapsed, CHANGE_NOISE_TIME)) * \
            (np.minimum(deviation, threshold) - self.noise)
        if self.seen >= CHANGE_WARMUP and (deviation > threshold).any():
            self.before, self.mean = self.mean, stats.copy()
            return True
        self.mean += (1 - keep_after(elapsed, CHANGE_MEAN_TIME)) * (stats - self.mean)
        return False


class RefreshScheduler:
    """When the network should run again, by how much the scene changed: a person who
    has been still for a while needs few runs.

    A run is due once at least ``min_frames`` frames have passed since the last one,
    unless the light has been calm for ``calm_after`` seconds (no reset and no change of
    light, :meth:`changed`, in that time: the averaged statistics have settled). In a
    calm scene a run is due when the person has moved (the mask's 32x18 thumbnail
    :data:`MOVED` grey levels or more off the one of the last run) and else every
    ``idle`` seconds. With ``idle`` None it is due every ``min_frames`` frames whatever the scene
    (a fixed schedule). The runs that follow a change of light, and the one after a
    scene cut, are the Harmonizer's own.
    """

    def __init__(self, min_frames: int, idle: float | None = IDLE_REFRESH,
                 moved: float = MOVED, calm_after: float = IDLE_AFTER) -> None:
        self.min_frames, self.idle, self.moved = min_frames, idle, moved
        self.calm_after = calm_after
        self.reset()

    def reset(self) -> None:
        """Forget the last run and the calm so far: the next frame is due."""
        self._frames = self.min_frames
        self._at = -math.inf
        self._mask: np.ndarray | None = None
        self._since: float | None = None  # calm since this time

    def changed(self, now: float) -> None:
        """The light changed: the calm starts again."""
        self._since = now

    def due(self, mask_thumb: np.ndarray, now: float) -> bool:
        """Take a frame (its mask thumbnail in grey levels and its time); True when the
        network should run on it. Call once per frame."""
        self._frames += 1
        if self._since is None:
            self._since = now
        if self._frames < self.min_frames:
            return False
        if self.idle is None or self._mask is None or now - self._since < self.calm_after:
            return True
        moved = float(np.abs(mask_thumb - self._mask).mean()) >= self.moved
        return moved or now - self._at >= self.idle

    def ran(self, mask_thumb: np.ndarray, now: float) -> None:
        """The network ran on this frame."""
        self._frames, self._at, self._mask = 0, now, mask_thumb


def mask_thumbnail(sparse_mask: np.ndarray) -> np.ndarray:
    """A 32x18 thumbnail in grey levels (0..255) of a mask already cut down to every 8th
    pixel (``mask[::8, ::8]``, float in [0, 1])."""
    sparse = np.ascontiguousarray(sparse_mask, dtype=np.float32)
    return cv2.resize(sparse, (32, 18), interpolation=cv2.INTER_AREA) * 255


Stats = dict[str, torch.Tensor]


def _matches(held: Stats | None, stats: Stats) -> bool:
    return held is not None and all(k in held and held[k].shape == v.shape
                                    for k, v in stats.items())


class AverageReader:
    """A ``stats_hook`` that hands a forward pass the statistics of ``held`` (name ->
    statistics, where it has them) and keeps what the pass read itself in ``raw``."""

    def __init__(self, held: dict[str, Stats]) -> None:
        self.held = held
        self.raw: dict[str, Stats] = {}

    def __call__(self, name: str, stats: Stats) -> Stats:
        self.raw[name] = {k: v.detach() for k, v in stats.items()}
        held = self.held.get(name)
        return held if _matches(held, stats) else stats


class ChangeCorrection:
    """What a change of light did to the statistics PHNet reads, for the frames of
    before it that are still in the average.

    ``base`` is the average when the change came. Each pair of readings of one frame
    (as it is, and with the change undone on ``base``) adds its difference, a log ratio
    for spreads; the mean difference, times ``old`` (the weight the frames of before the
    change still have in the average, shrinking as new frames join it), moves the
    average that the network is handed.
    """

    def __init__(self, key: tuple[int, int], average: dict[str, Stats]) -> None:
        self.key = key
        self.base = {name: dict(held) for name, held in average.items()}
        self.old = 1.0
        self.sums: dict[str, Stats] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, now: Stats, before: Stats | None) -> None:
        """Add the difference of one pair's readings of block ``name``."""
        if not _matches(before, now):
            return
        low, high = (math.log(g) for g in UNDO_GAINS)
        sums = self.sums.setdefault(name, {k: torch.zeros_like(v) for k, v in now.items()})
        for k, v in now.items():
            if "std" in k:
                sums[k] = sums[k] + (v.clamp_min(1e-6) / before[k].clamp_min(1e-6)).log() \
                    .clamp(low, high)
            else:
                sums[k] = sums[k] + (v - before[k])
        self.counts[name] = self.counts.get(name, 0) + 1

    def apply(self, name: str, held: Stats) -> Stats:
        """Block ``name``'s averaged statistics moved by the correction."""
        sums = self.sums.get(name)
        if sums is None or not _matches(sums, held):
            return held
        weight = self.old / self.counts[name]
        return {k: v * (weight * sums[k]).exp() if "std" in k else v + weight * sums[k]
                for k, v in held.items()}

    def fold(self, average: dict[str, Stats]) -> None:
        """Apply the correction to ``average`` itself, for good (a new change comes)."""
        for name in list(average):
            average[name] = self.apply(name, average[name])


class CorrectedAverage:
    """The ``stats_hook`` of a refresh: blends what the pass reads into ``average`` (when
    ``blend``), and hands the pass the average moved by ``correction``; with ``before``
    (the readings of the frame with the change undone) it first adds this pair to the
    correction."""

    def __init__(self, average: EMAStatistics, blend: bool,
                 correction: ChangeCorrection | None = None,
                 before: dict[str, Stats] | None = None) -> None:
        self.average, self.blend = average, blend
        self.correction, self.before = correction, before

    def __call__(self, name: str, stats: Stats) -> Stats:
        if self.blend:
            held = self.average(name, stats)
        else:
            held = self.average.state.get(name)
            held = held if _matches(held, stats) else stats
        if self.correction is None:
            return held
        if self.before is not None:
            self.correction.add(name, stats, self.before.get(name))
        return self.correction.apply(name, held)


def undo_gains(before: np.ndarray | None, after: np.ndarray) -> np.ndarray | None:
    """Per-channel gains ``(2, 3)`` (person, background) that take the mean colours of
    :func:`frame_statistics` ``after`` a change back to those ``before`` it."""
    if before is None:
        return None
    means = np.stack([before[0:3], after[0:3], before[6:9], after[6:9]]).clip(1.0, None)
    return np.clip(np.stack([means[0] / means[1], means[2] / means[3]]), *UNDO_GAINS)


def mean_colours(image: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """float64 ``(2, 3)``: the mean colour of the person (weighted by ``mask`` ``(1, 1, H,
    W)``) and of the background of ``image`` ``(1, 3, H, W)`` in [0, 1]; a side with no
    weight gets zeros."""
    image, mask = image.float(), mask.float()
    sides = torch.stack([(image * mask).sum((0, 2, 3)), (image * (1 - mask)).sum((0, 2, 3))])
    weights = torch.stack([mask.sum(), (1 - mask).sum()]).clamp_min(1e-6)[:, None]
    return (sides / weights).double().cpu().numpy()


def undo_change(image: torch.Tensor, mask: torch.Tensor, gains: np.ndarray) -> torch.Tensor:
    """``image`` ``(1, 3, H, W)`` in [0, 1] with the person's gains where ``mask``
    ``(1, 1, H, W)`` is and the background's elsewhere, mixed by the mask."""
    person, background = (torch.as_tensor(g, dtype=image.dtype, device=image.device)
                          .view(1, 3, 1, 1) for g in gains)
    return (image * (mask * person + (1 - mask) * background)).clamp(0, 1)
