"""Backgrounds: every spec kind, cover-crop, halo-free blur, bad files, odd image formats."""

from __future__ import annotations

import logging
import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from vcam_harmonize.backgrounds import (
    BackgroundCycler,
    blur_background,
    default_backgrounds,
    load_background,
)
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.images import header_size

from .helpers import frame_number, grey_frames, write_video

SIZE = (64, 48)


@pytest.fixture
def camera():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    mask = np.zeros(frame.shape[:2], np.float32)
    mask[10:40, 20:44] = 1.0
    return frame, mask


def write_image(path, image):
    assert cv2.imwrite(str(path), image)
    return path


def test_image_is_cover_cropped_to_output_size(tmp_path, camera):
    image = np.zeros((100, 400, 3), np.uint8)  # BGR: blue left, green centre, red right
    image[:, :100, 0] = 255
    image[:, 100:300, 1] = 255
    image[:, 300:, 2] = 255
    background = load_background(str(write_image(tmp_path / "wide.png", image)), SIZE)
    out = background.frame(*camera)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert np.all(out == (0, 255, 0))  # RGB: only the green centre survives the crop
    assert background.passthrough is False


def test_colour_none_and_blur_specs(camera):
    frame, mask = camera
    colour = load_background("#ff8000", SIZE).frame(frame, mask)
    assert colour.shape == (48, 64, 3) and np.all(colour == (255, 128, 0))
    passthrough = load_background("none", SIZE)
    assert passthrough.passthrough is True
    assert np.array_equal(passthrough.frame(frame, mask), frame)
    soft, strong = load_background("blur", SIZE), load_background("blur:40", SIZE)
    assert soft.sigma == 15 and strong.sigma == 40
    assert soft.frame(frame, mask).std() < frame.std() / 3
    for bad in ("#12345", "#gg0000", "blur:abc", "blur:0"):
        with pytest.raises(InputError):
            load_background(bad, SIZE)


def test_blur_leaves_no_halo_of_the_person():
    frame = np.full((240, 320, 3), 20, np.uint8)  # dark room
    mask = np.zeros((240, 320), np.float32)
    frame[60:180, 120:200] = 250  # bright person
    mask[60:180, 120:200] = 1.0
    blurred = blur_background(frame, mask, 15.0)
    near = blurred[60:180, 100:116]  # background just left of the person
    assert blurred.shape == frame.shape
    assert near.max() <= 25
    assert cv2.GaussianBlur(frame, (0, 0), 15)[60:180, 100:116].mean() > 60  # naive blur glows
    assert abs(int(blurred[5, 5, 0]) - 20) <= 1


def test_video_background_loops_at_its_frame_rate(tmp_path, camera):
    path = write_video(tmp_path / "bg.avi", grey_frames(5, 32, 32, step=40), fps=50)
    background = load_background(path, SIZE)
    seen = []
    start = time.monotonic()
    while time.monotonic() - start < 0.35:
        out = background.frame(*camera)
        assert out.shape == (48, 64, 3)
        seen.append(frame_number(out, step=40))
        time.sleep(0.005)
    background.close()
    assert set(seen) == {0, 1, 2, 3, 4}
    assert seen.index(4) < len(seen) - 1 - seen[::-1].index(0)  # 0 shown again after 4


def test_truncated_video_keeps_playing_and_warns_once(tmp_path, camera, caplog):
    path = write_video(tmp_path / "cut.avi", grey_frames(12, 32, 32), fps=100)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.8)])  # the last frames are cut off
    background = load_background(path, SIZE)
    seen = []
    with caplog.at_level(logging.WARNING, logger="vcam_harmonize.backgrounds"):
        start = time.monotonic()
        while time.monotonic() - start < 0.3:
            out = background.frame(*camera)
            assert out.shape == (48, 64, 3)
            seen.append(frame_number(out))
            time.sleep(0.005)
    assert max(seen) < 11 and seen.count(0) > 2  # plays the good part in a loop
    assert [r.message for r in caplog.records] == [
        f"video background {path} ended early (truncated?); looping the part that plays"
    ]


def test_bad_files_are_input_errors(tmp_path):
    cases = {
        "missing.png": None,
        "empty.png": b"",
        "random.png": np.random.default_rng(0).bytes(2000),
        "notes.jpg": b"these are not pixels\n" * 20,
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    truncated = write_image(
        tmp_path / "full.png",
        np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8),
    )
    (tmp_path / "truncated.png").write_bytes(truncated.read_bytes()[:5000])
    for name, pattern in (
        ("missing.png", "not found"),
        ("empty.png", "empty"),
        ("random.png", "cannot read"),
        ("notes.jpg", "cannot read"),
        ("truncated.png", "cannot decode"),
    ):
        with pytest.raises(InputError, match=pattern):
            load_background(tmp_path / name, SIZE)


def png_bomb(width: int, height: int) -> bytes:
    """A PNG header claiming a huge grey image, with a token of compressed data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_bomb(width: int, height: int) -> bytes:
    """A JPEG header (SOI, APP0, SOF0) claiming a huge image."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def test_decompression_bombs_are_refused_from_the_header(tmp_path):
    for name, data in (("bomb.png", png_bomb(20000, 20000)), ("bomb.jpg", jpeg_bomb(9000, 9000))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError, match="megapixel limit"):
            load_background(path, SIZE)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp"])
def test_header_size_matches_real_files(tmp_path, suffix):
    path = write_image(tmp_path / f"img{suffix}", np.zeros((37, 53, 3), np.uint8))
    assert header_size(path) == (53, 37)


def test_grey_rgba_and_16_bit_images_load(tmp_path, camera):
    grey = write_image(tmp_path / "grey.png", np.full((30, 40), 77, np.uint8))
    out = load_background(grey, SIZE).frame(*camera)
    assert out.shape == (48, 64, 3) and np.all(out == 77)

    bgra = np.zeros((30, 40, 4), np.uint8)
    bgra[..., :3] = (10, 20, 30)
    bgra[..., 3] = 255
    out = load_background(write_image(tmp_path / "rgba.png", bgra), SIZE).frame(*camera)
    assert np.all(out == (30, 20, 10))

    deep = np.full((30, 40, 3), 257 * 100, np.uint16)
    deep[..., 0] = 65535
    out = load_background(write_image(tmp_path / "deep.png", deep), SIZE).frame(*camera)
    assert np.all(out == (100, 100, 255))


def test_cycler_walks_the_folder_and_skips_bad_files(tmp_path, camera):
    write_image(tmp_path / "a.png", np.full((8, 8, 3), 10, np.uint8))
    (tmp_path / "b.png").write_bytes(b"")
    write_image(tmp_path / "c.jpg", np.full((8, 8, 3), 200, np.uint8))
    (tmp_path / "readme.txt").write_text("ignored")
    cycler = BackgroundCycler(tmp_path, SIZE)
    assert [p.name for p in cycler.paths] == ["a.png", "b.png", "c.jpg"]
    levels = [int(cycler.current.frame(*camera).mean())]
    for _ in range(3):
        levels.append(int(cycler.next().frame(*camera).mean()))
    assert levels in ([10, 200, 10, 200], [10, 199, 10, 199], [10, 201, 10, 201])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images or videos"):
        BackgroundCycler(tmp_path / "empty", SIZE)


def test_default_backgrounds_ship_with_the_package(camera):
    paths = default_backgrounds()
    assert len(paths) == 3
    for path in paths:
        assert path.stat().st_size < 300_000
        assert header_size(path) == (1280, 720)
        assert load_background(path, SIZE).frame(*camera).shape == (48, 64, 3)
