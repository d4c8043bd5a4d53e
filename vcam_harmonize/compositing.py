"""Put the person on the background: alpha compositing, alone or in one pass with the
harmonizer's colour transform."""

from __future__ import annotations

import cv2
import numpy as np

#: mask values below this count as background (they could not change a uint8 pixel)
MASK_FLOOR = 1.0 / 512
#: rows of the person's box are cut into this many bands (see :func:`person_bands`)
BANDS = 8


def bounding_box(region: np.ndarray) -> tuple[slice, slice] | None:
    """Row and column slices of the smallest box around the non-zero pixels of a
    boolean or uint8 ``(H, W)`` array; None when there are none."""
    if region.dtype == bool:
        region = region.view(np.uint8)
    x, y, w, h = cv2.boundingRect(region)
    if w == 0:
        return None
    return slice(y, y + h), slice(x, x + w)


def composite(fg: np.ndarray, bg: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Alpha-composite ``fg`` over ``bg``: ``fg * mask + bg * (1 - mask)``, rounded.

    Only the bounding box of the person (mask > 0) is blended; the rest is a copy of
    ``bg``, which is several times cheaper for a person who fills part of the frame.

    Args:
        fg: person frame, uint8 (H, W, 3).
        bg: background, uint8 (H, W, 3).
        mask: person alpha in [0, 1], float32 (H, W).

    Returns:
        uint8 (H, W, 3); exactly ``bg`` where mask is 0 and exactly ``fg`` where it is 1.
    """
    if fg.shape != bg.shape or fg.shape[:2] != mask.shape[:2]:
        raise ValueError(f"shape mismatch: fg {fg.shape}, bg {bg.shape}, mask {mask.shape}")
    alpha = mask if mask.dtype == np.float32 else mask.astype(np.float32)
    out = np.empty(bg.shape, np.uint8)
    out[:] = bg
    box = bounding_box(alpha > 0)
    if box is None:
        return out
    weights = alpha[box]
    cv2.blendLinear(fg[box], bg[box], weights, 1.0 - weights, dst=out[box])
    return out


def person_bands(region: np.ndarray, box: tuple[slice, slice],
                 count: int = BANDS) -> list[tuple[slice, slice]]:
    """The person's box cut into ``count`` bands of rows, each narrowed to the columns
    the person (``region``, boolean ``(H, W)``) reaches in it: head and shoulders fill
    about half of their bounding box, so the bands skip half its pixels."""
    top, bottom = box[0].start, box[0].stop
    bands = []
    for rows in np.array_split(np.arange(top, bottom), min(count, bottom - top)):
        band = slice(int(rows[0]), int(rows[-1]) + 1)
        inside = bounding_box(region[band, box[1]])
        if inside is not None:
            cols = inside[1]
            bands.append((slice(band.start + inside[0].start, band.start + inside[0].stop),
                          slice(box[1].start + cols.start, box[1].start + cols.stop)))
    return bands


def composite_transformed(fg: np.ndarray, bg: np.ndarray, mask: np.ndarray,
                          gain: np.ndarray, offset: np.ndarray, strength: float = 1.0,
                          out: np.ndarray | None = None,
                          scratch: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The person on the background with a colour transform applied, in one pass over
    the person: ``C + alpha * (T - C)``, rounded, where ``C`` is :func:`composite`
    ``(fg, bg, mask)``, ``T = gain * C + offset`` saturated to [0, 255] (the corrected
    colour is a colour before the mask mixes it in) and ``alpha = strength * mask``.

    Compositing and transforming share each band of rows (:func:`person_bands`): the
    composite, its transform and the final mix are made band by band while the band is
    in the cache, over the person's own columns rather than the whole frame. Where
    ``alpha * 255 < 0.5`` (the mask below :data:`MASK_FLOOR` included) the output is
    the composite exactly. ``fg`` and ``bg`` may be the same array (a composite made
    already); with ``out`` the same array too it is transformed in place.

    Args:
        fg, bg: uint8 ``(H, W, 3)``: the camera frame and the background.
        mask: float32 ``(H, W)`` in [0, 1].
        gain, offset: float32 ``(H, W, 3)`` maps (the offset in grey levels).
        strength: in [0, 1].
        out: uint8 ``(H, W, 3)`` to write into, holding ``bg``'s pixels already (``bg``
            itself, or a copy of it); None: a new copy of ``bg``.
        scratch: float32 and uint8 ``(H, W, 3)`` working space, reused between frames
            to save allocations; None: allocated.

    Returns:
        ``out``.
    """
    if scratch is None:
        scratch = (np.empty(fg.shape, np.float32), np.empty(fg.shape, np.uint8))
    product, corrected = scratch

    def correct(band: tuple[slice, slice], colours: np.ndarray) -> np.ndarray:
        cv2.multiply(colours, gain[band], dst=product[band], dtype=cv2.CV_32F)
        return cv2.add(product[band], offset[band], dst=corrected[band], dtype=cv2.CV_8U)

    return _composite_corrected(fg, bg, mask, correct, strength, out)


def composite_matrix(fg: np.ndarray, bg: np.ndarray, mask: np.ndarray, matrix: np.ndarray,
                     strength: float = 1.0, out: np.ndarray | None = None,
                     scratch: np.ndarray | None = None, smooth: float = 0.0) -> np.ndarray:
    """:func:`composite_transformed` with one colour matrix for every pixel: ``T = M @
    [C, 1]`` saturated to [0, 255], ``M`` float32 ``(3, 4)`` for colours in grey levels,
    and ``C + alpha * (T - C)``, rounded, ``alpha = strength * mask``; over the person's
    bands, one ``cv2.transform`` each. With ``smooth`` = w > 0 the matrix takes ``(1 - w)
    C + w blur(C)`` (a 3x3 box blur of the band, rounded) instead of ``C``: a correction
    that raises contrast would raise the camera's noise with it, and this keeps it down
    (see :func:`vcam_harmonize.harmonizer.noise_mix`). Arguments as for
    :func:`composite_transformed` (``scratch``: uint8 ``(H, W, 3)``)."""
    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    corrected = np.empty(fg.shape, np.uint8) if scratch is None else scratch

    def correct(band: tuple[slice, slice], colours: np.ndarray) -> np.ndarray:
        if smooth > 0:
            blurred = cv2.blur(colours, (3, 3), dst=corrected[band])
            colours = cv2.addWeighted(colours, 1.0 - smooth, blurred, smooth, 0.0,
                                      dst=corrected[band])
        return cv2.transform(colours, matrix, dst=corrected[band])

    return _composite_corrected(fg, bg, mask, correct, strength, out)


def _composite_corrected(fg: np.ndarray, bg: np.ndarray, mask: np.ndarray, correct,
                         strength: float, out: np.ndarray | None) -> np.ndarray:
    """The band loop of :func:`composite_transformed` and :func:`composite_matrix`:
    ``correct(band, colours)`` returns the corrected uint8 colours of a band of the
    composite."""
    if out is None:
        out = np.empty(bg.shape, np.uint8)
        out[:] = bg
    region = mask >= MASK_FLOOR
    box = bounding_box(region)
    if box is None:
        return out
    made = fg is bg  # the composite is there already
    for band in person_bands(region, box):
        weight = mask[band]
        target = out[band]
        if not made:
            cv2.blendLinear(fg[band], target, weight, 1.0 - weight, dst=target)
        corrected = correct(band, target)
        if strength < 1:
            weight = weight * np.float32(strength)
        cv2.blendLinear(corrected, target, weight, 1.0 - weight, dst=target)
    return out
