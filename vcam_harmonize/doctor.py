"""``vcam-harmonize doctor``: check the virtual camera, cameras, GPU and model, and print
the exact setup commands for this OS."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def check_virtual_camera() -> tuple[bool, str]:
    import pyvirtualcam

    from vcam_harmonize.sinks import video_devices

    backends = ", ".join(pyvirtualcam.camera.BACKENDS) or "none"
    if sys.platform.startswith("linux"):
        if not Path("/sys/module/v4l2loopback").exists():
            return False, "v4l2loopback is not loaded (no loopback device)"
        devices = video_devices()
        return True, "video devices: " + (", ".join(f"{d} ({n})" for d, n in devices)
                                          or "none")
    return True, f"pyvirtualcam backends: {backends}"


def check_cameras() -> tuple[bool, str]:
    from vcam_harmonize.capture import list_cameras

    cameras = list_cameras()
    if not cameras:
        return False, "no camera opens (the demo still works: vcam-harmonize --demo)"
    return True, "cameras that open: " + ", ".join(map(str, cameras))


def check_gpu() -> tuple[bool, str]:
    import torch

    if torch.cuda.is_available():
        return True, f"CUDA: {torch.cuda.get_device_name(0)} (PyTorch {torch.__version__})"
    return True, f"no CUDA GPU; PHNet runs on the CPU (PyTorch {torch.__version__})"


def check_model(weights: str | None) -> tuple[bool, str]:
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
    from vcam_harmonize.segmentation import model_path

    return True, f"MediaPipe selfie segmentation: {model_path('landscape').name}"


def doctor(argv: list[str]) -> int:
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

        for line in setup_commands():
            print("  " + line)
        print("Then start vcam-harmonize before opening the meeting (Chrome/Meet list the "
              "camera only while it is being written).")
    return 1 if failed else 0
