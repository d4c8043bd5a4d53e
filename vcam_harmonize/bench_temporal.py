"""``python -m vcam_harmonize.bench --temporal``: how the harmonized person behaves in time.

Two 5-second clips of 640x360 frames at 30 fps, through the public :class:`Harmonizer`
with frame timestamps:

- ``synthetic``: a static portrait, camera noise (sigma 3), the mask's edge jittering by
  1-3 px every frame (in or out of an edge cut a few pixels inside the photo's mask, as
  the demo clip cuts its person), and the virtual background 25 % brighter from frame 60;
- ``person``: another person who sways and leans (up to about 2 px a frame), with the
  same noise and jitter, and a warm lamp switched on at frame 65 (the camera picture
  gets brighter; the background stays).

Both persons are photos of ``../shared/datasets/people`` that training holds out
(:data:`STATIC_PERSON`, :data:`MOVING_PERSON`; tests/camera checks them against the
training split). Each clip runs unsmoothed with PHNet on every frame (for comparison),
and with the smoothing asked for, with PHNet on every ``refresh_every``-th frame and on
every frame, each of those also on the same clip lit the new way from its first frame
(frame for frame the same noise, jitter and movement). Per run:

- ``flicker_ratio``: the mean absolute frame-to-frame change of the output on the
  person's core (the mask eroded well past the jitter), over the input's; measured in
  the person's own coordinates (each frame warped back to the photo), so movement is
  not counted, and outside the half second after the step, where the output is meant
  to move;
- ``settle_frames`` / ``settle_s``: frames (seconds) after the step until the person's
  mean (over the core's pixels and channels) stays within 1 grey level of the same
  settings' on the clip lit the new way from its first frame; ``settle_s_each_channel``
  asks the same of each channel's mean (the colour, not only the brightness). The
  unsmoothed output is no reference for this: with the mask edge jittering, PHNet's
  answer moves by several grey levels from one frame to the next
  (``unsmoothed_mean_change``), so no smoothed output stays within 1 level of it; the
  lit-from-the-start run shares that noise frame for frame, so where the two agree the
  old light is forgotten;
- ``mean_change``: the mean change of the person's mean from one frame to the next,
  outside that half second: the shimmer of the colour as a whole;
- ``max_frame_change``: its largest change from one frame to the next after the step:
  how much of the move happens in one frame (the input's own jump included).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from vcam_harmonize.backgrounds import default_backgrounds
from vcam_harmonize.demo import cut_out_alpha
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.images import cover_crop, read_image

#: the people photos beside the repository checkout (the ``shared/`` folder next to it)
PEOPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "people"
#: persons of the people set's held-out split (``person_splits(root, 0.1, seed 0)`` in
#: training); the camera never imports training, tests/camera checks that they are held out
STATIC_PERSON = "london_001_neutral"
MOVING_PERSON = "london_002_smiling"
HELD_OUT_PEOPLE = "person_splits(people, 0.1, seed 0)"
FPS = 30.0
CLIP_FRAMES = 150
#: (width, height) of the clips' frames
CLIP_SIZE = (640, 360)
NOISE_SIGMA = 3.0
#: the mask's edge moves in or out by 1 to this many pixels every frame
JITTER_PX = 3
#: the person's core: the photo's mask eroded by this many photo pixels
CORE_INSET = 12
#: the output may move for this long after the step without counting as flicker
SETTLE_TARGET_S = 0.5
TARGET_FLICKER_RATIO = 1.0
#: a person mean within this many grey levels of the reference's counts as settled
SETTLE_LEVELS = 1.0


@dataclass(frozen=True)
class ClipSpec:
    """One temporal test clip."""

    name: str
    person: str
    step: int                           # the frame from which the light differs
    moving: bool = False
    background_gain: float = 1.0        # the virtual background's brightness after the step
    light: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the camera's RGB gains after it
    frames: int = CLIP_FRAMES


CLIPS = (
    ClipSpec("synthetic", STATIC_PERSON, step=60, background_gain=1.25),
    ClipSpec("person", MOVING_PERSON, step=65, moving=True, light=(1.22, 1.14, 1.02)),
)


def people_folder() -> Path | None:
    """The people photos: beside the checkout, else ``../shared`` from the current folder;
    None when neither is there."""
    for folder in (PEOPLE, Path("..") / "shared" / "datasets" / "people"):
        if (folder / "images").is_dir():
            return folder
    return None


@dataclass
class Clip:
    """A clip's frames, made on the fly (the same ones every time), and the person's core."""

    spec: ClipSpec
    photo: np.ndarray          # uint8 RGB (h, w, 3)
    mask: np.ndarray           # float32 (h, w), the photo's person mask
    core: np.ndarray           # bool (h, w): the photo's pixels that are measured
    background: np.ndarray     # uint8 RGB (H, W, 3)
    size: tuple[int, int]

    def placement(self, index: int) -> np.ndarray:
        """The 2x3 matrix that puts the photo into frame ``index``: the photo 95 % of the
        frame's height, standing on its bottom edge; swaying and leaning when moving."""
        width, height = self.size
        photo_h, photo_w = self.photo.shape[:2]
        t = index / FPS
        sway = math.sin(2 * math.pi * t / 4.0) if self.spec.moving else 0.0
        lean = math.sin(2 * math.pi * t / 2.7) if self.spec.moving else 0.0
        scale = 0.95 * height / photo_h * (1 + 0.03 * lean)
        left = width / 2 + 0.035 * width * sway - scale * photo_w / 2
        top = height - scale * photo_h - 0.01 * height * (1 + lean)
        return np.float32([[scale, 0, left], [0, scale, top]])

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(composite uint8 (H, W, 3), mask float32 (H, W), placement (2, 3))`` a frame."""
        spec = self.spec
        for index in range(spec.frames):
            rng = np.random.default_rng(index)
            matrix = self.placement(index)
            camera = cv2.warpAffine(self.photo, matrix, self.size, flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
            mask = cv2.warpAffine(self.mask, matrix, self.size, flags=cv2.INTER_LINEAR)
            radius = int(rng.integers(1, JITTER_PX + 1))
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
            mask = (cv2.dilate if rng.random() < 0.5 else cv2.erode)(mask, kernel)
            after = index >= spec.step
            if after and spec.light != (1.0, 1.0, 1.0):
                camera *= np.float32(spec.light)
            camera += rng.normal(0.0, NOISE_SIGMA, camera.shape).astype(np.float32)
            background = self.background.astype(np.float32)
            if after and spec.background_gain != 1.0:
                background *= np.float32(spec.background_gain)
            alpha = mask[..., None]
            frame = camera * alpha + background * (1 - alpha)
            yield np.clip(frame + 0.5, 0, 255).astype(np.uint8), mask, matrix


def load_clip(spec: ClipSpec, size: tuple[int, int], root: Path) -> Clip:
    """The clip of ``spec`` at ``size`` = (width, height) from the people folder ``root``."""
    photo = read_image(root / "images" / f"{spec.person}.jpg")
    mask = cv2.imread(str(root / "masks" / f"{spec.person}.png"), cv2.IMREAD_GRAYSCALE)
    mask = cut_out_alpha(mask > 127)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * CORE_INSET + 1,) * 2)
    core = cv2.erode(mask, kernel) > 0.5
    core[-CORE_INSET:] = False  # the photo's bottom edge is no outline, but keep off it
    background = cover_crop(read_image(default_backgrounds()[0]), size)
    return Clip(spec, photo, mask, core, np.ascontiguousarray(background), size)


@dataclass
class Trace:
    """What one run of a clip left: per frame the person's mean colour (over the core's
    pixels) ``(N, 3)``, and per pair of frames the mean absolute change on the core
    ``(N - 1,)``."""

    means: np.ndarray
    changes: np.ndarray


def trace(clip: Clip, harmonize: Callable[[np.ndarray, np.ndarray, float], np.ndarray] | None
          ) -> Trace:
    """Run ``harmonize(composite, mask, timestamp)`` over the clip (None: the input itself)
    and measure the person in the photo's coordinates."""
    photo_h, photo_w = clip.photo.shape[:2]
    means, changes, previous = [], [], None
    for index, (frame, mask, matrix) in enumerate(clip.frames()):
        out = frame if harmonize is None else harmonize(frame, mask, index / FPS)
        back = cv2.warpAffine(out, matrix, (photo_w, photo_h),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        person = back[clip.core].astype(np.float32)
        means.append(person.mean(axis=0))
        if previous is not None:
            changes.append(float(np.abs(person - previous).mean()))
        previous = person
    return Trace(np.array(means), np.array(changes))


def steady_pairs(pairs: int, step: int) -> np.ndarray:
    """Which of ``pairs`` frame pairs (pair ``i``: frames ``i`` and ``i + 1``) lie outside
    the half second after the step: bool ``(pairs,)``."""
    keep = np.ones(pairs, bool)
    keep[max(step - 1, 0) : step - 1 + int(round(SETTLE_TARGET_S * FPS))] = False
    return keep


def flicker(result: Trace, step: int) -> float:
    """Mean frame-to-frame change on the core, outside the half second after the step."""
    return float(result.changes[steady_pairs(len(result.changes), step)].mean())


def settle_frames(result: Trace, reference: Trace, step: int, each_channel: bool = False
                  ) -> int:
    """Frames after the step until the person's mean (or with ``each_channel`` each
    channel's) stays within :data:`SETTLE_LEVELS` of the reference's; the clip's
    remaining length if it never does."""
    if each_channel:
        gap = np.abs(result.means - reference.means).max(axis=1)
    else:
        gap = np.abs(result.means.mean(axis=1) - reference.means.mean(axis=1))
    off = gap[step:] > SETTLE_LEVELS
    late = np.flatnonzero(off)
    return 0 if late.size == 0 else int(late[-1]) + 1


def run_clip(clip: Clip, make: Callable[[float, int], object], smoothing: float,
             refresh: int) -> dict:
    """Flicker and settle figures of one clip: ``make(smoothing, refresh_every)`` builds a
    Harmonizer. Each refresh setting runs on the clip and on the same clip lit the new
    way from its first frame (``lit``), frame for frame the same noise, jitter and
    movement: where the two agree, the old light is forgotten."""
    step = clip.spec.step
    source = trace(clip, None)
    input_flicker = flicker(source, step)

    def run(on: Clip, smooth: float, every: int) -> Trace:
        harmonizer = make(smooth, every)
        return trace(on, lambda f, m, t: harmonizer.harmonize(f, m, timestamp=t))

    unsmoothed = run(clip, 0.0, 1)
    figures = {"person": clip.spec.person, "step_frame": step,
               "input_flicker": round(input_flicker, 3),
               "unsmoothed_flicker_ratio": round(flicker(unsmoothed, step) / input_flicker, 3),
               "unsmoothed_mean_change": round(mean_change(unsmoothed, step), 2),
               "unsmoothed_move": round(abs(float(
                   unsmoothed.means[min(step + 15, len(unsmoothed.means) - 1):].mean()
                   - unsmoothed.means[min(15, step - 1):step].mean())), 2)}
    lit = Clip(replace(clip.spec, step=0), clip.photo, clip.mask, clip.core, clip.background,
               clip.size)
    for every in dict.fromkeys((refresh, 1)):
        result, reference = run(clip, smoothing, every), run(lit, smoothing, every)
        settle = settle_frames(result, reference, step)
        figures[f"refresh_every_{every}"] = {
            "flicker_ratio": round(flicker(result, step) / input_flicker, 3),
            "settle_frames": settle,
            "settle_s": round(settle / FPS, 3),
            "settle_s_each_channel": round(
                settle_frames(result, reference, step, each_channel=True) / FPS, 3),
            "mean_change": round(mean_change(result, step), 2),
            "max_frame_change": round(float(np.abs(np.diff(
                result.means[step - 1:].mean(axis=1))).max()), 2),
        }
    return figures


def mean_change(result: Trace, step: int) -> float:
    """Mean change of the person's mean from one frame to the next (grey levels),
    outside the half second after the step: the shimmer of the colour as a whole."""
    changes = np.abs(np.diff(result.means.mean(axis=1)))
    return float(changes[steady_pairs(len(changes), step)].mean())


def check_step(step: int) -> int:
    """A light step at frame ``step`` leaves a second before it and after it."""
    low, high = int(FPS), CLIP_FRAMES - int(FPS)
    if not low <= step <= high:
        raise InputError(f"the step frame must be {low} to {high} (a second before and "
                         f"after it in the {CLIP_FRAMES}-frame clips), got {step}")
    return step


def temporal_bench(make: Callable[[float, int], object], smoothing: float, refresh: int,
                   size: tuple[int, int] | None = None, step: int | None = None
                   ) -> dict | None:
    """The ``--temporal`` figures of both clips and whether they meet the targets
    (flicker_ratio <= 1.0 and settle_s <= 0.5 with both refresh settings); None without
    the people photos. ``step``: the frame of both clips' light step instead of their own
    (where it falls between the network's runs moves the settle time)."""
    specs = CLIPS if step is None else tuple(replace(s, step=check_step(step)) for s in CLIPS)
    root = people_folder()
    if root is None:
        return None
    size = size or CLIP_SIZE
    clips = {spec.name: run_clip(load_clip(spec, size, root), make, smoothing, refresh)
             for spec in specs}
    runs = [v for figures in clips.values() for k, v in figures.items()
            if k.startswith("refresh_every_")]
    met = all(r["flicker_ratio"] <= TARGET_FLICKER_RATIO and r["settle_s"] <= SETTLE_TARGET_S
              for r in runs)
    return {"fps": FPS, "width": size[0], "height": size[1], "smoothing": smoothing,
            "clips": clips, "targets_met": met}
