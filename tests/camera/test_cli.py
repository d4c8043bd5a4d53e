"""`vcam-harmonize` as a user runs it: the demo, bad input, quiet native libraries, the
camera's format, doctor."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time

import cv2
import pytest

from tests.fakecam import RecordingBackend, recording_backend
from vcam_harmonize.cli import main

from .helpers import grey_frames, write_video
from .test_capture import RecordingCamera


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


@pytest.mark.parametrize("native", [True, False])
def test_doctor_names_the_arithmetic_of_the_cpu_network(native, monkeypatch):
    import torch

    from vcam_harmonize import doctor, harmonizer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(harmonizer, "cpu_computes_bfloat16", lambda: native)
    ok, line = doctor.check_gpu()
    assert ok and line.startswith("no CUDA GPU; PHNet runs on the CPU in ")
    assert ("bfloat16" in line) is native and ("float32" in line) is not native


def test_console_script_help_runs():
    result = subprocess.run([sys.executable, "-m", "vcam_harmonize.cli", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--background" in result.stdout


def _tiff_header(width: int, height: int) -> bytes:
    """A little-endian TIFF that declares ``width`` x ``height`` and holds no pixels."""
    entries = b"".join(struct.pack("<HHII", tag, 4, 1, value)
                       for tag, value in ((256, width), (257, height)))
    return b"II" + struct.pack("<HI", 42, 8) + struct.pack("<H", 2) + entries + b"\0" * 4


@pytest.fixture
def opened(monkeypatch):
    """Records every camera opened and every segmenter started; nothing opens (video
    files neither, as for a file that is no video)."""
    from vcam_harmonize import segmentation

    seen: list[str] = []

    class Camera:
        def __init__(self, source, *args):
            if isinstance(source, int) or str(source).startswith("/dev/video"):
                seen.append(f"camera {source}")

        def isOpened(self):
            return False

        def release(self):
            pass

    original = segmentation.PersonSegmenter.__init__

    def segmenter(self, *args, **kwargs):
        seen.append("segmenter")
        original(self, *args, **kwargs)

    monkeypatch.setattr(cv2, "VideoCapture", Camera)
    monkeypatch.setattr(segmentation.PersonSegmenter, "__init__", segmenter)
    import vcam_harmonize.pipeline  # noqa: F401  (imported before the clock starts)

    return seen


@pytest.mark.parametrize("args,message", [
    (["--background", "{missing}"], "background file not found"),
    (["--background", "{text}"], "not an image or video OpenCV can decode"),
    (["--background", "{bomb}"], "over the 50 megapixel limit"),
    (["--weights", "{weights}"], "not a PHNet checkpoint"),
    (["--config", "{config}"], "unknown key 'colour'"),
    (["--config", "/no/such.toml"], "config file not found"),
    (["--res", "250"], "res must be a positive multiple of 8"),
    (["--width", "100000", "--height", "100000"], "width and height must be 16 to 7680 px"),
    (["--height", "8"], "width and height must be 16 to 7680 px"),
    (["--fps", "0"], "fps must be in (0, 240]"),
    (["--output", "/no/such/dir/out.mp4"], "does not exist"),
    (["--frames", "-1"], "--frames must be 0"),
])
def test_bad_input_is_one_line_before_any_camera_or_segmenter_opens(
        args, message, opened, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "bomb.tif").write_bytes(_tiff_header(20000, 20000))  # 400 megapixels
    (tmp_path / "c.toml").write_text('colour = "red"\n')
    import torch

    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "w.pth")
    args = [a.format(missing=tmp_path / "nothere.png", text=tmp_path / "notes.png",
                     bomb=tmp_path / "bomb.tif", weights=tmp_path / "w.pth",
                     config=tmp_path / "c.toml") for a in args]
    start = time.monotonic()
    code, out, err = _run(["--device", "0", "--output", str(tmp_path / "o.mp4"), *args], capsys)
    took = time.monotonic() - start
    assert code == 2
    assert err.splitlines() == [err.strip()] and err.startswith("error: ") and message in err
    assert opened == [], f"{opened} opened before the bad input was reported"
    assert took < 2.0, f"the error took {took:.2f} s"
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".o.*"))


def _clean_env() -> dict[str, str]:
    names = ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL", "GLOG_minloglevel",
             "TF_CPP_MIN_LOG_LEVEL")
    return {k: v for k, v in os.environ.items() if k not in names}


#: what MediaPipe (absl), TensorFlow Lite, OpenCV and FFmpeg print on their own
NATIVE = re.compile(r"XNNPACK|TensorFlow Lite|absl|^[IWEF]\d{4} |^\[ ?(WARN|ERROR|INFO)|"
                    r"^\[\w+ @ 0x")


def test_a_run_prints_only_our_own_lines_unless_verbose(tmp_path):
    clip = write_video(tmp_path / "clip.avi", grey_frames(20, 160, 96, step=10))
    command = [sys.executable, "-m", "vcam_harmonize.cli", "--device", str(clip), "--output",
               str(tmp_path / "out.mp4"), "--frames", "8", "--width", "160", "--height", "96",
               "--res", "64"]
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=120,
                           env=_clean_env())
    assert quiet.returncode == 0, quiet.stderr
    lines = quiet.stderr.splitlines()
    assert lines and all(line.startswith("vcam-harmonize: ") for line in lines), quiet.stderr
    assert any("gives MJPG 160x96 @ 30 fps" in line for line in lines)
    verbose = subprocess.run([*command, "--verbose"], capture_output=True, text=True,
                             timeout=120, env=_clean_env())
    assert verbose.returncode == 0, verbose.stderr
    # the same run, verbose: the native lines the quiet one kept off the terminal
    assert any(NATIVE.search(line) for line in verbose.stderr.splitlines()), verbose.stderr


@pytest.fixture
def webcam(monkeypatch, tmp_path):
    """Camera 0 is a stand-in UVC webcam; a v4l2loopback device sits at index 10."""
    from vcam_harmonize import capture

    RecordingCamera.instances = []
    monkeypatch.setattr(cv2, "VideoCapture", RecordingCamera)
    monkeypatch.setattr(capture.sys, "platform", "linux")
    monkeypatch.setattr(capture, "DEV", tmp_path / "dev")
    (tmp_path / "dev").mkdir()
    for index in (0, 10):
        (tmp_path / "dev" / f"video{index}").touch()
    drivers = {"video0": "uvcvideo", "video10": "v4l2 loopback"}
    monkeypatch.setattr(capture, "v4l2_driver", lambda path: drivers[path.name])
    return RecordingCamera


def test_list_devices_shows_the_negotiated_format_and_not_the_loopback(webcam, capsys):
    code, out, err = _run(["--list-devices", "--width", "1920", "--height", "1080"], capsys)
    assert code == 0, err
    assert "asked for MJPG 1920x1080 @ 30 fps" in out
    assert "  0: MJPG 1920x1080 @ 30 fps" in out
    assert "10:" not in out
    assert [camera.index for camera in webcam.instances] == [0]


def test_stats_report_what_the_camera_agreed_to(webcam, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(webcam, "offers_mjpg", False)  # a webcam with YUYV only
    monkeypatch.setattr(webcam, "delay", 1 / 30)
    code, _, err = _run(["--device", "0", "--output", str(tmp_path / "o.mp4"), "--width", "320",
                         "--height", "180", "--res", "64", "--frames", "45", "--stats"], capsys)
    assert code == 0, err
    assert "vcam-harmonize: input 0 gives YUYV 320x180 @ 30 fps" in err
    stats = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert stats and stats[-1]["input"] == {"fourcc": "YUYV", "width": 320, "height": 180,
                                            "fps": 30.0}
    # what the camera costs: cores kept busy and the share of the machine, rounded
    last = stats[-1]
    assert last["cpu_cores"] > 0 and last["cpu_cores"] == round(last["cpu_cores"], 2)
    assert 0 < last["cpu_share"] <= 1 and last["cpu_share"] == round(last["cpu_share"], 3)
    assert last["cpu_share"] == pytest.approx(last["cpu_cores"] / os.cpu_count(), abs=0.01)
    summary = re.search(r"vcam-harmonize: (\d+) frames written \(CPU (\d+\.\d\d) cores, "
                        r"(\d+)% of (\d+)\)", err)
    assert summary, err
    assert summary[1] == "45" and float(summary[2]) > 0 and int(summary[4]) == os.cpu_count()


class MissingOBS:
    """pyvirtualcam's OBS backend where OBS is not installed."""

    def __init__(self, **kwargs):
        raise RuntimeError("OBS Virtual Camera device not found! Did you install OBS?")


class ClosedCamera:
    def __init__(self, *args):
        pass

    def isOpened(self):
        return False

    def release(self):
        pass


INSTALL_STEP = {"linux": "sudo modprobe v4l2loopback", "win32": "regsvr32",
                "darwin": "install OBS Studio 30 or newer"}


@pytest.mark.parametrize("platform", ["linux", "win32", "darwin"])
def test_doctor_fails_each_check_whose_thing_is_missing(platform, monkeypatch, tmp_path,
                                                        capsys):
    import pyvirtualcam

    from vcam_harmonize import capture, doctor, segmentation

    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(doctor, "LOOPBACK_MODULE", tmp_path / "no-module")
    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", {"obs": MissingOBS})
    monkeypatch.setattr(capture, "DEV", tmp_path)
    (tmp_path / "video0").touch()
    monkeypatch.setattr(capture, "v4l2_driver", lambda path: "uvcvideo")
    monkeypatch.setattr(cv2, "VideoCapture", ClosedCamera)
    monkeypatch.setitem(segmentation.MODEL_FILES, "landscape", "missing.tflite")
    monkeypatch.setitem(sys.modules, "torch", None)  # PyTorch missing
    code, out, _ = _run(["doctor", "--weights", str(tmp_path / "missing.safetensors")], capsys)
    assert code == 1
    for label in ("virtual camera", "cameras", "GPU", "model", "segmentation"):
        assert f"[FAIL] {label}:" in out, out
    if platform == "linux":
        assert "[FAIL] virtual camera: v4l2loopback is not loaded" in out
    else:
        assert "Did you install OBS?" in out
    assert "bundled segmentation model" in out and "no camera opens" in out
    assert INSTALL_STEP[platform] in out


@pytest.mark.parametrize("platform", ["linux", "win32", "darwin"])
def test_doctor_passes_the_virtual_camera_and_cameras_that_are_there(platform, webcam,
                                                                     monkeypatch, tmp_path):
    import pyvirtualcam

    from vcam_harmonize import doctor

    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(doctor, "LOOPBACK_MODULE", tmp_path)  # the module is loaded
    with recording_backend("recording"):
        monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS",
                            {"recording": RecordingBackend})
        assert doctor.check_virtual_camera() == (True, "/dev/video-test opens")
    assert RecordingBackend.instances[-1].closed
    ok, message = doctor.check_cameras()
    assert ok and "0 gives MJPG 1280x720 @ 30 fps" in message


def test_doctor_runs_the_segmentation_model_on_a_frame():
    from vcam_harmonize import doctor

    ok, message = doctor.check_segmenter()
    assert ok, message
    assert "ran selfie_segmentation_landscape.tflite on the bundled portrait" in message


def test_the_console_script_exits_normally_with_mains_code(monkeypatch):
    """No os._exit: atexit handlers and buffered output still run (the signal tests in
    tests/robustness time the whole exit)."""
    import gc

    from vcam_harmonize import cli

    monkeypatch.setattr(cli, "main", lambda: 3)
    try:
        with pytest.raises(SystemExit) as leaving:
            cli.entry()
    finally:
        gc.unfreeze()
    assert leaving.value.code == 3


@pytest.mark.parametrize(("key", "default", "other", "wrong", "choices"), [
    ("transform", "global", "local", "spatial", "global, local"),
    ("precision", "auto", "float32", "float16", "auto, float32"),
])
def test_a_choice_comes_from_the_flag_or_the_config_file(key, default, other, wrong, choices,
                                                         tmp_path, capsys):
    from vcam_harmonize.cli import build_parser, config_from_args

    assert getattr(config_from_args(build_parser().parse_args([])), key) == default
    given = build_parser().parse_args([f"--{key}", other])
    assert getattr(config_from_args(given), key) == other
    (tmp_path / "c.toml").write_text(f'{key} = "{wrong}"\n')
    code, _, err = _run(["--config", str(tmp_path / "c.toml"), "--output",
                         str(tmp_path / "o.mp4")], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert f"{key} must be one of {choices}" in err
    assert not (tmp_path / "o.mp4").exists()
