"""Person mask from MediaPipe selfie segmentation, smoothed over time and refined at edges.

The two selfie-segmentation models (Apache-2.0, from the mediapipe 0.10.21 wheel; later
mediapipe releases ship no models) are bundled in ``assets/segmentation`` and run with
MediaPipe's Tasks API (``vision.ImageSegmenter``), which every mediapipe from 0.10.21 on
has, so nothing is downloaded. The mask is computed, smoothed and refined at a reduced
working size (height <= 360 px) and upsampled once to the frame size.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import cv2
import numpy as np

from vcam_harmonize.guided import guided_coefficients
from vcam_harmonize.models.errors import InputError

if TYPE_CHECKING:
    from vcam_harmonize.config import CameraConfig

MODEL_DIR = Path(__file__).parent / "assets" / "segmentation"
MODEL_FILES = {
    "landscape": "selfie_segmentation_landscape.tflite",
    "general": "selfie_segmentation.tflite",
}
_WORK_HEIGHT = 360
_MOTION_DIFF = 0.4
_GUIDE_KERNEL = 9
_GUIDE_EPS = 1e-3
_NEGLIGIBLE = 1.0 / 512


def _import_mediapipe():
    """``import mediapipe``, its bundled OpenCV kept to one thread.

    That copy of OpenCV (which prepares the model's input) otherwise keeps a worker
    thread spinning on ``sched_yield`` between frames, which costs the other stages
    CPU time on a small machine. It reads ``OPENCV_FOR_THREADS_NUM`` once, when
    mediapipe is first loaded; a value set by the user is kept.
    """
    os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")
    import mediapipe

    return mediapipe


def model_path(model: str = "landscape") -> Path:
    """Path of the bundled selfie-segmentation ``.tflite`` for ``model``."""
    if model not in MODEL_FILES:
        raise InputError(f"unknown segmentation model {model!r}; choose one of {list(MODEL_FILES)}")
    path = MODEL_DIR / MODEL_FILES[model]
    if not path.is_file():
        raise InputError(f"the bundled segmentation model {path} is missing; reinstall "
                         "vcam-harmonize (pip install --force-reinstall vcam-harmonize)")
    return path


def confidence_to_mask(confidence: np.ndarray) -> np.ndarray:
    """MediaPipe's person confidence as a float32 (H, W) copy: mediapipe 0.10.21 gives
    (H, W), the 0.10.30+ and 1.x releases (H, W, 1)."""
    if confidence.ndim == 3:
        confidence = confidence[..., 0]
    return np.array(confidence, dtype=np.float32)


def smooth_mask(previous: np.ndarray, current: np.ndarray, smoothing: float) -> np.ndarray:
    """Motion-adaptive exponential moving average of two masks (H, W) in [0, 1].

    The per-pixel update rate is ``1 - smoothing`` where the masks agree and rises
    quadratically to 1 where they differ by ``_MOTION_DIFF`` or more, so still regions
    are steady while a moving edge is followed at once (no ghost trail).
    """
    delta = current - previous
    change = np.minimum(np.abs(delta) * (1.0 / _MOTION_DIFF), 1.0)
    rate = (1.0 - smoothing) + smoothing * change * change
    return previous + rate * delta


def refine_mask(mask: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """Snap a soft mask (H, W) to image edges with a guided filter; ``guide`` is grey (H, W).

    Both are float32 in [0, 1]. This is He and Sun's fast guided filter: the local
    linear model ``mask ~ a * guide + b`` is fitted on a half-size copy with OpenCV box
    filters (single-threaded and a few times cheaper than a convolution), and the
    smoothed ``a`` and ``b`` are upsampled and applied to the full-size guide.
    Returns float32 (H, W) clipped to [0, 1].
    """
    height, width = mask.shape
    half = (max(1, width // 2), max(1, height // 2))
    guide_s = cv2.resize(guide, half, interpolation=cv2.INTER_AREA)
    mask_s = cv2.resize(mask, half, interpolation=cv2.INTER_AREA)
    a, b = guided_coefficients(guide_s, mask_s, (_GUIDE_KERNEL - 1) // 2 + 1, _GUIDE_EPS)
    ab = cv2.resize(cv2.merge([a, b]), (width, height), interpolation=cv2.INTER_LINEAR)
    refined = ab[..., 0] * guide
    refined += ab[..., 1]
    return np.clip(refined, 0.0, 1.0, out=refined)


@runtime_checkable
class Segmenter(Protocol):
    """What the pipeline knows of a person segmenter.

    ``segment(frame)`` is the person mask of a uint8 RGB (H, W, 3) frame, float32 (H, W)
    in [0, 1]; ``smoothing`` its temporal smoothing in [0, 1) (it may change while
    running; one without any ignores it); ``reset()`` forgets the temporal state (a new
    camera); ``close()`` releases it, and a second call does nothing.
    """

    smoothing: float

    def segment(self, frame: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class PersonSegmenter:
    """Soft person mask for RGB frames, via MediaPipe's ImageSegmenter (VIDEO mode); a
    :class:`Segmenter`.

    Args:
        model: ``"landscape"`` (144x256, faster) or ``"general"`` (256x256).
        smoothing: temporal smoothing in [0, 1); 0 turns it off.
        refine: guided-filter edge refinement against the frame.
        threshold: if set, binarize the mask at this value (hard edge).
        feather: Gaussian blur sigma in frame pixels applied last (0 = off).
    """

    def __init__(
        self,
        model: str = "landscape",
        smoothing: float = 0.5,
        refine: bool = True,
        threshold: float | None = None,
        feather: float = 0,
    ) -> None:
        if not 0 <= smoothing < 1:
            raise InputError(f"mask smoothing must be in [0, 1), got {smoothing}")
        if threshold is not None and not 0 < threshold < 1:
            raise InputError(f"mask threshold must be in (0, 1), got {threshold}")
        if feather < 0:
            raise InputError(f"mask feather must be >= 0 px, got {feather}")
        path = model_path(model)
        try:
            self._mp = _import_mediapipe()
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as err:
            raise InputError(f"mediapipe does not import ({err}); install it with: "
                             "pip install mediapipe") from None

        options = vision.ImageSegmenterOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=vision.RunningMode.VIDEO,
            output_confidence_masks=True,
            output_category_mask=False,
        )
        self._segmenter = vision.ImageSegmenter.create_from_options(options)
        self.model, self.model_file = model, path
        self.smoothing, self.refine = smoothing, refine
        self.threshold, self.feather = threshold, feather
        self._timestamp_ms = -1
        self._mask: np.ndarray | None = None

    @classmethod
    def from_config(cls, config: CameraConfig) -> PersonSegmenter:
        """The segmenter the settings ask for (model, mask smoothing, refinement,
        threshold, feather)."""
        return cls(config.segmentation_model, config.mask_smoothing, config.refine,
                   config.mask_threshold or None, config.feather)

    def segment(self, frame: np.ndarray) -> np.ndarray:
        """Person mask for ``frame`` (uint8 RGB (H, W, 3)) as float32 (H, W) in [0, 1]."""
        height, width = frame.shape[:2]
        scale = min(1.0, _WORK_HEIGHT / height)
        small = frame
        if scale < 1:
            work_size = (round(width * scale), round(height * scale))
            small = cv2.resize(frame, work_size, interpolation=cv2.INTER_AREA)
        mask = self._smoothed(self._infer(np.ascontiguousarray(small)))
        if self.refine:
            guide = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1.0 / 255.0)
            mask = refine_mask(mask, guide)
        # a weight this small cannot move a uint8 pixel; exact zeros let the compositing
        # and the harmonizer skip everything outside the person's bounding box
        mask = cv2.threshold(mask, _NEGLIGIBLE, 1.0, cv2.THRESH_TOZERO)[1]
        if self.feather:  # the blur hides the upsampling, so work small
            mask = cv2.GaussianBlur(self._binarized(mask), (0, 0), sigmaX=self.feather * scale)
        if scale < 1:
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
        return mask if self.feather else self._binarized(mask)

    def reset(self) -> None:
        """Forget the temporal state (call after a cut, e.g. a new input)."""
        self._mask = None

    def close(self) -> None:
        """Release the MediaPipe graph; the segmenter is unusable afterwards."""
        if self._segmenter is not None:
            self._segmenter.close()
            self._segmenter = None

    def __enter__(self) -> PersonSegmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _infer(self, rgb: np.ndarray) -> np.ndarray:
        """Raw MediaPipe confidence mask (H, W) float32 for a contiguous RGB image."""
        mp = self._mp
        self._timestamp_ms = max(self._timestamp_ms + 1, int(time.monotonic() * 1000))
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        result = self._segmenter.segment_for_video(image, self._timestamp_ms)
        return confidence_to_mask(result.confidence_masks[0].numpy_view())

    def _binarized(self, mask: np.ndarray) -> np.ndarray:
        """``mask`` cut at ``threshold`` to exactly 0 or 1 (unchanged without threshold)."""
        if self.threshold is None:
            return mask
        return cv2.threshold(mask, self.threshold, 1.0, cv2.THRESH_BINARY)[1]

    def _smoothed(self, raw: np.ndarray) -> np.ndarray:
        if self.smoothing and self._mask is not None and self._mask.shape == raw.shape:
            self._mask = smooth_mask(self._mask, raw, self.smoothing)
        else:
            self._mask = raw
        return self._mask
