"""The demo clip: a real person in a room, moving as people do in a call, rendered on the
fly so that no webcam is needed.

The person is a photo from the London face set (DeBruine & Jones 2017, CC BY 4.0),
shipped as ``assets/demo_person.jpg`` with its person mask ``assets/demo_person_mask.png``
(see ``assets/CREDITS.md``). The photo's own studio background never reaches the frame:
the person is cut out along a mask pulled a few pixels inside the photo's mask, so no
rectangle edge and no halo of the studio wall is left, and placed in a room drawn here.
The room is lit by a warm, dim lamp; halfway through the 6-second loop a cool daylight
lamp comes on, and the whole scene (person and room) changes light. The bundled
backgrounds are lit otherwise, which is what the harmonization has to correct.

:class:`DemoClip` is a frame source like :class:`~vcam_harmonize.capture.Capture`;
:func:`write_demo_clip` saves the same frames as a video file.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vcam_harmonize.capture import Frame
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.images import read_image

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_PHOTO = ASSETS / "demo_person.jpg"
DEMO_MASK = ASSETS / "demo_person_mask.png"
DEMO_SECONDS = 6.0
#: the light switches from the warm lamp to daylight over this span of each loop (s)
LIGHT_CHANGE = (2.8, 3.3)
#: the cut-out edge lies this many pixels (of the photo) inside the photo's mask
CUT_INSET_PX = 4
#: RGB gains of the two lights: a dim tungsten lamp, then a brighter cool daylight lamp
WARM_LAMP = np.array([1.00, 0.78, 0.52], np.float32)
DAYLIGHT = np.array([0.92, 1.02, 1.18], np.float32)
NOISE_SIGMA = 2.0


@dataclass(frozen=True)
class DemoPerson:
    """The demo's person: RGB photo ``(h, w, 3)`` uint8 and the cut-out's alpha ``(h, w)``
    float32 in [0, 1], zero wherever the photo's mask is (the studio background)."""

    image: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray  # the photo's own person mask, bool (h, w)


def cut_out_alpha(mask: np.ndarray, inset: int = CUT_INSET_PX) -> np.ndarray:
    """A soft alpha that lies wholly inside ``mask`` (bool ``(h, w)``): the mask eroded
    by ``inset`` pixels, then feathered by less than that, so that its edge is smooth and
    no pixel outside the mask gets any weight. The bottom rows, where the photo cuts the
    body off, stay solid (the frame's bottom edge hides them)."""
    solid = mask.astype(np.uint8)
    # the cut at the photo's bottom edge is not an outline: extend it before eroding
    padded = cv2.copyMakeBorder(solid, 0, 2 * inset, 0, 0, cv2.BORDER_REPLICATE)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * inset + 1, 2 * inset + 1))
    core = cv2.erode(padded, kernel).astype(np.float32)
    feather = max(1, inset // 2)
    soft = cv2.blur(core, (2 * feather + 1, 2 * feather + 1))[: mask.shape[0]]
    return np.where(mask, np.clip(soft, 0.0, 1.0), 0.0).astype(np.float32)


def load_demo_photo() -> DemoPerson:
    """The bundled demo person (photo, cut-out alpha, mask)."""
    for path in (DEMO_PHOTO, DEMO_MASK):
        if not path.is_file():
            raise InputError(f"the demo file {path} is missing; reinstall vcam-harmonize")
    image = read_image(DEMO_PHOTO)
    mask = cv2.imread(str(DEMO_MASK), cv2.IMREAD_GRAYSCALE)
    if mask is None or mask.shape != image.shape[:2]:
        raise InputError(f"the demo mask {DEMO_MASK} does not fit its photo; reinstall "
                         f"vcam-harmonize")
    mask = mask > 127
    return DemoPerson(image, cut_out_alpha(mask), mask)


@functools.lru_cache(maxsize=4)
def room(size: tuple[int, int]) -> np.ndarray:
    """The demo's room at ``size = (width, height)``: a plaster wall with a door frame, a
    shelf and a picture, in neutral colours (the lamps colour it). uint8 RGB, cached: do
    not write to it."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # a wall lit from the upper left, darker toward the floor
    shade = 0.80 + 0.25 * (1 - yy / height) - 0.12 * (xx / width)
    wall = np.stack([200 * shade, 192 * shade, 178 * shade], -1)
    u = width / 1280.0

    def box(x0, y0, x1, y1, colour):
        cv2.rectangle(wall, (int(x0 * u), int(y0 * u)), (int(x1 * u), int(y1 * u)), colour, -1)

    box(60, 120, 300, 720, (150, 128, 104))  # a door
    box(80, 140, 280, 720, (168, 146, 120))
    box(930, 300, 1280, 322, (96, 70, 52))  # a shelf with books
    for k, colour in enumerate([(120, 40, 40), (40, 70, 110), (160, 140, 60), (60, 90, 60)]):
        box(960 + 42 * k, 196 + 8 * (k % 2), 995 + 42 * k, 300, colour)
    box(900, 420, 1160, 600, (70, 64, 58))  # a framed picture
    box(915, 435, 1145, 585, (120, 150, 170))
    wall = cv2.GaussianBlur(wall, (0, 0), 1.2 * u + 0.5)
    return np.clip(wall + 0.5, 0, 255).astype(np.uint8)


def _light(t: float) -> np.ndarray:
    """RGB gains of the room's light at ``t`` seconds into the loop."""
    start, end = LIGHT_CHANGE
    k = float(np.clip((t - start) / (end - start), 0.0, 1.0))
    k = k * k * (3 - 2 * k)  # a lamp warming up, not a step
    return (1 - k) * 0.82 * WARM_LAMP + k * 1.08 * DAYLIGHT


def _placement(person: DemoPerson, t: float, size: tuple[int, int]) -> np.ndarray:
    """The 2x3 affine matrix that puts the photo into the frame at ``t``: the person sways
    sideways, leans in and out, nods and tilts a little; the photo's bottom edge always
    stays below the frame's."""
    width, height = size
    phase = 2 * math.pi * t / DEMO_SECONDS
    zoom = 1.0 + 0.06 * math.sin(phase) + 0.02 * math.sin(3.1 * phase)
    scale = 1.12 * zoom * height / person.image.shape[0]
    angle = 2.5 * math.sin(1.7 * phase)
    photo_h, photo_w = person.image.shape[:2]
    matrix = cv2.getRotationMatrix2D((photo_w / 2, photo_h), angle, scale)
    # the rotation centre (bottom middle of the photo) lands below the frame's bottom
    target_x = width * (0.5 + 0.05 * math.sin(phase) + 0.015 * math.sin(2.3 * phase))
    target_y = height * (1.08 + 0.015 * (1 + math.sin(2 * phase)))
    matrix[:, 2] += np.array([target_x, target_y]) - matrix @ np.array([photo_w / 2, photo_h, 1])
    return matrix


def demo_frame_and_alpha(person: DemoPerson, t: float,
                         size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The demo at ``t`` seconds (a 6-second loop) and the person's alpha in it.

    Returns uint8 RGB ``(height, width, 3)`` and float32 ``(height, width)``: where the
    alpha is 0 the frame shows the room only, never the photo.
    """
    t = t % DEMO_SECONDS
    matrix = _placement(person, t, size)
    photo = cv2.warpAffine(person.image, matrix, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(person.alpha, matrix, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)
    frame = cv2.blendLinear(photo, room(size), alpha, 1.0 - alpha)
    frame = cv2.transform(frame, np.diag(_light(t)).astype(np.float32))
    # webcam noise: a window of one fixed noise field, moved every frame
    rise, fall = _noise(size)
    dy, dx = (int(v) for v in np.random.default_rng(int(round(t * 1000))).integers(0, 32, 2))
    window = (slice(dy, dy + size[1]), slice(dx, dx + size[0]))
    frame = cv2.subtract(cv2.add(frame, rise[window]), fall[window])
    return frame, alpha


@functools.lru_cache(maxsize=4)
def _noise(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean Gaussian noise (sigma ``NOISE_SIGMA``) 32 px larger than ``size`` each
    way, as its positive and negative parts in uint8 (saturating adds, no float frame)."""
    width, height = size
    field = np.random.default_rng(7).normal(0.0, NOISE_SIGMA, (height + 32, width + 32, 3))
    field = np.round(field)
    return (np.clip(field, 0, 255).astype(np.uint8),
            np.clip(-field, 0, 255).astype(np.uint8))


def demo_frame(person: DemoPerson, t: float, size: tuple[int, int]) -> np.ndarray:
    """The demo frame at ``t`` seconds: uint8 RGB ``(height, width, 3)``."""
    return demo_frame_and_alpha(person, t, size)[0]


class DemoClip:
    """A frame source that renders the demo (looping) at ``fps``.

    ``paced=False`` renders as fast as the consumer reads (every frame handed over).
    """

    def __init__(self, size: tuple[int, int] = (1280, 720), fps: float = 30.0,
                 paced: bool = True):
        self.size, self.paced = size, paced
        self.fps = float(fps)
        self.state = "stopped"
        self._person = load_demo_photo()
        self._index = 0
        self._started: float | None = None  # when the first frame was read
        self._stop = threading.Event()

    def start(self) -> DemoClip:
        """Start playing; the clock starts with the first frame read."""
        self._stop.clear()
        self._started = None
        self.state = "running"
        return self

    def stop(self) -> None:
        self._stop.set()
        self.state = "stopped"

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._stop.is_set():
            return None
        if self.paced:
            if self._started is None:
                self._started = time.monotonic() - self._index / self.fps
            due = self._started + self._index / self.fps
            delay = due - time.monotonic()
            if delay > timeout or (delay > 0 and self._stop.wait(delay)):
                return None
        image = demo_frame(self._person, self._index / self.fps, self.size)
        frame = Frame(image, self._index, time.monotonic())
        self._index += 1
        return frame


def write_demo_clip(path: str | Path, size: tuple[int, int] = (640, 360), fps: float = 30.0,
                    seconds: float = DEMO_SECONDS) -> Path:
    """Save the demo as an MJPG ``.avi`` (or any container OpenCV writes) file."""
    path = Path(path)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    if not writer.isOpened():
        raise InputError(f"cannot write video file {path}")
    person = load_demo_photo()
    try:
        for i in range(int(round(seconds * fps))):
            writer.write(cv2.cvtColor(demo_frame(person, i / fps, size), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
