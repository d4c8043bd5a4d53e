"""Hostile and wrong input to the camera: one clear line, exit code 2, nothing written."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from vcam_harmonize.cli import main
from vcam_harmonize.config import CameraConfig, load_toml
from vcam_harmonize.models import InputError


@pytest.mark.parametrize("text,message", [
    ('strength = "high"\n', "strength must be float"),
    ("res = 250\n", "res must be a positive multiple of 8"),
    ("strength = -0.5\n", "strength must be in [0, 1]"),
    ("harmonize = 1\n", "harmonize must be bool"),
    ("fps = 0\n", "fps must be in (0, 240]"),
    ("[camera]\nres = 256\n", "unknown key 'camera'"),
    ("res = [\n", "not a valid TOML file"),
])
def test_bad_config_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_toml(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_binary_garbage_config_is_an_input_error(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not a valid TOML file"):
        load_toml(path)


def test_defaults_are_valid_and_round_trip(tmp_path):
    from vcam_harmonize.config import save_toml

    path = save_toml(CameraConfig(res=512, background="blur:9"), tmp_path / "s.toml")
    loaded = load_toml(path)
    assert loaded == CameraConfig(res=512, background="blur:9")
    assert [p.name for p in tmp_path.iterdir()] == ["s.toml"]


def test_a_run_writes_nothing_but_its_output(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "out" / "demo.mp4"
    out.parent.mkdir()
    code = main(["--demo", "--output", str(out), "--frames", "5", "--width", "160",
                 "--height", "96", "--res", "64"])
    assert code == 0, capsys.readouterr().err
    assert list(work.iterdir()) == []
    assert [p.name for p in out.parent.iterdir()] == ["demo.mp4"]
    assert not (tmp_path / "home").exists()


def test_weights_that_carry_code_are_refused_by_the_camera(tmp_path, capsys):
    import os
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    weights = tmp_path / "evil.pth"
    weights.write_bytes(pickle.dumps({"encoder.0.0.weight": Payload()}))
    code = main(["--demo", "--weights", str(weights), "--output", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "refused to load" in err
    assert not marker.exists() and not (tmp_path / "o.mp4").exists()


def _tiff(order: bytes, version: int, width: int, height: int, kind: int) -> bytes:
    """A TIFF (42) or BigTIFF (43) header declaring ``width`` x ``height`` as SHORT (3)
    or LONG (4) values, with no pixels."""
    o = "<" if order == b"II" else ">"
    value = {3: o + "H", 4: o + "I"}[kind]
    if version == 42:
        entries = b"".join(struct.pack(o + "HHI", tag, kind, 1)
                           + struct.pack(value, size).ljust(4, b"\0")
                           for tag, size in ((256, width), (257, height)))
        return order + struct.pack(o + "HI", 42, 8) + struct.pack(o + "H", 2) + entries
    entries = b"".join(struct.pack(o + "HHQ", tag, kind, 1)
                       + struct.pack(value, size).ljust(8, b"\0")
                       for tag, size in ((256, width), (257, height)))
    return order + struct.pack(o + "HHHQ", 43, 8, 0, 16) + struct.pack(o + "Q", 2) + entries


@pytest.mark.parametrize("order", [b"II", b"MM"])
@pytest.mark.parametrize("version,kind", [(42, 4), (42, 3), (43, 4), (43, 3)])
def test_tiff_background_bombs_are_refused_from_the_header(tmp_path, order, version, kind):
    from vcam_harmonize.backgrounds import load_background, tiff_size

    side = 60000 if kind == 3 else 100000  # SHORT holds at most 65535
    path = tmp_path / "huge.tiff"
    path.write_bytes(_tiff(order, version, side, side, kind))
    assert tiff_size(path) == (side, side)
    with pytest.raises(InputError, match=f"is {side}x{side} pixels, over the 50 megapixel"):
        load_background(path, (320, 180))


def test_the_tiff_check_reads_what_opencv_writes_and_lets_it_load(tmp_path):
    from vcam_harmonize.backgrounds import load_background, tiff_size

    path = tmp_path / "wall.tif"
    cv2.imwrite(str(path), np.full((90, 160, 3), 200, np.uint8))
    assert tiff_size(path) == (160, 90)
    assert load_background(path, (320, 180)).frame(None, None).shape == (180, 320, 3)
    (tmp_path / "cut.tif").write_bytes(path.read_bytes()[:10])  # a header cut short
    assert tiff_size(tmp_path / "cut.tif") is None
    with pytest.raises(InputError):
        load_background(tmp_path / "cut.tif", (320, 180))


@pytest.mark.parametrize("size", [(100000, 100000), (7681, 100), (7680, 7680), (8, 8)])
def test_frame_sizes_have_sane_bounds(size):
    with pytest.raises(InputError, match="width and height must be 16 to 7680 px"):
        CameraConfig(width=size[0], height=size[1]).validate()
    assert CameraConfig(width=1080, height=1920).validate()  # portrait 1080p is fine
    assert CameraConfig(width=7680, height=4320).validate()
