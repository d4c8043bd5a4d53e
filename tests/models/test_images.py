"""Image headers: sizes read from the header, and headers cut short."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.images import header_size, read_image

FORMATS = [".png", ".bmp", ".webp", ".jpg"]


def _encoded(ext: str) -> bytes:
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, :20] = (10, 40, 220)
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("ext", FORMATS)
def test_header_size_reads_width_and_height(ext, tmp_path):
    path = tmp_path / f"whole{ext}"
    path.write_bytes(_encoded(ext))
    assert tuple(header_size(path)) == (40, 30)


@pytest.mark.parametrize("ext,keep", [(".png", 12), (".png", 20), (".bmp", 6), (".bmp", 20),
                                      (".webp", 16), (".webp", 24), (".jpg", 4), (".jpg", 22)])
def test_a_truncated_header_is_no_size_and_a_clean_input_error(ext, keep, tmp_path):
    path = tmp_path / f"cut{ext}"
    path.write_bytes(_encoded(ext)[:keep])
    assert header_size(path) is None
    with pytest.raises(InputError, match=f"cannot decode image {path}"):
        read_image(path)
