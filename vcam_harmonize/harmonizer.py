"""The Harmonizer: PHNet at a low working resolution, applied as a colour transform.

PHNet runs on a ``res x res`` copy of the composite. Its (blended) prediction is
explained by a local affine colour model per channel, ``out = a * composite + b``,
fitted with a guided filter at that resolution (He et al.'s fast guided-filter
upsampling). The smooth ``a`` and ``b`` maps are upsampled and applied to the
full-resolution composite, so the output keeps every detail of the input at any size,
and between two network runs the last transform can be applied to new frames.

With ``smoothing > 0`` the PN statistics the network reads and the transform itself
are exponential moving averages over the frames, reset by :meth:`reset`, a new
background (the caller's :meth:`reset`) or a scene cut (a jump of the frame's colours).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from kornia.filters import box_blur

from vcam_harmonize.compositing import bounding_box
from vcam_harmonize.guided import guided_coefficients
from vcam_harmonize.models import EMAStatistics, InputError, PHNet, load_model
from vcam_harmonize.models.weights import default_weights_path

log = logging.getLogger(__name__)

#: mean absolute change of a thumbnail of the composite (0..1) taken as a scene cut.
SCENE_CUT = 0.1
#: on a CPU, PHNet runs on every n-th frame (2.5 times a second from a 30 fps camera);
#: its colour transform serves the frames between.
CPU_REFRESH_EVERY = 12
#: mask values below this count as background (they could not change a uint8 pixel).
MASK_FLOOR = 1.0 / 512
#: guided-filter regularisation (in [0, 1] intensity units, squared).
GUIDED_EPS = 1e-3


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
    """Low-resolution ``a`` and ``b`` maps, ``(1, 3, res, res)`` each."""

    a: torch.Tensor
    b: torch.Tensor
    _low: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)

    def blend(self, other: ColourTransform, keep: float) -> ColourTransform:
        """``keep * self + (1 - keep) * other``."""
        return ColourTransform(keep * self.a + (1 - keep) * other.a,
                               keep * self.b + (1 - keep) * other.b)

    def low_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """``(a - 1, 255 * b)`` as float32 ``(res, res, 3)`` arrays, computed once: the
        form in which every frame applies them (``out = I + (a - 1) * I + 255 * b``)."""
        if self._low is None:
            def hwc(maps: torch.Tensor) -> np.ndarray:
                return np.ascontiguousarray(maps[0].permute(1, 2, 0).float().cpu().numpy())

            self._low = (hwc(self.a - 1), hwc(self.b * 255))
        return self._low


class Harmonizer:
    """Match the person's colours to the background with PHNet.

    Args:
        weights: a weights file (ours or the authors' released ``.pth``); None means
            the bundled default weights.
        device: "cpu", "cuda" or "cuda:N"; CUDA runs the network in float16.
        res: the square working resolution of the network (a multiple of 8).
        smoothing: weight of the past in the temporal moving averages, in [0, 1).
        strength: 0 returns the composite, 1 the full correction.
        refresh_every: run the network on every n-th call and reuse its transform in
            between (1 = every frame).
        background_refresh: run those refreshes on a worker thread while frames go on
            with the last transform (the first one, and one after a cut, are waited for).
    """

    def __init__(self, weights=None, device: str = "cpu", res: int = 256,
                 smoothing: float = 0.0, strength: float = 1.0, refresh_every: int = 1,
                 background_refresh: bool = False):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device 'cuda' asked for, but PyTorch sees no CUDA GPU; "
                             "use --gpu off (CPU) or install a CUDA build of PyTorch")
        path = default_weights_path() if weights is None else weights
        self.model: PHNet = load_model(path, map_location="cpu").to(self.device).eval()
        self.res = check_res(res)
        self.smoothing = _check_unit(smoothing, "smoothing", upper_open=True)
        self.strength = _check_unit(strength, "strength")
        if refresh_every < 1:
            raise InputError(f"refresh_every must be at least 1, got {refresh_every}")
        self.refresh_every = refresh_every
        self.background_refresh = background_refresh
        self._lock = threading.Lock()          # guards the temporal state below
        self._model_lock = threading.Lock()    # one forward pass at a time
        self._stats = EMAStatistics(self.smoothing) if self.smoothing > 0 else None
        self._transform: ColourTransform | None = None
        self._thumb: np.ndarray | None = None
        self._calls = 0
        self._generation = 0                   # bumped by reset(): stale results are dropped
        self._stats_generation = 0             # the generation the smoothed statistics hold
        self._worker: _RefreshWorker | None = None
        self.refresh_errors = 0
        self._buffers = threading.local()  # _apply's reused full-frame buffers

    # ------------------------------------------------------------------ settings
    def reset(self) -> None:
        """Forget all temporal state (earlier frames' statistics and transform)."""
        with self._lock:
            self._forget()

    def _forget(self) -> None:
        self._transform = None
        self._thumb = None
        self._calls = 0
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
                  in_place: bool = False) -> np.ndarray:
        """Harmonize the person in ``composite``.

        Args:
            composite: uint8 RGB ``(H, W, 3)``.
            mask: float ``(H, W)`` in [0, 1], 1 = the person.
            in_place: write the result into ``composite`` (which must then be a
                C-ordered, writable array) instead of a new array; saves a frame copy.

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
        keep = (lambda: composite) if in_place else composite.copy
        mask = mask.astype(np.float32, copy=False)
        low, high, _, _ = cv2.minMaxLoc(mask)  # one pass; a copy only when out of range
        if low < 0 or high > 1:
            mask = np.clip(mask, 0.0, 1.0)
        box = bounding_box(mask >= MASK_FLOOR)
        if self.strength <= 0 or box is None:
            return keep()
        try:
            transform = self._transform_for(composite, mask)
        except torch.cuda.OutOfMemoryError:
            self._fall_back_to_cpu()
            transform = self._transform_for(composite, mask)
        if transform is None:  # a reset from another thread overtook this frame
            return keep()
        return self._apply(composite, mask, transform, box, in_place)

    def _fall_back_to_cpu(self) -> None:
        """CUDA ran out of memory: go on with the model on the CPU."""
        log.error("CUDA out of memory; PHNet continues on the CPU")
        with self._model_lock, self._lock:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.device = torch.device("cpu")
            self.model.to(self.device)
            self.refresh_every = max(self.refresh_every, CPU_REFRESH_EVERY)
            self._forget()

    def _small(self, composite: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        image = shrink(composite, self.res)
        small_mask = shrink(mask, self.res)
        image_t = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float() / 255
        mask_t = torch.from_numpy(small_mask).to(self.device)[None, None]
        return image_t, mask_t

    def _transform_for(self, composite: np.ndarray, mask: np.ndarray) -> ColourTransform:
        """The transform for this frame: a fresh one every ``refresh_every`` frames and
        after a scene cut, the last one in between. With ``background_refresh`` the
        fresh ones are computed on a worker thread while frames go on with the last."""
        # every 8th pixel is plenty for a 32x18 thumbnail, and 60x cheaper
        thumb = cv2.resize(composite[::8, ::8], (32, 18), interpolation=cv2.INTER_AREA)
        with self._lock:
            if self._thumb is not None and \
                    np.abs(thumb.astype(np.float32) - self._thumb).mean() > SCENE_CUT * 255:
                self._forget()
            self._thumb = thumb.astype(np.float32)
            due = self._transform is None or self._calls % self.refresh_every == 0
            self._calls += 1
            current, generation = self._transform, self._generation
        if not due:
            return current
        image, small_mask = self._small(composite, mask)
        if self.background_refresh and current is not None:
            if self._worker is None:
                self._worker = _RefreshWorker(self)
            self._worker.submit(image, small_mask, generation)
            return current
        return self._refresh(image, small_mask, generation) or current

    @torch.inference_mode()
    def _refresh(self, image: torch.Tensor, small_mask: torch.Tensor,
                 generation: int) -> ColourTransform | None:
        """Run PHNet on the small frame and fold the fitted transform into the state;
        None if a reset happened meanwhile."""
        with self._model_lock:
            if generation != self._generation:
                return None
            if self._stats is not None and self._stats_generation != generation:
                self._stats.reset()  # statistics of the frames before a reset are gone
                self._stats_generation = generation
            with torch.autocast("cuda", torch.float16, enabled=self.device.type == "cuda"):
                pred = self.model(image, small_mask, stats_hook=self._stats).float()
            target = pred * small_mask + image * (1 - small_mask)
            new = ColourTransform(*fit_affine(image, target, radius=max(2, self.res // 32)))
        with self._lock:
            if generation != self._generation:
                return None
            if self._transform is not None and self.smoothing > 0 and \
                    self._transform.a.shape == new.a.shape:
                new = self._transform.blend(new, self.smoothing)
            self._transform = new
            return new

    def _apply(self, composite: np.ndarray, mask: np.ndarray, transform: ColourTransform,
               box: tuple[slice, slice] | None = None, in_place: bool = False) -> np.ndarray:
        """Apply the transform where the mask is, at full resolution.

        With alpha = strength * mask: out = I + alpha * ((a - 1) * I + b), inside the
        person's bounding box only. The low-resolution maps are upsampled with the
        pixel centres aligned (``cv2.resize``'s bilinear mapping), once per transform:
        the frames that reuse a transform (all but every ``refresh_every``-th on a CPU)
        reuse its full-size maps too. All full-size work goes through reused buffers
        with single OpenCV calls: a 720p frame costs a few milliseconds and allocates
        nothing but the output.
        """
        if box is None:  # the pixels a weight could change: mask >= MASK_FLOOR
            box = bounding_box(mask >= MASK_FLOOR)
            if box is None:
                return composite if in_place else composite.copy()
        height, width = mask.shape
        work = self._workspace(height, width)
        low = transform.low_maps()
        if work["maps_of"] is not low:  # a new transform: upsample its maps once
            cv2.resize(low[0], (width, height), dst=work["gain"], interpolation=cv2.INTER_LINEAR)
            cv2.resize(low[1], (width, height), dst=work["offset"],
                       interpolation=cv2.INTER_LINEAR)
            work["maps_of"] = low
        image = composite[box]
        change = work["change"][box]
        cv2.multiply(image, work["gain"][box], dst=change, dtype=cv2.CV_32F)
        cv2.add(change, work["offset"][box], dst=change)    # (a - 1) * I + b
        alpha = work["alpha"][box]
        # below the floor a pixel could not change: keep the composite there exactly
        cv2.threshold(mask[box], MASK_FLOOR - 1e-7, 1.0, cv2.THRESH_TOZERO, dst=alpha)
        if self.strength < 1:
            alpha *= np.float32(self.strength)
        alpha3 = cv2.merge([alpha, alpha, alpha], dst=work["alpha3"][box])
        cv2.multiply(change, alpha3, dst=change)
        if in_place:
            out = composite
        else:
            out = np.empty(composite.shape, np.uint8)  # C order, whatever the input's layout
            out[:] = composite
        # I + alpha * change, rounded and saturated to uint8 in the same pass
        cv2.add(change, image, dst=out[box], dtype=cv2.CV_8U)
        return out

    def _workspace(self, height: int, width: int) -> dict:
        """Full-frame float32 buffers for :meth:`_apply`, kept while the size stays
        (one set per calling thread): the upsampled maps of the transform named by
        ``maps_of`` and scratch space."""
        work = getattr(self._buffers, "work", None)
        if work is None or work["alpha"].shape != (height, width):
            work = {name: np.empty((height, width, 3), np.float32)
                    for name in ("gain", "offset", "change", "alpha3")}
            work["alpha"] = np.empty((height, width), np.float32)
            work["maps_of"] = None
            self._buffers.work = work
        return work


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

    def submit(self, image: torch.Tensor, mask: torch.Tensor, generation: int) -> None:
        with self._cond:
            self._job = (image, mask, generation)
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
                self.harmonizer._refresh(*job)
            except torch.cuda.OutOfMemoryError:
                self.harmonizer._fall_back_to_cpu()  # later requests run on the CPU
            except Exception as err:  # the frames go on with the last transform
                self.harmonizer.refresh_errors += 1
                if self.harmonizer.refresh_errors == 1:
                    log.error("PHNet refresh failed (%s: %s); frames keep the last colour "
                              "transform, further failures are counted",
                              type(err).__name__, err)
