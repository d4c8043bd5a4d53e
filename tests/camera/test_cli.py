"""`vcam-harmonize` as a user runs it: the demo, bad input, doctor."""

from __future__ import annotations

import subprocess
import sys

import cv2
import pytest

from tests.fakecam import recording_backend
from vcam_harmonize.cli import main


def _run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_demo_writes_a_video_file(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    code, _, err = _run(["--demo", "--output", str(out), "--width", "320", "--height", "180",
                         "--frames", "12", "--res", "64"], capsys)
    assert code == 0, err
    cap = cv2.VideoCapture(str(out))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 12
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) \
        == (320, 180)
    assert not list(tmp_path.glob(".*tmp*")) and not list(tmp_path.glob("*.tmp"))


def test_demo_reaches_the_virtual_camera(tmp_path, capsys, monkeypatch):
    import vcam_harmonize.sinks as sinks

    with recording_backend("recording") as backend:
        original = sinks.VirtualCameraSink.__init__
        monkeypatch.setattr(sinks.VirtualCameraSink, "__init__",
                            lambda self, *a, **k: original(self, *a, **{**k,
                                                                        "backend": "recording"}))
        code, _, err = _run(["--demo", "--frames", "8", "--width", "320", "--height", "180",
                             "--res", "64"], capsys)
    assert code == 0, err
    assert backend.instances and len(backend.instances[-1].frames) >= 8


@pytest.mark.parametrize("args,message", [
    (["--device", "7"], "camera 7 does not open; cameras that do"),
    (["--device", "/no/such/clip.mp4"], "video file not found"),
    (["--demo", "--background", "{bad}", "--output", "x.mp4"], "background file not found"),
    (["--demo", "--weights", "{weights}", "--output", "x.mp4"], "not a PHNet checkpoint"),
    (["--demo", "--res", "250", "--output", "x.mp4"], "res must be a positive multiple of 8"),
    (["--demo", "--strength", "-1", "--output", "x.mp4"], "strength must be in [0, 1]"),
    (["--config", "{config}"], "unknown key 'colour'"),
    (["--config", "/no/such.toml"], "config file not found"),
    (["--demo"], "virtual camera not available"),
    (["--demo", "--output", "/no/such/dir/out.mp4"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.png").write_text("not an image")
    import torch

    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "w.pth")
    (tmp_path / "c.toml").write_text('colour = "red"\n')
    args = [a.format(bad=tmp_path / "nothere.png", weights=tmp_path / "w.pth",
                     config=tmp_path / "c.toml") for a in args]
    code, out, err = _run(args, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "x.mp4").exists()


def test_background_that_is_not_an_image_or_video(tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("plain text")
    code, _, err = _run(["--demo", "--background", str(bad), "--output",
                         str(tmp_path / "o.mp4")], capsys)
    assert code == 2 and "error:" in err


def test_doctor_prints_the_setup_commands_when_no_loopback(capsys, monkeypatch):
    from vcam_harmonize import doctor

    monkeypatch.setattr(doctor, "check_virtual_camera", lambda: (False, "not loaded"))
    code, out, _ = _run(["doctor"], capsys)
    assert "[ok] model" in out and "[FAIL] virtual camera: not loaded" in out
    assert code == 1
    if sys.platform.startswith("linux"):
        assert 'card_label="PHNet Cam" exclusive_caps=1' in out


def test_console_script_help_runs():
    result = subprocess.run([sys.executable, "-m", "vcam_harmonize.cli", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--background" in result.stdout
