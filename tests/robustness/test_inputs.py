"""Hostile and wrong input to the camera: one clear line, exit code 2, nothing written."""

from __future__ import annotations

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
