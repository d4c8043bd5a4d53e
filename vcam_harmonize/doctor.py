"""``vcam-harmonize doctor``: check the virtual camera, cameras, GPU and model, and print
the exact setup commands for this OS."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

LINUX_SETUP = [
    "sudo apt install v4l2loopback-dkms v4l2loopback-utils   # Fedora: akmod-v4l2loopback, "
    "Arch: v4l2loopback-dkms",
    'sudo modprobe v4l2loopback devices=1 video_nr=10 card_label="PHNet Cam" exclusive_caps=1',
    "# keep it after a reboot:",
    "echo v4l2loopback | sudo tee /etc/modules-load.d/v4l2loopback.conf",
    'echo \'options v4l2loopback devices=1 video_nr=10 card_label="PHNet Cam" exclusive_caps=1\''
    " | sudo tee /etc/modprobe.d/v4l2loopback.conf",
]
WINDOWS_SETUP = [
    "install OBS Studio 26 or newer (gives 'OBS Virtual Camera'), or, to be listed as "
    "'PHNet Cam', Unity Capture as administrator:",
    'regsvr32 UnityCaptureFilter64bit.dll "/i:UnityCaptureName=PHNet Cam"',
]
MAC_SETUP = [
    "install OBS Studio 30 or newer, click Start Virtual Camera once, allow the system "
    "extension in System Settings > Privacy & Security, then quit OBS (a reboot may be needed)",
]


def setup_commands(platform: str = sys.platform) -> list[str]:
    if platform.startswith("linux"):
        return LINUX_SETUP
    if platform == "win32":
        return WINDOWS_SETUP
    return MAC_SETUP


def loopback_devices(sysfs: Path = Path("/sys/class/video4linux")) -> list[tuple[str, str]]:
    """``(/dev/videoN, name)`` of the v4l2loopback devices (Linux)."""
    found = []
    if sysfs.is_dir():
        for entry in sorted(sysfs.iterdir()):
            name_file = entry / "name"
            driver = entry / "device" / "driver"
            name = name_file.read_text().strip() if name_file.is_file() else ""
            is_loopback = "loopback" in str(driver.resolve()) if driver.exists() else False
            if is_loopback or name in ("PHNet Cam", "Dummy video device (0x0000)"):
                found.append((f"/dev/{entry.name}", name))
    return found


def check_virtual_camera() -> tuple[bool, str]:
    import pyvirtualcam

    backends = ", ".join(pyvirtualcam.camera.BACKENDS) or "none"
    if sys.platform.startswith("linux"):
        devices = loopback_devices()
        if not Path("/sys/module/v4l2loopback").exists() and not devices:
            return False, "v4l2loopback is not loaded (no loopback device)"
        return True, "loopback devices: " + ", ".join(f"{d} ({n})" for d, n in devices)
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
        for line in setup_commands():
            print("  " + line)
        print("Then start vcam-harmonize before opening the meeting (Chrome/Meet list the "
              "camera only while it is being written).")
    return 1 if failed else 0
