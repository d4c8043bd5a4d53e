"""The Harmonizer: PHNet at a low working resolution, applied as a colour transform.

PHNet runs on a ``res x res`` copy of the composite, and its (blended) prediction is
explained by a colour transform that every full-resolution frame gets, so the output
keeps every detail of the input at any size and between two network runs the last
transform serves new frames. Two kinds (``transform``):

- ``"global"`` (the default): one 3x4 colour matrix for the person, ``out = A @ rgb +
  b``, least squares over the person's pixels (weighted by the mask) with a light pull
  toward the identity. It does not depend on where the person is, so a transform made
  a moment ago still fits a person who has moved (no run is needed for movement, and on
  a CPU the network runs on every :data:`CPU_REFRESH_EVERY_GLOBAL`-th frame at most), and
  a frame applies it with one ``cv2.transform`` over the person's box. A matrix that
  raises contrast raises the camera's noise with it, so the colours it takes are mixed
  with a little of their 3x3 box blur, just enough that the noise comes out at most
  :data:`NOISE_TARGET` times as strong (:func:`noise_mix`; ``bench --temporal``: flicker
  ratios 0.96-0.97). On the held-out sets it is closer to the truth than the network's
  own output and than the local maps (docs/MODEL_CARD.md).
- ``"local"``: a local affine model per channel, ``out = a * composite +
  b``, fitted with a guided filter (He et al.'s fast guided-filter upsampling) to the
  prediction as the colour matrix above explains it (the matrix's correction of the
  composite, rather than the prediction itself: lower fMSE and higher PSNR on every
  held-out set, README "One colour matrix for the person"); the smooth ``a`` and ``b`` maps are
  upsampled to the frame. They belong to where the person was when the network ran. In
  flat windows (skin) the filter's regularisation lowers ``a``, which also damps the
  camera's noise there (and some texture). A person who moves needs a new run.

Temporal behaviour (``smoothing > 0``) is defined in time, not in frames or network
runs: ``smoothing`` is the weight of the past per 1/30 s, a time constant of
``-1 / (30 ln smoothing)`` seconds (0.9: 0.32 s, 0.95: 0.65 s, 0.98: 1.65 s) whatever
the frame rate and refresh interval, measured on the frames' timestamps.

- The PN statistics the network reads are averaged over its runs with that time
  constant: they are what makes its answer shimmer (a mask edge that moves by a pixel
  moves them).
- The colour transform the frames get glides toward the network's latest on every
  frame, with the same time constant up to :data:`GLIDE_TIME`, so between two runs it
  moves a little on each frame instead of stepping.
- Change-aware: when the colour statistics of the frame (person and background, mean and
  spread) move beyond their own frame-to-frame noise (a background switch, a lamp, the
  person stepping into other light), PHNet runs at once and every :data:`FAST_PERIOD`
  seconds for :data:`FAST_HOLD` seconds, each time twice on the same frame: as it is and with the
  change undone (per-channel gains of the person and the background). The mean
  difference of the paired readings, which the mask edge's noise hardly enters, moves the
  averaged statistics of before the change to the new light, so they follow at once and
  keep their average; meanwhile the transform glides with :data:`FAST_TIME_CONSTANT`.
  With the colour matrix that frame is the one of the last regular run, re-lit to this
  frame's light (the per-channel gains that take its person's and background's mean
  colours to this frame's): the network's answer moves with the pose of a moving
  person, so a follow run on the current frame would leave the answer of another pose
  than the regular runs' until the next of them (1.5 to 4.3 grey levels, up to 0.73 s
  on ``bench --temporal --step-frame``), where the re-lit frame keeps to theirs.
- :meth:`reset` and a scene cut (a jump of the frame's colours) forget everything; the
  average then restarts as the plain mean of the new frames.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import box_blur

from vcam_harmonize.compositing import (
    MASK_FLOOR,
    composite,
    composite_matrix,
    composite_transformed,
)
from vcam_harmonize.guided import guided_coefficients
from vcam_harmonize.models import EMAStatistics, InputError, PHNet, load_model
from vcam_harmonize.models.weights import default_weights_path
from vcam_harmonize.temporal import (
    MOVED,
    UNDO_GAINS,
    AverageReader,
    ChangeCorrection,
    ChangeDetector,
    CorrectedAverage,
    RefreshScheduler,
    frame_statistics,
    keep_after,
    mask_thumbnail,
    mean_colours,
    time_constant,
    undo_change,
    undo_gains,
)

log = logging.getLogger(__name__)

#: mean absolute change of a thumbnail of the composite (0..1) taken as a scene cut; each
#: channel of the thumbnail is scaled to the same mean first, so that a change of light
#: (a lamp, a brighter background) is no cut but a change to follow.
SCENE_CUT = 0.1
#: on a CPU, PHNet runs on every n-th frame at most (2.5 times a second from a 30 fps
#: camera) with the local maps, fewer while the scene is still; its colour transform
#: serves the frames between...
CPU_REFRESH_EVERY = 12
#: ...and on every n-th with the colour matrix, which needs no run when the person moves
#: (bench --pair: 1.76 against 2.07 at 12; its temporal targets and quality gap hold)
CPU_REFRESH_EVERY_GLOBAL = 24
#: the maps are kept at half the working resolution, but not below this side
MAP_SIDE_MIN = 32
#: guided-filter regularisation (in [0, 1] intensity units, squared).
GUIDED_EPS = 1e-3
#: the colour matrix's pull toward the identity (ridge weight per unit of mask weight):
#: at 1e-2 the held-out scores are those of 1e-3 within 1 %, and the corrected person's
#: frame-to-frame noise is lower (bench --temporal)
MATRIX_RIDGE = 1e-2
#: with the colour matrix the camera's noise comes out at most this strong (see
#: noise_mix; the matrix's own movement between runs adds about 1 %: bench --temporal
#: flicker ratios 0.96-0.97)
NOISE_TARGET = 0.95
#: ...with at most this much of the blur (noise std 0.58 of the camera's)
NOISE_MIX_MAX = 0.5
#: the kinds of colour transform (see the module's docstring)
TRANSFORMS = ("global", "local")
#: the frames' transform glides toward the network's with at most this time constant (s)
GLIDE_TIME = 0.2
#: after a change it follows with this one (s)...
FAST_TIME_CONSTANT = 0.08
#: ...for this long after the change (s)
FAST_HOLD = 0.3
#: meanwhile the network runs this often (s; each run reads the frame twice): at 0.2 the
#: temporal targets hold as at 0.1 (bench --temporal), with a third fewer runs on the
#: demo's lamp; at 0.25 the person clip settles in 1.0 s
FAST_PERIOD = 0.2
#: the frames get a new transform once the gliding one differs from theirs by this many
#: grey levels (anywhere): steps too small to see, and few full-size upsamplings
SHOW_STEP = 0.5
#: and at most once in each tick of this many seconds of the frames' clock, but while
#: following a change: each new one costs two full-size upsamplings
SHOW_PERIOD = 1 / 15
#: a longer gap between two frames counts as this long (s)
MAX_GAP = 1.0
#: the network's precision (``precision``): "auto" runs it in float16 on a CUDA GPU and
#: in bfloat16 on a CPU that computes bfloat16 itself (:func:`cpu_computes_bfloat16`),
#: float32 elsewhere; "float32" always in float32
PRECISIONS = ("auto", "float32")
#: /proc/cpuinfo flags of a CPU with bfloat16 arithmetic (AVX-512 BF16, AMX)
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_refresh_every(transform: str) -> int:
    """How often PHNet runs on a CPU at most (every n-th frame) for this kind of
    transform: :data:`CPU_REFRESH_EVERY` or :data:`CPU_REFRESH_EVERY_GLOBAL`."""
    return CPU_REFRESH_EVERY_GLOBAL if transform == "global" else CPU_REFRESH_EVERY


def check_res(res: int) -> int:
    """A working resolution must be a positive multiple of 8."""
    if isinstance(res, bool) or not isinstance(res, int) or res <= 0 or res % 8:
        raise InputError(f"--res must be a positive multiple of 8 (such as 256 or 512), "
                         f"got {res!r}")
    return res


def fit_affine(guide: torch.Tensor, target: torch.Tensor, radius: int,
               eps: float = GUIDED_EPS, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel local affine model ``target ~ a * guide + b`` (guided filter).

    Args:
        guide, target: ``(B, C, H, W)``.
        radius: window radius in pixels.
        backend: ``"opencv"`` (box filters on the CPU, several times cheaper than
            convolutions there), ``"torch"`` (stays on the tensors' device) or
            ``"auto"``: OpenCV for CPU tensors, torch otherwise. Both give the same maps.

    Returns:
        ``(a, b)`` maps, each ``(B, C, H, W)``, already box-averaged (smooth), on the
        device and in the dtype of ``guide``.
    """
    if backend == "auto":
        backend = "opencv" if guide.device.type == "cpu" else "torch"
    if backend not in ("opencv", "torch"):
        raise ValueError(f"unknown fit_affine backend {backend!r}")
    size = (2 * radius + 1, 2 * radius + 1)
    channels = guide.shape[1]
    if backend == "opencv":
        maps = [[guided_coefficients(g, p, size[0], eps)
                 for g, p in zip(gs, ps, strict=True)]  # per channel
                for gs, ps in zip(guide.float().numpy(), target.float().numpy(), strict=True)]
        ab = torch.from_numpy(np.array(maps)).to(guide.dtype)  # (B, C, 2, H, W)
        return ab[:, :, 0], ab[:, :, 1]
    # the four window means in one call: I, p, I*p, I*I
    means = box_blur(torch.cat([guide, target, guide * target, guide * guide], dim=1), size,
                     border_type="reflect")
    mean_i, mean_p, mean_ip, mean_ii = means.split(channels, dim=1)
    a = (mean_ip - mean_i * mean_p) / (mean_ii - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    return box_blur(torch.cat([a, b], dim=1), size, border_type="reflect").split(channels, dim=1)


def shrink(image: np.ndarray, res: int) -> np.ndarray:
    """Area-average ``image`` to ``res x res``, halving it first while both sides are
    at least twice ``res`` (an exact 2x area reduction is several times cheaper than
    OpenCV's general area resampling of a large frame)."""
    while image.shape[0] >= 2 * res and image.shape[1] >= 2 * res:
        half = (image.shape[1] // 2, image.shape[0] // 2)
        image = cv2.resize(image[: 2 * half[1], : 2 * half[0]], half,
                           interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (res, res), interpolation=cv2.INTER_AREA)


@dataclass
class ColourTransform:
    """Low-resolution ``a`` and ``b`` maps, ``(1, 3, h, w)`` each (the network's
    transform: half its working resolution)."""

    a: torch.Tensor
    b: torch.Tensor
    _low: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)

    def blend(self, other: ColourTransform, keep: float) -> ColourTransform:
        """``keep * self + (1 - keep) * other``."""
        return ColourTransform(torch.lerp(other.a, self.a, keep),
                               torch.lerp(other.b, self.b, keep))

    def difference(self, other: ColourTransform) -> float:
        """The most a pixel (0..255) can differ between this transform and ``other``:
        the largest ``255 * |da * I + db|`` over the maps and ``I`` in [0, 1], read on
        every 4th pixel of the maps (they are smooth: box-filtered twice)."""
        da = self.a[..., ::4, ::4] - other.a[..., ::4, ::4]
        db = self.b[..., ::4, ::4] - other.b[..., ::4, ::4]
        return 255 * float(torch.maximum(db.abs(), (da + db).abs()).max())

    def low_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """``(a, 255 * b)`` as float32 ``(h, w, 3)`` arrays, computed once: the form in
        which every frame applies them (``T = a * I + 255 * b``, ``I`` in grey levels)."""
        if self._low is None:
            def hwc(maps: torch.Tensor) -> np.ndarray:
                return np.ascontiguousarray(maps[0].permute(1, 2, 0).float().cpu().numpy())

            self._low = (hwc(self.a), hwc(self.b * 255))
        return self._low


def fit_matrix(image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
               ridge: float = MATRIX_RIDGE) -> torch.Tensor:
    """The 3x4 colour matrix ``M`` with ``target ~ M @ [rgb, 1]`` over the pixels,
    weighted least squares with ``ridge`` pulling ``M`` toward the identity.

    The sums run over every other pixel of every other row (twelve unknowns need far
    fewer than a quarter of a working frame's pixels; a quarter of the cost) in float32;
    the 4x4 system is solved in float64.

    Args:
        image, target: ``(1, 3, H, W)`` in [0, 1].
        weight: ``(1, 1, H, W)``, the mask.

    Returns:
        float64 ``(3, 4)`` on the CPU: ``[A | b]``, ``b`` in [0, 1] units; the identity
        where the weights are all (nearly) zero.
    """
    step = 2 if min(image.shape[-2:]) >= 32 else 1
    x = image[0, :, ::step, ::step].reshape(3, -1).float()
    t = target[0, :, ::step, ::step].reshape(3, -1).float()
    w = weight[0, :, ::step, ::step].reshape(1, -1).float()
    x = torch.cat([x, torch.ones_like(w)])
    xw = x * w
    normal, rhs = (xw @ x.T).double().cpu(), (xw @ t.T).double().cpu()
    total = float(normal[3, 3])  # the sum of the weights
    identity = torch.eye(3, 4, dtype=torch.float64)
    if not total > 1e-6 * w.shape[1]:
        return identity
    pull = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)) * (ridge * total)
    normal = normal + pull + 1e-9 * total * torch.eye(4, dtype=torch.float64)
    return torch.linalg.solve(normal, rhs + pull @ identity.T).T


def noise_mix(gain: float, target: float = NOISE_TARGET) -> float:
    """The weight ``w`` of a 3x3 box blur mixed into the colours, ``(1 - w) I + w
    blur(I)``, that takes independent pixel noise of std 1 down to ``target / gain``:
    with a colour matrix of largest gain ``gain`` on top, the camera's noise comes out
    at most ``target`` times as strong. 0 when the matrix alone keeps it there; at most
    :data:`NOISE_MIX_MAX`."""
    want = target / gain if gain > 0 else math.inf
    if want >= 1:
        return 0.0
    # the noise std after the mix is sqrt(1 - 16w/9 + 8w^2/9), 1/3 at its lowest (w = 1)
    inside = 1 - 9 * (1 - max(want, 1 / 3) ** 2) / 8
    return min(1 - math.sqrt(max(inside, 0.0)), NOISE_MIX_MAX)


#: the eight corners of the RGB cube in [0, 1] (where a colour matrix's change is largest)
_CUBE_CORNERS = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * 3)


@dataclass
class ColourMatrix:
    """One colour transform for the whole person: ``T = A @ rgb + b``, ``matrix`` =
    ``[A | b]`` float64 ``(3, 4)`` in [0, 1] units."""

    matrix: torch.Tensor
    _grey: np.ndarray | None = field(default=None, init=False, repr=False)
    _smooth: float | None = field(default=None, init=False, repr=False)

    def blend(self, other: ColourMatrix, keep: float) -> ColourMatrix:
        """``keep * self + (1 - keep) * other``."""
        return ColourMatrix(torch.lerp(other.matrix, self.matrix, keep))

    def difference(self, other: ColourMatrix) -> float:
        """The most a pixel (0..255) can differ between this transform and ``other``:
        ``255 * |dA @ rgb + db|`` at its largest over the colour cube (a corner)."""
        delta = (self.matrix - other.matrix).to(_CUBE_CORNERS.dtype)
        return 255 * float((_CUBE_CORNERS @ delta[:, :3].T + delta[:, 3]).abs().max())

    def smoothing(self) -> float:
        """How much of a 3x3 box blur the person's colours get before the matrix: what
        :func:`noise_mix` asks for the matrix's largest gain (its largest singular value:
        no colour direction of the noise grows more), computed once."""
        if self._smooth is None:
            gain = float(torch.linalg.matrix_norm(self.matrix[:, :3], ord=2))
            self._smooth = noise_mix(gain)
        return self._smooth

    def grey_matrix(self) -> np.ndarray:
        """float32 ``(3, 4)`` for colours in grey levels (``cv2.transform``'s form),
        computed once."""
        if self._grey is None:
            grey = self.matrix.clone()
            grey[:, 3] *= 255
            self._grey = grey.float().numpy()
        return self._grey


@functools.lru_cache(maxsize=1)
def cpu_computes_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 arithmetic (a flag of :data:`BF16_FLAGS` in Linux's
    ``cpuinfo``) and PyTorch's oneDNN to use it: there the network's convolutions run in
    bfloat16 in about three quarters of their float32 time; elsewhere bfloat16 is
    emulated, slower than float32. False where ``cpuinfo`` cannot be read (not Linux)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith("flags"):
                    return not BF16_FLAGS.isdisjoint(line.partition(":")[2].split())
    except OSError:
        pass
    return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The dtype the network runs in under autocast on ``device`` with ``precision``
    (:data:`PRECISIONS`), or None for float32."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, "
                         f"got {precision!r}")
    if precision == "float32":
        return None
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_computes_bfloat16() else None


def autocast_to(device_type: str, dtype: torch.dtype | None):
    """A context that runs the network under autocast to ``dtype`` on ``device_type``
    ("cpu", "cuda"), or leaves it in float32 for None."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype)


def dtype_name(dtype: torch.dtype | None) -> str:
    """"float32" for None (no autocast), else the dtype's name ("bfloat16")."""
    return str(dtype or torch.float32).removeprefix("torch.")


class Harmonizer:
    """Match the person's colours to the background with PHNet.

    Args:
        weights: a weights file (ours or the authors' released ``.pth``); None means
            the bundled default weights.
        device: "cpu", "cuda" or "cuda:N".
        res: the square working resolution of the network (a multiple of 8).
        smoothing: temporal smoothing in [0, 1): the weight of the past per 1/30 s, a
            time constant of ``-1 / (30 ln smoothing)`` s (see :func:`time_constant`).
        strength: 0 returns the composite, 1 the full correction.
        refresh_every: run the network on every n-th call at most and reuse its
            transform in between (1 = every frame); after a change of light it runs
            every :data:`FAST_PERIOD` seconds a while, after a scene cut at once.
        idle_refresh: while the person neither moves nor changes, run it only this
            often, in seconds (see :class:`RefreshScheduler`; the camera uses
            :data:`IDLE_REFRESH`); None: on every ``refresh_every``-th frame whatever
            the scene.
        background_refresh: run those refreshes on a worker thread while frames go on
            with the last transform (the first one, and one after a cut, are waited for).
        fps: the frame rate assumed for frames that come without a timestamp.
        transform: ``"global"`` (the default: one colour matrix for the person, which
            needs no run when the person only moves: in a calm scene it runs every
            ``idle_refresh`` seconds) or ``"local"`` (guided-filter maps); see the
            module's docstring.
        precision: ``"auto"`` (the network in float16 on a CUDA GPU, in bfloat16 on a
            CPU with bfloat16 arithmetic, else float32; the statistics PN and the PFE
            read are float32 throughout) or ``"float32"``; see :func:`autocast_dtype`.
    """

    def __init__(self, weights=None, device: str = "cpu", res: int = 256,
                 smoothing: float = 0.0, strength: float = 1.0, refresh_every: int = 1,
                 background_refresh: bool = False, fps: float = 30.0,
                 idle_refresh: float | None = None, transform: str = "global",
                 precision: str = "auto"):
        if transform not in TRANSFORMS:
            raise InputError(f"transform must be one of {', '.join(TRANSFORMS)}, "
                             f"got {transform!r}")
        self.transform = transform
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device 'cuda' asked for, but PyTorch sees no CUDA GPU; "
                             "use --gpu off (CPU) or install a CUDA build of PyTorch")
        self.precision = precision
        self.amp_dtype = autocast_dtype(self.device, precision)  # None: float32
        path = default_weights_path() if weights is None else weights
        self.model: PHNet = load_model(path, map_location="cpu").to(self.device).eval()
        self.res = check_res(res)
        self.smoothing = _check_unit(smoothing, "smoothing", upper_open=True)
        self.strength = _check_unit(strength, "strength")
        if refresh_every < 1:
            raise InputError(f"refresh_every must be at least 1, got {refresh_every}")
        if idle_refresh is not None and not idle_refresh > 0:
            raise InputError(f"idle_refresh must be positive or None, got {idle_refresh}")
        # a colour matrix fits a person who has moved: movement asks for no run
        self._schedule = RefreshScheduler(refresh_every, idle_refresh,
                                          moved=math.inf if transform == "global" else MOVED)
        self.refresh_every = refresh_every
        self.background_refresh = background_refresh
        if not fps > 0:
            raise InputError(f"fps must be positive, got {fps}")
        self.fps = float(fps)
        self.time_constant = time_constant(self.smoothing)
        self._lock = threading.Lock()          # guards the temporal state below
        self._model_lock = threading.Lock()    # one forward pass at a time
        # (generation, small image, mask, mean colours) of the last regular run: what the
        # runs that follow a change read, re-lit (_relit; the model lock guards it)
        self._last_regular: tuple[int, torch.Tensor, torch.Tensor, np.ndarray] | None = None
        self._stats = EMAStatistics(self.smoothing) if self.smoothing > 0 else None
        self._transform: Transform | None = None  # the network's latest
        self._smoothed: Transform | None = None   # gliding toward it
        self._shown: Transform | None = None      # what the frames get
        self._shown_at = -math.inf                      # since this time
        self._thumb: np.ndarray | None = None
        self._changes = ChangeDetector()
        self._fast_until = -math.inf           # fast following until this time
        self._followed_at = -math.inf          # the last run that followed a change
        self._change: tuple[int, np.ndarray] | None = None  # (id, statistics before it)
        self._changes_seen = 0
        self._correction: ChangeCorrection | None = None  # of the last change
        self._time: float | None = None        # the last frame's timestamp
        self._generation = 0                   # bumped by reset(): stale results are dropped
        self._stats_generation = 0             # the generation the smoothed statistics hold
        self._stats_count = 0                  # refreshes in the statistics' average
        self._glide_time = min(self.time_constant, GLIDE_TIME)
        self._stats_time = 0.0                 # timestamp of the last of them
        self._worker: _RefreshWorker | None = None
        self.refresh_errors = 0
        self._buffers = threading.local()  # _apply's reused full-frame buffers

    # ------------------------------------------------------------------ settings
    def reset(self) -> None:
        """Forget all temporal state (earlier frames' statistics and transform)."""
        with self._lock:
            self._forget()

    def _forget(self) -> None:
        self._transform = self._smoothed = self._shown = None
        self._thumb = None
        self._changes.reset()
        self._fast_until = self._followed_at = -math.inf
        self._change = None
        self._schedule.reset()
        self._generation += 1

    def close(self) -> None:
        """Stop the background refresh thread (it restarts when needed)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def set_res(self, res: int) -> None:
        """Change the working resolution (takes effect on the next frame)."""
        res = check_res(res)
        with self._lock:
            self.res = res
            self._forget()

    def set_strength(self, strength: float) -> None:
        self.strength = _check_unit(strength, "strength")

    # ------------------------------------------------------------------ work
    def harmonize(self, composite: np.ndarray, mask: np.ndarray,
                  in_place: bool = False, timestamp: float | None = None) -> np.ndarray:
        """Harmonize the person in ``composite``.

        Args:
            composite: uint8 RGB ``(H, W, 3)``.
            mask: float ``(H, W)`` in [0, 1], 1 = the person.
            in_place: write the result into ``composite`` (which must then be a
                C-ordered, writable array) instead of a new array; saves a frame copy.
            timestamp: when the frame was captured, in seconds (any clock, such as
                ``time.monotonic()``); None: ``1 / fps`` after the previous frame.

        Returns:
            uint8 RGB ``(H, W, 3)``; pixels with mask 0 are the composite's exactly.
        """
        if composite.ndim != 3 or composite.shape[2] != 3 or composite.dtype != np.uint8:
            raise InputError(f"composite must be uint8 RGB (H, W, 3), got {composite.dtype} "
                             f"{composite.shape}")
        if mask.shape != composite.shape[:2]:
            raise InputError(f"mask {mask.shape} does not match composite {composite.shape[:2]}")
        if in_place and not (composite.flags.c_contiguous and composite.flags.writeable):
            raise InputError("harmonize(in_place=True) needs a C-ordered, writable composite")
        return self._run(_Frame(composite, composite, mask), in_place, timestamp)

    def composite_harmonized(self, fg: np.ndarray, bg: np.ndarray, mask: np.ndarray,
                             timestamp: float | None = None) -> np.ndarray:
        """The person of ``fg`` on ``bg``, harmonized: :func:`composite` and then
        :meth:`harmonize`, within one level, in one pass over the person's box (see
        :func:`composite_transformed`). The composite itself is made at full size only
        for the frames whose copy the network reads.

        Args:
            fg, bg: uint8 RGB ``(H, W, 3)``: the camera frame and the background.
            mask: float ``(H, W)`` in [0, 1], 1 = the person.
            timestamp: as for :meth:`harmonize`.

        Returns:
            a new uint8 RGB ``(H, W, 3)`` array.
        """
        for name, image in (("fg", fg), ("bg", bg)):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise InputError(f"{name} must be uint8 RGB (H, W, 3), got {image.dtype} "
                                 f"{image.shape}")
        if fg.shape != bg.shape or mask.shape != fg.shape[:2]:
            raise InputError(f"shape mismatch: fg {fg.shape}, bg {bg.shape}, "
                             f"mask {mask.shape}")
        return self._run(_Frame(fg, bg, mask), False, timestamp)

    def _run(self, frame: _Frame, in_place: bool, timestamp: float | None) -> np.ndarray:
        mask = frame.mask
        low, high = float(mask.min()), float(mask.max())  # a copy only when out of range
        if low < 0 or high > 1:
            mask = frame.mask = np.clip(mask, 0.0, 1.0)
        if self.strength <= 0 or not high >= MASK_FLOOR:  # no pixel it could change
            return frame.composite(copy=not in_place)
        try:
            transform = self._transform_for(frame, timestamp)
        except torch.cuda.OutOfMemoryError:
            self._fall_back_to_cpu()
            transform = self._transform_for(frame, timestamp)
        if transform is None:  # a reset from another thread overtook this frame
            return frame.composite(copy=not in_place)
        if frame.fg is not frame.bg and frame.made is not None:
            # the network's copy needed the full composite: transform that one in place
            # rather than compositing the person a second time in the fused pass
            return self._apply_to(_Frame(frame.made, frame.made, mask), transform, True)
        return self._apply_to(frame, transform, in_place)

    @property
    def network_precision(self) -> str:
        """What the network computes in now: "float32", "bfloat16" or "float16"."""
        return dtype_name(self.amp_dtype)

    def _fall_back_to_cpu(self) -> None:
        """CUDA ran out of memory: go on with the model on the CPU."""
        log.error("CUDA out of memory; PHNet continues on the CPU")
        with self._model_lock, self._lock:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.device = torch.device("cpu")
            self.amp_dtype = autocast_dtype(self.device, self.precision)
            self.model.to(self.device)
            self.refresh_every = max(self.refresh_every, cpu_refresh_every(self.transform))
            self._schedule.min_frames = self.refresh_every
            self._forget()

    def _small(self, composite: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        image = shrink(composite, self.res)
        small_mask = shrink(mask, self.res)
        image_t = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float() / 255
        mask_t = torch.from_numpy(small_mask).to(self.device)[None, None]
        return image_t, mask_t

    def _transform_for(self, frame: _Frame, timestamp: float | None) -> Transform | None:
        """The transform for this frame (None if a reset from another thread overtook
        it). PHNet runs as the refresh schedule asks (at most every ``refresh_every``
        frames), every :data:`FAST_PERIOD` seconds while following a change, and after a
        scene cut; with ``background_refresh`` on a worker thread
        while frames go on. Every frame the transform glides toward the latest result."""
        mask = frame.mask
        # every 8th pixel is plenty for a 32x18 thumbnail and the statistics, and 60x cheaper
        sparse = frame.sparse()
        thumb = cv2.resize(sparse, (32, 18), interpolation=cv2.INTER_AREA).astype(np.float32)
        thumb *= 128 / np.maximum(thumb.mean(axis=(0, 1)), 16.0)
        sparse_mask = frame.sparse_mask()
        stats = frame_statistics(sparse, sparse_mask) if self.time_constant > 0 else None
        mask_now = mask_thumbnail(sparse_mask)
        with self._lock:
            if self._thumb is not None and \
                    np.abs(thumb - self._thumb).mean() > SCENE_CUT * 255:
                self._forget()
            self._thumb = thumb
            now, elapsed = self._tick(timestamp)
            if self._changes.update(stats, elapsed):
                if now >= self._fast_until or self._change is None:  # a new change
                    self._changes_seen += 1
                    self._change = (self._changes_seen, self._changes.before)
                self._fast_until = now + FAST_HOLD
                self._schedule.changed(now)
            waited = self._transform is None
            regular = self._schedule.due(mask_now, now) or waited
            fast = now < self._fast_until
            if regular:  # the runs that follow a change keep to the regular schedule
                self._schedule.ran(mask_now, now)
            # while following a change, a run every FAST_PERIOD (each is two passes)
            follow = fast and now - self._followed_at >= FAST_PERIOD - 1e-6
            if follow:
                self._followed_at = now
            undo = None
            if follow and self._change is not None and stats is not None:
                gains = undo_gains(self._change[1], stats)
                undo = None if gains is None else (self._change[0], gains)
            generation = self._generation
        if regular or follow:
            image, small_mask = self._small(frame.composite(), mask)
            job = _Job(image, small_mask, generation, now, regular, undo)
            if self.background_refresh and not waited:
                if self._worker is None:
                    self._worker = _RefreshWorker(self)
                self._worker.submit(job)
            else:
                self._refresh(job)
        return self._glide(now, elapsed, fast, generation)

    def _tick(self, timestamp: float | None) -> tuple[float, float]:
        """``(this frame's time, seconds since the previous frame)``; without a
        timestamp the frame comes ``1 / fps`` after the previous one."""
        period = 1.0 / self.fps
        if timestamp is None:
            timestamp = 0.0 if self._time is None else self._time + period
        elapsed = period if self._time is None else min(max(timestamp - self._time, 0.0),
                                                        MAX_GAP)
        self._time = timestamp
        return timestamp, elapsed

    def _glide(self, now: float, elapsed: float, fast: bool,
               generation: int) -> Transform | None:
        """Move the smoothed transform toward the network's latest for ``elapsed``
        seconds, and hand the frames a new one once it differs from theirs by
        :data:`SHOW_STEP` grey levels (or has arrived), at most once a tick of
        :data:`SHOW_PERIOD` seconds unless ``fast``."""
        with self._lock:
            target = self._transform
            if target is None or generation != self._generation:
                return None
            smoothed = self._smoothed
            if smoothed is None or self.time_constant == 0 or \
                    not _same_form(smoothed, target):
                self._smoothed = self._shown = target
                self._shown_at = now
                return target
            if smoothed is not target:
                tau = min(self._glide_time, FAST_TIME_CONSTANT) if fast else \
                    self._glide_time
                smoothed = smoothed.blend(target, keep_after(elapsed, tau))
                if smoothed.difference(target) < SHOW_STEP / 10:
                    smoothed = target  # arrived
                self._smoothed = smoothed
            shown = self._shown
            due = fast or shown is None or _tick_of(now) != _tick_of(self._shown_at)
            if shown is not smoothed and due and (
                    smoothed is target or shown is None or
                    smoothed.difference(shown) >= SHOW_STEP):
                self._shown, self._shown_at = smoothed, now
                shown = smoothed
            return shown

    @torch.inference_mode()
    def _refresh(self, job: _Job) -> Transform | None:
        """Run PHNet on the small frame with the averaged statistics and make its fitted
        transform the latest; None if a reset happened meanwhile."""
        with self._model_lock:
            if job.generation != self._generation:
                return None
            if self.transform == "global":
                job = self._relit(job)
            with autocast_to(self.device.type, self.amp_dtype):
                hook = None if self._stats is None else self._reading(job)
                pred = self.model(job.image, job.mask, stats_hook=hook).float()
            target = pred * job.mask + job.image * (1 - job.mask)
            new = self._fit(job.image, target, job.mask)
        with self._lock:
            if job.generation != self._generation:
                return None
            self._transform = new
            return new

    def _relit(self, job: _Job) -> _Job:
        """A run that follows a change (and is no regular one) reads the small frame of
        the last regular run re-lit to this frame's light: each of its person's and
        background's channels scaled by the ratio of this frame's mean colour to its
        own (module docstring); other runs are kept for that."""
        means = mean_colours(job.image, job.mask)
        if job.regular:
            self._last_regular = (job.generation, job.image, job.mask, means)
            return job
        kept = self._last_regular
        if job.undo is None or kept is None or kept[0] != job.generation:
            return job
        _, image, mask, then = kept
        gains = np.clip(means / np.maximum(then, 1 / 255), *UNDO_GAINS)
        return job._replace(image=undo_change(image, mask, gains), mask=mask)

    def _fit(self, image: torch.Tensor, target: torch.Tensor,
             mask: torch.Tensor) -> Transform:
        """The transform of this Harmonizer's kind that explains ``target`` (the blended
        prediction) from ``image``."""
        matrix = fit_matrix(image, target, mask)
        if self.transform == "global":
            return ColourMatrix(matrix)
        # the maps explain the matrix's correction rather than the prediction itself:
        # lower fMSE on every held-out set, and no less steady (module docstring)
        matrix = matrix.to(image.device, image.dtype)
        pixels = image[0].reshape(3, -1)
        corrected = torch.addmm(matrix[:, 3:], matrix[:, :3], pixels).view_as(image)
        target = torch.lerp(image, corrected, mask)
        a, b = fit_affine(image, target, radius=max(2, self.res // 32))
        if min(a.shape[-2:]) >= 2 * MAP_SIDE_MIN:
            # box-filtered twice, the maps are smooth: half their side keeps them, and
            # every frame's glide and each upsampling cost a quarter
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        return ColourTransform(a, b)

    def _reading(self, job: _Job) -> CorrectedAverage:
        """The statistics hook of this refresh.

        A regular refresh adds the frame's statistics to their average, weighing the
        past by the time since the last at the smoothing's time constant, and by no more
        than ``n / (n + 1)`` for the n-th since a reset (so that it starts as the plain
        mean of the new frames). While a change is followed, PHNet first reads the frame
        with the change undone on the statistics of before the change, and the average
        is handed to the network moved by the change's :class:`ChangeCorrection`.
        """
        if self._stats_generation != job.generation:
            self._stats.reset()  # statistics of the frames before a reset are gone
            self._stats_generation, self._stats_count = job.generation, 0
            self._correction = None
        correction, before = self._correction, None
        if job.undo is not None and self._stats.state:
            change, gains = job.undo
            if correction is None or correction.key != (job.generation, change):
                if correction is not None:
                    correction.fold(self._stats.state)
                correction = self._correction = ChangeCorrection((job.generation, change),
                                                                 self._stats.state)
            reader = AverageReader(correction.base)
            # only the statistics of this pass are wanted: the network's first layers
            self.model.read_statistics(undo_change(job.image, job.mask, gains), job.mask,
                                       reader)
            before = reader.raw
        if job.regular:
            count = self._stats_count
            keep = keep_after(job.timestamp - self._stats_time, self.time_constant)
            self._stats.smoothing = min(keep, count / (count + 1))
            self._stats_count, self._stats_time = count + 1, job.timestamp
            if correction is not None:
                correction.old *= self._stats.smoothing
        return CorrectedAverage(self._stats, job.regular, correction, before)

    def _apply(self, composite: np.ndarray, mask: np.ndarray, transform: Transform,
               in_place: bool = False) -> np.ndarray:
        """Apply the transform where the mask is, at full resolution.

        With alpha = strength * mask: out = I + alpha * (T - I), rounded, where
        T = a * I + b saturated to [0, 255]; the composite exactly where the mask is
        below :data:`MASK_FLOOR`.
        """
        return self._apply_to(_Frame(composite, composite, mask), transform, in_place)

    def _apply_to(self, frame: _Frame, transform: Transform, in_place: bool) -> np.ndarray:
        """The frame composited with the transform applied: :func:`composite_matrix` for
        a colour matrix; :func:`composite_transformed` with the maps of a local
        transform, which are upsampled (pixel centres aligned: ``cv2.resize``'s bilinear
        mapping) once per transform: the frames that reuse a transform (all but every
        ``refresh_every``-th on a CPU) reuse its full-size maps too. The scratch space
        is kept between frames."""
        height, width = frame.mask.shape
        if in_place:  # the composite itself (fg is bg)
            out: np.ndarray | None = frame.fg
        elif frame.fg is frame.bg:
            out = np.empty(frame.bg.shape, np.uint8)  # C order, whatever the input's layout
            out[:] = frame.bg
        else:
            out = None  # a new copy of the background
        if isinstance(transform, ColourMatrix):
            return composite_matrix(frame.fg, frame.bg, frame.mask, transform.grey_matrix(),
                                    self.strength, out=out,
                                    scratch=self._workspace(height, width, False)["corrected"],
                                    smooth=transform.smoothing())
        work = self._workspace(height, width, True)
        low = transform.low_maps()
        if work["maps_of"] is not low:  # a new transform: upsample its maps once
            cv2.resize(low[0], (width, height), dst=work["gain"], interpolation=cv2.INTER_LINEAR)
            cv2.resize(low[1], (width, height), dst=work["offset"],
                       interpolation=cv2.INTER_LINEAR)
            work["maps_of"] = low
        return composite_transformed(frame.fg, frame.bg, frame.mask, work["gain"],
                                     work["offset"], self.strength, out=out,
                                     scratch=(work["product"], work["corrected"]))

    def _workspace(self, height: int, width: int, maps: bool) -> dict:
        """Full-frame buffers for :meth:`_apply_to`, kept while the size stays (one set
        per calling thread): scratch space and, with ``maps``, the upsampled maps of the
        transform named by ``maps_of``."""
        work = getattr(self._buffers, "work", None)
        if work is None or work["corrected"].shape[:2] != (height, width):
            work = {"corrected": np.empty((height, width, 3), np.uint8), "maps_of": None}
            self._buffers.work = work
        if maps and "gain" not in work:
            work.update({name: np.empty((height, width, 3), np.float32)
                         for name in ("gain", "offset", "product")})
        return work


class _Frame:
    """A frame to harmonize: the camera's picture ``fg`` to go on ``bg`` (the same array
    when the composite is made already) and the mask; its composite is made only when
    asked for (the network's copy, the statistics' every 8th pixel)."""

    def __init__(self, fg: np.ndarray, bg: np.ndarray, mask: np.ndarray):
        self.fg, self.bg = fg, bg
        self.mask = mask.astype(np.float32, copy=False)
        self._composite: np.ndarray | None = fg if fg is bg else None
        self._sparse_mask: np.ndarray | None = None

    @property
    def made(self) -> np.ndarray | None:
        """The full-size composite if it has been made (or was given), else None."""
        return self._composite

    def composite(self, copy: bool = False) -> np.ndarray:
        """The full-size composite (a fresh array with ``copy``)."""
        if self._composite is None:
            self._composite = composite(self.fg, self.bg, self.mask)
            return self._composite
        return self._composite.copy() if copy else self._composite

    def sparse_mask(self) -> np.ndarray:
        """Every 8th pixel of the mask, C-ordered (made once)."""
        if self._sparse_mask is None:
            self._sparse_mask = every_8th(self.mask)
        return self._sparse_mask

    def sparse(self) -> np.ndarray:
        """Every 8th pixel of the composite, C-ordered."""
        if self._composite is not None:
            return every_8th(self._composite)
        return composite(every_8th(self.fg), every_8th(self.bg), self.sparse_mask())


Transform = ColourTransform | ColourMatrix


def _same_form(one: Transform, other: Transform) -> bool:
    """Whether two transforms can be blended (one kind, and maps of one size)."""
    if isinstance(one, ColourMatrix) or isinstance(other, ColourMatrix):
        return type(one) is type(other)
    return one.a.shape == other.a.shape


def every_8th(image: np.ndarray) -> np.ndarray:
    """``image[::8, ::8]`` as a C-ordered array; OpenCV's nearest-neighbour resize picks
    the same pixels when both sides divide by 8, and gathers them several times faster
    than NumPy's strided copy."""
    height, width = image.shape[:2]
    if height % 8 or width % 8:
        return np.ascontiguousarray(image[::8, ::8])
    return cv2.resize(image, (width // 8, height // 8), interpolation=cv2.INTER_NEAREST)


def _tick_of(timestamp: float) -> float:
    """The :data:`SHOW_PERIOD` tick of the frames' clock that ``timestamp`` lies in."""
    return math.floor(timestamp / SHOW_PERIOD + 1e-6) if math.isfinite(timestamp) else -math.inf


class _Job(NamedTuple):
    """One network run: the small frame and mask, the generation and time it belongs
    to, and while following a change its number and the gains that undo it (see
    :func:`undo_gains`)."""

    image: torch.Tensor
    mask: torch.Tensor
    generation: int
    timestamp: float
    regular: bool  # on the refresh schedule: its statistics join the average
    undo: tuple[int, np.ndarray] | None


def _check_unit(value: float, name: str, upper_open: bool = False) -> float:
    value = float(value)
    ok = 0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0
    if not ok:
        bound = "[0, 1)" if upper_open else "[0, 1]"
        raise InputError(f"{name} must be in {bound}, got {value}")
    return value


class _RefreshWorker:
    """One thread that runs the Harmonizer's refreshes; a new request replaces a
    waiting one, so the transform never lags by more than one refresh."""

    def __init__(self, harmonizer: Harmonizer):
        self.harmonizer = harmonizer
        self._job = None
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="phnet-refresh", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> None:
        """Run ``job`` next, in place of one still waiting (but a job that follows a
        change is not replaced by one that does not)."""
        with self._cond:
            if self._job is not None and self._job.undo is not None and job.undo is None:
                return
            self._job = job
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(2.0)

    def _run(self) -> None:
        if self.harmonizer.device.type == "cpu":
            # the frames' own threads keep the other cores busy; one PyTorch thread here
            # spares the cost of handing every operation around. PyTorch keeps this per
            # thread, but threads started later in the process begin with it too.
            torch.set_num_threads(1)
        while True:
            with self._cond:
                while self._job is None and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                job, self._job = self._job, None
            try:
                self.harmonizer._refresh(job)
            except torch.cuda.OutOfMemoryError:
                self.harmonizer._fall_back_to_cpu()  # later requests run on the CPU
            except Exception as err:  # the frames go on with the last transform
                self.harmonizer.refresh_errors += 1
                if self.harmonizer.refresh_errors == 1:
                    log.error("PHNet refresh failed (%s: %s); frames keep the last colour "
                              "transform, further failures are counted",
                              type(err).__name__, err)
