"""Generate the default backgrounds in vcam_harmonize/assets/backgrounds/ (1280x720 JPEG).

Everything is drawn procedurally with numpy and OpenCV from a fixed seed, so the files are
the project's own work and can be regenerated: ``python tools/make_backgrounds.py``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 1280, 720
OUT = Path(__file__).resolve().parent.parent / "vcam_harmonize" / "assets" / "backgrounds"


def vertical_gradient(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> np.ndarray:
    """(HEIGHT, WIDTH, 3) float32 RGB blending ``top`` into ``bottom``."""
    t = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None, None]
    row = (1 - t) * np.float32(top) + t * np.float32(bottom)
    return np.repeat(row, WIDTH, axis=1)


def radial(cx: float, cy: float, radius: float) -> np.ndarray:
    """(HEIGHT, WIDTH) float32 soft disc: 1 at (cx, cy), fading to 0 at ``radius``."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    distance = np.hypot(x - cx, y - cy) / radius
    return np.clip(1.0 - distance, 0.0, 1.0) ** 2


def soft_shapes(image: np.ndarray, shapes: list[tuple], blur: float) -> np.ndarray:
    """Draw filled rectangles (x0, y0, x1, y1, rgb, opacity), blur them, blend them on.

    The layer is premultiplied by its opacity, so blurred edges do not darken.
    """
    layer = np.zeros_like(image)
    alpha = np.zeros(image.shape[:2], np.float32)
    for x0, y0, x1, y1, rgb, opacity in shapes:
        cv2.rectangle(layer, (x0, y0), (x1, y1), [c * opacity for c in rgb], -1)
        cv2.rectangle(alpha, (x0, y0), (x1, y1), opacity, -1)
    layer = cv2.GaussianBlur(layer, (0, 0), blur)
    alpha = cv2.GaussianBlur(alpha, (0, 0), blur)[:, :, None]
    return image * (1 - alpha) + layer


def vignette(image: np.ndarray, strength: float) -> np.ndarray:
    """Darken the corners by up to ``strength``."""
    falloff = radial(WIDTH / 2, HEIGHT / 2, 0.9 * np.hypot(WIDTH, HEIGHT))
    return image * (1 - strength + strength * np.sqrt(falloff))[:, :, None]


def warm_sunset(rng: np.random.Generator) -> np.ndarray:
    """A warm room at dusk: violet ceiling to orange window glow, a darker floor."""
    image = vertical_gradient((70, 40, 90), (250, 150, 80))
    sun = radial(0.7 * WIDTH, 0.55 * HEIGHT, 0.55 * WIDTH)[:, :, None]
    image = image * (1 - 0.6 * sun) + np.float32((255, 210, 140)) * 0.6 * sun
    frames = [
        (760, 120, 1180, 520, (255, 200, 150), 0.35),
        (0, 560, WIDTH, HEIGHT, (60, 35, 30), 0.8),
    ]
    return vignette(soft_shapes(image, frames, 12), 0.35)


def cool_office(rng: np.random.Generator) -> np.ndarray:
    """A cool blue office: gradient wall with soft windows, shelves and a desk line."""
    image = vertical_gradient((150, 180, 215), (40, 60, 95))
    shapes = [
        (80, 80, 380, 420, (215, 230, 250), 0.7),
        (440, 80, 740, 420, (215, 230, 250), 0.7),
        (880, 140, 1200, 170, (70, 90, 120), 0.8),
        (880, 300, 1200, 330, (70, 90, 120), 0.8),
        (0, 590, WIDTH, 620, (30, 40, 60), 0.7),
    ]
    for _ in range(6):
        x, y = int(rng.integers(900, 1160)), int(rng.integers(60, 130))
        shapes.append((x, y, x + 30, y + 80, tuple(int(c) for c in rng.integers(90, 200, 3)), 0.6))
    return vignette(soft_shapes(image, shapes, 8), 0.25)


def green_bokeh(rng: np.random.Generator) -> np.ndarray:
    """Out-of-focus foliage: deep green gradient with soft light discs."""
    image = vertical_gradient((40, 90, 45), (10, 40, 20))
    lights = np.zeros_like(image)
    for _ in range(70):
        centre = (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)))
        colour = tuple(float(c) for c in rng.uniform((140, 200, 90), (230, 255, 170)))
        layer = np.zeros_like(image)
        cv2.circle(layer, centre, int(rng.integers(20, 70)), colour, -1, cv2.LINE_AA)
        lights = np.maximum(lights, layer * float(rng.uniform(0.15, 0.5)))
    lights = cv2.GaussianBlur(lights, (0, 0), 4)
    return vignette(image + lights, 0.3)


def main() -> None:
    rng = np.random.default_rng(7)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, draw in (
        ("cool_office", cool_office),
        ("green_bokeh", green_bokeh),
        ("warm_sunset", warm_sunset),
    ):
        image = draw(rng) + rng.uniform(-1.0, 1.0, (HEIGHT, WIDTH, 1)).astype(np.float32)
        rgb = np.clip(image + 0.5, 0, 255).astype(np.uint8)
        path = OUT / f"{name}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
        print(f"{path}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
