"""``vcam-harmonize doctor``: check the virtual camera, cameras, GPU and model, and print
the exact setup commands for this OS."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: present while the v4l2loopback kernel module is loaded (Linux).
LOOPBACK_MODULE = Path("/sys/module/v4l2loopback")
_ASSETS = Path(__file__).parent / "assets"
#: the person-mask overlap with the bundled portrait's mask that a working model reaches.
_MIN_PORTRAIT_IOU = 0.8


def check_virtual_camera() -> tuple[bool, str]:
    """Open the virtual camera as a run would (and close it at once): on Linux a
    v4l2loopback device, on Windows and macOS a pyvirtualcam backend (OBS Virtual Camera,
    Unity Capture). Fails, with what was missing, when none opens."""
    import pyvirtualcam

    from vcam_harmonize.models.errors import InputError
    from vcam_harmonize.sinks import VirtualCameraSink

    if sys.platform.startswith("linux") and not LOOPBACK_MODULE.exists():
        return False, "v4l2loopback is not loaded (no loopback device)"
    if not pyvirtualcam.camera.BACKENDS:
        return False, f"pyvirtualcam has no virtual-camera backend on {sys.platform}"
    try:
        sink = VirtualCameraSink(640, 480, 30)
    except InputError as err:
        cause = err.__cause__ if err.__cause__ is not None else err
        return False, "no virtual camera opens (" + " / ".join(str(cause).splitlines()) + ")"
    try:
        return True, f"{sink.device} opens"
    finally:
        sink.close()


def check_cameras() -> tuple[bool, str]:
    """The cameras that open, with the format each agrees to for 1280x720 at 30 fps."""
    from vcam_harmonize.capture import probe_cameras
    from vcam_harmonize.config import CameraConfig

    wanted = CameraConfig()
    cameras = probe_cameras(width=wanted.width, height=wanted.height, fps=wanted.fps)
    if not cameras:
        return False, "no camera opens (the demo still works: vcam-harmonize --demo)"
    return True, "cameras that open (asked for MJPG 1280x720 @ 30 fps): " + ", ".join(
        f"{index} gives {agreed}" for index, agreed in cameras)


def check_gpu() -> tuple[bool, str]:
    """Whether PyTorch sees a CUDA GPU (none is fine: PHNet then runs on the CPU)."""
    import torch

    if torch.cuda.is_available():
        return True, f"CUDA: {torch.cuda.get_device_name(0)} (PyTorch {torch.__version__})"
    from vcam_harmonize.harmonizer import cpu_computes_bfloat16

    arithmetic = ("bfloat16 (--precision auto; this CPU computes it)"
                  if cpu_computes_bfloat16() else "float32")
    return True, (f"no CUDA GPU; PHNet runs on the CPU in {arithmetic} "
                  f"(PyTorch {torch.__version__})")


def check_model(weights: str | None) -> tuple[bool, str]:
    """Load ``weights`` (None: the bundled ones) and harmonize one small frame."""
    import numpy as np

    from vcam_harmonize.harmonizer import Harmonizer

    harmonizer = Harmonizer(weights)
    frame = np.full((64, 64, 3), 128, np.uint8)
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1
    out = harmonizer.harmonize(frame, mask)
    config = harmonizer.model.config
    return out.shape == frame.shape, f"PHNet loaded and ran ({config.widths}, {config.norm})"


def check_segmenter() -> tuple[bool, str]:
    """Run the bundled segmentation model once, on the bundled portrait, and compare its
    person mask with the one stored beside it."""
    import cv2

    from vcam_harmonize.models.images import read_image
    from vcam_harmonize.segmentation import PersonSegmenter

    portrait = read_image(_ASSETS / "demo_person.jpg")
    expected = cv2.imread(str(_ASSETS / "demo_person_mask.png"), cv2.IMREAD_GRAYSCALE) > 127
    with PersonSegmenter(smoothing=0) as segmenter:
        found = segmenter.segment(portrait) > 0.5
    iou = float((found & expected).sum() / max(1, (found | expected).sum()))
    import mediapipe

    return iou >= _MIN_PORTRAIT_IOU, (
        f"MediaPipe {mediapipe.__version__} ran {segmenter.model_file.name} on the bundled "
        f"portrait: person overlap {iou:.2f} with its stored mask (>= {_MIN_PORTRAIT_IOU})")


def doctor(argv: list[str]) -> int:
    """``vcam-harmonize doctor``: print one ``[ok]``/``[FAIL]`` line per check and the
    setup steps for what failed; exit code 1 if anything did."""
    parser = argparse.ArgumentParser(prog="vcam-harmonize doctor",
                                     description="Check the setup and print what to fix.")
    parser.add_argument("--weights", help="check these weights instead of the bundled ones")
    args = parser.parse_args(argv)
    checks = [("virtual camera", check_virtual_camera), ("cameras", check_cameras),
              ("GPU", check_gpu), ("model", lambda: check_model(args.weights)),
              ("segmentation", check_segmenter)]
    failed = []
    for label, check in checks:
        try:
            ok, message = check()
        except Exception as err:  # a check must report, never crash the doctor
            ok, message = False, f"{type(err).__name__}: {err}"
        print(f"[{'ok' if ok else 'FAIL'}] {label}: {message}")
        if not ok:
            failed.append(label)
    if "virtual camera" in failed:
        print("\nTo create the virtual camera on this system:")
        from vcam_harmonize.sinks import setup_commands

        for line in setup_commands(platform=sys.platform):
            print("  " + line)
        print("Then start vcam-harmonize before opening the meeting (Chrome/Meet list the "
              "camera only while it is being written).")
    return 1 if failed else 0
